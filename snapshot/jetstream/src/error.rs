//! The crate's one error type: every failure a caller must tell apart has
//! its own variant, and each message names the input (URL, stream, bucket,
//! VM, object id) and what to do.

use std::time::Duration;

/// The prefix of the description of every stream and bucket this crate
/// creates. A stream or bucket of the same name without it belongs to
/// someone else and is refused, never written to. (Stream `metadata` would be
/// the natural place, but it is a 2.10 feature; `description` exists on 2.9.)
pub const MARKER: &str = "vmm-jetstream/v1";

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot reach the NATS cluster at {url} within {}s: {reason}; check that nats-server runs there with JetStream enabled", timeout.as_secs_f64())]
    Unreachable {
        url: String,
        timeout: Duration,
        reason: String,
    },
    #[error("{kind} `{name}` exists but was not created by vmm (its description {found:?} lacks the marker `{MARKER}`); choose another name or remove it yourself")]
    NotOurs {
        kind: &'static str,
        name: String,
        found: Option<String>,
    },
    #[error("no record set `{name}` at {url} (no stream `vmm-{name}`); push one there with `vmm log push DIR --to nats://HOST:PORT/{name}`")]
    NoRecordSet { url: String, name: String },
    #[error("record set `{name}` keeps {have} copies of each record and block, not the {asked} asked for: pass --replicas {have}, or use another record set name")]
    ReplicasDiffer {
        name: String,
        have: usize,
        asked: usize,
    },
    #[error("invalid {what} `{name}`: use only ASCII letters, digits, `-` and `_`")]
    BadName { what: &'static str, name: String },
    #[error("invalid {what} `{key}`: use only ASCII letters, digits, `-`, `_`, `=` and `.` (not first, last or twice in a row)")]
    BadKey { what: &'static str, key: String },
    #[error("object {id} is missing from bucket `{bucket}`")]
    Missing { bucket: String, id: String },
    #[error("object {id} in bucket `{bucket}` is damaged: its {len} bytes hash to {actual}")]
    Damaged {
        bucket: String,
        id: String,
        len: usize,
        actual: String,
    },
    #[error("object {id} is {len} bytes, above the {max}-byte value limit of bucket `{bucket}`")]
    TooLarge {
        bucket: String,
        id: String,
        len: usize,
        max: usize,
    },
    #[error("refusing to store object {id}: its bytes hash to {actual}")]
    WrongId { id: String, actual: String },
    #[error("another writer appended to VM `{vm}` in stream `{stream}` (this writer expected its last record at stream sequence {expected}); stop the other writer, then reopen the stream")]
    Conflict {
        stream: String,
        vm: String,
        expected: u64,
    },
    #[error("a record of VM `{vm}` is {len} bytes, above the {max}-byte limit of one message in stream `{stream}`")]
    RecordTooLarge {
        stream: String,
        vm: String,
        len: usize,
        max: usize,
    },
    #[error(
        "manifest `{id}` already exists in bucket `{bucket}`; manifests are never overwritten"
    )]
    ManifestExists { bucket: String, id: String },
    #[error("message at stream sequence {seq} of stream `{stream}` is malformed: {what}")]
    Malformed {
        stream: String,
        seq: u64,
        what: String,
    },
    #[error("JetStream {op} on `{target}` failed: {source}")]
    JetStream {
        op: &'static str,
        target: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Wraps an async-nats error with what was being done to what.
    pub(crate) fn js(
        op: &'static str,
        target: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Error {
        Error::JetStream {
            op,
            target: target.into(),
            source: Box::new(source),
        }
    }
}

/// Names become parts of subjects and stream names: keep them to characters
/// that are valid in both, so no name can smuggle a `.` or wildcard.
pub(crate) fn check_name(what: &'static str, name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Error::BadName {
            what,
            name: name.to_string(),
        })
    }
}

/// A key in a KV bucket (a manifest id: `20261130T050129.235583073Z-e078eb92`):
/// what KV keys allow, `.` included but not at either end or twice in a
/// row (it separates subject tokens).
pub(crate) fn check_key(what: &'static str, key: &str) -> Result<()> {
    let ok = !key.is_empty()
        && key.len() <= 128
        && !key.starts_with('.')
        && !key.ends_with('.')
        && !key.contains("..")
        && key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='));
    if ok {
        Ok(())
    } else {
        Err(Error::BadKey {
            what,
            key: key.to_string(),
        })
    }
}
