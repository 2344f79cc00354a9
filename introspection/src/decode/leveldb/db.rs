//! The database view: the live key -> value state of a LevelDB directory,
//! and the puts/deletes of its write-ahead logs.
//!
//! # How LevelDB's files make up the state (google/leveldb doc/impl.md)
//!
//! - `CURRENT` names the current `MANIFEST-NNNNNN`, whose version edits
//!   list the live table files (`NNNNNN.ldb` or `.sst`) and the number of
//!   the oldest log still needed (`log_number`, plus `prev_log_number`).
//! - Each write-ahead log `NNNNNN.log` with a number at least `log_number`
//!   (or equal to `prev_log_number`) holds write batches not yet in a
//!   table; they are replayed in file-number order.
//! - Every version of a key carries a sequence number; the newest version
//!   wins and a deletion removes the key. Tables at different levels can
//!   hold older versions of a key: taking the highest sequence number over
//!   all live tables and logs gives the same answer as LevelDB's merge.
//!
//! A directory without `CURRENT` (or with a blank one) has no version yet:
//! its tables are ignored and every log is replayed. Files named neither
//! as above (`LOCK`, `LOG`, `LOG.old`, temp files) are ignored. A live
//! table the MANIFEST names but the directory lacks is an error.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use crate::decode::{is_blank, Budget, DecodeError, DecodeLimits};

use super::batch::{for_each_op, BatchOp};
use super::log::LogReader;
use super::manifest::{self, Manifest};
use super::table;

/// One put or delete read from a write-ahead log. Key and value borrow
/// the log's bytes unless the record was split over blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOp<'a> {
    /// Number of the log file (0 for a lone log given without a name).
    pub log: u64,
    /// Offset of its log record in that file.
    pub offset: usize,
    pub seq: u64,
    pub key: Cow<'a, [u8]>,
    /// `Some(value)` for a put, `None` for a delete.
    pub value: Option<Cow<'a, [u8]>>,
}

/// Calls `f(record offset, op)` for each op of a write-ahead log, in order.
/// A torn tail ends the log; damage in the middle is an error.
pub fn for_each_wal_op(
    data: &[u8],
    mut f: impl FnMut(usize, BatchOp<'_>),
) -> Result<(), DecodeError> {
    for rec in LogReader::new(data) {
        let rec = rec?;
        for_each_op(&rec.data, rec.offset, |op| f(rec.offset, op))?;
    }
    Ok(())
}

/// The ops of one write-ahead log file (numbered `log` in [`WalOp::log`]).
pub fn wal_ops(data: &[u8]) -> Result<Vec<WalOp<'_>>, DecodeError> {
    let mut out = Vec::new();
    read_log(
        data,
        0,
        &mut out,
        &mut Budget::new(&DecodeLimits::default()),
    )?;
    Ok(out)
}

/// Appends the ops of log `log` to `out`, borrowing from `data` where the
/// record is in one piece.
fn read_log<'a>(
    data: &'a [u8],
    log: u64,
    out: &mut Vec<WalOp<'a>>,
    budget: &mut Budget,
) -> Result<(), DecodeError> {
    let mut failed = None;
    let mut push = |offset, op: BatchOp<'_>, key, value| {
        if failed.is_none() {
            let len = op.key().len() + op.value().map_or(0, <[u8]>::len);
            failed = budget.charge_value(len).err();
            let seq = op.seq();
            out.push(WalOp {
                log,
                offset,
                seq,
                key,
                value,
            });
        }
    };
    for rec in LogReader::new(data) {
        let rec = rec?;
        let offset = rec.offset;
        match rec.data {
            Cow::Borrowed(d) => for_each_op(d, offset, |op| {
                let (k, v) = (op.key(), op.value());
                push(offset, op, Cow::Borrowed(k), v.map(Cow::Borrowed));
            })?,
            Cow::Owned(d) => for_each_op(&d, offset, |op| {
                let (k, v) = (op.key(), op.value());
                let v = v.map(|v| Cow::Owned(v.to_vec()));
                push(offset, op, Cow::Owned(k.to_vec()), v);
            })?,
        };
    }
    failed.map_or(Ok(()), Err)
}

/// What a file name says it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    Current,
    Manifest(u64),
    Log(u64),
    Table(u64),
    Other,
}

/// Classifies a base file name as LevelDB does.
pub fn file_kind(name: &str) -> FileKind {
    let digits = |s: &str| {
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    if name == "CURRENT" {
        return FileKind::Current;
    }
    if let Some(n) = name.strip_prefix("MANIFEST-").and_then(digits) {
        return FileKind::Manifest(n);
    }
    match name.rsplit_once('.') {
        Some((n, "log")) => digits(n).map_or(FileKind::Other, FileKind::Log),
        Some((n, "ldb" | "sst")) => digits(n).map_or(FileKind::Other, FileKind::Table),
        _ => FileKind::Other,
    }
}

/// A database's state at one moment.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Database<'a> {
    /// Live keys and values (borrowing the logs where they come from one).
    pub live: BTreeMap<Cow<'a, [u8]>, Cow<'a, [u8]>>,
    /// The ops of the live logs in replay order (borrowing the logs).
    pub wal_ops: Vec<WalOp<'a>>,
    /// The current version, when there is one.
    pub manifest: Option<Manifest>,
    /// The highest sequence number in the state (tables, logs, MANIFEST).
    pub last_sequence: u64,
}

impl<'a> Database<'a> {
    /// The live state as owned bytes.
    pub fn live_owned(&self) -> BTreeMap<Vec<u8>, Vec<u8>> {
        self.live
            .iter()
            .map(|(k, v)| (k.to_vec(), v.to_vec()))
            .collect()
    }

    /// The state of a directory given as (base name, bytes) pairs.
    pub fn open(files: &[(&str, &'a [u8])]) -> Result<Database<'a>, DecodeError> {
        Self::open_with(files, &DecodeLimits::default())
    }

    /// [`Self::open`] within `limits`.
    pub fn open_with(
        files: &[(&str, &'a [u8])],
        limits: &DecodeLimits,
    ) -> Result<Database<'a>, DecodeError> {
        let mut budget = Budget::new(limits);
        let find = |kind: FileKind| {
            files
                .iter()
                .find(|(n, _)| file_kind(n) == kind)
                .map(|f| f.1)
        };
        let manifest = match find(FileKind::Current).filter(|c| !is_blank(c)) {
            None => None,
            Some(current) => {
                let name = std::str::from_utf8(current)
                    .ok()
                    .and_then(|s| s.strip_suffix('\n'))
                    .filter(|s| matches!(file_kind(s), FileKind::Manifest(_)))
                    .ok_or_else(|| DecodeError::new("leveldb: CURRENT does not name a MANIFEST"))?;
                let data = files
                    .iter()
                    .find(|(n, _)| *n == name)
                    .ok_or_else(|| {
                        DecodeError::new(format!("leveldb: {name} (named by CURRENT) is missing"))
                    })?
                    .1;
                Some(manifest::parse(data)?)
            }
        };
        let mut db = Database::default();
        let mut state: BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)> = BTreeMap::new();
        if let Some(m) = &manifest {
            db.last_sequence = m.last_sequence;
            for &number in m.files.keys() {
                let data = find(FileKind::Table(number)).ok_or_else(|| {
                    DecodeError::new(format!("leveldb: live table {number:06}.ldb is missing"))
                })?;
                table::for_each_entry(data, &mut budget, |e| {
                    newest(&mut state, e.user_key, e.seq, e.value);
                    Ok(())
                })
                .map_err(|e| e.context(&format!("table {number:06}")))?;
            }
        }
        let mut logs: Vec<(u64, &'a [u8])> = files
            .iter()
            .filter_map(|(n, b)| match file_kind(n) {
                FileKind::Log(k) => Some((k, *b)),
                _ => None,
            })
            .filter(|(k, _)| {
                manifest
                    .as_ref()
                    .is_none_or(|m| *k >= m.log_number || (*k == m.prev_log_number && *k != 0))
            })
            .collect();
        logs.sort_by_key(|l| l.0);
        for (number, data) in logs {
            read_log(data, number, &mut db.wal_ops, &mut budget)
                .map_err(|e| e.context(&format!("log {number:06}")))?;
        }
        // The tables' newest versions, then the logs' ops on top: a log op
        // loses only to a table version with a sequence number as high
        // (which LevelDB never writes, but a bundle could hold). Replayed
        // in a hash map (borrowing the logs), sorted once at the end.
        let mut table_max = 0;
        let mut live: HashMap<Cow<'a, [u8]>, Cow<'a, [u8]>> = HashMap::new();
        for (key, (seq, value)) in state.iter_mut() {
            table_max = table_max.max(*seq);
            if let Some(v) = value.take() {
                live.insert(Cow::Owned(key.clone()), Cow::Owned(v));
            }
        }
        db.last_sequence = db.last_sequence.max(table_max);
        for op in &db.wal_ops {
            db.last_sequence = db.last_sequence.max(op.seq);
            if op.seq <= table_max && state.get(&op.key[..]).is_some_and(|(s, _)| *s >= op.seq) {
                continue;
            }
            match &op.value {
                Some(v) => {
                    live.insert(op.key.clone(), v.clone());
                }
                None => {
                    live.remove(&op.key[..]);
                }
            }
        }
        db.live = live.into_iter().collect();
        db.manifest = manifest;
        Ok(db)
    }
}

/// Records a version of `key` unless a newer one is known.
fn newest(
    state: &mut BTreeMap<Vec<u8>, (u64, Option<Vec<u8>>)>,
    key: &[u8],
    seq: u64,
    value: Option<&[u8]>,
) {
    match state.get_mut(key) {
        Some(slot) if slot.0 >= seq => {}
        Some(slot) => *slot = (seq, value.map(<[u8]>::to_vec)),
        None => {
            state.insert(key.to_vec(), (seq, value.map(<[u8]>::to_vec)));
        }
    }
}
