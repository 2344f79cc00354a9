//! A recorded run opens on the log's saved disk state when the recorder
//! closed the log last and nobody touched the image since; an image
//! changed outside the recorder, even with its mtime put back, is hashed
//! whole and its changes logged as a new base.
mod common;

use std::path::Path;
use std::process::Command;

use changelog::recording::RecordDir;
use common::*;

const DISK_MIB: u64 = 4;

/// A recorded run with `--stats`; returns its `record_open` and stderr.
fn run(disk: &Path, rec: &Path, cmdline: &str, extra: &[&str]) -> (serde_json::Value, String) {
    let mut args = vec!["--stats"];
    args.extend_from_slice(extra);
    let out = run_recorded(disk, rec, "vm0", cmdline, &args);
    let err = stderr(&out);
    let stats: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    (stats["record_open"].clone(), err)
}

fn sh(cmd: &str) {
    let status = Command::new("sh").args(["-c", cmd]).status().unwrap();
    assert!(status.success(), "{cmd}");
}

#[test]
fn a_second_run_opens_without_hashing_and_an_outside_change_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", DISK_MIB);
    let rec = dir.path().join("rec");
    let writes = |seed| BlkWrites {
        seed,
        writes: 40,
        max_blocks: 16,
        flush_every: 5,
        dup_every: 4,
    };
    let blocks = DISK_MIB * 256;

    let (open, _) = run(&disk, &rec, &writes(1).cmdline(), &[]);
    assert_eq!(open["fast"], false, "{open}");
    assert_eq!(open["why"], "the log is new");
    let (open, err) = run(&disk, &rec, &writes(2).cmdline(), &[]);
    assert_eq!(open["fast"], true, "{open}\n{err}");
    assert!(open["blocks_read"].as_u64().unwrap() < blocks / 4, "{open}");
    assert!(!err.contains("hashing the whole disk image"), "{err}");

    // Changed outside the recorder, mtime put back as `touch -r` does.
    let d = disk.display();
    let r = dir.path().join("mtime.ref");
    let r = r.display();
    sh(&format!(
        "touch -r {d} {r} && dd if=/dev/urandom of={d} bs=4k count={blocks} conv=notrunc status=none && touch -r {r} {d}"
    ));
    let (open, err) = run(&disk, &rec, "workload=exit", &[]);
    assert_eq!(open["fast"], false, "{open}");
    let why = open["why"].as_str().unwrap();
    assert!(why.contains("changed outside the recorder"), "{why}");
    assert!(err.contains("hashing the whole disk image"), "{err}");
    assert!(
        err.contains("differs from what the log of vm0 recorded"),
        "{err}"
    );

    // The new base makes the log reproduce the changed image.
    let replayed = blank_disk(dir.path(), "replayed.img", DISK_MIB);
    replay::apply(&RecordDir::new(&rec), "vm0", &replayed, 1, None).unwrap();
    assert!(std::fs::read(&replayed).unwrap() == std::fs::read(&disk).unwrap());

    let (open, _) = run(&disk, &rec, "workload=exit", &[]);
    assert_eq!(open["fast"], true, "stamped again: {open}");
    let (open, err) = run(&disk, &rec, "workload=exit", &["--rescan"]);
    assert_eq!(open["fast"], false, "{open}");
    assert!(open["why"].as_str().unwrap().contains("--rescan"));
    assert!(
        !err.contains("hashing the whole disk image"),
        "asked for: {err}"
    );
    let verify = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
}
