//! `workload=workset`: an application whose speed depends on how much
//! memory it has, for `vmm drill --mem-mib` and `vmm tune`.
//!
//! Its data set is the first `pages` 4 KiB blocks of the disk, read in
//! extents of [`EXTENT`] blocks (one virtio request each). It scans the
//! whole set `passes` times, hashing every block `rounds` times, and keeps
//! the extents it read in a cache in guest memory: all the RAM the heap
//! has, minus `reserve_mib` MiB that stand for the rest of the
//! application. The cache evicts the oldest extent (FIFO), so a scan over
//! a set larger than the cache misses every extent on every pass (as LRU
//! would), and a set that fits is read once. Its time is then set by the
//! memory size (how many reads), the disk's IOPS (what each read costs)
//! and the vCPUs (the hashing of each extent is spread over every CPU).
//!
//! Every block it reads must be zero or an intact self-checking block
//! (`blk-writes` content), so as a drill check it also verifies the data.
//! `fill=1` writes the data set instead (self-checking blocks seeded by
//! `seed`), for the recording a drill restores. Prints
//! `workset: pages=N passes=P sum=..` (the same for any memory, vCPU or
//! IOPS setting) and `workset: cpus=N cache_extents=C reads=R` (what it
//! ran on and cost).
use alloc::alloc::{alloc_zeroed, Layout};
use alloc::vec;
use core::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::cmdline::Cmdline;
use crate::virtio_blk::{BLOCK, S_OK};
use crate::workloads::blk::{self, block_is_valid, fill_block};
use crate::{say, smp};

/// Blocks per extent: one read request (256 KiB).
pub const EXTENT: usize = 64;
const EXTENT_BYTES: usize = EXTENT * BLOCK;
/// Heap kept free for the driver and this workload's own tables.
const SLACK: usize = 1 << 20;

/// The extent being hashed: its address, and each block's hash.
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static HASHES: [AtomicU64; EXTENT] = [const { AtomicU64::new(0) }; EXTENT];

pub fn run(cmdline: &Cmdline) -> u32 {
    let Some(cpus) = smp::init(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let Some(mut dev) = blk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let pages = cmdline.get_u64("pages", 1024) as usize;
    let extents = pages.div_ceil(EXTENT);
    if extents == 0 || (extents * EXTENT * BLOCK / 512) as u64 > dev.capacity_sectors {
        say!(
            "workset: pages={pages} does not fit the disk ({} blocks)\n",
            dev.capacity_sectors / 8
        );
        return crate::EXIT_GUEST_ERROR;
    }
    if cmdline.get_u64("fill", 0) == 1 {
        return fill(&mut dev, extents, cmdline.get_u64("seed", 1));
    }
    let passes = cmdline.get_u64("passes", 4);
    let rounds = cmdline.get_u64("rounds", 1).max(1);
    let reserve = (cmdline.get_u64("reserve_mib", 0) as usize) << 20;
    let room = crate::heap::capacity().saturating_sub(reserve + SLACK);
    let slots = (room / EXTENT_BYTES).clamp(1, extents);
    let layout = Layout::from_size_align(slots * EXTENT_BYTES, 4096).expect("a valid layout");
    // SAFETY: a non-zero size; freed never (the VM ends after the scan).
    let cache = unsafe { alloc_zeroed(layout) };
    if cache.is_null() {
        say!("workset: cannot allocate a cache of {slots} extents\n");
        return crate::EXIT_GUEST_ERROR;
    }
    // extent -> slot, slot -> extent, and the FIFO hand.
    let mut slot_of = vec![usize::MAX; extents];
    let mut held = vec![usize::MAX; slots];
    let mut hand = 0;
    let mut reads = 0u64;
    let mut sum = 0u64;
    let job = |cpu: usize| {
        let base = CURRENT.load(Ordering::Acquire);
        for b in (cpu..EXTENT).step_by(cpus) {
            // SAFETY: the extent at `base` is a cache slot CPU 0 filled
            // before posting the job and does not touch until it ends.
            let block =
                unsafe { core::slice::from_raw_parts((base + b * BLOCK) as *const u8, BLOCK) };
            HASHES[b].store(hash(block, rounds), Ordering::Relaxed);
        }
    };
    for _ in 0..passes {
        for e in 0..extents {
            let slot = match slot_of[e] {
                usize::MAX => {
                    let slot = hand;
                    hand = (hand + 1) % slots;
                    if let Some(old) = held.get(slot).copied().filter(|&o| o != usize::MAX) {
                        slot_of[old] = usize::MAX;
                    }
                    // SAFETY: slot < slots: inside the cache allocation.
                    let data = unsafe {
                        core::slice::from_raw_parts_mut(
                            cache.add(slot * EXTENT_BYTES),
                            EXTENT_BYTES,
                        )
                    };
                    let sector = (e * EXTENT_BYTES / 512) as u64;
                    if dev.read(sector, data).ok() != Some(S_OK) {
                        say!("workset: read of extent {e} failed\n");
                        return 1;
                    }
                    reads += 1;
                    if let Some(bad) = data
                        .chunks_exact(BLOCK)
                        .position(|b| b.iter().any(|&x| x != 0) && !block_is_valid(b))
                    {
                        say!("workset: block {} is damaged\n", e * EXTENT + bad);
                        return 1;
                    }
                    held[slot] = e;
                    slot_of[e] = slot;
                    slot
                }
                slot => slot,
            };
            CURRENT.store(cache as usize + slot * EXTENT_BYTES, Ordering::Release);
            smp::parallel(&job, || {});
            for h in &HASHES {
                sum =
                    (sum.rotate_left(5) ^ h.load(Ordering::Relaxed)).wrapping_mul(0x100_0000_01b3);
            }
        }
    }
    say!(
        "workset: pages={} passes={passes} sum={sum:#018x}\n",
        extents * EXTENT
    );
    say!("workset: cpus={cpus} cache_extents={slots} reads={reads}\n");
    0
}

/// FNV-1a over the block, `rounds` times over.
fn hash(block: &[u8], rounds: u64) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for _ in 0..rounds {
        for chunk in block.chunks_exact(8) {
            h = (h ^ u64::from_le_bytes(chunk.try_into().expect("8 bytes")))
                .wrapping_mul(0x100_0000_01b3);
        }
    }
    h
}

/// Writes the data set: `extents` extents of self-checking blocks.
fn fill(dev: &mut crate::virtio_blk::VirtioBlk, extents: usize, seed: u64) -> u32 {
    let buf = &mut blk::buffer()[..EXTENT_BYTES];
    for e in 0..extents {
        for (b, block) in buf.chunks_exact_mut(BLOCK).enumerate() {
            fill_block(
                block,
                seed.wrapping_mul(0x1_0000_0001) ^ (e * EXTENT + b) as u64,
            );
        }
        if dev.write((e * EXTENT_BYTES / 512) as u64, buf).ok() != Some(S_OK) {
            say!("workset: write of extent {e} failed\n");
            return 1;
        }
    }
    if dev.flush().ok() != Some(S_OK) {
        say!("workset: flush failed\n");
        return 1;
    }
    say!("workset: filled pages={}\n", extents * EXTENT);
    0
}
