//! Recording with synchronous replication to a 3-node JetStream cluster on
//! loopback (`--replicate`, started here) vs recording to the local
//! directory only, in the same run: `cargo bench -p vmm --bench replicate`.
//! Needs nats-server (skips, saying so, without it).
//!
//! Times are the guest's own run (`--stats` run_us, including its final
//! flush, which with --replicate waits for the cluster's acks). Runs
//! alternate, medians of RUNS. The goal is replicated/local >= 0.5.
use std::process::Command;

use jetstream::cluster::TestCluster;

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
const RUNS: usize = 3;

fn run(disk: &str, rec: &str, replicate: Option<&str>, cmdline: &str) -> f64 {
    std::fs::File::create(disk)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let mut cmd = Command::new(VMM);
    cmd.args([
        "run",
        "--stats",
        "--disk",
        disk,
        "--record",
        rec,
        "--cmdline",
        cmdline,
    ]);
    if let Some(url) = replicate {
        cmd.args(["--replicate", url]);
    }
    let out = cmd.output().expect("vmm runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stats: serde_json::Value =
        serde_json::from_str(stderr.lines().last().expect("stats line")).expect("stats JSON");
    stats["run_us"].as_f64().unwrap() / 1e6
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let hosts = cluster.urls().replace("nats://", "");
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    let disk = disk.to_str().unwrap();
    println!("recording with --replicate (3-node loopback cluster) vs local only: median of {RUNS}, alternating");
    for (name, cmdline, mib) in [
        (
            "blk-bench 32 MiB, 64 KiB requests",
            "workload=blk-bench mib=32 req_kib=64 batch=1",
            Some(32u64),
        ),
        (
            "sqlite rows=500 (a flush per transaction)",
            "workload=sqlite rows=500",
            None,
        ),
    ] {
        let (mut local, mut replicated) = (Vec::new(), Vec::new());
        for i in 0..RUNS {
            let cmdline = format!("{cmdline} seed={i}");
            let rec = dir.path().join(format!("local-{i}"));
            local.push(run(disk, rec.to_str().unwrap(), None, &cmdline));
            let rec = dir.path().join(format!("repl-{i}"));
            let url = format!("nats://{hosts}/bench{i}{}", name.len());
            replicated.push(run(disk, rec.to_str().unwrap(), Some(&url), &cmdline));
        }
        let (l, r) = (median(local), median(replicated));
        let rate = |t: f64| {
            mib.map_or(String::new(), |m| {
                format!(" ({:.1} MB/s)", (m << 20) as f64 / t / 1e6)
            })
        };
        println!(
            "  {name:<44} local {:.0} ms{}, replicated {:.0} ms{}: ratio {:.2} (goal >= 0.50)",
            l * 1e3,
            rate(l),
            r * 1e3,
            rate(r),
            l / r
        );
    }
}
