//! Disk workloads on the first virtio-blk device.
use core::ptr::addr_of_mut;

use crate::cmdline::Cmdline;
use crate::say;
use crate::virtio_blk::{Req, VirtioBlk, BLOCK, S_OK, T_DISCARD, T_OUT, T_WRITE_ZEROES};
use crate::workloads::spec::Rng;

/// Largest single write: 64 blocks.
pub const MAX_BLOCKS: usize = 64;

#[repr(C, align(4096))]
struct Buf([u8; MAX_BLOCKS * BLOCK]);

static mut BUF: Buf = Buf([0; MAX_BLOCKS * BLOCK]);

/// The shared I/O buffer (the microguest is single-threaded).
pub fn buffer() -> &'static mut [u8] {
    // SAFETY: one workload runs at a time on one vCPU; no other reference
    // to BUF is live while a workload holds this one.
    unsafe { &mut (*addr_of_mut!(BUF)).0 }
}

pub fn open(cmdline: &Cmdline) -> Option<VirtioBlk> {
    match VirtioBlk::init(cmdline) {
        Ok(dev) => Some(dev),
        Err(e) => {
            say!("microguest: no usable virtio-blk device: {e:?}\n");
            None
        }
    }
}

/// Seeded random writes and flushes (see the module doc of the host test
/// that recomputes them): `seed`, `writes`, `max_blocks`, `flush_every`,
/// `dup_every` (every Nth write repeats the same content, for dedup).
pub fn writes(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let seed = cmdline.get_u64("seed", 1);
    let writes = cmdline.get_u64("writes", 64);
    let max_blocks = cmdline
        .get_u64("max_blocks", 16)
        .clamp(1, MAX_BLOCKS as u64);
    let flush_every = cmdline.get_u64("flush_every", 8);
    let dup_every = cmdline.get_u64("dup_every", 4);
    let span = dev.capacity_sectors / 8;
    if span < max_blocks {
        say!("blk-writes: disk too small ({span} blocks)\n");
        return crate::EXIT_GUEST_ERROR;
    }
    let buf = buffer();
    let mut rng = Rng::new(seed);
    let (mut blocks, mut flushes) = (0u64, 0u64);
    for i in 0..writes {
        let nblocks = 1 + rng.next() % max_blocks;
        let start = rng.next() % (span - nblocks + 1);
        let fill_seed = if dup_every != 0 && i % dup_every == 0 {
            0xD00D
        } else {
            rng.next()
        };
        let data = &mut buf[..nblocks as usize * BLOCK];
        for (j, block) in data.chunks_exact_mut(BLOCK).enumerate() {
            fill_block(block, fill_seed.wrapping_add(j as u64));
        }
        match dev.write(start * 8, data) {
            Ok(S_OK) => {}
            other => {
                say!("blk-writes: write {i} failed: {other:?}\n");
                return 1;
            }
        }
        blocks += nblocks;
        if flush_every != 0 && (i + 1) % flush_every == 0 {
            if dev.flush().ok() != Some(S_OK) {
                say!("blk-writes: flush failed\n");
                return 1;
            }
            flushes += 1;
        }
    }
    if dev.flush().ok() != Some(S_OK) {
        say!("blk-writes: final flush failed\n");
        return 1;
    }
    say!(
        "blk-writes: writes={writes} blocks={blocks} flushes={}\n",
        flushes + 1
    );
    0
}

/// Marks a self-checking block (`blk-writes` content).
const BLOCK_MAGIC: &[u8; 8] = b"VMMBLK01";

/// A self-checking block: magic, its seed, then xorshift64 words from the
/// seed. `blk-verify` recognises any such block without knowing the history.
pub(crate) fn fill_block(block: &mut [u8], seed: u64) {
    block[..8].copy_from_slice(BLOCK_MAGIC);
    block[8..16].copy_from_slice(&seed.to_le_bytes());
    let mut fill = Rng::new(seed);
    for word in block[16..].chunks_exact_mut(8) {
        word.copy_from_slice(&fill.next().to_le_bytes());
    }
}

pub(crate) fn block_is_valid(block: &[u8]) -> bool {
    if &block[..8] != BLOCK_MAGIC {
        return false;
    }
    let mut fill = Rng::new(u64::from_le_bytes(block[8..16].try_into().unwrap()));
    block[16..]
        .chunks_exact(8)
        .all(|w| w == fill.next().to_le_bytes())
}

/// Checks every block of the disk: all zero (never written) or a whole,
/// self-consistent `blk-writes` block. Exit 0 when no block is damaged.
pub fn verify(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let buf = buffer();
    let (mut written, mut zero, mut bad) = (0u64, 0u64, 0u64);
    let mut sector = 0;
    while sector < dev.capacity_sectors {
        let n = (dev.capacity_sectors - sector).min((MAX_BLOCKS * BLOCK / 512) as u64);
        let data = &mut buf[..n as usize * 512];
        if dev.read(sector, data).ok() != Some(S_OK) {
            say!("blk-verify: read at sector {sector} failed\n");
            return 1;
        }
        for (i, block) in data.chunks(BLOCK).enumerate() {
            if block.iter().all(|b| *b == 0) {
                zero += 1;
            } else if block.len() == BLOCK && block_is_valid(block) {
                written += 1;
            } else {
                if bad < 5 {
                    say!("blk-verify: block {} is damaged\n", sector / 8 + i as u64);
                }
                bad += 1;
            }
        }
        sector += n;
    }
    say!("blk-verify: written={written} zero={zero} bad={bad}\n");
    u32::from(bad != 0)
}

/// Reads the whole disk and prints its FNV-1a 64 checksum.
pub fn checksum(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let buf = buffer();
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut sector = 0;
    while sector < dev.capacity_sectors {
        let n = (dev.capacity_sectors - sector).min((MAX_BLOCKS * BLOCK / 512) as u64);
        let data = &mut buf[..n as usize * 512];
        if dev.read(sector, data).ok() != Some(S_OK) {
            say!("blk-checksum: read at sector {sector} failed\n");
            return 1;
        }
        for &b in data.iter() {
            hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
        sector += n;
    }
    say!(
        "blk-checksum: sectors={} fnv64={hash:#018x}\n",
        dev.capacity_sectors
    );
    0
}

/// Sequential write throughput: `mib` MiB in requests of `req_kib` KiB,
/// `batch` requests per notify, wrapping around the disk; each block gets
/// distinct content. Ends with one flush.
pub fn bench(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let total = cmdline.get_u64("mib", 64) << 20;
    let req =
        (cmdline.get_u64("req_kib", 64) << 10).clamp(BLOCK as u64, (MAX_BLOCKS * BLOCK) as u64);
    let batch = cmdline.get_u64("batch", 8).clamp(1, 21) as usize;
    let disk = dev.capacity_sectors * 512;
    let buf = buffer();
    let mut rng = Rng::new(cmdline.get_u64("seed", 1));
    for word in buf.chunks_exact_mut(8) {
        word.copy_from_slice(&rng.next().to_le_bytes());
    }
    // Each request of a batch writes its own part of the buffer.
    let per_req = (buf.len() / batch) as u64 / BLOCK as u64 * BLOCK as u64;
    let req = req.min(per_req).max(BLOCK as u64);
    let mut offset = 0u64;
    let mut written = 0u64;
    let mut reqs = [Req {
        kind: T_OUT,
        sector: 0,
        buf: core::ptr::null_mut(),
        len: 0,
    }; 21];
    let mut status = [0u8; 21];
    let mut n = 0u64;
    while written < total {
        for (i, r) in reqs.iter_mut().take(batch).enumerate() {
            if offset + req > disk {
                offset = 0;
            }
            let part = &mut buf[i * req as usize..(i + 1) * req as usize];
            for block in part.chunks_exact_mut(BLOCK) {
                n += 1;
                block[..8].copy_from_slice(&n.to_le_bytes());
            }
            *r = Req {
                kind: T_OUT,
                sector: offset / 512,
                buf: part.as_mut_ptr(),
                len: req as u32,
            };
            offset += req;
        }
        if dev.submit(&reqs[..batch], &mut status[..batch]).is_err()
            || status[..batch].iter().any(|s| *s != S_OK)
        {
            say!("blk-bench: write failed\n");
            return 1;
        }
        written += req * batch as u64;
    }
    if dev.flush().ok() != Some(S_OK) {
        return 1;
    }
    say!("blk-bench: bytes={written} req={req} batch={batch}\n");
    0
}

/// `workload=blk-zero`: writes 64 self-checking blocks, zeroes blocks 8..24
/// with WRITE_ZEROES and 32..40 with DISCARD, flushes, and checks that
/// exactly those ranges read back as zeros.
pub fn zero(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let buf = buffer();
    for (b, block) in buf[..64 * BLOCK].chunks_exact_mut(BLOCK).enumerate() {
        fill_block(block, 0xfeed + b as u64);
    }
    let ok = dev.write(0, &buf[..64 * BLOCK]).ok() == Some(S_OK)
        && dev.zero(T_WRITE_ZEROES, 8 * 8, 16 * 8).ok() == Some(S_OK)
        && dev.zero(T_DISCARD, 32 * 8, 8 * 8).ok() == Some(S_OK)
        && dev.flush().ok() == Some(S_OK);
    if !ok {
        say!("blk-zero: a request failed\n");
        return 1;
    }
    let data = &mut buf[..64 * BLOCK];
    data.fill(0xaa);
    if dev.read(0, data).ok() != Some(S_OK) {
        return 1;
    }
    let mut bad = 0;
    for (b, block) in data.chunks_exact(BLOCK).enumerate() {
        let zeroed = (8..24).contains(&b) || (32..40).contains(&b);
        let good = if zeroed {
            block.iter().all(|x| *x == 0)
        } else {
            block_is_valid(block)
        };
        if !good {
            bad += 1;
        }
    }
    say!("blk-zero: zeroed=24 kept=40 bad={bad}\n");
    u32::from(bad != 0)
}
