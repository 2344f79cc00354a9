//! Record kinds and their bodies (the bytes after a record's `ts_ns`).

use serde::{Deserialize, Serialize};

use super::{get_u32, get_u64};
use crate::hlc::{Hlc, NodeId};

/// Bytes in a disk block: the unit of writes, hashes and the content store.
pub const BLOCK_SIZE: u32 = store::BLOCK_SIZE as u32;
/// Bytes in a virtio-blk sector (the unit of `BlockWrite::sector`).
pub const SECTOR_SIZE: u64 = 512;
/// Longest mark name or snapshot id, in bytes.
pub const MAX_NAME_LEN: usize = 256;
/// Longest single `BlockWrite` (its hashes then take 2 MiB).
pub const MAX_WRITE_LEN: u32 = 256 << 20;

const SECTORS_PER_BLOCK: u64 = BLOCK_SIZE as u64 / SECTOR_SIZE;

/// Record type codes, as stored in each record's `type` byte.
pub mod record_type {
    pub const BLOCK_WRITE: u8 = 1;
    pub const BARRIER: u8 = 2;
    pub const MARK: u8 = 3;
    pub const SNAPSHOT_TAKEN: u8 = 4;
    /// A guest hint, as its wire message (hint-proto).
    pub const HINT: u8 = 5;
    /// A semantic change lifted from the disk at a barrier, as JSON.
    pub const SEMANTIC_CHANGE: u8 = 6;
    /// What the interval up to the barrier before it cost
    /// ([`crate::metrics::StepMetrics`] as JSON). Builds from before this
    /// code existed refuse a log holding one with
    /// [`crate::LogError::UnknownRecordType`] ("read it with a newer build").
    pub const METRICS: u8 = 7;

    /// A code this build decodes.
    pub(crate) fn is_known(code: u8) -> bool {
        (BLOCK_WRITE..=METRICS).contains(&code)
    }
}

/// What a barrier request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BarrierKind {
    Flush,
    Fua,
}

/// What happened, without its seq and time.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum RecordKind {
    /// A completed guest write of `len` bytes at 512-byte `sector`, whole
    /// 4 KiB blocks only (`sector % 8 == 0`, `len % 4096 == 0`, `len > 0`).
    /// `blocks[i]` is the BLAKE3 hash of the i-th 4 KiB block written; the
    /// data lives in the content store under that hash.
    BlockWrite {
        sector: u64,
        len: u32,
        #[serde(with = "store::hex::hashes")]
        blocks: Vec<[u8; 32]>,
    },
    /// A flush or FUA completed; `disk_checksum` is the disk's state
    /// checksum ([`crate::DiskState::checksum`]) after every write before it.
    Barrier {
        kind: BarrierKind,
        #[serde(with = "store::hex::hash")]
        disk_checksum: [u8; 32],
    },
    /// A named point to replay to (1..=256 bytes of UTF-8).
    Mark { name: String },
    /// A snapshot was taken here (its id, 1..=256 bytes of UTF-8).
    SnapshotTaken { id: String },
    /// A hint the guest sent, kept verbatim (one hint-proto wire message,
    /// at most `MAX_HINT_LEN` bytes); hex in JSON.
    Hint {
        #[serde(with = "store::hex::bytes")]
        message: Vec<u8>,
    },
    /// A semantic change (`crate::semantic::SemanticChange` or a decode-error
    /// event) as JSON text, at most `MAX_SEMANTIC_LEN` bytes. It follows
    /// the barrier whose disk state it was lifted from.
    Semantic { json: String },
    /// Resource metrics of the interval that ended at the barrier just
    /// before it ([`crate::metrics::StepMetrics`] as JSON text, at most
    /// `MAX_METRICS_LEN` bytes). Replays, queries and checks skip it.
    Metrics { json: String },
}

/// Longest hint message kept in a record.
pub const MAX_HINT_LEN: usize = 64 << 10;
/// Longest semantic change record.
pub const MAX_SEMANTIC_LEN: usize = 4 << 20;
/// Longest metrics record.
pub const MAX_METRICS_LEN: usize = 64 << 10;

/// One record as read back.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    /// Host `CLOCK_REALTIME` in ns when appended; never decreases along the
    /// log. The physical part of the record's HLC stamp ([`Record::hlc`]).
    pub ts_ns: u64,
    /// The HLC stamp's logical counter (0 in logs written before HLCs).
    #[serde(default)]
    pub logical: u32,
    /// The host that stamped the record ([`NodeId::LEGACY`] in logs
    /// written before HLCs).
    #[serde(default)]
    pub node: NodeId,
    #[serde(flatten)]
    pub kind: RecordKind,
}

impl Record {
    /// A record stamped `hlc` (its `ts_ns` is the stamp's physical part).
    pub fn new(seq: u64, hlc: Hlc, kind: RecordKind) -> Record {
        Record {
            seq,
            ts_ns: hlc.physical_ns,
            logical: hlc.logical,
            node: hlc.node,
            kind,
        }
    }

    /// The record's hybrid logical clock stamp: the order in which records
    /// of several logs (hosts) merge. See [`crate::hlc`].
    pub fn hlc(&self) -> Hlc {
        Hlc::new(self.ts_ns, self.logical, self.node)
    }
}

/// Why a body did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BodyError {
    UnknownType(u8),
    Bad(String),
}

impl RecordKind {
    /// The type code stored for this kind.
    pub fn type_code(&self) -> u8 {
        match self {
            RecordKind::BlockWrite { .. } => record_type::BLOCK_WRITE,
            RecordKind::Barrier { .. } => record_type::BARRIER,
            RecordKind::Mark { .. } => record_type::MARK,
            RecordKind::SnapshotTaken { .. } => record_type::SNAPSHOT_TAKEN,
            RecordKind::Hint { .. } => record_type::HINT,
            RecordKind::Semantic { .. } => record_type::SEMANTIC_CHANGE,
            RecordKind::Metrics { .. } => record_type::METRICS,
        }
    }

    /// Checks the format's rules for this record.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            RecordKind::BlockWrite {
                sector,
                len,
                blocks,
            } => check_write(*sector, *len, blocks.len()),
            RecordKind::Barrier { .. } => Ok(()),
            RecordKind::Mark { name } => check_name("mark name", name),
            RecordKind::SnapshotTaken { id } => check_name("snapshot id", id),
            RecordKind::Hint { message } => check_len("hint", message.len(), MAX_HINT_LEN),
            RecordKind::Semantic { json } => {
                check_len("semantic change", json.len(), MAX_SEMANTIC_LEN)
            }
            RecordKind::Metrics { json } => check_len("metrics", json.len(), MAX_METRICS_LEN),
        }
    }

    /// Appends the body (everything after `ts_ns`) to `out`.
    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        match self {
            RecordKind::BlockWrite {
                sector,
                len,
                blocks,
            } => {
                out.extend_from_slice(&sector.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
                for b in blocks {
                    out.extend_from_slice(b);
                }
            }
            RecordKind::Barrier {
                kind,
                disk_checksum,
            } => {
                out.push(match kind {
                    BarrierKind::Flush => 0,
                    BarrierKind::Fua => 1,
                });
                out.extend_from_slice(disk_checksum);
            }
            RecordKind::Mark { name } => out.extend_from_slice(name.as_bytes()),
            RecordKind::SnapshotTaken { id } => out.extend_from_slice(id.as_bytes()),
            RecordKind::Hint { message } => out.extend_from_slice(message),
            RecordKind::Semantic { json } | RecordKind::Metrics { json } => {
                out.extend_from_slice(json.as_bytes())
            }
        }
    }

    /// Decodes a body of type `code`.
    pub(crate) fn decode_body(code: u8, body: &[u8]) -> Result<RecordKind, BodyError> {
        let kind = match code {
            record_type::BLOCK_WRITE => {
                if body.len() < 12 {
                    return Err(BodyError::Bad(
                        "block-write body shorter than 12 bytes".into(),
                    ));
                }
                let sector = get_u64(body, 0);
                let len = get_u32(body, 8);
                let hashes = &body[12..];
                if hashes.len() % 32 != 0 {
                    return Err(BodyError::Bad(format!(
                        "block-write hashes take {} bytes, not a multiple of 32",
                        hashes.len()
                    )));
                }
                let blocks = hashes
                    .chunks_exact(32)
                    .map(|c| c.try_into().expect("32 bytes"))
                    .collect();
                RecordKind::BlockWrite {
                    sector,
                    len,
                    blocks,
                }
            }
            record_type::BARRIER => {
                if body.len() != 33 {
                    return Err(BodyError::Bad(format!(
                        "barrier body is {} bytes, not 33",
                        body.len()
                    )));
                }
                let kind = match body[0] {
                    0 => BarrierKind::Flush,
                    1 => BarrierKind::Fua,
                    k => return Err(BodyError::Bad(format!("barrier kind {k} is not 0 or 1"))),
                };
                RecordKind::Barrier {
                    kind,
                    disk_checksum: body[1..].try_into().expect("32 bytes"),
                }
            }
            record_type::MARK => RecordKind::Mark {
                name: utf8("mark name", body)?,
            },
            record_type::SNAPSHOT_TAKEN => RecordKind::SnapshotTaken {
                id: utf8("snapshot id", body)?,
            },
            record_type::HINT => RecordKind::Hint {
                message: body.to_vec(),
            },
            record_type::SEMANTIC_CHANGE => RecordKind::Semantic {
                json: utf8("semantic change", body)?,
            },
            record_type::METRICS => RecordKind::Metrics {
                json: utf8("metrics", body)?,
            },
            other => return Err(BodyError::UnknownType(other)),
        };
        kind.validate().map_err(BodyError::Bad)?;
        Ok(kind)
    }
}

fn check_write(sector: u64, len: u32, n_blocks: usize) -> Result<(), String> {
    if len == 0 || len % BLOCK_SIZE != 0 || len > MAX_WRITE_LEN {
        return Err(format!(
            "block write of {len} bytes: must be a positive multiple of {BLOCK_SIZE}, \
             at most {MAX_WRITE_LEN}"
        ));
    }
    if sector % SECTORS_PER_BLOCK != 0 {
        return Err(format!(
            "block write at sector {sector}: must be 4 KiB aligned (a multiple of {SECTORS_PER_BLOCK})"
        ));
    }
    if n_blocks as u64 != u64::from(len / BLOCK_SIZE) {
        return Err(format!(
            "block write of {len} bytes carries {n_blocks} block hashes, expected {}",
            len / BLOCK_SIZE
        ));
    }
    Ok(())
}

fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!(
            "{what} is {} bytes: must be 1..={MAX_NAME_LEN}",
            name.len()
        ));
    }
    Ok(())
}

fn check_len(what: &str, len: usize, max: usize) -> Result<(), String> {
    if len == 0 || len > max {
        return Err(format!("{what} record is {len} bytes: must be 1..={max}"));
    }
    Ok(())
}

fn utf8(what: &str, body: &[u8]) -> Result<String, BodyError> {
    String::from_utf8(body.to_vec()).map_err(|_| BodyError::Bad(format!("{what} is not UTF-8")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(kind: RecordKind) {
        let mut body = Vec::new();
        kind.encode_body(&mut body);
        assert_eq!(RecordKind::decode_body(kind.type_code(), &body), Ok(kind));
    }

    #[test]
    fn bodies_roundtrip() {
        roundtrip(RecordKind::BlockWrite {
            sector: 16,
            len: 8192,
            blocks: vec![[1; 32], [2; 32]],
        });
        roundtrip(RecordKind::Barrier {
            kind: BarrierKind::Fua,
            disk_checksum: [9; 32],
        });
        roundtrip(RecordKind::Mark { name: "m".into() });
        roundtrip(RecordKind::SnapshotTaken { id: "s-1".into() });
        roundtrip(RecordKind::Hint {
            message: b"VH\x01\x05".to_vec(),
        });
        roundtrip(RecordKind::Semantic {
            json: "{\"op\":\"insert\"}".into(),
        });
        roundtrip(RecordKind::Metrics {
            json: "{\"barrier\":3}".into(),
        });
    }

    #[test]
    fn validation_rejects_misaligned_and_mismatched_writes() {
        let w = |sector, len, n| RecordKind::BlockWrite {
            sector,
            len,
            blocks: vec![[0; 32]; n],
        };
        assert!(w(8, 4096, 1).validate().is_ok());
        assert!(w(4, 4096, 1).validate().is_err());
        assert!(w(8, 512, 1).validate().is_err());
        assert!(w(8, 0, 0).validate().is_err());
        assert!(w(8, 8192, 1).validate().is_err());
        let long = RecordKind::Mark {
            name: "x".repeat(MAX_NAME_LEN + 1),
        };
        assert!(long.validate().is_err());
        assert!(RecordKind::Mark { name: "".into() }.validate().is_err());
    }

    #[test]
    fn reserved_and_unknown_codes_do_not_decode() {
        for code in [0, 8, 200] {
            assert_eq!(
                RecordKind::decode_body(code, b"x"),
                Err(BodyError::UnknownType(code))
            );
        }
    }

    #[test]
    fn json_is_flat_and_hex() {
        let r = Record::new(
            3,
            Hlc::new(7, 2, NodeId(0x1234)),
            RecordKind::Barrier {
                kind: BarrierKind::Flush,
                disk_checksum: [0xab; 32],
            },
        );
        let s = serde_json::to_string(&r).unwrap();
        assert!(s.contains("\"node\":\"0000000000001234\""), "{s}");
        assert!(s.contains("\"logical\":2"), "{s}");
        assert!(s.contains("\"type\":\"barrier\""), "{s}");
        assert!(s.contains("\"kind\":\"flush\""), "{s}");
        assert!(s.contains(&"ab".repeat(32)), "{s}");
        assert_eq!(serde_json::from_str::<Record>(&s).unwrap(), r);
        // JSON from before HLCs reads back with the legacy stamp.
        let old = r#"{"seq":1,"ts_ns":9,"type":"mark","name":"m"}"#;
        let r = serde_json::from_str::<Record>(old).unwrap();
        assert_eq!(r.hlc(), Hlc::legacy(9));
    }
}
