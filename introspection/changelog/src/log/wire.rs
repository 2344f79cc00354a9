//! One record on its own, as a message: the form a replicated log backend
//! stores per record (the local log packs records into CRC-chained, zstd
//! frames instead; see the module doc of [`crate::log`]).
//!
//! ```text
//! version 2 (written): "VMMR" | u8 version (2) | u8 type code | u64le seq
//!        | u64le ts_ns | u32le logical | u64le node | body | u32le CRC32
//! version 1 (read):    "VMMR" | u8 version (1) | u8 type code | u64le seq
//!        | u64le ts_ns | body | u32le CRC32
//! ```
//! The CRC covers all bytes before it. `ts_ns`, `logical` and `node` are
//! the record's HLC stamp ([`crate::hlc`]); a version-1 message (pushed
//! before stamps existed) reads back with the legacy stamp of its `ts_ns`.
//! The body is the same bytes a frame holds for the record, so both forms
//! decode through one function and validate by the same rules.
use thiserror::Error;

use super::record::{BodyError, Record, RecordKind};
use super::{get_u32, get_u64};
use crate::hlc::{Hlc, NodeId};

const MAGIC: &[u8; 4] = b"VMMR";
const VERSION: u8 = 2;
/// Bytes before the body, by version.
const HEAD_V1: usize = 4 + 1 + 1 + 8 + 8;
const HEAD: usize = HEAD_V1 + 4 + 8;

/// Why bytes are not a record.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum WireError {
    #[error("a record message of {0} bytes is too short")]
    TooShort(usize),
    #[error("not a record message (magic or version {0} unknown)")]
    NotARecord(u8),
    #[error("record message seq {seq} fails its CRC (damaged)")]
    Crc { seq: u64 },
    #[error("record message seq {seq} has unknown type {code}")]
    UnknownType { seq: u64, code: u8 },
    #[error("record message seq {seq}: {reason}")]
    Bad { seq: u64, reason: String },
}

/// `record` as a message (version 2).
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(record.kind.type_code());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.ts_ns.to_le_bytes());
    out.extend_from_slice(&record.logical.to_le_bytes());
    out.extend_from_slice(&record.node.0.to_le_bytes());
    record.kind.encode_body(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The record a message of version 1 or 2 holds, checked (CRC, body, the
/// format's rules).
pub fn decode(bytes: &[u8]) -> Result<Record, WireError> {
    if bytes.len() < HEAD_V1 + 4 {
        return Err(WireError::TooShort(bytes.len()));
    }
    if &bytes[..4] != MAGIC || !(1..=VERSION).contains(&bytes[4]) {
        return Err(WireError::NotARecord(bytes[4]));
    }
    let head = if bytes[4] == 1 { HEAD_V1 } else { HEAD };
    if bytes.len() < head + 4 {
        return Err(WireError::TooShort(bytes.len()));
    }
    let seq = get_u64(bytes, 6);
    let (payload, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(payload) != get_u32(crc, 0) {
        return Err(WireError::Crc { seq });
    }
    let code = bytes[5];
    let kind = RecordKind::decode_body(code, &payload[head..]).map_err(|e| match e {
        BodyError::UnknownType(code) => WireError::UnknownType { seq, code },
        BodyError::Bad(reason) => WireError::Bad { seq, reason },
    })?;
    kind.validate()
        .map_err(|reason| WireError::Bad { seq, reason })?;
    let ts_ns = get_u64(bytes, 14);
    let hlc = if head == HEAD {
        Hlc::new(ts_ns, get_u32(bytes, 22), NodeId(get_u64(bytes, 26)))
    } else {
        Hlc::legacy(ts_ns)
    };
    Ok(Record::new(seq, hlc, kind))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::BarrierKind;

    fn every_kind() -> Vec<RecordKind> {
        vec![
            RecordKind::BlockWrite {
                sector: 8,
                len: 8192,
                blocks: vec![[1; 32], [2; 32]],
            },
            RecordKind::Barrier {
                kind: BarrierKind::Flush,
                disk_checksum: [7; 32],
            },
            RecordKind::Mark {
                name: "before-upgrade".into(),
            },
            RecordKind::SnapshotTaken { id: "s1".into() },
            RecordKind::Hint {
                message: vec![1, 2, 3],
            },
            RecordKind::Semantic {
                json: r#"{"op":"insert"}"#.into(),
            },
            RecordKind::Metrics {
                json: r#"{"barrier":2,"vcpu_ns":5}"#.into(),
            },
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, kind) in every_kind().into_iter().enumerate() {
            let hlc = Hlc::new(1_700_000_000_000_000_000 + i as u64, 3, NodeId(0xabc));
            let r = Record::new(100 + i as u64, hlc, kind);
            assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
    }

    /// A message as version 1 wrote it (built by hand from its layout).
    fn v1_message(seq: u64, ts_ns: u64, kind: &RecordKind) -> Vec<u8> {
        let mut out = b"VMMR".to_vec();
        out.push(1);
        out.push(kind.type_code());
        out.extend_from_slice(&seq.to_le_bytes());
        out.extend_from_slice(&ts_ns.to_le_bytes());
        kind.encode_body(&mut out);
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    #[test]
    fn version_1_messages_read_with_the_legacy_stamp() {
        for (i, kind) in every_kind().into_iter().enumerate() {
            let got = decode(&v1_message(5 + i as u64, 77 + i as u64, &kind)).unwrap();
            assert_eq!(got.seq, 5 + i as u64);
            assert_eq!(got.hlc(), Hlc::legacy(77 + i as u64));
            assert_eq!(got.kind, kind);
        }
        // Short version-2 bytes that would pass as version 1 are refused.
        let mut short = v1_message(1, 1, &RecordKind::Mark { name: "m".into() });
        short[4] = 2;
        let n = short.len();
        let crc = crc32fast::hash(&short[..n - 4]);
        short[n - 4..].copy_from_slice(&crc.to_le_bytes());
        assert!(decode(&short).is_err());
    }

    #[test]
    fn damage_and_foreign_bytes_are_refused() {
        let r = Record::new(9, Hlc::new(1, 0, NodeId(1)), every_kind().remove(0));
        let good = encode(&r);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at byte {at} accepted");
        }
        assert_eq!(decode(b"hello"), Err(WireError::TooShort(5)));
        assert!(matches!(decode(&[b'X'; 40]), Err(WireError::NotARecord(_))));
        // A write that breaks the format's rules (not whole blocks).
        let odd = Record::new(
            3,
            Hlc::legacy(1),
            RecordKind::BlockWrite {
                sector: 8,
                len: 100,
                blocks: vec![[1; 32]],
            },
        );
        assert!(matches!(
            decode(&encode(&odd)),
            Err(WireError::Bad { seq: 3, .. })
        ));
    }
}
