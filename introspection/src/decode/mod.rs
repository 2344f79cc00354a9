//! Semantic decoders: two versions of an application file's bytes (before
//! and after a consistency point) in, row/key-level [`Change`]s out.
//!
//! - [`sqlite`]: SQLite databases (rollback journal: decode the main file;
//!   WAL: [`sqlite::apply_wal`] first), diffed per table by rowid or key
//!   columns, plus schema changes in collection `sqlite_schema`.
//! - [`json`]: JSON documents (trailing NUL padding ignored), per record
//!   when [`SchemaHints::json_record_path`] is given, else per leaf.
//! - [`kv`]: the `VMMKV001` append-only key/value log (format, encoder and
//!   decoder in that module).
//! - [`leveldb`]: LevelDB databases (write-ahead logs, MANIFEST, tables),
//!   a directory passed as a bundle of files, or a lone write-ahead log.
//!
//! Inputs come from a guest's disk and are untrusted: every decoder bounds
//! every length, offset and pointer it follows, detects cycles, never panics
//! and caps the state it decodes with a fixed budget per diff
//! ([`DecodeLimits::budget_mib`], default [`DEFAULT_DECODE_BUDGET_MIB`] MiB,
//! raised with `--decode-budget-mib`): a value costs
//! [`Budget::VALUE_COST`] bytes plus its length, about what it occupies in
//! memory. A fixed budget, rather than one relative to the input size,
//! never rejects a valid file because it decodes to much more than it
//! stores (a wide, sparse table with long column names; a deep JSON
//! document); it still stops a hostile file from expanding without bound.
//! Exceeding it is a [`DecodeError`] naming the limit and the flag; so is
//! garbage. An empty or all-zero input is read as "no file
//! yet" (an empty database, no document, an empty log), because a file that
//! lives in a fixed disk extent reads as zeros before it is first written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use crate::semantic::{Change, Format, Op};

pub mod fuzz_entry;
pub mod json;
pub mod kv;
pub mod leveldb;
pub mod registry;
pub mod sqlite;

/// Why a file version could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct DecodeError {
    pub reason: String,
}

impl DecodeError {
    pub fn new(reason: impl Into<String>) -> Self {
        DecodeError {
            reason: reason.into(),
        }
    }

    /// The same error, its reason prefixed with `what: `.
    pub fn context(self, what: &str) -> Self {
        DecodeError {
            reason: format!("{what}: {}", self.reason),
        }
    }
}

/// Shorthand for an `Err(DecodeError)`.
pub(crate) fn bad<T>(reason: impl Into<String>) -> Result<T, DecodeError> {
    Err(DecodeError::new(reason))
}

/// Default [`DecodeLimits::budget_mib`].
pub const DEFAULT_DECODE_BUDGET_MIB: u64 = 256;

/// Resource limits of one diff (both versions of a file).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeLimits {
    /// MiB of decoded state (rows, values, changes) a diff may hold; the
    /// CLI flag `--decode-budget-mib` sets it.
    pub budget_mib: u64,
}

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            budget_mib: DEFAULT_DECODE_BUDGET_MIB,
        }
    }
}

/// What the guest told us about the structure of a file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SchemaHints {
    /// SQLite: table name -> the columns that identify a row. Without an
    /// entry a rowid table is keyed by rowid and a `WITHOUT ROWID` table by
    /// its PRIMARY KEY columns.
    #[serde(default)]
    pub key_columns: BTreeMap<String, Vec<String>>,
    /// JSON: pointer (RFC 6901, e.g. `/customers`) of the record set, an
    /// object (records keyed by member name) or an array of objects (keyed
    /// by [`Self::json_record_key`]).
    #[serde(default)]
    pub json_record_path: Option<String>,
    /// JSON: the member of each array record that holds its key (default
    /// `"id"`).
    #[serde(default)]
    pub json_record_key: Option<String>,
}

/// A decoder of one file format.
pub trait Decoder {
    /// The changes between two versions of a file, within `limits`.
    fn diff_with(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
        limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError>;

    /// [`Self::diff_with`] the default limits.
    fn diff(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
    ) -> Result<Vec<Change>, DecodeError> {
        self.diff_with(old, new, hints, &DecodeLimits::default())
    }
}

/// The decoder for `format`.
pub fn decoder_for(format: Format) -> &'static dyn Decoder {
    match format {
        Format::Sqlite => &sqlite::SqliteDecoder,
        Format::Json => &json::JsonDecoder,
        Format::Kv => &kv::KvDecoder,
        Format::LevelDb => &leveldb::LevelDbDecoder,
    }
}

/// The changes between two versions of a file of the given format.
pub fn diff(
    format: Format,
    old: &[u8],
    new: &[u8],
    hints: &SchemaHints,
) -> Result<Vec<Change>, DecodeError> {
    decoder_for(format).diff(old, new, hints)
}

/// [`diff`] within `limits`.
pub fn diff_with(
    format: Format,
    old: &[u8],
    new: &[u8],
    hints: &SchemaHints,
    limits: &DecodeLimits,
) -> Result<Vec<Change>, DecodeError> {
    decoder_for(format).diff_with(old, new, hints, limits)
}

/// True when the input is empty or all zero bytes ("not written yet").
pub(crate) fn is_blank(data: &[u8]) -> bool {
    data.iter().all(|&b| b == 0)
}

/// The decoded state a diff may still allocate, so that hostile inputs
/// cannot make a decoder allocate without bound. Each decoded value costs
/// [`Budget::VALUE_COST`] plus its byte length.
#[derive(Debug)]
pub(crate) struct Budget {
    left: u64,
    limit_mib: u64,
}

impl Budget {
    /// Bytes of bookkeeping per decoded value (a JSON value, its map entry
    /// and allocation headers), so that the budget tracks memory.
    pub(crate) const VALUE_COST: u64 = 96;

    pub(crate) fn new(limits: &DecodeLimits) -> Self {
        Budget {
            left: limits.budget_mib.saturating_mul(1 << 20),
            limit_mib: limits.budget_mib,
        }
    }

    pub(crate) fn charge(&mut self, units: u64) -> Result<(), DecodeError> {
        match self.left.checked_sub(units) {
            Some(l) => {
                self.left = l;
                Ok(())
            }
            None => bad(format!(
                "decoded state exceeds the decode budget of {} MiB (raise it with \
                 --decode-budget-mib)",
                self.limit_mib
            )),
        }
    }

    pub(crate) fn charge_value(&mut self, bytes: usize) -> Result<(), DecodeError> {
        self.charge(Self::VALUE_COST.saturating_add(bytes as u64))
    }

    /// What is left, to [`Self::restore`] once transient state is freed.
    pub(crate) fn mark(&self) -> u64 {
        self.left
    }

    pub(crate) fn restore(&mut self, mark: u64) {
        self.left = self.left.max(mark);
    }
}

/// Lowercase hex of a byte string.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

/// The JSON form of a blob: `{"$blob": "<hex>"}`.
pub fn blob_value(bytes: &[u8]) -> serde_json::Value {
    let mut m = serde_json::Map::new();
    m.insert("$blob".into(), serde_json::Value::String(to_hex(bytes)));
    serde_json::Value::Object(m)
}

/// Sort changes into the canonical order (collection, key, op).
pub fn sort_changes(changes: &mut [Change]) {
    changes.sort_by(|a, b| {
        (a.collection.as_str(), a.key.as_str(), a.op).cmp(&(
            b.collection.as_str(),
            b.key.as_str(),
            b.op,
        ))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_budget() {
        assert_eq!(to_hex(&[0, 0xab, 0x10]), "00ab10");
        let mut b = Budget::new(&DecodeLimits { budget_mib: 1 });
        let m = b.mark();
        assert!(b.charge((1 << 20) - Budget::VALUE_COST - 8).is_ok());
        assert!(b.charge_value(8).is_ok());
        let e = b.charge(1).unwrap_err().reason;
        assert!(
            e.contains("budget of 1 MiB") && e.contains("--decode-budget-mib"),
            "{e}"
        );
        b.restore(m);
        assert!(b.charge(1).is_ok());
        assert!(is_blank(&[]) && is_blank(&[0, 0]) && !is_blank(&[0, 1]));
    }
}
