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
use std::collections::BTreeMap;
use std::fmt;

use introspection::semantic::{Format, Op, SemanticChange};
use serde::Serialize;
use serde_json::Value;

use super::reshape;
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
        match s.parse::<i64>() {
            Ok(i) if i.to_string() == s => Key::Int(i),
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
    /// The state already was what the change leaves (e.g. the same insert
    /// from a clone's stream).
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

/// collection -> key -> value.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct State {
    pub collections: BTreeMap<String, BTreeMap<Key, Value>>,
}

impl State {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one change (taking its values) and says how it fit.
    pub fn apply(&mut self, change: SemanticChange) -> Applied {
        let SemanticChange {
            format,
            collection,
            key,
            op,
            before,
            after,
            ..
        } = change;
        // A table whose definition changed: its rows read differently.
        if format == Format::Sqlite && collection == SCHEMA && op == Op::Update {
            let old = before.as_ref().and_then(reshape::table_entry);
            if let Some((table, sql)) = after.as_ref().and_then(reshape::table_entry) {
                if old.is_some_and(|(t, s)| t == table && s != sql) {
                    if let Some(rows) = self.collections.get_mut(table) {
                        reshape::reshape_rows(rows, sql);
                    }
                }
            }
        }
        let rows = self.collections.entry(collection).or_default();
        let key = Key::parse(&key);
        match op {
            Op::Insert | Op::Update => {
                let after = after.unwrap_or(Value::Null);
                match (op, rows.get_mut(&key)) {
                    (Op::Insert, None) => {
                        rows.insert(key, after);
                        Applied::Changed
                    }
                    (Op::Insert, Some(old)) if *old == after => Applied::Unchanged,
                    (Op::Insert, Some(old)) => {
                        *old = after;
                        Applied::Anomaly(AnomalyKind::InsertOverExisting)
                    }
                    (_, None) => {
                        rows.insert(key, after);
                        Applied::Anomaly(AnomalyKind::UpdateOfMissing)
                    }
                    (_, Some(old)) => {
                        let fits = before.as_ref().is_none_or(|b| fits(b, old));
                        let same = *old == after;
                        *old = after;
                        match (fits, same) {
                            (false, _) => Applied::Anomaly(AnomalyKind::BeforeMismatch),
                            (true, true) => Applied::Unchanged,
                            (true, false) => Applied::Changed,
                        }
                    }
                }
            }
            Op::Delete => match rows.remove(&key) {
                None => Applied::Anomaly(AnomalyKind::DeleteOfMissing),
                Some(old) if before.as_ref().is_some_and(|b| !fits(b, &old)) => {
                    Applied::Anomaly(AnomalyKind::BeforeMismatch)
                }
                Some(_) => Applied::Changed,
            },
        }
    }

    /// The state a decoder's changes against an empty file describe (all
    /// inserts), pruned.
    pub fn from_decoded(format: Format, changes: Vec<introspection::semantic::Change>) -> State {
        let mut state = State::new();
        for change in changes {
            state.apply(SemanticChange::from_change("", 0, 0, "", format, change));
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
    pub fn differences(&self, other: &State, max: usize) -> Vec<Difference> {
        let empty = BTreeMap::new();
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
                        log: va.cloned(),
                        disk: vb.cloned(),
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
            for (key, value) in rows {
                put(&mut h, key.to_string().as_bytes());
                buf.clear();
                canonical_json(value, &mut buf);
                put(&mut h, &buf);
            }
        }
        *h.finalize().as_bytes()
    }
}

/// Whether a change's `before` is the row folded so far. Rows are compared
/// on the members both have: a `before` lifted in the same barrier as an
/// `ALTER TABLE` is read with the old definition, the row with the new.
fn fits(before: &Value, row: &Value) -> bool {
    match (before, row) {
        (Value::Object(b), Value::Object(r)) => b
            .iter()
            .all(|(name, v)| r.get(name).is_none_or(|rv| rv == v)),
        _ => before == row,
    }
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
