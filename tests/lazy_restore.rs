//! Lazy restore (`vmm restore`, the default `--memory lazy`): the guest
//! finishes exactly like an uninterrupted run and like an eager restore;
//! a snapshot taken right after a lazy restore (while pages are still
//! coming in) restores to the same result; a page the store cannot give
//! back stops the VM with an error naming the snapshot and the page,
//! instead of hanging it.
mod common;

use std::path::{Path, PathBuf};

use common::*;

/// 256 MiB guest, ~60 MiB of memtest pages; a snapshot after every
/// iteration (the first full, then incremental).
const WORK: &str = "workload=memtest pages=16000 iters=4 snap_every=1 seed=9";

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    v.sort();
    v
}

fn run_memtest(dir: &Path, work: &str) -> String {
    let out = vmm(&[
        "run",
        "--mem-mib",
        "256",
        "--snapshots",
        dir.to_str().unwrap(),
        "--cmdline",
        work,
        "--timeout",
        "60",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out)
}

fn restore(snap: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["restore", snap.to_str().unwrap(), "--timeout", "60"];
    args.extend_from_slice(extra);
    vmm(&args)
}

#[test]
fn lazy_restores_finish_like_the_uninterrupted_run_and_snapshot_right_away() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    let expected = run_memtest(&dir, WORK);
    assert!(expected.starts_with("memtest: iters=4"), "{expected}");
    let snaps = snapshots(&dir);
    assert_eq!(snaps.len(), 3);

    for snap in &snaps {
        let eager = restore(snap, &["--memory", "eager", "--stats"]);
        assert!(eager.status.success(), "{}", stderr(&eager));
        assert_eq!(stdout(&eager), expected, "eager restore of {snap:?}");
        assert!(!stderr(&eager).contains("\"lazy_restore\":{"));
    }

    // The first (full) snapshot restored lazily into a fresh directory: the
    // guest asks for its next snapshot one iteration after the restore,
    // while the prefetch still runs; the chain there starts with a full one.
    let again = tmp.path().join("again");
    let lazy = restore(
        &snaps[0],
        &["--stats", "--snapshots", again.to_str().unwrap()],
    );
    assert!(lazy.status.success(), "{}", stderr(&lazy));
    assert_eq!(stdout(&lazy), expected, "lazy restore");
    let err = stderr(&lazy);
    let stats: serde_json::Value = err
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("--stats line");
    let lazy_stats = &stats["lazy_restore"];
    assert!(lazy_stats.is_object(), "not restored lazily: {err}");
    assert!(
        lazy_stats["prefetched_pages"].as_u64().unwrap()
            + lazy_stats["faults_copied"].as_u64().unwrap()
            > 0,
        "{err}"
    );
    let taken = snapshots(&again);
    assert_eq!(taken.len(), 2, "{err}");
    for snap in &taken {
        for mode in ["lazy", "eager"] {
            let out = restore(snap, &["--memory", mode]);
            assert!(out.status.success(), "{}", stderr(&out));
            assert_eq!(stdout(&out), expected, "{mode} restore of {snap:?}");
        }
    }

    // Restored lazily into its own directory: the next snapshots are
    // incremental on top of the restored page lists.
    let before = snapshots(&dir).len();
    let out = restore(&snaps[0], &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    let chained = snapshots(&dir);
    assert_eq!(chained.len(), before + 2);
    let newest = vmm(&["snapshot", "list", dir.to_str().unwrap(), "--latest"]);
    let newest = PathBuf::from(stdout(&newest).trim());
    let out = restore(&newest, &[]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        expected,
        "lazy restore of an incremental chain"
    );
}

#[test]
fn a_page_the_store_cannot_give_back_stops_the_vm_with_an_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("snaps");
    // Many iterations after the snapshot: the guest is still running when
    // the prefetch (or the guest itself) reaches the damaged page.
    run_memtest(
        &dir,
        "workload=memtest pages=16000 iters=20 snap_every=10 seed=5",
    );
    let snap = snapshots(&dir)[0].clone();
    // Flip bytes through the middle of the pack: page objects (random,
    // incompressible memtest pages) fill almost all of it.
    let packs = dir.join("store").join("packs");
    let pack = std::fs::read_dir(&packs)
        .unwrap()
        .map(|e| e.unwrap().path())
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let n = bytes.len();
    for k in 1..8 {
        bytes[n * k / 16 + 4000] ^= 0x55;
    }
    std::fs::write(&pack, bytes).unwrap();

    let out = restore(
        &snap,
        &["--snapshots", tmp.path().join("x").to_str().unwrap()],
    );
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_ne!(out.status.code(), Some(124), "the VM hung: {err}");
    let id = snap.file_stem().unwrap().to_str().unwrap();
    assert!(err.contains(id), "the error names the snapshot: {err}");
    assert!(
        err.contains("could not be read from the content store") && err.contains("page "),
        "the error names the page: {err}"
    );
    assert!(
        !stdout(&out).contains("memtest:"),
        "the guest finished on a bad page"
    );
}

#[test]
fn memory_mode_is_lazy_or_eager() {
    let out = vmm(&["restore", "x/snapshots/y.snap", "--memory", "sometimes"]);
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("lazy"), "{}", stderr(&out));
}
