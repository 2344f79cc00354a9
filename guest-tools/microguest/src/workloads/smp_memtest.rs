//! `workload=smp-memtest`: memtest spread over every vCPU, with a result
//! that does not depend on how many there are.
//!
//! Parameters: `pages=N` (region of N 4 KiB pages at 16 MiB, like
//! `memtest`), `iters=I`, `seed=S`, `snap_every=K` (CPU 0 asks for a
//! snapshot every K iterations, while the other CPUs may still be at work
//! on theirs: the first full, later ones incremental), `work=W` (updates
//! per page and iteration, a multiplier of the compute).
//!
//! The region is cut into [`CHUNKS`] chunks, each with its own generator
//! and checksum; chunk `k` is worked by CPU `k % cpus` in every iteration.
//! So the sums are the same on 1 and on 8 vCPUs, and a chunk worked by an
//! AP that did not run would never finish. Prints
//! `smp-memtest: iters=I sum=.. mem=..` (the same on any vCPU count) and
//! `smp-memtest: cpus=N jobs=J0,J1,..` (the jobs each CPU ran: an AP that
//! did the work counts `iters`).
use core::cell::UnsafeCell;

use crate::cmdline::Cmdline;
use crate::io::outb;
use crate::say;
use crate::smp;
use crate::workloads::memtest::SNAPSHOT_PORT;
use crate::workloads::spec::Rng;

const REGION: usize = 16 << 20;
pub const CHUNKS: usize = 8;

struct Chunk {
    rng: Rng,
    sum: u64,
}

/// One chunk's state, touched by one CPU at a time: the CPU the chunk is
/// assigned to during a [`smp::parallel`] job, CPU 0 outside of one.
struct Chunks([UnsafeCell<Option<Chunk>>; CHUNKS]);

// SAFETY: see `Chunks`: no chunk is ever touched by two CPUs at once.
unsafe impl Sync for Chunks {}

static STATE: Chunks = Chunks([const { UnsafeCell::new(None) }; CHUNKS]);

pub fn run(cmdline: &Cmdline) -> u32 {
    let Some(cpus) = smp::init(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let pages = cmdline.get_u64("pages", 1024) as usize;
    let iters = cmdline.get_u64("iters", 64);
    let snap_every = cmdline.get_u64("snap_every", 0);
    let work = cmdline.get_u64("work", 1).max(1);
    let seed = cmdline.get_u64("seed", 1);
    if pages < CHUNKS {
        say!("smp-memtest: pages={pages} is fewer than {CHUNKS} chunks\n");
        return crate::EXIT_GUEST_ERROR;
    }
    for (k, chunk) in STATE.0.iter().enumerate() {
        // SAFETY: no job runs yet: CPU 0 alone touches the chunks.
        unsafe {
            *chunk.get() = Some(Chunk {
                rng: Rng::new(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ k as u64),
                sum: 0,
            })
        };
    }
    let per_chunk = pages / CHUNKS;
    let job = |cpu: usize| {
        for k in (cpu..CHUNKS).step_by(cpus) {
            // SAFETY: chunk k is this CPU's during the job (k % cpus == cpu).
            let chunk = unsafe { (*STATE.0[k].get()).as_mut() }.expect("initialized");
            // SAFETY: chunk k's pages are [k * per_chunk, (k + 1) * per_chunk)
            // of the region (identity-mapped RAM above the image), disjoint
            // from every other chunk's.
            let region = unsafe {
                core::slice::from_raw_parts_mut(
                    (REGION as *mut u64).add(k * per_chunk * 512),
                    per_chunk * 512,
                )
            };
            for _ in 0..(per_chunk / 8).max(1) * work as usize {
                let page = (chunk.rng.next() % per_chunk as u64) as usize;
                let v = chunk.rng.next();
                for w in region[page * 512..page * 512 + 512].iter_mut().step_by(7) {
                    *w = w.wrapping_add(v);
                }
                chunk.sum = chunk.sum.rotate_left(5) ^ v ^ (page as u64);
            }
        }
    };
    let mut snaps = 0u64;
    for i in 0..iters {
        smp::parallel(&job, || {
            if snap_every != 0 && (i + 1) % snap_every == 0 && i + 1 < iters {
                outb(SNAPSHOT_PORT, if snaps == 0 { 1 } else { 2 });
                snaps += 1;
            }
        });
    }
    let mut sum = 0u64;
    for chunk in &STATE.0 {
        // SAFETY: every job has finished: CPU 0 alone touches the chunks.
        let c = unsafe { (*chunk.get()).as_ref() }.expect("initialized");
        sum = sum.rotate_left(7) ^ c.sum;
    }
    // SAFETY: as above, the whole region, read once every job is done.
    let region =
        unsafe { core::slice::from_raw_parts(REGION as *const u64, per_chunk * CHUNKS * 512) };
    let mut mem = 0xcbf2_9ce4_8422_2325u64;
    for w in region {
        mem = (mem ^ w).wrapping_mul(0x100_0000_01b3);
    }
    say!("smp-memtest: iters={iters} sum={sum:#018x} mem={mem:#018x}\n");
    say!("smp-memtest: cpus={cpus} jobs=");
    for cpu in 0..cpus {
        say!("{}{}", if cpu == 0 { "" } else { "," }, smp::jobs_run(cpu));
    }
    say!("\n");
    0
}
