//! Recording overhead: guest write throughput with `--record` on vs off,
//! measured in the same run. `cargo bench -p vmm --bench record`.
//!
//! Times are the guest's own run (the VMM's `--stats` run_us: boot to guest
//! exit, including the final flush), so the one-off base capture of the
//! image when a log is created is not counted; it is printed separately.
use std::process::Command;

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
const RUNS: usize = 5;
const DISK_MIB: u64 = 64;

fn run(disk: &str, record: Option<&str>, cmdline: &str) -> (f64, f64) {
    let mut cmd = Command::new(VMM);
    cmd.args(["run", "--stats", "--disk", disk, "--cmdline", cmdline]);
    if let Some(dir) = record {
        cmd.args(["--record", dir]);
    }
    let out = cmd.output().expect("vmm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr.lines().last().expect("stats line");
    let stats: serde_json::Value = serde_json::from_str(line).expect("stats JSON");
    (
        stats["run_us"].as_f64().unwrap() / 1e6,
        stats["build_us"].as_f64().unwrap() / 1e6,
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(DISK_MIB << 20)
        .unwrap();
    let disk = disk.to_str().unwrap();
    println!("recording benchmark: median of {RUNS} runs each, on/off interleaved");
    // Recording adds a second busy thread: on a loaded host the ratio
    // follows the CPU both threads get, so say what the load was.
    let load = || std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("host load average at start: {}", load().trim());
    println!(
        "{:<34} {:>9} {:>10} {:>9} {:>10} {:>9}",
        "workload", "off MB/s", "off req/s", "on MB/s", "on req/s", "on/off"
    );
    for (name, mib, req_kib, batch) in [
        ("4 KiB requests, 1 per notify", 32u64, 4u64, 1u64),
        ("64 KiB requests, 1 per notify", 256, 64, 1),
        ("32 KiB requests, 8 per notify", 512, 32, 8),
    ] {
        let (mut off, mut on, mut base) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..RUNS {
            let cmdline =
                format!("workload=blk-bench mib={mib} req_kib={req_kib} batch={batch} seed={i}");
            off.push(run(disk, None, &cmdline).0);
            let rec = dir.path().join(format!("rec-{name}-{i}").replace(' ', "_"));
            let (t, b) = run(disk, Some(rec.to_str().unwrap()), &cmdline);
            on.push(t);
            base.push(b);
            let _ = std::fs::remove_dir_all(&rec);
        }
        let (off, on) = (median(off), median(on));
        let bytes = (mib << 20) as f64;
        let reqs = bytes / (req_kib << 10) as f64;
        println!(
            "{name:<34} {:>9.0} {:>10.0} {:>9.0} {:>10.0} {:>9.2}",
            bytes / off / 1e6,
            reqs / off,
            bytes / on / 1e6,
            reqs / on,
            (bytes / on) / (bytes / off)
        );
        println!(
            "{:<34} base capture of the {DISK_MIB} MiB image at log creation: {:.0} ms",
            "",
            median(base) * 1e3
        );
    }
    println!("host load average now: {}", load().trim());
    println!("goal: on/off at least 0.9 at 64 KiB requests, at least 0.5 at 32 KiB x 8");

    // End to end with semantic decoding: the SQLite workload recorded with
    // the hint channel (lifting at every barrier) vs blocks only.
    let big = dir.path().join("sqlite.img");
    let (mut on, mut off) = (Vec::new(), Vec::new());
    for i in 0..RUNS {
        for (decode, times) in [(true, &mut on), (false, &mut off)] {
            std::fs::File::create(&big)
                .unwrap()
                .set_len(64 << 20)
                .unwrap();
            let rec = dir.path().join(format!("sql-{i}-{decode}"));
            let mut cmd = Command::new(VMM);
            cmd.args([
                "run",
                "--stats",
                "--disk",
                big.to_str().unwrap(),
                "--record",
                rec.to_str().unwrap(),
            ]);
            cmd.args([
                "--cmdline",
                &format!("workload=sqlite rows=2000 seed={i} journal=wal close=1"),
            ]);
            if !decode {
                cmd.arg("--no-decode");
            }
            let out = cmd.output().expect("vmm runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let stderr = String::from_utf8_lossy(&out.stderr);
            let stats: serde_json::Value =
                serde_json::from_str(stderr.lines().last().unwrap()).unwrap();
            times.push(stats["run_us"].as_f64().unwrap() / 1e3);
            let _ = std::fs::remove_dir_all(&rec);
        }
    }
    let (on, off) = (median(on), median(off));
    println!(
        "sqlite workload (rows=2000, WAL), recorded: blocks only {off:.0} ms, with decoding {on:.0} ms: {:.2}x the time",
        on / off
    );
}
