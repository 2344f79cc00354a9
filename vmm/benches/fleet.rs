//! Fleet drill of 8 recorded VMs on 2 workers vs 1 worker, in the same
//! run: `cargo bench -p vmm --bench fleet`. Needs nats-server (skips,
//! saying so, without it); starts a 3-node loopback cluster.
//!
//! Each worker advertises one core (`--cores 1`: one job at a time), so 1
//! worker runs the 8 drills one after another and 2 workers run two at a
//! time. Time is the whole `vmm fleet drill` command: planning from the
//! cluster, waiting for the workers' heartbeats, the jobs, the report.
//! Runs alternate; medians of RUNS. The goal is 1 worker / 2 workers >=
//! 1.8, and at least 1.6 on a 2-core machine, where the two workers share
//! the cores with the three nats-servers and the coordinator.
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use jetstream::cluster::TestCluster;

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
const RUNS: usize = 3;
const VMS: usize = 8;

struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn vmm(args: &[&str]) {
    let out = Command::new(VMM).args(args).output().expect("vmm runs");
    assert!(
        out.status.success(),
        "vmm {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn drill(url: &str, fleet: &str, workers: usize) -> f64 {
    let started = Instant::now();
    let n = workers.to_string();
    vmm(&[
        "fleet",
        "drill",
        "--cluster",
        url,
        "--fleet",
        fleet,
        "--min-workers",
        &n,
        "--json",
    ]);
    started.elapsed().as_secs_f64()
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
    let rec = dir.path().join("rec");
    let rec = rec.to_str().unwrap();
    for i in 0..VMS {
        let disk = dir.path().join(format!("vm{i}.img"));
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(128 << 20)
            .unwrap();
        let vm = format!("vm{i}");
        let cmdline = format!(
            "workload=blk-writes seed={} writes=240 max_blocks=256",
            i * 2
        );
        vmm(&[
            "run",
            "--disk",
            disk.to_str().unwrap(),
            "--record",
            rec,
            "--vm-id",
            &vm,
            "--cmdline",
            &cmdline,
        ]);
    }
    let url = format!("nats://{hosts}/fleetbench");
    vmm(&["log", "push", rec, "--to", &url]);

    let cluster_url = format!("nats://{hosts}");
    let spawn = |fleet: &str, id: &str| {
        let work = dir.path().join(id);
        std::fs::create_dir_all(&work).unwrap();
        Command::new(VMM)
            .args(["worker", "--cluster", &cluster_url, "--fleet", fleet])
            .args(["--id", id, "--cores", "1", "--disk-bw", "200MiB"])
            .arg("--work-dir")
            .arg(&work)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("vmm worker starts")
    };
    let _workers = Workers(vec![
        spawn("one", "solo"),
        spawn("two", "pair-a"),
        spawn("two", "pair-b"),
    ]);

    println!("fleet drill of {VMS} VMs (128 MiB disks, ~30 MiB of writes each), 1-core workers: median of {RUNS}, alternating");
    let (mut one, mut two) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        one.push(drill(&url, "one", 1));
        two.push(drill(&url, "two", 2));
    }
    let (a, b) = (median(one), median(two));
    println!(
        "  1 worker {:.2} s, 2 workers {:.2} s: speed-up {:.2} (goal >= 1.8; >= 1.6 on 2 cores)",
        a,
        b,
        a / b
    );
}
