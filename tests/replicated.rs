//! A recorded VM's history in a NATS JetStream cluster (3 nodes, started
//! here): `vmm log push` copies it, and on a "fresh host" (nothing local)
//! `vmm changes`, `vmm history`, `vmm verify-change` and `vmm replay` read
//! it from the cluster
//! and give what they give from the local directory. Skipped, saying so,
//! only when nats-server is not installed.
mod common;

use common::*;
use jetstream::cluster::TestCluster;

fn ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "vmm {args:?}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn pushed_history_reads_the_same_from_the_cluster() {
    let Some(mut cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "app.img", 64);
    run_recorded(
        &disk,
        &rec,
        "app1",
        "workload=sqlite rows=120 seed=5",
        &["--timeout", "120"],
    );
    let rec_s = rec.to_str().unwrap();
    let url = format!("nats://{}/lab", cluster.urls().replace("nats://", ""));

    let pushed = ok(&["log", "push", rec_s, "--to", &url, "--json"]);
    let report: serde_json::Value = serde_json::from_str(pushed.trim()).unwrap();
    assert_eq!(report["remote_before"], 0);
    assert!(report["records_sent"].as_u64().unwrap() > 10, "{report}");
    // Again: nothing new to send.
    let again: serde_json::Value =
        serde_json::from_str(ok(&["log", "push", rec_s, "--to", &url, "--json"]).trim()).unwrap();
    assert_eq!(again["records_sent"], 0);

    // One node down: reads still come from the other two.
    cluster.kill(1);
    let local = changes_json(&rec, &[]);
    assert!(!local.is_empty());
    let remote = ok(&["changes", &url, "--json"]);
    let remote: Vec<serde_json::Value> = remote
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(remote, local);
    // The metrics records travelled too: the summary reads the same.
    let stats = ["log", "stats", rec_s, "--vm", "app1", "--json"];
    let from_dir = ok(&stats);
    assert!(from_dir.contains("\"barriers\""), "{from_dir}");
    assert_eq!(
        ok(&["log", "stats", &url, "--vm", "app1", "--json"]),
        from_dir
    );
    let key = local[local.len() / 2]["key"].as_str().unwrap().to_string();
    let table = local[local.len() / 2]["table"]
        .as_str()
        .unwrap_or("")
        .to_string();
    let mut history = vec!["history", rec_s, "--file", "app.db", "--key", &key];
    if !table.is_empty() {
        history.extend(["--table", &table]);
    }
    let from_dir = ok(&history);
    history[1] = &url;
    assert_eq!(ok(&history), from_dir);

    // Provenance re-derives from the cluster's blocks, and a relift from
    // them gives the recorded changes back.
    let last = local.last().unwrap()["seq"].as_u64().unwrap().to_string();
    let verified = ok(&["verify-change", &url, &last, "--vm", "app1"]);
    assert!(
        verified.starts_with(&format!("verified app1 seq {last} app.db: sqlite@"))
            && verified.contains("hashes match"),
        "{verified}"
    );
    assert_eq!(
        ok(&["changes", &url, "--json", "--decoder", "sqlite"]),
        ok(&["changes", rec_s, "--json"])
    );

    let out_remote = dir.path().join("remote.img");
    let out_local = dir.path().join("local.img");
    ok(&[
        "replay",
        "--log",
        &url,
        "--out",
        out_remote.to_str().unwrap(),
    ]);
    ok(&[
        "replay",
        "--log",
        rec_s,
        "--out",
        out_local.to_str().unwrap(),
    ]);
    assert_eq!(
        std::fs::read(&out_remote).unwrap(),
        std::fs::read(&out_local).unwrap()
    );
    assert_eq!(
        std::fs::read(&out_remote).unwrap(),
        std::fs::read(&disk).unwrap()
    );

    // A record set that does not exist is an error, not an empty history.
    let missing = format!("nats://{}/nosuch", cluster.urls().replace("nats://", ""));
    assert_one_line_error(&vmm(&["changes", &missing]), 125, "no record set `nosuch`");
}

#[test]
fn a_replicated_recording_survives_a_node_killed_mid_run() {
    let Some(mut cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "app.img", 64);
    let url = format!("nats://{}/sync", cluster.urls().replace("nats://", ""));
    let (disk_s, rec_s) = (
        disk.to_str().unwrap().to_string(),
        rec.to_str().unwrap().to_string(),
    );
    let run_url = url.clone();
    let run = std::thread::spawn(move || {
        run_recorded(
            std::path::Path::new(&disk_s),
            std::path::Path::new(&rec_s),
            "app2",
            "workload=sqlite rows=1500 seed=9",
            &["--timeout", "300", "--replicate", &run_url],
        )
    });
    // Mid-run (the guest flushes all along): one node goes away.
    std::thread::sleep(std::time::Duration::from_millis(1000));
    assert!(
        !run.is_finished(),
        "the run ended before the kill: make it longer"
    );
    cluster.kill(2);
    run.join().unwrap();
    cluster.restart(2).unwrap();

    // Every barrier the guest was told was durable is in the cluster: the
    // cluster's copy is the whole local log, and replays, from the cluster
    // alone, to the disk the guest left.
    let fresh = tempfile::tempdir().unwrap();
    let out = fresh.path().join("app2.img");
    let replayed = ok(&[
        "replay",
        "--log",
        &url,
        "--json",
        "--out",
        out.to_str().unwrap(),
    ]);
    let report: serde_json::Value = serde_json::from_str(replayed.trim()).unwrap();
    let local = ok(&["log", "show", rec.to_str().unwrap(), "--json"]);
    let last_local = local.lines().count() as u64;
    assert_eq!(report["last_seq"].as_u64(), Some(last_local), "{report}");
    assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&disk).unwrap());
    assert_eq!(
        ok(&["changes", &url, "--json"]),
        ok(&["changes", rec.to_str().unwrap(), "--json"])
    );

    // An unreachable cluster: a clear error before the VM starts.
    let disk2 = blank_disk(dir.path(), "other.img", 16);
    let out = vmm(&[
        "run",
        "--disk",
        disk2.to_str().unwrap(),
        "--record",
        dir.path().join("rec2").to_str().unwrap(),
        "--replicate",
        "nats://127.0.0.1:1/lab",
        "--cmdline",
        "workload=sqlite rows=10",
    ]);
    assert_one_line_error(
        &out,
        125,
        "cannot reach the NATS cluster at nats://127.0.0.1:1",
    );
    assert!(!dir.path().join("rec2").join("logs").exists());
}

/// Snapshots pushed to the cluster restore on a "fresh host" (a new
/// directory, nothing local but what `snapshot pull` fetched) exactly like
/// the uninterrupted run.
#[test]
fn snapshots_restore_on_a_host_that_never_ran_the_vm() {
    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    const WORK: &str = "workload=memtest pages=1024 iters=30 seed=9";
    let expected = ok(&["run", "--cmdline", WORK]);
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path().join("here");
    let snap_run = ok(&[
        "run",
        "--snapshots",
        here.to_str().unwrap(),
        "--cmdline",
        &format!("{WORK} snap_every=10"),
    ]);
    assert_eq!(snap_run, expected);
    let url = format!("nats://{}/snaps", cluster.urls().replace("nats://", ""));

    let pushed = ok(&[
        "snapshot",
        "push",
        here.to_str().unwrap(),
        "--to",
        &url,
        "--json",
    ]);
    let pushed: Vec<serde_json::Value> = pushed
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pushed.len(), 2, "one full, one incremental");
    assert!(pushed.iter().all(|p| p["copied_manifest"] == true));
    assert!(pushed[0]["copied"].as_u64().unwrap() > 0);
    // The incremental shares most pages with the full one: few are new.
    assert!(pushed[1]["copied"].as_u64().unwrap() < pushed[0]["copied"].as_u64().unwrap());
    // Again: nothing to copy.
    let again = ok(&[
        "snapshot",
        "push",
        here.to_str().unwrap(),
        "--to",
        &url,
        "--json",
    ]);
    assert!(
        again
            .lines()
            .all(|l| l.contains("\"copied\":0") && l.contains("\"copied_manifest\":false")),
        "{again}"
    );

    // The fresh host pulls the newest (an incremental: its parent comes too).
    let newest = pushed[1]["id"].as_str().unwrap();
    let fresh = dir.path().join("fresh");
    let pulled = ok(&[
        "snapshot",
        "pull",
        &url,
        "--to",
        fresh.to_str().unwrap(),
        "--id",
        newest,
        "--json",
    ]);
    let pulled: Vec<serde_json::Value> = pulled
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(pulled.len(), 2, "the chain, parent first");
    let at = pulled[1]["at"].as_str().unwrap();
    let restored = ok(&["restore", at, "--timeout", "60"]);
    assert_eq!(restored, expected, "the restored VM diverged");

    let missing = vmm(&[
        "snapshot",
        "pull",
        &url,
        "--to",
        fresh.to_str().unwrap(),
        "--id",
        "nosuch",
    ]);
    assert_eq!(missing.status.code(), Some(125));
    assert!(
        stderr(&missing).contains("holds no snapshot nosuch"),
        "{}",
        stderr(&missing)
    );
}
