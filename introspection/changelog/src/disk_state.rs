//! The disk state checksum (the "LTX idea"): for a disk of N 4 KiB blocks,
//! keep the BLAKE3 hash of each block's content and
//!
//! ```text
//! checksum = XOR over every non-zero block i of BLAKE3(i as u64 LE || content_hash_i)
//! ```
//!
//! so a write updates it in O(1) (XOR out the block's old term, XOR in the
//! new one), it does not depend on the order writes happened in, and
//! all-zero blocks contribute nothing (a fresh or sparse image costs
//! nothing, and trailing zero blocks do not change it; a disk with no data
//! has the all-zero checksum).
//!
//! Representation: a `HashMap` from block number to content hash holding
//! only the non-zero blocks. Memory follows the data written (about 60 bytes
//! per non-zero block), not the disk size: a dense `Vec<[u8; 32]>` would cost
//! 32 bytes for every block, 256 MiB for a mostly empty 256 GiB disk. All
//! operations stay O(1) expected. The map hashes block numbers with a
//! multiply-rotate hasher ([`BlockHasher`]): keys are our own block
//! numbers, not attacker-chosen, and SipHash made loading a saved state of
//! a few hundred thousand blocks several times slower (recorder open).

use std::collections::HashMap;
use std::fs::File;
use std::hash::{BuildHasherDefault, Hasher};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

const BLOCK: u64 = store::BLOCK_SIZE as u64;
const SECTORS_PER_BLOCK: u64 = BLOCK / 512;
/// Bytes read per request when hashing an image.
const CHUNK: usize = 1 << 20;

/// BLAKE3 of 4096 zero bytes: the content hash of an all-zero block (the
/// store's id of it, which the store never writes).
pub const ZERO_BLOCK_HASH: [u8; 32] = store::ObjectId::ZERO_BLOCK.0;

/// BLAKE3 of a block's content (the content store's key).
pub fn hash_block(data: &[u8]) -> [u8; 32] {
    *blake3::hash(data).as_bytes()
}

/// Block `block`'s term in the checksum: BLAKE3(block LE || content_hash).
pub fn block_contribution(block: u64, content_hash: &[u8; 32]) -> [u8; 32] {
    let mut h = blake3::Hasher::new();
    h.update(&block.to_le_bytes());
    h.update(content_hash);
    *h.finalize().as_bytes()
}

#[derive(Debug, thiserror::Error)]
pub enum DiskStateError {
    #[error("block {block} is past the end of the disk ({num_blocks} blocks of 4 KiB)")]
    OutOfRange { block: u64, num_blocks: u64 },
    #[error("write at sector {sector} is not 4 KiB aligned (sector must be a multiple of 8)")]
    Misaligned { sector: u64 },
    #[error("reading disk image {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Hashes a block number (a `u64`) for the block map: one multiply by an
/// odd constant and a rotate, so that sequential block numbers spread over
/// both the low bits (bucket) and the high bits (hashbrown's tag).
#[derive(Default, Clone, Copy)]
pub struct BlockHasher(u64);

impl Hasher for BlockHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n)
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .rotate_left(29);
    }
}

type BlockMap = HashMap<u64, [u8; 32], BuildHasherDefault<BlockHasher>>;

/// Per-block content hashes of one disk and their running checksum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskState {
    num_blocks: u64,
    /// Only non-zero blocks; never holds `ZERO_BLOCK_HASH`.
    blocks: BlockMap,
    checksum: [u8; 32],
}

impl DiskState {
    /// An all-zero disk of `num_blocks` blocks.
    pub fn zeroed(num_blocks: u64) -> DiskState {
        DiskState {
            num_blocks,
            blocks: BlockMap::default(),
            checksum: [0; 32],
        }
    }

    /// A state from a saved block table and the checksum saved with it,
    /// *without* recomputing the checksum (that costs a BLAKE3 per block,
    /// most of a saved state's load time). Only for tables whose integrity
    /// is checked otherwise (a CRC over table and checksum together, see
    /// `checkpoint.rs`); `None` if a block is out of range or zero.
    pub fn from_saved(
        num_blocks: u64,
        blocks: impl ExactSizeIterator<Item = (u64, [u8; 32])>,
        checksum: [u8; 32],
    ) -> Option<DiskState> {
        let mut map = BlockMap::with_capacity_and_hasher(blocks.len(), Default::default());
        for (block, hash) in blocks {
            if block >= num_blocks || hash == ZERO_BLOCK_HASH {
                return None;
            }
            map.insert(block, hash);
        }
        Some(DiskState {
            num_blocks,
            blocks: map,
            checksum,
        })
    }

    /// Hashes every block of the image file once. Holes of a sparse file
    /// (`SEEK_DATA`/`SEEK_HOLE`) are skipped unread. A last partial block
    /// counts as padded with zeros.
    pub fn from_image(path: impl AsRef<Path>) -> Result<DiskState, DiskStateError> {
        let path = path.as_ref();
        let err = |source| DiskStateError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(err)?;
        let len = file.metadata().map_err(err)?.len();
        let mut state = DiskState::zeroed(len.div_ceil(BLOCK));
        let mut buf = vec![0u8; CHUNK];
        for (start, end) in data_extents(&file, len) {
            let mut pos = start / BLOCK * BLOCK;
            let end = end.div_ceil(BLOCK) * BLOCK;
            while pos < end {
                let n = (CHUNK as u64).min(end - pos) as usize;
                let have = n.min((len - pos) as usize);
                buf[have..n].fill(0);
                file.read_exact_at(&mut buf[..have], pos).map_err(err)?;
                state.hash_chunk(pos / BLOCK, &buf[..n]);
                pos += n as u64;
            }
        }
        Ok(state)
    }

    /// Hashes `len` bytes read from `reader` (a last partial block counts as
    /// padded with zeros).
    pub fn from_reader(mut reader: impl Read, len: u64) -> Result<DiskState, DiskStateError> {
        let err = |source| DiskStateError::Io {
            path: PathBuf::from("<reader>"),
            source,
        };
        let mut state = DiskState::zeroed(len.div_ceil(BLOCK));
        let mut buf = vec![0u8; CHUNK];
        let mut pos = 0;
        while pos < len {
            let have = (CHUNK as u64).min(len - pos) as usize;
            let n = (have as u64).div_ceil(BLOCK) as usize * BLOCK as usize;
            buf[have..n].fill(0);
            reader.read_exact(&mut buf[..have]).map_err(err)?;
            state.hash_chunk(pos / BLOCK, &buf[..n]);
            pos += have as u64;
        }
        Ok(state)
    }

    /// Blocks in the disk.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// How many blocks are not all zeros.
    pub fn nonzero_blocks(&self) -> usize {
        self.blocks.len()
    }

    /// The non-zero blocks and their content hashes, in no particular order.
    pub fn iter_nonzero(&self) -> impl Iterator<Item = (u64, &[u8; 32])> + '_ {
        self.blocks.iter().map(|(&b, h)| (b, h))
    }

    /// Content hash of block `block` (`ZERO_BLOCK_HASH` for a zero block),
    /// `None` past the end of the disk.
    pub fn block_hash(&self, block: u64) -> Option<[u8; 32]> {
        (block < self.num_blocks).then(|| *self.blocks.get(&block).unwrap_or(&ZERO_BLOCK_HASH))
    }

    /// Block `block` now holds content hashing to `content_hash`. O(1).
    pub fn apply_write(
        &mut self,
        block: u64,
        content_hash: [u8; 32],
    ) -> Result<(), DiskStateError> {
        if block >= self.num_blocks {
            return Err(DiskStateError::OutOfRange {
                block,
                num_blocks: self.num_blocks,
            });
        }
        self.set_block(block, content_hash);
        Ok(())
    }

    /// Applies a whole `BlockWrite` record: `hashes[i]` to the i-th block
    /// from 512-byte `sector`. Checks the range first: all or nothing.
    pub fn apply_block_write(
        &mut self,
        sector: u64,
        hashes: &[[u8; 32]],
    ) -> Result<(), DiskStateError> {
        if sector % SECTORS_PER_BLOCK != 0 {
            return Err(DiskStateError::Misaligned { sector });
        }
        let first = sector / SECTORS_PER_BLOCK;
        let end = first.saturating_add(hashes.len() as u64);
        if end > self.num_blocks {
            return Err(DiskStateError::OutOfRange {
                block: end - 1,
                num_blocks: self.num_blocks,
            });
        }
        for (block, h) in (first..).zip(hashes) {
            self.set_block(block, *h);
        }
        Ok(())
    }

    /// The running checksum.
    pub fn checksum(&self) -> [u8; 32] {
        self.checksum
    }

    /// The checksum computed from scratch over the block table (a
    /// cross-check of the running one).
    pub fn recompute_checksum(&self) -> [u8; 32] {
        let mut sum = [0u8; 32];
        for (&block, h) in &self.blocks {
            xor_into(&mut sum, &block_contribution(block, h));
        }
        sum
    }

    fn set_block(&mut self, block: u64, hash: [u8; 32]) {
        let old = if hash == ZERO_BLOCK_HASH {
            self.blocks.remove(&block)
        } else {
            self.blocks.insert(block, hash)
        };
        if let Some(old) = old {
            xor_into(&mut self.checksum, &block_contribution(block, &old));
        }
        if hash != ZERO_BLOCK_HASH {
            xor_into(&mut self.checksum, &block_contribution(block, &hash));
        }
    }

    /// Sets the blocks from `first` on to the content of `data` (whole blocks).
    fn hash_chunk(&mut self, first: u64, data: &[u8]) {
        for (block, content) in (first..).zip(data.chunks_exact(BLOCK as usize)) {
            if block >= self.num_blocks {
                break;
            }
            let hash = if content.iter().all(|&b| b == 0) {
                ZERO_BLOCK_HASH
            } else {
                hash_block(content)
            };
            self.set_block(block, hash);
        }
    }
}

fn xor_into(acc: &mut [u8; 32], term: &[u8; 32]) {
    for (a, t) in acc.iter_mut().zip(term) {
        *a ^= t;
    }
}

/// The byte ranges of `file` that may hold data, by `SEEK_DATA`/`SEEK_HOLE`;
/// the whole file where those are not supported.
fn data_extents(file: &File, len: u64) -> Vec<(u64, u64)> {
    let whole = vec![(0, len)];
    let fd = file.as_raw_fd();
    let mut out = Vec::new();
    let mut pos: u64 = 0;
    while pos < len {
        let Ok(at) = libc::off_t::try_from(pos) else {
            return whole;
        };
        // SAFETY: lseek on a descriptor we own; it only moves the file
        // offset, which this code does not use (reads are positional).
        let data = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if data < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO) {
                break;
            }
            return whole;
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(fd, data, libc::SEEK_HOLE) };
        if hole <= data {
            return whole;
        }
        out.push((data as u64, (hole as u64).min(len)));
        pos = hole as u64;
    }
    out
}
