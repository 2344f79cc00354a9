//! Snapshots: a microguest snapshotted mid-workload (full and incremental)
//! and restored finishes exactly like an uninterrupted run; chains merge;
//! clones dedup; bad snapshots are refused with a clear error.
mod common;

use std::path::{Path, PathBuf};

use common::*;

const WORK: &str = "workload=memtest pages=1024 iters=40 seed=3";

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    v.sort();
    v
}

/// The final line of an uninterrupted run, and a run that snapshots every
/// 10 iterations (one full, then incrementals) into `dir`.
fn reference_and_snapshots(dir: &Path) -> (String, Vec<PathBuf>) {
    let plain = vmm(&["run", "--cmdline", WORK]);
    assert_eq!(plain.status.code(), Some(0));
    let expected = stdout(&plain);
    assert!(expected.starts_with("memtest: iters=40 "));
    let snap = vmm(&[
        "run",
        "--snapshots",
        dir.to_str().unwrap(),
        "--cmdline",
        &format!("{WORK} snap_every=10"),
    ]);
    assert_eq!(snap.status.code(), Some(0), "{}", stderr(&snap));
    assert_eq!(
        stdout(&snap),
        expected,
        "snapshots changed the guest's result"
    );
    let err = stderr(&snap);
    assert!(
        err.contains("(Full,") && err.contains("(Incremental,"),
        "{err}"
    );
    (expected, snapshots(dir))
}

#[test]
fn full_and_incremental_snapshots_restore_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, snaps) = reference_and_snapshots(dir.path());
    assert_eq!(snaps.len(), 3, "one full + two incremental");
    for snap in &snaps {
        // Restored twice each: the same VM again and again.
        for _ in 0..2 {
            let out = vmm(&[
                "restore",
                snap.to_str().unwrap(),
                "--snapshots",
                dir.path().join("more").to_str().unwrap(),
                "--timeout",
                "30",
            ]);
            assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
            assert_eq!(
                stdout(&out),
                expected,
                "restore of {} diverged",
                snap.display()
            );
        }
    }
}

#[test]
fn incremental_snapshots_hash_only_dirty_pages_and_chains_merge() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, snaps) = reference_and_snapshots(dir.path());
    let list = vmm(&["snapshot", "list", dir.path().to_str().unwrap(), "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 3);
    let full = rows.iter().find(|r| r["kind"] == "full").unwrap();
    let inc = rows.iter().find(|r| r["kind"] == "incremental").unwrap();
    // 128 pages are touched per 10 iterations out of 32768 in 128 MiB.
    assert!(inc["changed_pages"].as_u64().unwrap() < 1500, "{inc}");
    assert!(full["memory_bytes"] == inc["memory_bytes"]);

    let last = snaps.last().unwrap();
    let merged = vmm(&["snapshot", "merge", last.to_str().unwrap()]);
    assert_eq!(merged.status.code(), Some(0), "{}", stderr(&merged));
    let merged_path = stdout(&merged).trim().to_string();
    let out = vmm(&["restore", &merged_path, "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), expected);
}

#[test]
fn clones_share_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let (expected, snaps) = reference_and_snapshots(&rec);
    let before = std::fs::metadata(rec.join("store/index.log"))
        .unwrap()
        .len();
    for i in 0..4 {
        let out = vmm(&[
            "restore",
            snaps[0].to_str().unwrap(),
            "--vm-id",
            &format!("clone{i}"),
            "--timeout",
            "30",
        ]);
        assert_eq!(out.status.code(), Some(0));
        assert_eq!(stdout(&out), expected);
    }
    // Four clones took 8 more snapshots of (nearly) the same memory.
    assert_eq!(snapshots(&rec).len(), 3 + 4 * 2);
    let stats = vmm(&["store", "stats", rec.to_str().unwrap(), "--json"]);
    let stats: serde_json::Value = serde_json::from_str(stdout(&stats).trim()).unwrap();
    let snap_bytes = stats["snapshot_bytes"].as_u64().unwrap();
    let stored = stats["stored_bytes"].as_u64().unwrap();
    assert_eq!(snap_bytes, 11 * (128 << 20), "{stats}");
    assert!(
        stored * 100 < snap_bytes,
        "zero and shared pages should cost nothing: {stats}"
    );
    let after = std::fs::metadata(rec.join("store/index.log"))
        .unwrap()
        .len();
    assert!(
        after - before < (before / 2).max(64 * 1024),
        "clones stored too much: {before} -> {after}"
    );
}

fn corrupt(path: &Path, at: usize, f: impl Fn(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    let _ = at;
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

#[test]
fn bad_snapshots_are_refused_and_nothing_runs() {
    let dir = tempfile::tempdir().unwrap();
    let (_, snaps) = reference_and_snapshots(dir.path());
    let restore = |p: &Path| vmm(&["restore", p.to_str().unwrap(), "--timeout", "10"]);

    let copy = |name: &str| {
        let p = dir.path().join("snapshots").join(format!("{name}.snap"));
        std::fs::copy(&snaps[0], &p).unwrap();
        p
    };
    let flipped = copy("flipped");
    corrupt(&flipped, 0, |b| {
        let n = b.len();
        b[n / 2] ^= 0x40
    });
    let out = restore(&flipped);
    assert_one_line_error(&out, 125, "snapshot");
    assert!(
        stderr(&out).to_lowercase().contains("crc") || stderr(&out).contains("corrupt"),
        "{}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "a corrupt snapshot ran");

    let truncated = copy("truncated");
    corrupt(&truncated, 0, |b| b.truncate(b.len() / 3));
    assert_one_line_error(&restore(&truncated), 125, "snapshot");

    let versioned = copy("versioned");
    corrupt(&versioned, 0, |b| {
        // A well-formed header of format version 99 (header CRC recomputed).
        b[8..12].copy_from_slice(&99u32.to_le_bytes());
        let crc = crc32fast::hash(&b[..24]);
        b[24..28].copy_from_slice(&crc.to_le_bytes());
    });
    let out = restore(&versioned);
    assert_one_line_error(&out, 125, "99");

    let not_a_snapshot = dir.path().join("snapshots").join("text.snap");
    std::fs::write(&not_a_snapshot, b"hello, this is not a snapshot at all").unwrap();
    assert_one_line_error(&restore(&not_a_snapshot), 125, "snapshot");

    let out = vmm(&["restore", "/nonexistent/snap.snap"]);
    assert_one_line_error(&out, 125, "snapshot");

    // Objects missing from the store: the store is gone.
    std::fs::rename(dir.path().join("store"), dir.path().join("store.gone")).unwrap();
    let out = restore(&snaps[0]);
    assert_one_line_error(&out, 125, "snapshot");
    assert!(stderr(&out).contains("missing"), "{}", stderr(&out));
    std::fs::rename(dir.path().join("store.gone"), dir.path().join("store")).unwrap();

    // A store that lacks the snapshot's pages (another store).
    std::fs::rename(dir.path().join("store"), dir.path().join("store.real")).unwrap();
    std::fs::create_dir(dir.path().join("store")).unwrap();
    let out = restore(&snaps[0]);
    assert_one_line_error(&out, 125, "snapshot");
    assert!(
        stderr(&out).contains("missing") || stderr(&out).contains("not in the store"),
        "{}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir.path().join("store")).unwrap();
    std::fs::rename(dir.path().join("store.real"), dir.path().join("store")).unwrap();

    // KVM that cannot run it.
    let out = vmm(&["--kvm", "/dev/null", "restore", snaps[0].to_str().unwrap()]);
    assert_one_line_error(&out, 125, "not a KVM device");
}

#[test]
fn restore_checks_the_disk_against_the_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let w = BlkWrites {
        seed: 4,
        writes: 40,
        max_blocks: 8,
        flush_every: 4,
        dup_every: 0,
    };
    // blk-writes has no snapshot request: memtest on a recorded disk does.
    run_recorded(&disk, &rec, "vm0", &w.cmdline(), &[]);
    let memtest = "workload=memtest pages=64 iters=20 seed=1 snap_every=10";
    run_recorded(&disk, &rec, "vm0", memtest, &[]);
    let snap = snapshots(&rec)[0].clone();
    // The log says where the disk was: it is still there, restore works.
    let out = vmm(&["restore", snap.to_str().unwrap(), "--timeout", "20"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // A different disk is refused, with the way to rebuild the right one.
    let other = blank_disk(dir.path(), "other.img", 4);
    let out = vmm(&[
        "restore",
        snap.to_str().unwrap(),
        "--disk",
        other.to_str().unwrap(),
    ]);
    assert_one_line_error(&out, 125, "is not the disk this snapshot expects");
    assert!(stderr(&out).contains("vmm replay --log"));
}

#[test]
fn gc_frees_what_nothing_references_and_keeps_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let (expected, snaps) = reference_and_snapshots(dir.path());
    let gc = |d: &Path| vmm(&["store", "gc", d.to_str().unwrap(), "--json"]);
    let out = gc(dir.path());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        first["store"]["objects_kept"], first["store"]["objects_before"],
        "nothing is garbage yet: {first}"
    );
    // Forget the incrementals: their own pages become garbage.
    std::fs::remove_file(&snaps[2]).unwrap();
    std::fs::remove_file(&snaps[1]).unwrap();
    let out = gc(dir.path());
    let second: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert!(
        second["store"]["objects_kept"].as_u64() < second["store"]["objects_before"].as_u64(),
        "{second}"
    );
    // The remaining snapshot still restores exactly.
    let out = vmm(&["restore", snaps[0].to_str().unwrap(), "--timeout", "30"]);
    assert_eq!(stdout(&out), expected);
}
