//! The folded state of one application file: collection -> key -> value,
//! and its canonical checksum.
//!
//! A [`State`] is what the semantic change log says a file holds at a
//! point: every insert/update/delete of the stream applied in order. The
//! same type holds what a decoder reads from the file's bytes (a decode
//! against an empty file is a stream of inserts), so "the log and the disk
//! agree" is one comparison of two [`State::checksum`]s.
//!
//! One rule is the format's, not the stream's: when an SQLite table's
//! definition changes (`ALTER TABLE ADD/DROP COLUMN`), its rows are
//! reshaped as SQLite reads them ([`super::reshape`]).
//!
//! Otherwise the fold takes the stream as given and never guesses: each change is
//! applied (insert/update set the row to `after`, delete removes it), and
//! a change that does not fit the state (an insert of a key already there
//! with another value, an update or delete whose `before` differs from the
//! row folded so far, a delete of a missing key) is applied anyway and
//! counted as an anomaly, so that the report (and the block-level proof)
//! can say the stream was not self-consistent.
//!
//! # Checksum (BLAKE3, canonical row set)
//! ```text
//! "vmm-semantic-state v1\n"
//! for each collection in byte order of its name, skipping empty ones:
//!     u64le len | name | u64le rows
//!     for each row in key order (integer keys numerically, before text keys):
//!         u64le len | key as rendered | u64le len | canonical JSON of the value
//! ```
//! Canonical JSON: object members sorted by name, no whitespace, numbers and
//! strings as serde_json writes them.
use std::cmp::Ordering;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use introspection::semantic::{Format, Op};
use serde::Serialize;
use serde_json::Value;

use super::change::Lifted;
use super::data::Data;
pub use super::data::{prefetch, prefetch_row, Held};
use super::reshape;
use super::row::{self, Row};
use super::stream::SCHEMA;

/// A row key: integer keys (SQLite rowids, numeric JSON ids) order
/// numerically and before text keys, so rows come out in their natural
/// order (and SQLite inserts them in rowid order).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Key {
    Int(i64),
    Text(String),
}

impl Key {
    /// The key as the change log renders it; an integer only when it reads
    /// back to the same text (`"007"` stays text).
    pub fn parse(s: &str) -> Key {
        let digits = s.strip_prefix('-').unwrap_or(s);
        let canonical = match digits.as_bytes() {
            [] => false,
            [b'0'] => digits.len() == s.len(), // "0", not "-0"
            [b'0', ..] => false,
            d => d.iter().all(u8::is_ascii_digit),
        };
        match s.parse::<i64>() {
            Ok(i) if canonical => Key::Int(i),
            _ => Key::Text(s.to_string()),
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Key::Int(i) => Some(*i),
            Key::Text(_) => None,
        }
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (Key::Int(a), Key::Int(b)) => a.cmp(b),
            (Key::Int(_), Key::Text(_)) => Ordering::Less,
            (Key::Text(_), Key::Int(_)) => Ordering::Greater,
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
        }
    }
}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Key::Int(i) => write!(f, "{i}"),
            Key::Text(s) => f.write_str(s),
        }
    }
}

/// What applying one change did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Applied {
    /// The state changed as the change says.
    Changed,
    /// An insert of the row already there (e.g. the same insert from a
    /// clone's stream).
    Unchanged,
    /// The change did not fit the state (see the module doc); applied anyway.
    Anomaly(AnomalyKind),
}

/// How a change did not fit the state it was applied to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AnomalyKind {
    /// An insert of a key that holds another value.
    InsertOverExisting,
    /// An update of a key that is not there.
    UpdateOfMissing,
    /// A delete of a key that is not there.
    DeleteOfMissing,
    /// An update or delete whose `before` is not the row folded so far.
    BeforeMismatch,
}

/// A row on which two states differ.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub collection: String,
    pub key: String,
    /// The row in the state folded from the log (None: absent).
    pub log: Option<Value>,
    /// The row decoded from the disk (None: absent).
    pub disk: Option<Value>,
}

/// collection -> key -> value. Values are borrowed from the change stream
/// while the fold only moves them around (no copy of a row is made unless
/// a schema change rewrites it), so folding costs no allocation per row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State<'a> {
    pub collections: BTreeMap<String, Rows<'a>>,
}

/// One collection's rows. Hashed (not ordered) while folding, because a
/// fold is one lookup per change; [`sorted`] gives them in key order.
pub type Rows<'a> = HashMap<Key, Held<'a>, BuildHasherDefault<KeyHasher>>;

/// The rows in key order.
pub fn sorted<'r>(rows: &'r Rows<'_>) -> Vec<(&'r Key, &'r Row)> {
    let (mut min, mut max, mut text) = (i64::MAX, i64::MIN, false);
    for k in rows.keys() {
        match k {
            Key::Int(i) => (min, max) = (min.min(*i), max.max(*i)),
            Key::Text(_) => text = true,
        }
    }
    // Keys are distinct: with integer keys only and few gaps (rowids,
    // mostly), each row goes straight to its place, without comparing.
    let span = i128::from(max) - i128::from(min) + 1;
    if !text && !rows.is_empty() && span <= 2 * rows.len() as i128 {
        let mut slots: Vec<Option<(&Key, &Row)>> = vec![None; span as usize];
        for (k, r) in rows {
            if let Key::Int(i) = k {
                slots[(i128::from(*i) - i128::from(min)) as usize] = Some((k, &**r));
            }
        }
        return slots.into_iter().flatten().collect();
    }
    // Integer keys sort by a copy beside the references, so that sorting
    // does not go back to the table for each comparison.
    let mut v: Vec<(i64, &Key, &Row)> = rows
        .iter()
        .map(|(k, r)| (k.as_int().unwrap_or(0), k, &**r))
        .collect();
    if text {
        v.sort_unstable_by(|a, b| a.1.cmp(b.1));
    } else {
        v.sort_unstable_by_key(|e| e.0);
    }
    v.into_iter().map(|(_, k, r)| (k, r)).collect()
}

/// A multiply-rotate hash for row keys. Keys come from the file being
/// replayed, not from an adversary who could aim at collisions over the
/// network, and SipHash costs more than the rest of a fold step.
#[derive(Default)]
pub struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64);
    }
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
    fn write_isize(&mut self, i: isize) {
        self.write_u64(i as u64);
    }
}

impl<'a> State<'a> {
    /// Makes room for `rows` more rows in `collection`, so that a fold
    /// that knows how many inserts are coming does not rehash the table
    /// as it grows (a rehash moves every row, out of cache).
    pub fn reserve(&mut self, collection: &str, rows: usize) {
        match self.collections.get_mut(collection) {
            Some(table) => table.reserve(rows),
            None => {
                let table = Rows::with_capacity_and_hasher(rows, Default::default());
                self.collections.insert(collection.to_string(), table);
            }
        }
    }

    pub fn new() -> Self {
        Self::default()
    }

    /// Starts loading what applying `batch` will read: the rows folded so
    /// far for its keys, its `before` rows, and their values when too long
    /// to be kept in the row. Those lie where earlier changes put them, all
    /// over the heap; looked up for a batch first, in loops of independent
    /// loads, their cache misses overlap instead of following one another.
    /// Only a hint: a row that an earlier change of the batch replaces was
    /// looked up as it was, which costs a miss, never a wrong result.
    pub fn prefetch(&self, batch: &[&Lifted]) {
        let mut rows = [None; BATCH];
        for (row, c) in rows.iter_mut().zip(batch) {
            *row = self
                .collections
                .get(&*c.collection)
                .and_then(|rows| rows.get(&c.key))
                .map(|r| &**r);
            if let Some(r) = row {
                prefetch_row(r);
            }
            if let Some(b) = &c.before {
                prefetch_row(b);
            }
        }
        for (row, c) in rows.iter().zip(batch) {
            for r in [*row, c.before.as_deref()].into_iter().flatten() {
                if let Row::Object {
                    data: Data::Heap(d),
                    ..
                } = r
                {
                    prefetch(d.as_ptr());
                }
            }
        }
    }

    /// Applies one change and says how it fit.
    pub fn apply(&mut self, change: &'a Lifted) -> Applied {
        let after = Held::Borrowed(change.after.as_ref().unwrap_or(&row::NULL));
        self.apply_parts(
            change.format,
            &change.collection,
            &change.key,
            change.op,
            change.before.as_deref(),
            after,
        )
    }

    fn apply_parts(
        &mut self,
        format: Format,
        collection: &str,
        key: &Key,
        op: Op,
        before: Option<&Row>,
        after: Held<'a>,
    ) -> Applied {
        // A table whose definition changed: its rows read differently.
        if format == Format::Sqlite && collection == SCHEMA && op == Op::Update {
            let old = before.and_then(reshape::table_entry);
            if let Some((table, sql)) = reshape::table_entry(&after) {
                if old.is_some_and(|(t, s)| t == table && s != sql) {
                    if let Some(rows) = self.collections.get_mut(table) {
                        reshape::reshape_rows(rows, sql);
                    }
                }
            }
        }
        // One lookup per change, an allocation only for a new collection.
        let rows = match self.collections.get_mut(collection) {
            Some(rows) => rows,
            None => self.collections.entry(collection.to_string()).or_default(),
        };
        match op {
            Op::Insert | Op::Update => match rows.entry(key.clone()) {
                Entry::Vacant(slot) => {
                    slot.insert(after);
                    if op == Op::Insert {
                        Applied::Changed
                    } else {
                        Applied::Anomaly(AnomalyKind::UpdateOfMissing)
                    }
                }
                Entry::Occupied(mut slot) => {
                    let old = slot.get_mut();
                    let outcome = if op == Op::Insert {
                        if **old == *after {
                            Applied::Unchanged
                        } else {
                            Applied::Anomaly(AnomalyKind::InsertOverExisting)
                        }
                    } else if before.is_none_or(|b| fits(b, old)) {
                        Applied::Changed
                    } else {
                        Applied::Anomaly(AnomalyKind::BeforeMismatch)
                    };
                    *old = after;
                    outcome
                }
            },
            Op::Delete => match rows.remove(key) {
                None => Applied::Anomaly(AnomalyKind::DeleteOfMissing),
                Some(old) if before.is_some_and(|b| !fits(b, &old)) => {
                    Applied::Anomaly(AnomalyKind::BeforeMismatch)
                }
                Some(_) => Applied::Changed,
            },
        }
    }

    /// The state a decoder's changes against an empty file describe (all
    /// inserts), pruned.
    pub fn from_decoded(
        format: Format,
        changes: Vec<introspection::semantic::Change>,
    ) -> State<'static> {
        let mut state = State::new();
        for c in changes {
            let after = Held::Owned(Box::new(Row::from_value(c.after.unwrap_or(Value::Null))));
            let before = c.before.map(Row::from_value);
            state.apply_parts(
                format,
                &c.collection,
                &Key::parse(&c.key),
                c.op,
                before.as_ref(),
                after,
            );
        }
        state.prune();
        state
    }

    /// Rows in every collection.
    pub fn rows(&self) -> u64 {
        self.collections.values().map(|c| c.len() as u64).sum()
    }

    /// Drops collections left empty (a table whose rows were all deleted
    /// holds the same row set as a table never written).
    pub fn prune(&mut self) {
        self.collections.retain(|_, rows| !rows.is_empty());
    }

    /// Up to `max` rows that differ from `other`: (collection, key, value
    /// here, value there), `None` where a side lacks the row.
    pub fn differences(&self, other: &State<'_>, max: usize) -> Vec<Difference> {
        let empty = Rows::default();
        let mut names: Vec<&String> = self
            .collections
            .keys()
            .chain(other.collections.keys())
            .collect();
        names.sort();
        names.dedup();
        let mut out = Vec::new();
        for name in names {
            let a = self.collections.get(name).unwrap_or(&empty);
            let b = other.collections.get(name).unwrap_or(&empty);
            let mut keys: Vec<&Key> = a.keys().chain(b.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (va, vb) = (a.get(k), b.get(k));
                if va != vb {
                    out.push(Difference {
                        collection: name.clone(),
                        key: k.to_string(),
                        log: va.map(|v| v.to_value()),
                        disk: vb.map(|v| v.to_value()),
                    });
                    if out.len() >= max {
                        return out;
                    }
                }
            }
        }
        out
    }

    /// The canonical BLAKE3 checksum of the row set (see the module doc).
    pub fn checksum(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new();
        h.update(b"vmm-semantic-state v1\n");
        let mut buf = Vec::new();
        for (name, rows) in self.collections.iter().filter(|(_, r)| !r.is_empty()) {
            put(&mut h, name.as_bytes());
            h.update(&(rows.len() as u64).to_le_bytes());
            for (key, value) in sorted(rows) {
                put(&mut h, key.to_string().as_bytes());
                buf.clear();
                value.canonical_json(&mut buf);
                put(&mut h, &buf);
            }
        }
        *h.finalize().as_bytes()
    }
}

/// How many changes the fold looks up ahead of applying them.
pub const BATCH: usize = 16;

/// How many rows ahead the SQLite output starts loading.
pub const AHEAD: usize = 8;

/// Whether a change's `before` is the row folded so far. Rows are compared
/// on the members both have: a `before` lifted in the same barrier as an
/// `ALTER TABLE` is read with the old definition, the row with the new.
fn fits(before: &Row, row: &Row) -> bool {
    before == row || before.agrees_with(row)
}

fn put(h: &mut blake3::Hasher, bytes: &[u8]) {
    h.update(&(bytes.len() as u64).to_le_bytes());
    h.update(bytes);
}

/// `value` as canonical JSON text (object members sorted by name).
pub fn canonical_json(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing JSON into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, k);
                out.push(b':');
                canonical_json(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical_json(v, out);
            }
            out.push(b']');
        }
        scalar => {
            let _ = serde_json::to_writer(&mut *out, scalar);
        }
    }
}
