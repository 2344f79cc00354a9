//! Fleet replay against a real 3-node JetStream cluster (started here):
//! eight recorded VMs, two `vmm worker` processes with different memory,
//! one job too big for the smaller worker, and the smaller worker killed
//! in the middle of a job. Every VM's drill still completes, each exactly
//! once in the report, with the checksum a local replay gives. Skipped,
//! saying so, only when nats-server is not installed.
mod common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;
use jetstream::cluster::TestCluster;
use serde_json::Value;

/// Kills the worker processes when the test ends, however it ends.
struct Workers(Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn worker(cluster: &str, fleet: &str, id: &str, work: &Path, extra: &[&str]) -> Child {
    Command::new(VMM)
        .args(["worker", "--cluster", cluster, "--fleet", fleet, "--id", id])
        .args(["--disk-bw", "100MiB", "--work-dir", work.to_str().unwrap()])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the vmm binary runs")
}

fn json(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_str(stdout(out).trim()).unwrap()
}

#[test]
fn fleet_drill_places_by_memory_and_survives_a_dead_worker() {
    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    for i in 0..8 {
        // vm7 writes far more blocks than the others: its replay holds a
        // larger block table.
        let (mib, cmdline) = if i == 7 {
            (
                64,
                "workload=blk-writes seed=7 writes=60 max_blocks=256".to_string(),
            )
        } else {
            (16, format!("workload=blk-writes seed={i} writes=6"))
        };
        let disk = blank_disk(dir.path(), &format!("vm{i}.img"), mib);
        run_recorded(&disk, &rec, &format!("vm{i}"), &cmdline, &[]);
    }
    let servers = cluster.urls().replace("nats://", "");
    let url = format!("nats://{servers}/fleet");
    let cluster_url = format!("nats://{servers}");
    let pushed = vmm(&["log", "push", rec.to_str().unwrap(), "--to", &url]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));

    let fleet = "t1";
    let work = |name: &str| {
        let p = dir.path().join(name);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    let mut workers = Workers(vec![worker(
        &cluster_url,
        fleet,
        "big",
        &work("big"),
        &["--cores", "2", "--mem", "4GiB"],
    )]);
    // What each job needs, from the planner itself.
    let planned = vmm(&[
        "fleet",
        "drill",
        "--cluster",
        &url,
        "--fleet",
        fleet,
        "--dry-run",
        "--wait-workers",
        "60",
    ]);
    if planned.status.code() != Some(0) {
        // Say why the worker never showed up.
        let w = &mut workers.0[0];
        let _ = w.kill();
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut w.stderr.take().unwrap(), &mut err);
        panic!("{}\nthe worker said:\n{err}", stderr(&planned));
    }
    let plan = json(&planned);
    let mem = |vm: &str| {
        plan["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["vm"] == vm)
            .unwrap()["mem_bytes"]
            .as_u64()
            .unwrap()
    };
    let small_max = (0..7).map(|i| mem(&format!("vm{i}"))).max().unwrap();
    let big = mem("vm7");
    assert!(
        big > small_max,
        "vm7 needs {big}, the others up to {small_max}"
    );
    let small_mem = (small_max + big) / 2;
    workers.0.push(worker(
        &cluster_url,
        fleet,
        "small",
        &work("small"),
        &["--cores", "1", "--mem", &small_mem.to_string()],
    ));

    let coordinator = Command::new(VMM)
        .args(["fleet", "drill", "--cluster", &url, "--fleet", fleet])
        .args(["--min-workers", "2", "--worker-timeout", "2", "--json"])
        // A loaded machine starts workers slowly.
        .args(["--wait-workers", "60"])
        .args(["--timeout", "300"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // Kill the small worker as soon as it has started a job.
    let small_err = workers.0[1].stderr.take().unwrap();
    let mut lines = BufReader::new(small_err).lines();
    let mut seen = Vec::new();
    loop {
        let line = lines
            .next()
            .expect("the small worker started a job before it ended")
            .unwrap();
        seen.push(line.clone());
        if line.contains("started job") {
            break;
        }
    }
    workers.0[1].kill().unwrap();
    workers.0[1].wait().unwrap();

    let out = coordinator.wait_with_output().unwrap();
    let report = json(&out);
    let jobs = report["jobs"].as_array().unwrap();
    let mut vms: Vec<&str> = jobs.iter().map(|j| j["vm"].as_str().unwrap()).collect();
    vms.sort();
    let expected: Vec<String> = (0..8).map(|i| format!("vm{i}")).collect();
    assert_eq!(vms, expected, "each VM exactly once: {report}");
    for j in jobs {
        assert_eq!(j["pass"], true, "{j}");
    }
    let vm7 = jobs.iter().find(|j| j["vm"] == "vm7").unwrap();
    assert_eq!(vm7["worker"], "big", "{report}");
    assert!(report["requeued"].as_u64().unwrap() >= 1, "{report}");
    assert_eq!(report["failed"], 0);
    eprintln!("fleet report: {report}");

    // Each checksum is the one a local replay of the same log gives.
    for j in jobs {
        let vm = j["vm"].as_str().unwrap();
        let out_img = dir.path().join(format!("{vm}-local.img"));
        let local = json(&vmm(&[
            "replay",
            "--log",
            rec.to_str().unwrap(),
            "--vm",
            vm,
            "--out",
            out_img.to_str().unwrap(),
            "--json",
        ]));
        assert_eq!(j["checksum"], local["checksum"], "{vm}");
    }
}

#[test]
fn fleet_replay_reports_unplaceable_jobs_and_bad_input_clearly() {
    // No cluster at all: one clear line, exit 125, before anything runs.
    let out = vmm(&[
        "fleet",
        "replay",
        "--cluster",
        "nats://127.0.0.1:1/lab",
        "--wait-workers",
        "1",
    ]);
    assert_one_line_error(&out, 125, "127.0.0.1:1");
    let out = vmm(&["worker", "--cluster", "nats://127.0.0.1:4222/lab"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("servers only"), "{}", stderr(&out));

    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    for i in 0..2 {
        let disk = blank_disk(dir.path(), &format!("vm{i}.img"), 8);
        let cmdline = format!("workload=blk-writes seed={} writes=4", i * 2);
        run_recorded(&disk, &rec, &format!("db{i}"), &cmdline, &[]);
    }
    let servers = cluster.urls().replace("nats://", "");
    let url = format!("nats://{servers}/fleet2");
    let pushed = vmm(&["log", "push", rec.to_str().unwrap(), "--to", &url]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));

    // Nobody to run the jobs: said so, with what to do.
    let out = vmm(&[
        "fleet",
        "replay",
        "--cluster",
        &url,
        "--fleet",
        "t2",
        "--wait-workers",
        "2",
    ]);
    assert_one_line_error(&out, 125, "vmm worker --cluster");
    // No VM matches.
    let out = vmm(&["fleet", "replay", "--cluster", &url, "--vms", "web*"]);
    assert_one_line_error(&out, 125, "matches --vms 'web*'");

    let work = dir.path().join("w");
    let cluster_url = format!("nats://{servers}");
    let _workers = Workers(vec![worker(
        &cluster_url,
        "t2",
        "w1",
        &work,
        &["--label", "ssd"],
    )]);
    let ok = json(&vmm(&[
        "fleet",
        "replay",
        "--cluster",
        &url,
        "--fleet",
        "t2",
        "--wait-workers",
        "60",
        "--json",
    ]));
    assert_eq!(ok["passed"], 2, "{ok}");
    assert_eq!(ok["workers"], serde_json::json!(["w1"]));
    // The disks were checksummed and removed: nothing left behind.
    assert_eq!(std::fs::read_dir(&work).unwrap().count(), 0);

    // A label no worker has: every job FAILs with why, exit 1.
    let out = vmm(&[
        "fleet",
        "replay",
        "--cluster",
        &url,
        "--fleet",
        "t2",
        "--only-workers",
        "gpu",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["failed"], 2, "{report}");
    let detail = report["jobs"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("lacks label 'gpu'"), "{detail}");

    // A long log is split at its checkpoints: each segment starts from one
    // and checks its barriers; the last ends where a whole replay does.
    let rec3 = dir.path().join("rec3");
    let disk = blank_disk(dir.path(), "long.img", 32);
    let cmdline = "workload=blk-writes seed=4 writes=120 max_blocks=64 flush_every=2";
    run_recorded(&disk, &rec3, "long", cmdline, &["--checkpoint-every", "10"]);
    let url3 = format!("nats://{servers}/fleet3");
    let pushed = vmm(&["log", "push", rec3.to_str().unwrap(), "--to", &url3]);
    assert_eq!(pushed.status.code(), Some(0), "{}", stderr(&pushed));
    let seg = json(&vmm(&[
        "fleet",
        "replay",
        "--cluster",
        &url3,
        "--fleet",
        "t2",
        "--segment-mib",
        "2",
        "--wait-workers",
        "60",
        "--json",
    ]));
    let jobs = seg["jobs"].as_array().unwrap();
    assert!(jobs.len() >= 3, "{seg}");
    assert!(jobs.iter().all(|j| j["pass"] == true), "{seg}");
    assert_eq!(jobs[0]["from_checkpoint"], Value::Null);
    for pair in jobs.windows(2) {
        assert_eq!(pair[1]["from_checkpoint"], pair[0]["until_seq"], "{seg}");
    }
    let whole = dir.path().join("whole.img");
    let local = json(&vmm(&[
        "replay",
        "--log",
        rec3.to_str().unwrap(),
        "--out",
        whole.to_str().unwrap(),
        "--no-checkpoints",
        "--json",
    ]));
    assert_eq!(jobs.last().unwrap()["checksum"], local["checksum"]);
}
