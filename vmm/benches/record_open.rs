//! Recorder open: how long `vmm run --record` takes to know the disk's
//! state, on an image the recorder closed last (the log's saved state,
//! checked by the image stamp and a content sample) vs `--rescan` (hashing
//! the whole image, what every open did before), for a 256 MiB and a
//! 1 GiB image filled with data. Baseline in the same run: one `stat` of
//! the image. `cargo bench -p vmm --bench record_open`.
//!
//! Times are the tap's own (`--stats` record_open.open_us: store, log and
//! state opened, base logged if any), so VM boot is not counted.
use std::process::Command;
use std::time::Instant;

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
const RUNS: usize = 7;
const RESCANS: usize = 3;
/// The goal for a 1 GiB image the recorder closed last.
const GOAL_MS: f64 = 20.0;

/// One recorded run; returns its `record_open` stats.
fn run(disk: &str, rec: &str, cmdline: &str, extra: &[&str]) -> serde_json::Value {
    let mut cmd = Command::new(VMM);
    cmd.args(["run", "--stats", "--disk", disk, "--record", rec]);
    cmd.args(["--cmdline", cmdline]).args(extra);
    let out = cmd.output().expect("vmm runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let stats: serde_json::Value =
        serde_json::from_str(stderr.lines().last().expect("stats line")).expect("stats JSON");
    stats["record_open"].clone()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn ms(open: &serde_json::Value) -> f64 {
    open["open_us"].as_f64().unwrap() / 1e3
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    println!("recorder open: median of {RUNS} fast opens, {RESCANS} rescans (ms)");
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>12} {:>12} {:>9}",
        "image", "stat", "fast open", "rescan", "fast/rescan", "blocks read", "goal"
    );
    for mib in [256u64, 1024] {
        let disk = dir.path().join(format!("disk-{mib}.img"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        let rec = dir.path().join(format!("rec-{mib}"));
        let (disk, rec) = (disk.to_str().unwrap(), rec.to_str().unwrap());
        // Fill the image through the recorder: every block written, logged
        // and stored; the log is closed cleanly and the image stamped.
        let fill = format!("workload=blk-bench mib={} req_kib=256 batch=8", mib - 4);
        run(disk, rec, &fill, &[]);
        let mut stat = Vec::new();
        let (mut fast, mut scan) = (Vec::new(), Vec::new());
        let mut read = 0;
        for i in 0..RUNS {
            let t = Instant::now();
            std::fs::metadata(disk).unwrap();
            stat.push(t.elapsed().as_secs_f64() * 1e3);
            let open = run(disk, rec, "workload=exit", &[]);
            assert_eq!(open["fast"], true, "{open}");
            read = open["blocks_read"].as_u64().unwrap();
            fast.push(ms(&open));
            if i < RESCANS {
                scan.push(ms(&run(disk, rec, "workload=exit", &["--rescan"])));
            }
        }
        let (stat, fast, scan) = (median(stat), median(fast), median(scan));
        println!(
            "{:<10} {:>10.3} {:>10.1} {:>10.1} {:>12.3} {:>12} {:>9}",
            format!("{mib} MiB"),
            stat,
            fast,
            scan,
            fast / scan,
            read,
            if mib == 1024 {
                format!(
                    "{}{GOAL_MS:.0} ms",
                    if fast <= GOAL_MS { "<=" } else { ">" }
                )
            } else {
                String::new()
            }
        );
        let _ = std::fs::remove_dir_all(rec);
        let _ = std::fs::remove_file(disk);
    }
}
