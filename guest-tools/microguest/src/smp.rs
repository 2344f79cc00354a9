//! The application processors (APs): started by the VMM in the same PVH
//! state as the boot CPU (`boot.rs` sends them to [`microguest_ap_main`]
//! on their own stacks), they wait for work from CPU 0.
//!
//! The VMM says how many vCPUs it started with `cpus=N` on the command
//! line (absent: 1). CPU 0 waits until that many have checked in
//! ([`init`]); then [`parallel`] runs a job on every CPU at once.
//!
//! APs never allocate (the heap has no lock: `heap.rs`), never print and
//! never touch virtio: a job is plain computation over memory it is given.
//! Only CPU 0 talks to devices.
use core::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

use crate::cmdline::Cmdline;
use crate::say;

/// The most CPUs the microguest runs on (the VMM's limit too).
pub const MAX_CPUS: usize = 8;
/// Each AP's stack is 1 << this many bytes (64 KiB).
pub const AP_STACK_SHIFT: usize = 16;
/// How long CPU 0 waits for the APs to check in, in TSC cycles (a few
/// seconds on any host: their CPL0 boot is emulated, ~0.3 ms).
const CHECK_IN_CYCLES: u64 = 20_000_000_000;

/// APs that reached CPL3, as a bit mask of their indices.
static ONLINE: AtomicU32 = AtomicU32::new(0);
/// How many CPUs the work is spread over (set by [`init`]).
static CPUS: AtomicUsize = AtomicUsize::new(1);
/// The job: a pointer to a `&(dyn Fn(usize) + Sync)` on CPU 0's stack,
/// valid while [`parallel`] waits; posted by bumping `GENERATION`.
static JOB: AtomicUsize = AtomicUsize::new(0);
static GENERATION: AtomicU64 = AtomicU64::new(0);
/// The generation each CPU finished last.
static DONE: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];
/// How many jobs each CPU ran (so a test can tell the APs really worked).
static JOBS_RUN: [AtomicU64; MAX_CPUS] = [const { AtomicU64::new(0) }; MAX_CPUS];

type Job<'a> = &'a (dyn Fn(usize) + Sync);

/// Called by the boot stub on AP `cpu` at CPL3; never returns (the VM ends
/// when CPU 0 writes the exit port).
#[no_mangle]
extern "C" fn microguest_ap_main(_start_info: u64, cpu: u64) -> ! {
    let cpu = cpu as usize;
    ONLINE.fetch_or(1 << cpu, Ordering::Release);
    let mut seen = 0;
    loop {
        let generation = GENERATION.load(Ordering::Acquire);
        if generation == seen || cpu >= CPUS.load(Ordering::Acquire) {
            core::hint::spin_loop();
            continue;
        }
        // SAFETY: JOB was stored before GENERATION (Release/Acquire) and
        // stays valid until this CPU's DONE says it finished.
        let job = unsafe { *(JOB.load(Ordering::Acquire) as *const Job) };
        job(cpu);
        JOBS_RUN[cpu].fetch_add(1, Ordering::Relaxed);
        DONE[cpu].store(generation, Ordering::Release);
        seen = generation;
    }
}

fn rdtsc() -> u64 {
    // SAFETY: rdtsc reads a counter; it is allowed at CPL3 (CR4.TSD clear).
    unsafe { core::arch::x86_64::_rdtsc() }
}

/// Waits until every vCPU the command line announces (`cpus=N`) has
/// checked in; the number of CPUs work is spread over, or None (after
/// saying why) when the count is out of range or an AP never came.
pub fn init(cmdline: &Cmdline) -> Option<usize> {
    let cpus = cmdline.get_u64("cpus", 1);
    if cpus == 0 || cpus > MAX_CPUS as u64 {
        say!("smp: cpus={cpus} is out of range (1..={MAX_CPUS})\n");
        return None;
    }
    let cpus = cpus as usize;
    let want = ((1u32 << cpus) - 1) & !1;
    let start = rdtsc();
    while ONLINE.load(Ordering::Acquire) & want != want {
        if rdtsc().wrapping_sub(start) > CHECK_IN_CYCLES {
            say!(
                "smp: only CPUs {:#x} of {want:#x} checked in\n",
                ONLINE.load(Ordering::Acquire)
            );
            return None;
        }
        core::hint::spin_loop();
    }
    CPUS.store(cpus, Ordering::Release);
    Some(cpus)
}

/// Runs `job(cpu)` on every CPU at once (CPU 0 included), calls `between`
/// on CPU 0 once its own share is done, then waits for the others.
pub fn parallel(job: &(dyn Fn(usize) + Sync), between: impl FnOnce()) {
    let cpus = CPUS.load(Ordering::Acquire);
    let generation = GENERATION.load(Ordering::Relaxed) + 1;
    if cpus > 1 {
        JOB.store(&raw const job as usize, Ordering::Release);
        GENERATION.store(generation, Ordering::Release);
    }
    job(0);
    JOBS_RUN[0].fetch_add(1, Ordering::Relaxed);
    between();
    for done in DONE.iter().take(cpus).skip(1) {
        while done.load(Ordering::Acquire) != generation {
            core::hint::spin_loop();
        }
    }
}

/// How many jobs CPU `cpu` has run.
pub fn jobs_run(cpu: usize) -> u64 {
    JOBS_RUN.get(cpu).map_or(0, |j| j.load(Ordering::Relaxed))
}
