//! `workload=memtest`: keeps a running checksum of its own memory across
//! snapshot points, so a restored VM can be checked against an
//! uninterrupted run.
//!
//! Parameters: `pages=N` (region of N 4 KiB pages at 16 MiB), `iters=I`,
//! `seed=S`, `snap_every=K` (ask the VMM for a snapshot every K iterations
//! through the snapshot port: the first full, later ones incremental).
//! Prints `memtest: iters=I sum=.. mem=..` at the end: `sum` covers every
//! value written, `mem` the whole region as it ends up.
use crate::cmdline::Cmdline;
use crate::io::outb;
use crate::say;
use crate::workloads::spec::Rng;

const REGION: usize = 16 << 20;
/// The VMM snapshots the VM when it writes 1 (full) or 2 (incremental) here.
pub(crate) const SNAPSHOT_PORT: u16 = 0xf5;

pub fn run(cmdline: &Cmdline) -> u32 {
    let pages = cmdline.get_u64("pages", 1024) as usize;
    let iters = cmdline.get_u64("iters", 64);
    let snap_every = cmdline.get_u64("snap_every", 0);
    let mut rng = Rng::new(cmdline.get_u64("seed", 1));
    // SAFETY: guest RAM from 16 MiB is identity mapped and unused by the
    // image (which ends below 2 MiB); the VMM checks --mem-mib covers it
    // when the guest touches it (an access past RAM faults the guest).
    let region = unsafe { core::slice::from_raw_parts_mut(REGION as *mut u64, pages * 512) };
    let mut sum = 0u64;
    let mut snaps = 0u64;
    for i in 0..iters {
        for _ in 0..(pages / 8).max(1) {
            let page = (rng.next() % pages as u64) as usize;
            let v = rng.next();
            for w in region[page * 512..page * 512 + 512].iter_mut().step_by(7) {
                *w = w.wrapping_add(v);
            }
            sum = sum.rotate_left(5) ^ v ^ (page as u64);
        }
        if snap_every != 0 && (i + 1) % snap_every == 0 && i + 1 < iters {
            outb(SNAPSHOT_PORT, if snaps == 0 { 1 } else { 2 });
            snaps += 1;
        }
    }
    let mut mem = 0xcbf2_9ce4_8422_2325u64;
    for w in region.iter() {
        mem = (mem ^ w).wrapping_mul(0x100_0000_01b3);
    }
    say!("memtest: iters={iters} sum={sum:#018x} mem={mem:#018x}\n");
    0
}
