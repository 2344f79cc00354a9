//! Workloads, selected by `workload=NAME` on the command line.
//!
//! Each returns the exit status the VMM will exit with (0 = success).
use crate::cmdline::Cmdline;
use crate::{io, say};

mod blk;
mod evil;
mod evil_hints;
mod json;
mod kv;
mod leveldb;
mod memtest;
mod shm;
mod smp_memtest;
pub mod spec;
mod sqlite;
mod workset;

pub fn run(cmdline: &Cmdline) -> u32 {
    match cmdline.get("workload").unwrap_or("hello") {
        "hello" => hello(cmdline),
        "exit" => cmdline.get_u64("code", 0) as u32,
        "count" => count(cmdline),
        "fault" => fault(),
        "spin" => spin(),
        "blk-writes" => blk::writes(cmdline),
        "blk-checksum" => blk::checksum(cmdline),
        "blk-verify" => blk::verify(cmdline),
        "blk-zero" => blk::zero(cmdline),
        "blk-bench" => blk::bench(cmdline),
        "evil-blk" => evil::blk(cmdline),
        "memtest" => memtest::run(cmdline),
        "smp-memtest" => smp_memtest::run(cmdline),
        "evil-hints" => evil_hints::run(cmdline),
        "shm-write" => shm::write(cmdline),
        "shm-read" => shm::read(cmdline),
        "sqlite" => sqlite::run(cmdline),
        "sqlite-summary" => sqlite::summary(cmdline),
        "json" => json::run(cmdline),
        "kv" => kv::run(cmdline),
        "leveldb" => leveldb::run(cmdline),
        "workset" => workset::run(cmdline),
        other => {
            say!("microguest: unknown workload '{other}' (known: hello exit count fault spin blk-writes blk-verify blk-zero blk-checksum blk-bench evil-blk evil-hints memtest smp-memtest shm-write shm-read sqlite sqlite-summary json kv leveldb workset)\n");
            crate::EXIT_GUEST_ERROR
        }
    }
}

/// Greets, echoes its command line and exits 0.
fn hello(cmdline: &Cmdline) -> u32 {
    io::print("Hello from the microguest!\n");
    say!("cmdline: {}\n", cmdline.line());
    0
}

/// Prints a checksum over `n` steps of a PRNG seeded by `seed`: CPL3 compute
/// at native speed whose result a test can recompute on the host.
fn count(cmdline: &Cmdline) -> u32 {
    let n = cmdline.get_u64("n", 1_000_000);
    let mut rng = crate::workloads::spec::Rng::new(cmdline.get_u64("seed", 1));
    let mut sum = 0u64;
    for _ in 0..n {
        sum = sum.wrapping_add(rng.next());
    }
    say!("count n={n} sum={sum:#018x}\n");
    0
}

/// `hlt` is privileged: at CPL3 it raises #GP, which with no IDT becomes a
/// triple fault. Tests use it to check that the VMM reports, never hangs.
fn fault() -> u32 {
    io::print("microguest: about to fault\n");
    // SAFETY: deliberately faults; nothing after it runs.
    unsafe { core::arch::asm!("hlt") };
    crate::EXIT_GUEST_ERROR
}

/// Never ends: for the VMM's `--timeout`.
fn spin() -> u32 {
    io::print("microguest: spinning\n");
    loop {
        core::hint::spin_loop();
    }
}
