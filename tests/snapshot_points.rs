//! Snapshots as points of a change log: `vmm replay --base SNAP` starts at
//! the snapshot's barrier and gives the same disk as a replay from empty;
//! `vmm restore DIR --at POINT` restores the latest snapshot at or before
//! the point onto a disk rebuilt from the log, with no separate replay.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "vmm {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn replay(rec: &Path, base: &str, until: u64, out: &Path, extra: &[&str]) -> Value {
    let until = format!("seq={until}");
    let mut args = vec![
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--base",
        base,
        "--until",
        &until,
        "--out",
        out.to_str().unwrap(),
        "--force",
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(ok(&args).trim()).unwrap()
}

fn summary(s: &str) -> String {
    s.lines()
        .find(|l| l.starts_with("sqlite: "))
        .unwrap_or_default()
        .to_string()
}

/// (id, seq) of the recorded snapshots, oldest barrier first.
fn snapshots(rec: &Path) -> Vec<(String, u64)> {
    let mut snaps: Vec<(String, u64)> = ok(&["snapshot", "list", rec.to_str().unwrap(), "--json"])
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["log_seq"].as_u64().unwrap(),
            )
        })
        .collect();
    snaps.sort_by_key(|s| s.1);
    snaps
}

fn snap_path(rec: &Path, id: &str) -> String {
    rec.join("snapshots")
        .join(format!("{id}.snap"))
        .to_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_snapshot_is_a_replay_base_and_a_restore_point() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let workload = "workload=sqlite rows=200 seed=3 snap_every=5";
    let run = run_recorded(&disk, &rec, "vm0", workload, &["--timeout", "120"]);
    let original = summary(&stdout(&run));
    assert!(original.contains("integrity=ok"), "{original}");
    ok(&["log", "mark", rec.to_str().unwrap(), "after-run"]);
    let snaps = snapshots(&rec);
    assert!(snaps.len() >= 3, "{snaps:?}");
    let (id, seq) = snaps[1].clone();
    let last_seq = snaps.last().unwrap().1;

    // From the snapshot, to its own barrier, between snapshots and to the
    // end: the disk a replay from empty gives.
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let base = snap_path(&rec, &id);
    for until in [seq, (seq + snaps[2].1) / 2, last_seq + 1] {
        let from_snap = replay(&rec, &base, until, &a, &[]);
        let whole = replay(&rec, "empty", until, &b, &["--no-checkpoints"]);
        assert_eq!(from_snap["snapshot"]["id"], id.as_str());
        assert_eq!(from_snap["checkpoint"], seq, "started at its barrier");
        assert_eq!(from_snap["from_seq"], seq + 1);
        assert_eq!(from_snap["checksum"], whole["checksum"], "seq={until}");
        assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
    }

    // Backwards from a snapshot is refused, naming both seqs.
    let back = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--base",
        &base,
        "--until",
        &format!("seq={}", seq - 1),
        "--out",
        dir.path().join("x.img").to_str().unwrap(),
    ]);
    assert_one_line_error(&back, 125, "replays forward only");
    assert!(!dir.path().join("x.img").exists());

    // A snapshot is not a base for another log with the same VM id.
    let other = dir.path().join("other");
    let d2 = blank_disk(dir.path(), "d2.img", 64);
    run_recorded(
        &d2,
        &other,
        "vm0",
        "workload=blk-writes seed=5 writes=40",
        &[],
    );
    let wrong = vmm(&[
        "replay",
        "--log",
        other.to_str().unwrap(),
        "--base",
        &base,
        "--out",
        dir.path().join("y.img").to_str().unwrap(),
    ]);
    assert_one_line_error(&wrong, 125, "not this snapshot's log");

    // `restore DIR --at POINT`: the latest snapshot at or before the point,
    // onto a disk rebuilt at its barrier; the guest finishes as the
    // original did.
    let clone = dir.path().join("clone.img");
    let restore = |at: &str| {
        vmm(&[
            "restore",
            rec.to_str().unwrap(),
            "--at",
            at,
            "--rebuild-disk",
            clone.to_str().unwrap(),
            "--force",
            "--vm-id",
            "clone1",
            "--snapshots",
            dir.path().join("clone-snaps").to_str().unwrap(),
            "--timeout",
            "120",
        ])
    };
    let out = restore(&format!("seq={}", snaps[2].1 - 1));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("restoring snapshot {id} of VM vm0")),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&stdout(&out)), original);
    let (last_id, _) = snaps.last().unwrap();
    let out = restore("mark=after-run");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("restoring snapshot {last_id} of VM vm0")),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&stdout(&out)), original);

    // Before the first snapshot there is nothing to restore.
    let early = restore(&format!("seq={}", snaps[0].1 - 1));
    assert_one_line_error(&early, 125, "no snapshot of VM vm0 at or before");
    // --at needs the directory, and a disk to rebuild.
    let file = vmm(&[
        "restore",
        &base,
        "--at",
        "mark=after-run",
        "--rebuild-disk",
        clone.to_str().unwrap(),
    ]);
    assert_one_line_error(&file, 125, "with --at, give the directory");
    let no_disk = vmm(&["restore", rec.to_str().unwrap(), "--at", "mark=after-run"]);
    assert_eq!(no_disk.status.code(), Some(64), "{}", stderr(&no_disk));
}
