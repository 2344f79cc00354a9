//! LevelDB write batches: the payload of every write-ahead log record.
//!
//! # Format (google/leveldb db/write_batch.cc, doc/impl.md)
//!
//! ```text
//! batch   := sequence u64 LE | count u32 LE | op{count}
//! op      := 1 (put)    | key: varstring | value: varstring
//!          | 0 (delete) | key: varstring
//! varstring := length varint32 | bytes
//! ```
//!
//! The ops get consecutive sequence numbers starting at `sequence`. A batch
//! whose ops do not fill it exactly, or whose count disagrees, is damaged.

use crate::decode::DecodeError;

use super::coding::{fixed32, fixed64, length_prefixed};

/// Bytes of a batch header.
pub const BATCH_HEADER_LEN: usize = 12;
/// Op tags, as in internal keys' type byte.
pub const TAG_DELETE: u8 = 0;
pub const TAG_PUT: u8 = 1;

/// One put or delete of a batch, borrowing the record bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BatchOp<'a> {
    Put {
        seq: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    Delete {
        seq: u64,
        key: &'a [u8],
    },
}

impl<'a> BatchOp<'a> {
    pub fn seq(&self) -> u64 {
        match *self {
            BatchOp::Put { seq, .. } | BatchOp::Delete { seq, .. } => seq,
        }
    }
    pub fn key(&self) -> &'a [u8] {
        match *self {
            BatchOp::Put { key, .. } | BatchOp::Delete { key, .. } => key,
        }
    }
    /// The value of a put, `None` for a delete.
    pub fn value(&self) -> Option<&'a [u8]> {
        match *self {
            BatchOp::Put { value, .. } => Some(value),
            BatchOp::Delete { .. } => None,
        }
    }
}

/// Calls `f` for each op of the batch in `data`, in order. `offset` (of the
/// log record) only names the place in errors. Returns the op count.
pub fn for_each_op<'a>(
    data: &'a [u8],
    offset: usize,
    mut f: impl FnMut(BatchOp<'a>),
) -> Result<u32, DecodeError> {
    let err = |why: &str| {
        Err(DecodeError::new(format!(
            "leveldb write batch at log offset {offset}: {why}"
        )))
    };
    let (Some(seq0), Some(count)) = (fixed64(data, 0), fixed32(data, 8)) else {
        return err("shorter than its 12-byte header");
    };
    let mut at = BATCH_HEADER_LEN;
    let mut n = 0u32;
    while at < data.len() {
        if n == count {
            return err("more ops than its count");
        }
        let Some(seq) = seq0.checked_add(u64::from(n)) else {
            return err("sequence number overflows");
        };
        let tag = data[at];
        at += 1;
        let Some(key) = length_prefixed(data, &mut at) else {
            return err("truncated key");
        };
        match tag {
            TAG_PUT => {
                let Some(value) = length_prefixed(data, &mut at) else {
                    return err("truncated value");
                };
                f(BatchOp::Put { seq, key, value });
            }
            TAG_DELETE => f(BatchOp::Delete { seq, key }),
            _ => return err("unknown op tag"),
        }
        n += 1;
    }
    if n != count {
        return err("fewer ops than its count");
    }
    Ok(count)
}

/// Encodes a batch (writer side, for tests, the bench and guest workloads).
pub fn encode(seq: u64, ops: &[(&[u8], Option<&[u8]>)], out: &mut Vec<u8>) {
    use super::coding::put_varint;
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for (key, value) in ops {
        out.push(if value.is_some() { TAG_PUT } else { TAG_DELETE });
        put_varint(out, key.len() as u64);
        out.extend_from_slice(key);
        if let Some(v) = value {
            put_varint(out, v.len() as u64);
            out.extend_from_slice(v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_damage() {
        let mut b = Vec::new();
        encode(41, &[(b"k", Some(b"v")), (b"gone", None)], &mut b);
        let mut ops = Vec::new();
        assert_eq!(for_each_op(&b, 0, |op| ops.push(op)).unwrap(), 2);
        assert_eq!(
            ops,
            [
                BatchOp::Put {
                    seq: 41,
                    key: b"k",
                    value: b"v"
                },
                BatchOp::Delete {
                    seq: 42,
                    key: b"gone"
                }
            ]
        );
        for cut in 0..b.len() {
            assert!(for_each_op(&b[..cut], 0, |_| ()).is_err(), "cut {cut}");
        }
        let mut wrong = b.clone();
        wrong[8] = 3;
        assert!(for_each_op(&wrong, 9, |_| ())
            .unwrap_err()
            .reason
            .contains("offset 9"));
    }
}
