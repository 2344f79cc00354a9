//! One record on its own, as a message: the form a replicated log backend
//! stores per record (the local log packs records into CRC-chained, zstd
//! frames instead; see the module doc of [`crate::log`]).
//!
//! ```text
//! "VMMR" | u8 version (1) | u8 type code | u64le seq | u64le ts_ns
//!        | body (as in a frame, by type) | u32le CRC32 of all bytes before
//! ```
//! The body is the same bytes a frame holds for the record, so both forms
//! decode through one function and validate by the same rules.
use thiserror::Error;

use super::record::{BodyError, Record, RecordKind};
use super::{get_u32, get_u64};

const MAGIC: &[u8; 4] = b"VMMR";
const VERSION: u8 = 1;
/// Bytes before the body.
const HEAD: usize = 4 + 1 + 1 + 8 + 8;

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

/// `record` as a message.
pub fn encode(record: &Record) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEAD + 64);
    out.extend_from_slice(MAGIC);
    out.push(VERSION);
    out.push(record.kind.type_code());
    out.extend_from_slice(&record.seq.to_le_bytes());
    out.extend_from_slice(&record.ts_ns.to_le_bytes());
    record.kind.encode_body(&mut out);
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// The record a message holds, checked (CRC, body, the format's rules).
pub fn decode(bytes: &[u8]) -> Result<Record, WireError> {
    if bytes.len() < HEAD + 4 {
        return Err(WireError::TooShort(bytes.len()));
    }
    if &bytes[..4] != MAGIC || bytes[4] != VERSION {
        return Err(WireError::NotARecord(bytes[4]));
    }
    let seq = get_u64(bytes, 6);
    let (payload, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(payload) != get_u32(crc, 0) {
        return Err(WireError::Crc { seq });
    }
    let code = bytes[5];
    let kind = RecordKind::decode_body(code, &payload[HEAD..]).map_err(|e| match e {
        BodyError::UnknownType(code) => WireError::UnknownType { seq, code },
        BodyError::Bad(reason) => WireError::Bad { seq, reason },
    })?;
    kind.validate()
        .map_err(|reason| WireError::Bad { seq, reason })?;
    Ok(Record {
        seq,
        ts_ns: get_u64(bytes, 14),
        kind,
    })
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
        ]
    }

    #[test]
    fn every_kind_round_trips() {
        for (i, kind) in every_kind().into_iter().enumerate() {
            let r = Record {
                seq: 100 + i as u64,
                ts_ns: 1_700_000_000_000_000_000 + i as u64,
                kind,
            };
            assert_eq!(decode(&encode(&r)).unwrap(), r);
        }
    }

    #[test]
    fn damage_and_foreign_bytes_are_refused() {
        let r = Record {
            seq: 9,
            ts_ns: 1,
            kind: every_kind().remove(0),
        };
        let good = encode(&r);
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x10;
            assert!(decode(&bad).is_err(), "flip at byte {at} accepted");
        }
        assert_eq!(decode(b"hello"), Err(WireError::TooShort(5)));
        assert!(matches!(decode(&[b'X'; 40]), Err(WireError::NotARecord(_))));
        // A write that breaks the format's rules (not whole blocks).
        let odd = Record {
            seq: 3,
            ts_ns: 1,
            kind: RecordKind::BlockWrite {
                sector: 8,
                len: 100,
                blocks: vec![[1; 32]],
            },
        };
        assert!(matches!(
            decode(&encode(&odd)),
            Err(WireError::Bad { seq: 3, .. })
        ));
    }
}
