//! LevelDB databases: a reader of the real on-disk format (write-ahead
//! logs, MANIFEST, tables) and the semantic decoder over it.
//!
//! One file per concern, each documenting its format:
//! - [`coding`]: varints, fixed integers, masked CRC32C;
//! - [`log`]: the log file format (32 KiB blocks, fragmented records),
//!   used by write-ahead logs and the MANIFEST;
//! - [`batch`]: write batches (puts/deletes with sequence numbers);
//! - [`table`]: table files (blocks, restart points, footer, Snappy);
//! - [`manifest`]: version edits naming the live tables and logs;
//! - [`db`]: the live state of a directory, newest version winning;
//! - [`bundle`]: how the lifter passes a directory as one byte string.
//!
//! # Hints: how a guest describes a database
//!
//! A database is a directory of files that come and go (a new log after
//! each memtable flush, new tables after compactions). The guest hints
//! every file of the directory with format `leveldb` and its full path:
//! `CURRENT` with role `main` (its id is the database's id), every other
//! file (`MANIFEST-*`, `*.log`, `*.ldb`, `*.sst`) with role `part` and
//! `main_id` = the id of `CURRENT`; deleted files get `Size{exists:false}`
//! or `Forget`. At a barrier where any of them was written, the lifter
//! bundles the existing files (base names) with the directory path as the
//! database name and decodes the bundle.
//!
//! # Changes
//!
//! Reported with collection = the database path, key = the user key
//! (text, or `0x` + hex), values as text or `{"$blob": hex}`. First, in
//! order, each put and delete of the live write-ahead logs newer than the
//! previous version's last sequence number, with `before` from the state
//! the earlier ops left (a put is an insert or an update, even when it
//! rewrites the same value; a delete of an absent key changes nothing and
//! is not reported). Then any remaining difference between that state and
//! the new live state (changes that reached the tables without passing
//! through a log this lifter saw), in key order.
//!
//! Input that is not a bundle is read as one write-ahead log file
//! (collection `""`); alone, a non-blank file without a single intact log
//! record is an error rather than a torn tail. An empty or all-zero input
//! is an empty database.

use std::collections::BTreeMap;

use crate::decode::kv::{render_key, render_value};
use crate::decode::{is_blank, Change, DecodeError, DecodeLimits, Decoder, Op, SchemaHints};

use self::log::LogReader;

pub mod batch;
pub mod bundle;
pub mod coding;
pub mod db;
pub mod log;
pub mod manifest;
pub mod table;

pub use db::{file_kind, for_each_wal_op, wal_ops, Database, FileKind, WalOp};

/// A decoded input: the database name and its state.
fn open<'a>(data: &'a [u8], limits: &DecodeLimits) -> Result<(String, Database<'a>), DecodeError> {
    if is_blank(data) {
        return Ok((String::new(), Database::default()));
    }
    if bundle::is_bundle(data) {
        let b = bundle::decode(data)?;
        return Ok((b.name.to_string(), Database::open_with(&b.files, limits)?));
    }
    // Alone, a file with no intact record at all is more likely not a
    // log than a log whose first write was torn: say so.
    if LogReader::new(data).next().is_none() {
        return Err(DecodeError::new(
            "not a LevelDB write-ahead log (no intact record) nor a database bundle",
        ));
    }
    Ok((
        String::new(),
        Database::open_with(&[("000000.log", data)], limits)?,
    ))
}

/// The changes from `old` to `new` (see the module docs).
pub fn changes(old: &Database<'_>, new: &Database<'_>, collection: &str) -> Vec<Change> {
    let mut out = Vec::new();
    let mut state: BTreeMap<&[u8], &[u8]> =
        old.live.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    let change = |key: &[u8], op, before: Option<&[u8]>, after: Option<&[u8]>| Change {
        collection: collection.to_string(),
        key: render_key(key),
        op,
        before: before.map(render_value),
        after: after.map(render_value),
    };
    for op in new.wal_ops.iter().filter(|op| op.seq > old.last_sequence) {
        let key = &op.key[..];
        match op.value.as_deref() {
            Some(v) => {
                let before = state.insert(key, v);
                let kind = if before.is_some() {
                    Op::Update
                } else {
                    Op::Insert
                };
                out.push(change(key, kind, before, Some(v)));
            }
            None => {
                if let Some(before) = state.remove(key) {
                    out.push(change(key, Op::Delete, Some(before), None));
                }
            }
        }
    }
    // Whatever the logs did not explain.
    let target: BTreeMap<&[u8], &[u8]> = new.live.iter().map(|(k, v)| (&k[..], &v[..])).collect();
    for (k, v) in &state {
        match target.get(k) {
            None => out.push(change(k, Op::Delete, Some(v), None)),
            Some(t) if t != v => out.push(change(k, Op::Update, Some(v), Some(t))),
            Some(_) => {}
        }
    }
    for (k, t) in &target {
        if !state.contains_key(k) {
            out.push(change(k, Op::Insert, None, Some(t)));
        }
    }
    out
}

/// Decoder for LevelDB databases (bundles) and lone write-ahead logs.
pub struct LevelDbDecoder;

impl Decoder for LevelDbDecoder {
    fn diff_with(
        &self,
        old: &[u8],
        new: &[u8],
        _hints: &SchemaHints,
        limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError> {
        let (_, a) = open(old, limits).map_err(|e| e.context("old version"))?;
        let (name, b) = open(new, limits).map_err(|e| e.context("new version"))?;
        Ok(changes(&a, &b, &name))
    }
}
