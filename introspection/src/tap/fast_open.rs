//! Opening a tap without hashing the whole image.
//!
//! A tap needs the disk's block-hash table at open. Hashing the image costs
//! O(image) (0.9 s for 256 MiB here); the log already knows the table at
//! its last barrier (`state.ckpt`), and the image stamp
//! (`changelog::image_stamp`) says what the image looked like when the
//! recorder last closed the log. The saved table is used, and the image not
//! read beyond a sample, only when all of this holds:
//!
//! 1. the log was sealed by a clean close and nothing was cut at this open
//!    (after a crash, the image may hold writes the log never got);
//! 2. the stamp is intact, not racy, and names the barrier the log ends at
//!    (no write after it) with that barrier's disk checksum, i.e. the log
//!    was not written after the stamp;
//! 3. the image's size, device, inode, mtime and ctime equal the stamp's.
//!    Any write through the file system moves ctime, which a user cannot
//!    set back (`touch -r` restores mtime only), so this is the strong
//!    check;
//! 4. a content sample matches: [`SAMPLE_RANDOM`] blocks chosen at random
//!    plus the blocks the last run wrote last are read and hashed against
//!    the table. It backs up 3 for what metadata cannot see (a clock set
//!    back, a tool writing under the file system, a file system that does
//!    not keep ctime); being a sample, it finds a wholesale change, not
//!    reliably one changed block among many.
//!
//! Otherwise the image is hashed whole, as before, and the reason is
//! reported ([`ScanReason`]); `--rescan` forces that.
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use changelog::disk_state::{hash_block, DiskState, ZERO_BLOCK_HASH};
use changelog::image_stamp::{self, ImageMeta, MetaChange};
use changelog::log::OpenReport;
use changelog::recording::RecordDir;
use serde::Serialize;
use thiserror::Error;

use super::BLOCK;

/// Blocks sampled at random at each fast open (besides the last written).
pub const SAMPLE_RANDOM: usize = 32;

/// Why a tap hashed the whole image instead of trusting the log's state.
#[derive(Debug, Clone, Error)]
pub enum ScanReason {
    #[error("the log is new")]
    NewLog,
    #[error("a rescan was asked for (--rescan)")]
    Requested,
    #[error("the log has no image stamp (it was last closed by an older vmm)")]
    NoStamp,
    #[error("the image stamp is unusable: {0}")]
    StampUnreadable(String),
    #[error("the log was not closed cleanly (a crash or a failed run): the image may hold writes the log does not")]
    NotSealed,
    #[error("the log was written after the image stamp (it ends at another barrier)")]
    LogMoved,
    #[error("the log's saved state is unreadable: {0}")]
    LogUnreadable(String),
    #[error("the image stamp is racy: the image was written within the file system's timestamp granularity of the stamp")]
    Racy,
    #[error("the image changed outside the recorder: {0}")]
    Changed(MetaChange),
    #[error("the image changed outside the recorder: block {block} does not hold what the log recorded (content sample)")]
    Sample { block: u64 },
    #[error("reading the image: {0}")]
    Io(String),
}

impl ScanReason {
    /// Whether the user should hear about it: everything but a new log
    /// and an explicit `--rescan` is unexpected or costs time.
    pub fn warns(&self) -> bool {
        !matches!(self, ScanReason::NewLog | ScanReason::Requested)
    }
}

/// How the tap got the image's state at open (in `--stats` as
/// `record_open`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct OpenPath {
    /// True: the log's saved state was trusted (checks above passed).
    pub fast: bool,
    /// Why the image was hashed whole (when `fast` is false).
    pub why: Option<String>,
    /// Blocks read and hashed: the sample, or every block of a scan.
    pub blocks_read: u64,
    /// Microseconds from the start of the tap's open to the state known
    /// (store and log opened, image hashed or checked).
    pub state_us: u64,
    /// Microseconds the whole open took (with the base, if one was logged).
    pub open_us: u64,
}

/// The log's state, trusted for the image.
pub(crate) struct Saved {
    pub logged: DiskState,
    /// The barrier the state is at (the stamp's).
    pub barrier: u64,
    /// The stamp's last written blocks (kept for the next stamp when this
    /// run writes nothing).
    pub recent: Vec<u64>,
    pub sampled: u64,
}

/// Checks 1-4 of the module doc for the log of `vm_id` and `image`.
pub(crate) fn try_saved(
    dir: &RecordDir,
    vm_id: &str,
    image: &Path,
    log: &OpenReport,
    cut: bool,
) -> Result<Saved, ScanReason> {
    if log.was_sealed != Some(true) || cut {
        return Err(ScanReason::NotSealed);
    }
    let stamp = image_stamp::load(&dir.log_dir(vm_id))
        .map_err(|e| ScanReason::StampUnreadable(e.to_string()))?
        .ok_or(ScanReason::NoStamp)?;
    if stamp.racy {
        return Err(ScanReason::Racy);
    }
    let file = File::open(image).map_err(|e| ScanReason::Io(e.to_string()))?;
    let now = ImageMeta::of(&file.metadata().map_err(|e| ScanReason::Io(e.to_string()))?);
    if let Some(change) = stamp.meta.change_to(&now) {
        return Err(ScanReason::Changed(change));
    }
    let num_blocks = now.size.div_ceil(BLOCK as u64);
    let (logged, at) = dir
        .logged_state_at(vm_id, num_blocks)
        .map_err(|e| ScanReason::LogUnreadable(e.to_string()))?;
    if at != Some(stamp.seq) || logged.checksum() != stamp.checksum {
        return Err(ScanReason::LogMoved);
    }
    let blocks = sample(num_blocks, &stamp.recent);
    check_sample(&file, now.size, &logged, &blocks)?;
    Ok(Saved {
        logged,
        barrier: stamp.seq,
        sampled: blocks.len() as u64,
        recent: stamp.recent,
    })
}

/// The blocks to read: `recent` (those still on the disk) and
/// [`SAMPLE_RANDOM`] others at random, sorted and distinct.
fn sample(num_blocks: u64, recent: &[u64]) -> Vec<u64> {
    let mut blocks: Vec<u64> = recent.iter().copied().filter(|&b| b < num_blocks).collect();
    if num_blocks > 0 {
        let mut rng = seed();
        blocks.extend((0..SAMPLE_RANDOM).map(|_| splitmix(&mut rng) % num_blocks));
    }
    blocks.sort_unstable();
    blocks.dedup();
    blocks
}

/// Reads each of `blocks` and compares its hash with the state's.
pub(crate) fn check_sample(
    file: &File,
    size: u64,
    state: &DiskState,
    blocks: &[u64],
) -> Result<(), ScanReason> {
    let mut buf = vec![0u8; BLOCK];
    for &block in blocks {
        let at = block * BLOCK as u64;
        let have = (size - at).min(BLOCK as u64) as usize;
        buf[have..].fill(0);
        file.read_exact_at(&mut buf[..have], at)
            .map_err(|e| ScanReason::Io(e.to_string()))?;
        let hash = if buf.iter().all(|&b| b == 0) {
            ZERO_BLOCK_HASH
        } else {
            hash_block(&buf)
        };
        if state.block_hash(block) != Some(hash) {
            return Err(ScanReason::Sample { block });
        }
    }
    Ok(())
}

/// A seed that differs between runs: which blocks are sampled must not be
/// predictable from one open to the next.
fn seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    t ^ (u64::from(std::process::id()) << 32)
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sample_keeps_recent_blocks_and_stays_on_the_disk() {
        let blocks = sample(100, &[99, 7, 7, 100, 5000]);
        assert!(blocks.contains(&99) && blocks.contains(&7));
        assert!(blocks.iter().all(|&b| b < 100));
        assert!(blocks.windows(2).all(|w| w[0] < w[1]));
        assert!(sample(0, &[0]).is_empty());
    }
}
