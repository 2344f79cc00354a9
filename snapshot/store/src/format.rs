//! On-disk format of the content store.
//!
//! ```text
//! DIR/lock                 empty; writers hold flock(LOCK_EX) on it per batch
//! DIR/index.log            header + append-only log of 64-byte records
//! DIR/index.snap           the index replayed up to an offset: a cache
//!                          that open starts from (format in `snap.rs`)
//! DIR/packs/NNNNNNNN.pack  header + entries back to back (8 decimal digits)
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
//! 8..12   version u32: index 1; pack 2 (written), 1 (still read)
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
//! **Pack entry** (version 2 packs): every stored value is preceded by a
//! 52-byte entry header, so that a pack describes itself and `repair`
//! can rebuild the index from the packs alone (`store/repair.rs`):
//!
//! ```text
//! 0..4    magic      b"VMOB"
//! 4       flags      u8   as in the index record (ZSTD only; zero objects
//!                         have no entry)
//! 5..8    zero
//! 8..12   raw_len    u32
//! 12..16  stored_len u32  the value's length; the next entry follows it
//! 16..48  id         BLAKE3 of the raw bytes
//! 48..52  crc32 of bytes 0..48
//! ```
//!
//! The index record's `offset` points at the value (just after its entry
//! header), in both versions. **Version 1 packs** hold the values back to
//! back with no entry headers: they are read through the index as before
//! and never appended to (a writer starts a new pack instead), but a scan
//! cannot find their objects, so `repair` keeps only the objects of a v1
//! pack that a still-valid index record points at (and that check).
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
/// Index format version, written and accepted.
pub(crate) const INDEX_VERSION: u32 = 1;
/// Pack format version written (entries with headers).
pub(crate) const PACK_VERSION: u32 = 2;
/// The older pack version that is still read (values without headers).
pub(crate) const PACK_VERSION_V1: u32 = 1;
/// Magic of a pack entry header.
pub(crate) const ENTRY_MAGIC: [u8; 4] = *b"VMOB";
/// Length of a pack entry header.
pub(crate) const ENTRY_LEN: usize = 52;
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

/// The version a file of this magic is written with.
fn version_for(magic: [u8; 8]) -> u32 {
    if magic == PACK_MAGIC {
        PACK_VERSION
    } else {
        INDEX_VERSION
    }
}

/// Encodes a file header (at the current version for its kind).
pub(crate) fn encode_header(magic: [u8; 8], word: u32) -> [u8; 64] {
    encode_header_version(magic, version_for(magic), word)
}

/// Encodes a file header of a given version (tests write old packs).
pub(crate) fn encode_header_version(magic: [u8; 8], version: u32, word: u32) -> [u8; 64] {
    let mut b = [0u8; 64];
    b[..8].copy_from_slice(&magic);
    b[8..12].copy_from_slice(&version.to_le_bytes());
    b[12..16].copy_from_slice(&word.to_le_bytes());
    seal(&mut b);
    b
}

/// Checks a file header; returns its third word (record length or pack
/// number) or a description of what is wrong.
pub(crate) fn decode_header(b: &[u8], magic: [u8; 8]) -> Result<u32, String> {
    decode_header_version(b, magic).map(|(_, word)| word)
}

/// [`decode_header`] that also returns the version (1 or 2 for packs).
pub(crate) fn decode_header_version(b: &[u8], magic: [u8; 8]) -> Result<(u32, u32), String> {
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
    let current = version_for(magic);
    let readable = version == current || (magic == PACK_MAGIC && version == PACK_VERSION_V1);
    if !readable {
        return Err(format!(
            "format version {version}, this build reads up to {current}"
        ));
    }
    Ok((version, u32_at(b, 12)))
}

/// The header of one pack entry (version 2 packs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EntryHeader {
    pub id: ObjectId,
    pub raw_len: u32,
    pub stored_len: u32,
    pub flags: u8,
}

impl EntryHeader {
    pub fn encode(&self) -> [u8; ENTRY_LEN] {
        let mut b = [0u8; ENTRY_LEN];
        b[..4].copy_from_slice(&ENTRY_MAGIC);
        b[4] = self.flags;
        b[8..12].copy_from_slice(&self.raw_len.to_le_bytes());
        b[12..16].copy_from_slice(&self.stored_len.to_le_bytes());
        b[16..48].copy_from_slice(&self.id.0);
        let crc = crc32fast::hash(&b[..48]);
        b[48..].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes an entry header, or says why these bytes are not one.
    pub fn decode(b: &[u8]) -> Result<EntryHeader, String> {
        let b: &[u8; ENTRY_LEN] = b
            .get(..ENTRY_LEN)
            .and_then(|s| s.try_into().ok())
            .ok_or("the pack ends inside an entry header")?;
        if b[..4] != ENTRY_MAGIC {
            return Err("no entry magic".into());
        }
        if crc32fast::hash(&b[..48]).to_le_bytes() != b[48..] {
            return Err("entry header CRC mismatch".into());
        }
        if b[5..8] != [0; 3] || b[4] & !FLAG_ZSTD != 0 {
            return Err(format!("entry header has unknown flags {:#x}", b[4]));
        }
        Ok(EntryHeader {
            id: ObjectId(b[16..48].try_into().expect("32 bytes")),
            raw_len: u32_at(b, 8),
            stored_len: u32_at(b, 12),
            flags: b[4],
        })
    }
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
        assert_eq!(decode_header_version(&h, PACK_MAGIC), Ok((2, 12)));
        let v1 = encode_header_version(PACK_MAGIC, 1, 3);
        assert_eq!(decode_header_version(&v1, PACK_MAGIC), Ok((1, 3)));
        let v3 = encode_header_version(PACK_MAGIC, 3, 3);
        assert!(decode_header(&v3, PACK_MAGIC)
            .unwrap_err()
            .contains("version 3"));
        let ix = encode_header(INDEX_MAGIC, 64);
        assert_eq!(decode_header_version(&ix, INDEX_MAGIC), Ok((1, 64)));
    }

    #[test]
    fn entry_headers_roundtrip_and_reject_damage() {
        let e = EntryHeader {
            id: ObjectId([5; 32]),
            raw_len: 4096,
            stored_len: 77,
            flags: FLAG_ZSTD,
        };
        let mut b = e.encode();
        assert_eq!(EntryHeader::decode(&b), Ok(e));
        assert!(EntryHeader::decode(&b[..40]).is_err());
        b[20] ^= 1;
        assert!(EntryHeader::decode(&b).unwrap_err().contains("CRC"));
    }
}
