//! Object identity: the BLAKE3 hash of an object's bytes, and the all-zero
//! objects that are never stored.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Length of the block or page size the store is built around.
pub const BLOCK_SIZE: usize = 4096;

/// The key of an object: BLAKE3 of its bytes (never a CRC: CRCs only frame).
///
/// Displays and parses as 64 lowercase hex digits; serde uses the same
/// string form.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectId(pub [u8; 32]);

impl std::hash::Hash for ObjectId {
    /// Ids are uniformly random already: hashing their first 8 bytes is
    /// enough, and lets [`IdHashBuilder`] skip rehashing.
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(u64::from_le_bytes(self.0[..8].try_into().expect("8 bytes")));
    }
}

/// `BuildHasher` for maps keyed by [`ObjectId`]: uses the id's first 8
/// bytes as the hash (they are BLAKE3 output).
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHashBuilder;

/// The hasher of [`IdHashBuilder`].
#[derive(Debug, Default, Clone, Copy)]
pub struct IdHasher(u64);

impl std::hash::BuildHasher for IdHashBuilder {
    type Hasher = IdHasher;
    fn build_hasher(&self) -> IdHasher {
        IdHasher(0)
    }
}

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Not reached for ObjectId keys; fold anything else in (FNV-1a).
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

/// BLAKE3 of 4096 zero bytes (checked by a test against `blake3::hash`).
const ZERO_BLOCK_HASH: [u8; 32] = [
    0xb6, 0xfb, 0x73, 0xfc, 0x46, 0x93, 0x8c, 0x98, 0x1e, 0x2b, 0x0b, 0x4b, 0x1e, 0xf2, 0x82, 0xad,
    0xcf, 0xc8, 0x98, 0x54, 0xd0, 0x1b, 0xfe, 0x39, 0x72, 0xfd, 0xc4, 0x78, 0x5b, 0x41, 0xb2, 0xc7,
];

/// Largest length in the table of well-known zero objects (see
/// [`ObjectId::zero_len`]).
pub const MAX_WELL_KNOWN_ZERO_LEN: usize = 1 << 20;

impl ObjectId {
    /// The id of the all-zero 4 KiB block or page.
    pub const ZERO_BLOCK: ObjectId = ObjectId(ZERO_BLOCK_HASH);

    /// The id of `data`: BLAKE3 of its bytes.
    pub fn of(data: &[u8]) -> ObjectId {
        ObjectId(*blake3::hash(data).as_bytes())
    }

    /// The id of the all-zero 4 KiB block or page.
    pub const fn zero_block() -> ObjectId {
        Self::ZERO_BLOCK
    }

    /// Whether this is the id of the all-zero 4 KiB block.
    pub fn is_zero_block(&self) -> bool {
        *self == Self::ZERO_BLOCK
    }

    /// The id of `len` zero bytes.
    pub fn zero(len: usize) -> ObjectId {
        if len == BLOCK_SIZE {
            return Self::ZERO_BLOCK;
        }
        if let Some((_, id)) = well_known_zeros().iter().find(|(l, _)| *l == len) {
            return *id;
        }
        let mut h = blake3::Hasher::new();
        let chunk = [0u8; BLOCK_SIZE];
        let mut left = len;
        while left > 0 {
            let n = left.min(BLOCK_SIZE);
            h.update(&chunk[..n]);
            left -= n;
        }
        ObjectId(*h.finalize().as_bytes())
    }

    /// If this is the id of a *well-known* all-zero object, its length.
    ///
    /// Well-known lengths are 0 and every power of two from 1 byte to
    /// [`MAX_WELL_KNOWN_ZERO_LEN`] (1 MiB): sectors, pages, common block and
    /// chunk sizes. The store answers `get` for these ids without any I/O
    /// and never writes anything for them. All-zero objects of other
    /// lengths are not stored in packs either, but `put` records them in
    /// the index (an index-only entry, no pack bytes) so that `get` still
    /// knows their length.
    pub fn zero_len(&self) -> Option<usize> {
        if self.is_zero_block() {
            return Some(BLOCK_SIZE);
        }
        well_known_zeros()
            .iter()
            .find(|(_, id)| id == self)
            .map(|(l, _)| *l)
    }

    /// Lowercase hex form (64 characters).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

/// Whether `id` is the id of the all-zero 4 KiB block.
pub fn is_zero_block(id: &ObjectId) -> bool {
    id.is_zero_block()
}

/// Whether every byte of `data` is zero (true for empty data).
pub fn is_all_zero(data: &[u8]) -> bool {
    // 64 bytes per step: OR eight words together, test once.
    let chunks = data.chunks_exact(64);
    let tail = chunks.remainder();
    for c in chunks {
        let mut acc = 0u64;
        for w in c.chunks_exact(8) {
            acc |= u64::from_le_bytes(w.try_into().expect("8-byte chunk"));
        }
        if acc != 0 {
            return false;
        }
    }
    tail.iter().all(|&b| b == 0)
}

fn well_known_zeros() -> &'static [(usize, ObjectId)] {
    static TABLE: OnceLock<Vec<(usize, ObjectId)>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let zeros = vec![0u8; MAX_WELL_KNOWN_ZERO_LEN];
        let mut t = vec![(0, ObjectId::of(&[]))];
        let mut len = 1;
        while len <= MAX_WELL_KNOWN_ZERO_LEN {
            t.push((len, ObjectId::of(&zeros[..len])));
            len *= 2;
        }
        t
    })
}

/// Whether `len` zero bytes have an id in the well-known table.
pub(crate) fn is_well_known_zero_len(len: usize) -> bool {
    len == 0 || (len.is_power_of_two() && len <= MAX_WELL_KNOWN_ZERO_LEN)
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// Why a string is not an [`ObjectId`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid object id {input:?}: expected 64 hex digits (a BLAKE3 hash)")]
pub struct ParseObjectIdError {
    /// The rejected input.
    pub input: String,
}

impl FromStr for ObjectId {
    type Err = ParseObjectIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseObjectIdError {
            input: s.to_string(),
        };
        let b = s.as_bytes();
        if b.len() != 64 {
            return Err(err());
        }
        let mut out = [0u8; 32];
        for (i, pair) in b.chunks_exact(2).enumerate() {
            let hi = (pair[0] as char).to_digit(16).ok_or_else(err)?;
            let lo = (pair[1] as char).to_digit(16).ok_or_else(err)?;
            out[i] = (hi * 16 + lo) as u8;
        }
        Ok(ObjectId(out))
    }
}

impl Serialize for ObjectId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ObjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}
