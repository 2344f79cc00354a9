//! On-disk format of the content store.
//!
//! ```text
//! DIR/lock                 empty; writers hold flock(LOCK_EX) on it per batch
//! DIR/index.log            header + append-only log of 64-byte records
//! DIR/packs/NNNNNNNN.pack  header + object values back to back (8 decimal digits)
//! ```
//!
//! All integers are little-endian. Every header and record ends with a
//! CRC-32 (`crc32fast`, IEEE) of its first 60 bytes; the CRC frames, it
//! never identifies (identity is the BLAKE3 id).
//!
//! **File header** (64 bytes, first in both kinds of file):
//!
//! ```text
//! 0..8    magic   b"VMSTORIX" (index) | b"VMSTORPK" (pack)
//! 8..12   version u32 = 1
//! 12..16  index: record length u32 = 64 | pack: pack number u32
//! 16..60  zero
//! 60..64  crc32 of bytes 0..60
//! ```
//!
//! **Index record** (64 bytes):
//!
//! ```text
//! 0..32   id: BLAKE3 of the object's raw bytes   (payload, see kinds)
//! 32..36  pack      u32  pack number holding the stored bytes
//! 36..44  offset    u64  byte offset of the stored bytes in that pack
//! 44..48  stored_len u32 bytes stored in the pack
//! 48..52  raw_len   u32  length of the object itself
//! 52      flags     u8   bit 0 ZSTD: stored bytes are one zstd frame
//!                        bit 1 ZERO: all-zero object, nothing in any pack
//! 53      kind      u8   1 OBJECT, 2 REVOKE, 3 SYNC, 4 BOOT
//! 54..60  zero
//! 60..64  crc32 of bytes 0..60
//! ```
//!
//! Kinds other than OBJECT leave unused fields zero:
//! - REVOKE: `id` only. The OBJECT entry for `id` before it was written
//!   before a crash and its pack bytes did not survive; the object is absent
//!   until put again (a later OBJECT entry for the same id wins).
//! - SYNC: bytes 0..16 = boot id of the writer, `offset` = `covers`: every
//!   OBJECT entry before byte `covers` of the index had its pack bytes and
//!   its index bytes fsynced before this record was appended.
//! - BOOT: bytes 0..16 = boot id (`/proc/sys/kernel/random/boot_id`). The
//!   first writer after a reboot appends it after checking every OBJECT
//!   entry not covered by a SYNC record (see `recover.rs`).
//!
//! Pack values are written before the index records that point at them, so
//! a reader that sees a record finds its bytes (the page cache is coherent
//! across processes). A record's stored bytes are `stored_len` bytes at
//! `offset`: the raw bytes when ZSTD is clear, else one zstd frame that
//! decodes to exactly `raw_len` bytes.

use super::ObjectId;

/// Length of every file header.
pub(crate) const HEADER_LEN: u64 = 64;
/// Length of every index record.
pub(crate) const RECORD_LEN: usize = 64;
/// Format version written and accepted.
pub(crate) const VERSION: u32 = 1;
pub(crate) const INDEX_MAGIC: [u8; 8] = *b"VMSTORIX";
pub(crate) const PACK_MAGIC: [u8; 8] = *b"VMSTORPK";

/// Stored bytes are a zstd frame.
pub(crate) const FLAG_ZSTD: u8 = 1;
/// All-zero object with no pack bytes.
pub(crate) const FLAG_ZERO: u8 = 2;

const KIND_OBJECT: u8 = 1;
const KIND_REVOKE: u8 = 2;
const KIND_SYNC: u8 = 3;
const KIND_BOOT: u8 = 4;

/// Identifies one boot of the host (a UUID's 16 bytes).
pub(crate) type BootId = [u8; 16];

/// Where an object's stored bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loc {
    pub pack: u32,
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub flags: u8,
}

impl Loc {
    pub fn is_zero(&self) -> bool {
        self.flags & FLAG_ZERO != 0
    }
    pub fn is_zstd(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }
}

/// One decoded index record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Record {
    Object { id: ObjectId, loc: Loc },
    Revoke { id: ObjectId },
    Sync { boot: BootId, covers: u64 },
    Boot { boot: BootId },
}

fn seal(buf: &mut [u8; 64]) {
    let crc = crc32fast::hash(&buf[..60]);
    buf[60..].copy_from_slice(&crc.to_le_bytes());
}

fn crc_ok(buf: &[u8; 64]) -> bool {
    crc32fast::hash(&buf[..60]).to_le_bytes() == buf[60..64]
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Encodes a file header.
pub(crate) fn encode_header(magic: [u8; 8], word: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&magic);
    b[8..12].copy_from_slice(&VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&word.to_le_bytes());
    seal(&mut b);
    b
}

/// Checks a file header; returns its third word (record length or pack
/// number) or a description of what is wrong.
pub(crate) fn decode_header(b: &[u8], magic: [u8; 8]) -> Result<u32, String> {
    let b: &[u8; 64] = b
        .get(..64)
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| format!("header is {} bytes, expected 64", b.len()))?;
    if b[..8] != magic {
        return Err(format!(
            "magic is {:?}, expected {:?}",
            String::from_utf8_lossy(&b[..8]),
            String::from_utf8_lossy(&magic)
        ));
    }
    if !crc_ok(b) {
        return Err("header CRC mismatch".into());
    }
    let version = u32_at(b, 8);
    if version != VERSION {
        return Err(format!(
            "format version {version}, this build reads {VERSION}"
        ));
    }
    Ok(u32_at(b, 12))
}

impl Record {
    /// The 64-byte encoding.
    pub fn encode(&self) -> [u8; 64] {
        let mut b = [0u8; 64];
        match *self {
            Record::Object { id, loc } => {
                b[..32].copy_from_slice(&id.0);
                b[32..36].copy_from_slice(&loc.pack.to_le_bytes());
                b[36..44].copy_from_slice(&loc.offset.to_le_bytes());
                b[44..48].copy_from_slice(&loc.stored_len.to_le_bytes());
                b[48..52].copy_from_slice(&loc.raw_len.to_le_bytes());
                b[52] = loc.flags;
                b[53] = KIND_OBJECT;
            }
            Record::Revoke { id } => {
                b[..32].copy_from_slice(&id.0);
                b[53] = KIND_REVOKE;
            }
            Record::Sync { boot, covers } => {
                b[..16].copy_from_slice(&boot);
                b[36..44].copy_from_slice(&covers.to_le_bytes());
                b[53] = KIND_SYNC;
            }
            Record::Boot { boot } => {
                b[..16].copy_from_slice(&boot);
                b[53] = KIND_BOOT;
            }
        }
        seal(&mut b);
        b
    }

    /// Decodes a record, or says why it is not a valid one.
    pub fn decode(b: &[u8; 64]) -> Result<Record, String> {
        if !crc_ok(b) {
            return Err("record CRC mismatch".into());
        }
        if b[54..60] != [0u8; 6] {
            return Err("reserved bytes are not zero".into());
        }
        let boot = || -> BootId { b[..16].try_into().expect("16 bytes") };
        let id = ObjectId(b[..32].try_into().expect("32 bytes"));
        match b[53] {
            KIND_OBJECT => {
                let loc = Loc {
                    pack: u32_at(b, 32),
                    offset: u64_at(b, 36),
                    stored_len: u32_at(b, 44),
                    raw_len: u32_at(b, 48),
                    flags: b[52],
                };
                if loc.flags & !(FLAG_ZSTD | FLAG_ZERO) != 0 {
                    return Err(format!("unknown flags {:#x}", loc.flags));
                }
                if loc.is_zero() && (loc.is_zstd() || loc.stored_len != 0) {
                    return Err("zero object with stored bytes".into());
                }
                if !loc.is_zero() && loc.offset < HEADER_LEN {
                    return Err(format!(
                        "object offset {} inside the pack header",
                        loc.offset
                    ));
                }
                Ok(Record::Object { id, loc })
            }
            KIND_REVOKE => Ok(Record::Revoke { id }),
            KIND_SYNC => Ok(Record::Sync {
                boot: boot(),
                covers: u64_at(b, 36),
            }),
            KIND_BOOT => Ok(Record::Boot { boot: boot() }),
            k => Err(format!("unknown record kind {k}")),
        }
    }
}

/// The name of pack `n` inside `DIR/packs/`.
pub(crate) fn pack_file_name(n: u32) -> String {
    format!("{n:08}.pack")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_roundtrip_and_reject_damage() {
        let recs = [
            Record::Object {
                id: ObjectId([7; 32]),
                loc: Loc {
                    pack: 3,
                    offset: 1 << 33,
                    stored_len: 1000,
                    raw_len: 4096,
                    flags: FLAG_ZSTD,
                },
            },
            Record::Revoke {
                id: ObjectId([9; 32]),
            },
            Record::Sync {
                boot: [1; 16],
                covers: 640,
            },
            Record::Boot { boot: [2; 16] },
        ];
        for r in recs {
            let mut b = r.encode();
            assert_eq!(Record::decode(&b), Ok(r));
            b[40] ^= 1;
            assert!(Record::decode(&b).is_err());
        }
        assert!(
            Record::decode(&[0u8; 64]).is_err(),
            "zeroed slot must not decode"
        );
    }

    #[test]
    fn header_checks() {
        let h = encode_header(PACK_MAGIC, 12);
        assert_eq!(decode_header(&h, PACK_MAGIC), Ok(12));
        assert!(decode_header(&h, INDEX_MAGIC)
            .unwrap_err()
            .contains("magic"));
        assert!(decode_header(&h[..10], PACK_MAGIC).is_err());
        assert_eq!(pack_file_name(42), "00000042.pack");
    }
}
