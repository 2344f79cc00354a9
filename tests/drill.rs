//! The disaster-recovery drill's default check (`--check auto`): a healthy
//! disk passes and a damaged one fails, for SQLite and raw-block disks;
//! formats without a built-in check are refused. Also which VM a replay or
//! drill picks when `--vm` is left out.
mod common;

use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

use common::*;

/// Where the microguest keeps `app.db` on its disk (layout.rs: 2 MiB).
const APP_DB_OFFSET: u64 = 2 << 20;

fn drill(rec: &Path, extra: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut args = vec!["drill", "--log", rec.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let o = vmm(&args);
    let report = serde_json::from_str(stdout(&o).trim()).unwrap_or(serde_json::Value::Null);
    (
        o.status.code(),
        report,
        format!("{}{}", stdout(&o), stderr(&o)),
    )
}

/// Overwrites `len` bytes at `offset` of `disk` with a pattern, as damage
/// from outside the VM would.
fn damage(disk: &Path, offset: u64, len: usize) {
    let mut f = std::fs::OpenOptions::new().write(true).open(disk).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(&vec![0x5a; len]).unwrap();
    f.sync_all().unwrap();
}

#[test]
fn a_healthy_sqlite_disk_passes_and_a_damaged_one_fails() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "web1", "workload=sqlite rows=100", &[]);

    let (status, report, out) = drill(&rec, &["--at", "end"]);
    assert_eq!(status, Some(0), "{out}");
    assert_eq!(report["pass"], true);
    assert_eq!(report["checked"], true);
    assert_eq!(report["check"], "workload=sqlite-summary");
    // What the restore's replay cost, per replayed interval.
    let steps = &report["replay_steps"];
    assert!(steps["intervals"].as_u64().unwrap() > 0, "{report}");
    assert!(steps["bytes_written"].as_u64().unwrap() > 0, "{report}");
    assert!(report["guest_output"]
        .as_str()
        .unwrap()
        .contains("integrity=ok"));

    // Damage the database's second page outside the VM; the next recorded
    // run logs the changed blocks, so the replay itself stays verified and
    // it is the guest's check that fails.
    damage(&disk, APP_DB_OFFSET + 4096, 4096);
    run_recorded(&disk, &rec, "web1", "workload=hello", &[]);
    let (status, report, out) = drill(&rec, &["--at", "end"]);
    assert_eq!(status, Some(1), "{out}");
    assert_eq!(report["pass"], false);
    assert_eq!(report["replay_verified"], true);
    assert_eq!(report["guest_status"], 1, "{out}");
    assert!(report["error"].is_null(), "{out}");
}

#[test]
fn a_raw_block_disk_is_checked_block_by_block() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let rec = dir.path().join("rec");
    let cmdline = "workload=blk-writes seed=3 writes=40 max_blocks=64 flush_every=4";
    run_recorded(&disk, &rec, "vm0", cmdline, &[]);
    let (status, report, out) = drill(&rec, &["--at", "end"]);
    assert_eq!(status, Some(0), "{out}");
    assert_eq!(report["check"], "workload=blk-verify");

    // A block that is neither zero nor a whole self-checking block: find
    // a written one and flip its tail.
    let data = std::fs::read(&disk).unwrap();
    let written = data
        .chunks(4096)
        .position(|b| b.starts_with(b"VMMBLK01"))
        .expect("blk-writes wrote blocks");
    damage(&disk, written as u64 * 4096 + 4000, 96);
    run_recorded(&disk, &rec, "vm0", "workload=hello", &[]);
    let (status, report, out) = drill(&rec, &["--at", "end"]);
    assert_eq!(status, Some(1), "{out}");
    assert_eq!(report["replay_verified"], true);
    assert!(
        report["guest_output"].as_str().unwrap().contains("bad=1"),
        "{out}"
    );
}

#[test]
fn files_without_a_built_in_check_need_an_explicit_one() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=json records=20 rewrites=2",
        &[],
    );
    let (status, report, out) = drill(&rec, &["--at", "end"]);
    assert_eq!(status, Some(125), "{out}");
    assert_eq!(report["checked"], false);
    assert!(
        report["error"]
            .as_str()
            .unwrap()
            .contains("(Json) with no built-in check; pass --check"),
        "{out}"
    );
    let (status, report, out) = drill(&rec, &["--at", "end", "--check", "workload=blk-checksum"]);
    assert_eq!(status, Some(0), "{out}");
    assert_eq!(report["check"], "workload=blk-checksum");
}

#[test]
fn without_vm_the_only_vm_is_used_and_several_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let a = blank_disk(dir.path(), "a.img", 4);
    run_recorded(&a, &rec, "alpha", "workload=blk-writes writes=8", &[]);
    let out = dir.path().join("out.img");
    let replay = |extra: &[&str]| {
        let mut args = vec![
            "replay",
            "--log",
            rec.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--force",
        ];
        args.extend_from_slice(extra);
        vmm(&args)
    };
    let o = replay(&[]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("replayed alpha"), "{}", stdout(&o));

    let b = blank_disk(dir.path(), "b.img", 4);
    run_recorded(&b, &rec, "beta", "workload=blk-writes writes=8", &[]);
    for o in [
        replay(&[]),
        vmm(&["drill", "--log", rec.to_str().unwrap(), "--at", "end"]),
        vmm(&["log", "mark", rec.to_str().unwrap(), "m1"]),
    ] {
        assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
        assert!(
            stderr(&o).contains("several VMs (alpha, beta); pass --vm ID"),
            "{}",
            stderr(&o)
        );
    }
    let o = replay(&["--vm", "beta"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(stdout(&o).contains("replayed beta"));
}
