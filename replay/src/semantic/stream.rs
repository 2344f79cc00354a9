//! The change streams: what one VM's log holds for one file (its semantic
//! changes, the hints that place the file on the disk, its barriers), which
//! changes a replay keeps (the point, a selection, what-if drops), and the
//! time-ordered merge of several VMs' streams with their conflicting keys.
use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use changelog::log::{LogReader, RecordKind};
use changelog::recording::RecordDir;
use introspection::semantic::Format;
use introspection::tap::parse_base_mark;
use serde::Serialize;

use super::change::{parse_record, Lifted, Record, Shared};
use super::state::Key;
use super::SemanticError;
use crate::Point;

/// What one VM's log says about one file.
#[derive(Debug, Default)]
pub struct VmStream {
    pub vm: String,
    /// The disk size from the log's base mark.
    pub disk_bytes: Option<u64>,
    /// Every hint the guest sent, also after the point: (record seq, wire
    /// message).
    pub hints: Vec<(u64, Vec<u8>)>,
    /// Seqs of the barrier records.
    pub barriers: Vec<u64>,
    /// The file's changes, in log order.
    pub changes: Vec<Lifted>,
    /// Barrier seqs at which the file could not be decoded.
    pub decode_errors: Vec<u64>,
    /// Semantic records that did not parse.
    pub unreadable: u64,
    /// The format the file's events name (also events after the point).
    pub format: Option<Format>,
    /// The last record the point includes.
    pub until_seq: u64,
}

impl VmStream {
    /// Reads `vm`'s log: everything about `file` up to `point`. Changes are
    /// kept by the barrier they were lifted at (`change.seq <= until`), not
    /// by where their record lies: lifting runs behind the log.
    pub fn read(
        dir: &RecordDir,
        vm: &str,
        file: &str,
        point: &Point,
    ) -> Result<VmStream, SemanticError> {
        let log_dir = dir.log_dir(vm);
        if !log_dir.is_dir() {
            return Err(SemanticError::NoSuchVm {
                vm: vm.to_string(),
                dir: dir.root().to_path_buf(),
            });
        }
        let reader = LogReader::open(&log_dir)?;
        let until = point.resolve(dir, vm).map_err(crate::ReplayError::from)?;
        let mut s = VmStream {
            vm: vm.to_string(),
            until_seq: until,
            ..Default::default()
        };
        let mut shared = Shared::default();
        for record in reader.iter()? {
            let record = record?;
            let seq = record.seq;
            match record.kind {
                RecordKind::Mark { name } if s.disk_bytes.is_none() => {
                    s.disk_bytes = parse_base_mark(&name);
                }
                RecordKind::Hint { message } => s.hints.push((seq, message)),
                RecordKind::Barrier { .. } if seq <= until => s.barriers.push(seq),
                RecordKind::Semantic { json } => match parse_record(&json, file, &mut shared) {
                    Record::Change(c) => {
                        s.format.get_or_insert(c.format);
                        if c.seq <= until {
                            s.changes.push(c);
                        }
                    }
                    Record::DecodeError(format, seq) => {
                        s.format.get_or_insert(format);
                        if seq <= until {
                            s.decode_errors.push(seq);
                        }
                    }
                    Record::Other => {}
                    Record::Unreadable => s.unreadable += 1,
                },
                _ => {}
            }
        }
        Ok(s)
    }

    /// The last barrier the point includes.
    pub fn last_barrier(&self) -> Option<u64> {
        self.barriers.last().copied()
    }
}

/// An inclusive range of keys (`K` or `A..B`); integer keys compare
/// numerically.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    pub first: Key,
    pub last: Key,
}

impl FromStr for KeyRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.is_empty() {
            return Err("empty key: use K or A..B".into());
        }
        let (first, last) = match s.split_once("..") {
            Some((a, b)) => (Key::parse(a), Key::parse(b)),
            None => (Key::parse(s), Key::parse(s)),
        };
        if first > last {
            return Err(format!(
                "key range '{s}' is empty (its first key is after its last)"
            ));
        }
        Ok(KeyRange { first, last })
    }
}

impl KeyRange {
    pub fn contains(&self, key: &str) -> bool {
        self.contains_key(&Key::parse(key))
    }

    pub fn contains_key(&self, k: &Key) -> bool {
        self.first <= *k && *k <= self.last
    }
}

/// Which changes a selective replay keeps.
#[derive(Clone, Debug, Default)]
pub struct Selection {
    /// Only this collection (SQLite table, JSON record path).
    pub table: Option<String>,
    /// Only keys in this range.
    pub keys: Option<KeyRange>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        self.table.is_none() && self.keys.is_none()
    }

    /// SQLite schema entries stay when they describe a selected table, so
    /// that the output can create it.
    pub fn keeps(&self, c: &Lifted) -> bool {
        if c.format == Format::Sqlite && &*c.collection == SCHEMA {
            return self.table.as_ref().is_none_or(|t| {
                [c.before.as_deref(), c.after.as_ref()]
                    .iter()
                    .filter_map(|v| v.as_ref()?.get_str("tbl_name"))
                    .any(|n| n == t)
            });
        }
        self.table.as_ref().is_none_or(|t| **t == *c.collection)
            && self.keys.as_ref().is_none_or(|k| k.contains_key(&c.key))
    }
}

/// The collection of SQLite schema changes.
pub const SCHEMA: &str = introspection::decode::sqlite::SCHEMA_COLLECTION;

/// What-if: changes to leave out (`seq=N`, `seq=A..B`, `key=K`, `key=A..B`,
/// `table=T`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChangeFilter {
    /// Changes lifted at a barrier with seq in `first..=last`.
    Seq { first: u64, last: u64 },
    /// Changes of keys in the range (any collection).
    Key(KeyRange),
    /// Changes of one collection.
    Table(String),
}

impl FromStr for ChangeFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("'{s}' is not a change filter: use seq=N, seq=A..B, key=K, key=A..B or table=T")
        };
        let (what, value) = s.split_once('=').ok_or_else(bad)?;
        match what {
            "seq" => {
                let (a, b) = value.split_once("..").unwrap_or((value, value));
                let first: u64 = a.parse().map_err(|_| bad())?;
                let last: u64 = b.parse().map_err(|_| bad())?;
                if first > last {
                    return Err(bad());
                }
                Ok(ChangeFilter::Seq { first, last })
            }
            "key" => value.parse().map(ChangeFilter::Key).map_err(|_| bad()),
            "table" if !value.is_empty() => Ok(ChangeFilter::Table(value.to_string())),
            _ => Err(bad()),
        }
    }
}

impl ChangeFilter {
    pub fn matches(&self, c: &Lifted) -> bool {
        match self {
            ChangeFilter::Seq { first, last } => (*first..=*last).contains(&c.seq),
            ChangeFilter::Key(range) => range.contains_key(&c.key),
            ChangeFilter::Table(t) => **t == *c.collection,
        }
    }
}

/// A key that more than one VM changed, differently.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Conflict {
    pub collection: String,
    pub key: String,
    /// The VMs that changed it, in the order given.
    pub vms: Vec<String>,
}

/// Merges the streams (each in its own order) by HLC stamp (time, then
/// counter, then node: the order across hosts, see `changelog::hlc`); on
/// equal stamps the VM named first goes first. Returns the merged stream and the keys that
/// more than one VM changed with different sequences of values (clones
/// that made the same changes, e.g. the inserts of their common base, do
/// not conflict).
pub fn merge(streams: Vec<(String, Vec<Lifted>)>) -> (Vec<Lifted>, Vec<Conflict>) {
    // Per key: each VM's sequence of (op, after), as canonical text.
    type History = Vec<String>;
    let mut per_key: BTreeMap<(String, String), BTreeMap<usize, History>> = BTreeMap::new();
    for (i, (_, changes)) in streams.iter().enumerate() {
        for c in changes {
            let mut text = Vec::new();
            c.after
                .as_ref()
                .unwrap_or(&super::row::NULL)
                .canonical_json(&mut text);
            per_key
                .entry((c.collection.to_string(), c.key.to_string()))
                .or_default()
                .entry(i)
                .or_default()
                .push(format!("{} {}", c.op, String::from_utf8_lossy(&text)));
        }
    }
    let mut conflicts = Vec::new();
    for ((collection, key), by_vm) in per_key {
        let distinct: BTreeSet<&History> = by_vm.values().collect();
        if by_vm.len() > 1 && distinct.len() > 1 {
            conflicts.push(Conflict {
                collection,
                key,
                vms: by_vm.keys().map(|&i| streams[i].0.clone()).collect(),
            });
        }
    }
    let total = streams.iter().map(|(_, c)| c.len()).sum();
    let mut heads: Vec<std::iter::Peekable<std::vec::IntoIter<Lifted>>> = streams
        .into_iter()
        .map(|(_, c)| c.into_iter().peekable())
        .collect();
    let mut merged = Vec::with_capacity(total);
    loop {
        let next = heads
            .iter_mut()
            .enumerate()
            .filter_map(|(i, h)| h.peek().map(|c| (c.hlc, i)))
            .min();
        let Some((_, i)) = next else { break };
        merged.extend(heads[i].next());
    }
    (merged, conflicts)
}
