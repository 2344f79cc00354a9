//! Boot benchmark: process start to the first guest serial byte and to guest
//! exit, against spawning `echo`/`true` the same way in the same run, plus
//! the VMM's own memory overhead. Run with `cargo bench -p vmm --bench boot`.
//!
//! These machines are shared and noisy: the figures are medians of many runs
//! and the ratios against a baseline from the same run are what to compare.
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUNS: usize = 30;
const VMM: &str = env!("CARGO_BIN_EXE_vmm");

/// Spawns `cmd`; returns the times to its first stdout byte, to stdout's end
/// (for `vmm run`: the guest has exited) and to process exit.
fn time_spawn(program: &str, args: &[&str]) -> Sample {
    let start = Instant::now();
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    let first = match out.read(&mut byte) {
        Ok(1) => Some(start.elapsed()),
        _ => None,
    };
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let eof = start.elapsed();
    let status = child.wait().expect("wait");
    let exit = start.elapsed();
    assert!(status.success(), "{program} {args:?} failed: {status}");
    Sample { first, eof, exit }
}

struct Sample {
    first: Option<Duration>,
    eof: Duration,
    exit: Duration,
}

struct Medians {
    first: Option<Duration>,
    eof: Duration,
    exit: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn series(program: &str, args: &[&str]) -> Medians {
    let _ = time_spawn(program, args); // warm the page cache
    let runs: Vec<_> = (0..RUNS).map(|_| time_spawn(program, args)).collect();
    let firsts: Vec<Duration> = runs.iter().filter_map(|r| r.first).collect();
    Medians {
        first: (!firsts.is_empty()).then(|| median(firsts)),
        eof: median(runs.iter().map(|r| r.eof).collect()),
        exit: median(runs.iter().map(|r| r.exit).collect()),
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    println!("boot benchmark: median of {RUNS} runs each, process spawn to event");
    let echo = series("echo", &["x"]);
    let true_ = series("true", &[]);
    let vmm = series(VMM, &["run"]);
    let echo_first = echo.first.expect("echo prints");
    let vmm_first = vmm.first.expect("the microguest prints");
    let true_exit = true_.exit;

    println!("{:<38} {:>10} {:>12}", "", "median ms", "x baseline");
    println!(
        "{:<38} {:>10.3} {:>12}",
        "echo x: first byte (baseline)",
        ms(echo_first),
        "1.00"
    );
    println!(
        "{:<38} {:>10.3} {:>12.2}",
        "vmm run: first guest serial byte",
        ms(vmm_first),
        ms(vmm_first) / ms(echo_first)
    );
    println!(
        "{:<38} {:>10.3} {:>12}",
        "true: exit (baseline)",
        ms(true_exit),
        "1.00"
    );
    println!(
        "{:<38} {:>10.3} {:>12.2}",
        "vmm run: guest exit (console EOF)",
        ms(vmm.eof),
        ms(vmm.eof) / ms(true_exit)
    );
    println!(
        "{:<38} {:>10.3} {:>12.2}",
        "vmm run: process exit",
        ms(vmm.exit),
        ms(vmm.exit) / ms(true_exit)
    );
    let goal = if ms(vmm_first) < 5.0 {
        "met"
    } else {
        "NOT met"
    };
    println!("goal: first byte under 5 ms: {goal}");

    let mut runs: Vec<(u64, u64)> = (0..5)
        .map(|_| {
            let out = Command::new(VMM)
                .args(["run", "--stats"])
                .output()
                .expect("vmm runs");
            let stats: serde_json::Value =
                serde_json::from_slice(out.stderr.trim_ascii()).expect("stats JSON");
            (
                stats["vmm_overhead_kib"].as_u64().unwrap(),
                stats["vmm_private_kib"].as_u64().unwrap(),
            )
        })
        .collect();
    runs.sort();
    let (overhead, private) = runs[runs.len() / 2];
    let goal = if overhead <= 5 * 1024 {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "VMM memory overhead (RSS minus resident guest pages): {overhead} KiB; goal at most 5 MiB: {goal}"
    );
    println!(
        "  of which private (anonymous, not the binary's pages shared by all VMMs): {private} KiB"
    );
}
