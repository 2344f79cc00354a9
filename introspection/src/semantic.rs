//! Semantic change events: what changed inside a guest application's file,
//! at the level of rows and keys rather than blocks.
//!
//! The shape follows the Debezium change-event envelope (`before`, `after`,
//! `op`, source position): a [`SemanticChange`] carries the VM, the change-log
//! position (`seq`) and time of the consistency point it was lifted at, the
//! file (as named by the guest's hint), the decoder [`Format`], the
//! collection (SQLite table, JSON record path, `""` for key/value files,
//! the database directory for LevelDB), the rendered key, the [`Op`] and the row/value before and after.
//!
//! Decoders only know about bytes, so they return [`Change`]s; the caller
//! (who knows the VM, the log position and the file) lifts them with
//! [`SemanticChange::from_change`]. When a file cannot be decoded the caller
//! records a [`DecodeErrorEvent`] instead and goes on.
//!
//! JSON encoding (`serde`): `format` is `"sqlite" | "json" | "kv" | "leveldb"`, `op` is
//! `"insert" | "update" | "delete"`, `before`/`after` are `null` when absent
//! (insert has no `before`, delete has no `after`). `provenance` (how the
//! change was derived, [`crate::provenance`]) is absent in changes
//! recorded before it and read as `None`.

use std::fmt;
use std::str::FromStr;

use changelog::Hlc;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Which decoder understands a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// An SQLite database (rollback-journal or WAL mode).
    Sqlite,
    /// A JSON document, rewritten in place.
    Json,
    /// The `VMMKV001` append-only key/value log (see [`crate::decode::kv`]).
    Kv,
    /// A LevelDB database (see [`crate::decode::leveldb`]).
    #[serde(rename = "leveldb")]
    LevelDb,
}

impl Format {
    /// The lowercase name used on the command line and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Sqlite => "sqlite",
            Format::Json => "json",
            Format::Kv => "kv",
            Format::LevelDb => "leveldb",
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Format {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "sqlite" => Ok(Format::Sqlite),
            "json" => Ok(Format::Json),
            "kv" => Ok(Format::Kv),
            "leveldb" => Ok(Format::LevelDb),
            other => Err(format!(
                "unknown format {other:?} (expected sqlite, json, kv or leveldb)"
            )),
        }
    }
}

/// What happened to one row / record / key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Insert,
    Update,
    Delete,
}

impl Op {
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Insert => "insert",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change as a decoder reports it, without the source position.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Change {
    /// Table name, JSON record path (or parent pointer), `""` for kv, the
    /// database directory for LevelDB.
    pub collection: String,
    /// Rendered key: rowid or key columns, JSON record key or pointer, kv key.
    pub key: String,
    pub op: Op,
    /// The row before (absent for inserts).
    pub before: Option<Value>,
    /// The row after (absent for deletes).
    pub after: Option<Value>,
}

/// A change lifted at a consistency point: a [`Change`] plus where and when.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SemanticChange {
    pub vm: String,
    /// Change-log sequence number of the barrier the change was lifted at.
    pub seq: u64,
    /// That barrier's time (the physical part of `hlc`).
    pub ts_ns: u64,
    /// That barrier's hybrid logical clock stamp: the order of changes
    /// across VMs and hosts (`changelog::hlc`). Absent in changes recorded
    /// before stamps; queries fill it in from `ts_ns` (legacy node).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    /// The file as named by the guest's hint.
    pub file: String,
    pub format: Format,
    pub collection: String,
    pub key: String,
    pub op: Op,
    pub before: Option<Value>,
    pub after: Option<Value>,
    /// Where the change came from when it is not the guest's own write
    /// during recording; absent (and not serialized) for those.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// How it was derived (`crate::provenance`); absent in changes
    /// recorded before provenance.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Box<crate::provenance::Provenance>>,
}

/// The origin of a change that the recorder did not see happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The file differed, when a recorded run first decoded it, from its
    /// state at the end of the previous recorded run: the disk was changed
    /// between runs. The change is that difference, reported once.
    OutsideRecording,
}

impl SemanticChange {
    /// Attach the source position to a decoder's [`Change`].
    pub fn from_change(
        vm: impl Into<String>,
        seq: u64,
        ts_ns: u64,
        file: impl Into<String>,
        format: Format,
        change: Change,
    ) -> Self {
        SemanticChange {
            vm: vm.into(),
            seq,
            ts_ns,
            hlc: None,
            file: file.into(),
            format,
            collection: change.collection,
            key: change.key,
            op: change.op,
            before: change.before,
            after: change.after,
            source: None,
            provenance: None,
        }
    }

    /// The decoder-level part of this event.
    pub fn change(&self) -> Change {
        Change {
            collection: self.collection.clone(),
            key: self.key.clone(),
            op: self.op,
            before: self.before.clone(),
            after: self.after.clone(),
        }
    }
}

/// `vm1 seq 4711 app.db customers[123] update: {"name":"Alice"} -> {"name":"Bob"}`
///
/// Updates of two JSON objects show only the members that differ; inserts
/// show the new value, deletes the old one.
impl fmt::Display for SemanticChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} seq {} {} ", self.vm, self.seq, self.file)?;
        if self.collection.is_empty() {
            write!(f, "[{}]", self.key)?;
        } else {
            write!(f, "{}[{}]", self.collection, self.key)?;
        }
        write!(f, " {}: ", self.op)?;
        let null = Value::Null;
        match self.op {
            Op::Insert => write!(f, "{}", self.after.as_ref().unwrap_or(&null))?,
            Op::Delete => write!(f, "{}", self.before.as_ref().unwrap_or(&null))?,
            Op::Update => {
                let b = self.before.as_ref().unwrap_or(&null);
                let a = self.after.as_ref().unwrap_or(&null);
                let (b, a) = changed_members(b, a);
                write!(f, "{b} -> {a}")?;
            }
        }
        if self.source == Some(Source::OutsideRecording) {
            write!(f, " (changed outside recording)")?;
        }
        Ok(())
    }
}

/// For two objects: the members whose values differ (a member missing on one
/// side is left out of that side). Anything else is returned unchanged.
pub fn changed_members(before: &Value, after: &Value) -> (Value, Value) {
    match (before, after) {
        (Value::Object(b), Value::Object(a)) => {
            let mut ob = serde_json::Map::new();
            let mut oa = serde_json::Map::new();
            for (k, bv) in b {
                if a.get(k) != Some(bv) {
                    ob.insert(k.clone(), bv.clone());
                }
            }
            for (k, av) in a {
                if b.get(k) != Some(av) {
                    oa.insert(k.clone(), av.clone());
                }
            }
            (Value::Object(ob), Value::Object(oa))
        }
        _ => (before.clone(), after.clone()),
    }
}

/// Recorded instead of changes when a hinted file cannot be decoded at a
/// consistency point (garbage, wrong format, hostile content).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DecodeErrorEvent {
    pub vm: String,
    pub seq: u64,
    pub ts_ns: u64,
    /// As [`SemanticChange::hlc`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hlc: Option<Hlc>,
    pub file: String,
    pub format: Format,
    pub reason: String,
}

impl fmt::Display for DecodeErrorEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} seq {} {} ({}) decode error: {}",
            self.vm, self.seq, self.file, self.format, self.reason
        )
    }
}

/// One line describing a hint-proto wire message (for `vmm log show`).
pub fn describe_hint(message: &[u8]) -> String {
    match hint_proto::decode(message) {
        Ok((hint, _)) => match hint {
            hint_proto::Hint::File {
                file_id,
                main_id,
                format,
                role,
                path,
            } => {
                format!("file {file_id} {path} ({format:?}, {role:?} of {main_id})")
            }
            hint_proto::Hint::Extents { file_id, extents } => {
                let bytes: u64 = extents.iter().map(|e| e.len).sum();
                format!("file {file_id}: {} extents, {bytes} bytes", extents.len())
            }
            hint_proto::Hint::Size {
                file_id,
                size,
                exists,
            } => {
                format!(
                    "file {file_id}: size {size}{}",
                    if exists { "" } else { " (absent)" }
                )
            }
            hint_proto::Hint::Schema { file_id, text } => format!("file {file_id}: schema {text}"),
            hint_proto::Hint::Forget { file_id } => format!("file {file_id}: forgotten"),
        },
        Err(e) => format!("undecodable hint ({e})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn display_update_shows_changed_members() {
        let c = SemanticChange::from_change(
            "vm1",
            4711,
            5,
            "app.db",
            Format::Sqlite,
            Change {
                collection: "customers".into(),
                key: "123".into(),
                op: Op::Update,
                before: Some(json!({"id": 123, "name": "Alice"})),
                after: Some(json!({"id": 123, "name": "Bob"})),
            },
        );
        assert_eq!(
            c.to_string(),
            r#"vm1 seq 4711 app.db customers[123] update: {"name":"Alice"} -> {"name":"Bob"}"#
        );
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.contains(r#""op":"update""#) && s.contains(r#""format":"sqlite""#));
        let back: SemanticChange = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn display_kv_insert_and_format_parse() {
        let c = SemanticChange::from_change(
            "vm2",
            1,
            0,
            "kv.log",
            Format::Kv,
            Change {
                collection: String::new(),
                key: "k".into(),
                op: Op::Insert,
                before: None,
                after: Some(json!("v")),
            },
        );
        assert_eq!(c.to_string(), r#"vm2 seq 1 kv.log [k] insert: "v""#);
        assert_eq!("JSON".parse::<Format>(), Ok(Format::Json));
        assert!("xml".parse::<Format>().is_err());
    }
}
