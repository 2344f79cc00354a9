//! How a VM is set up and left: the in-kernel PIT only where it is wanted
//! (snapshots keep whether there was one), guest memory on transparent huge
//! pages with dirty tracking still at 4 KiB, and a process exit that does
//! not wait for KVM's teardown yet leaves nothing held behind.
mod common;

use common::*;

const WORK: &str = "workload=memtest pages=1024 iters=20 seed=5";

/// Runs WORK with snapshots into `dir` (extra `args` too); the uninterrupted
/// result and the snapshot files.
fn snapshotted(dir: &std::path::Path, args: &[&str]) -> (String, Vec<String>) {
    let mut plain = vec!["run", "--cmdline", WORK];
    plain.extend(args);
    let plain = vmm(&plain);
    assert_eq!(plain.status.code(), Some(0), "{}", stderr(&plain));
    let work = format!("{WORK} snap_every=10");
    let mut run = vec![
        "run",
        "--snapshots",
        dir.to_str().unwrap(),
        "--cmdline",
        &work,
    ];
    run.extend(args);
    let out = vmm(&run);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), stdout(&plain));
    let list = vmm(&["snapshot", "list", dir.to_str().unwrap(), "--latest"]);
    (
        stdout(&plain),
        stdout(&list).lines().map(str::to_string).collect(),
    )
}

#[test]
fn snapshots_restore_with_and_without_a_pit() {
    for pit in ["on", "off"] {
        let dir = tempfile::tempdir().unwrap();
        let (expected, latest) = snapshotted(dir.path(), &["--pit", pit]);
        assert_eq!(latest.len(), 1, "{latest:?}");
        // A restore gives the VM a PIT exactly when the snapshot has PIT
        // state: restoring PIT state into a VM without one would fail.
        let out = vmm(&["restore", &latest[0], "--timeout", "30"]);
        assert_eq!(out.status.code(), Some(0), "--pit {pit}: {}", stderr(&out));
        assert_eq!(stdout(&out), expected, "--pit {pit}");
    }
}

#[test]
fn a_bad_pit_value_is_a_usage_error() {
    let out = vmm(&["run", "--pit", "maybe"]);
    // 64: EX_USAGE, the status of every command-line mistake.
    assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
    assert!(stderr(&out).contains("neither 'on' nor 'off'"));
}

fn thp_allowed() -> bool {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
        .is_ok_and(|m| m.contains("[always]") || m.contains("[madvise]"))
}

#[test]
fn guest_memory_is_on_huge_pages_and_dirty_pages_stay_4k() {
    if !thp_allowed() {
        eprintln!("skipped: this host's THP mode is not 'always' or 'madvise'");
        return;
    }
    // 64 MiB of guest memory rewritten at random: on huge pages.
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let work = "workload=memtest pages=16384 iters=3 snap_every=1 seed=9";
    let out = vmm(&[
        "run",
        "--mem-mib",
        "96",
        "--stats",
        "--snapshots",
        snaps.to_str().unwrap(),
        "--cmdline",
        work,
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let stats: serde_json::Value = serde_json::from_str(err.lines().last().unwrap()).unwrap();
    let huge = stats["huge_kib"].as_u64().unwrap();
    assert!(huge >= 32 << 10, "only {huge} KiB on huge pages: {stats}");
    // Between the two snapshots (after iterations 1 and 2) the guest
    // touched at most 2048 random pages: every one of the region's 32 huge pages, but the incremental
    // snapshot hashed 4 KiB pages, not 2 MiB ones (that would be 16384).
    // "(Incremental, H of N pages hashed, ..."
    let hashed: u64 = err
        .split("(Incremental, ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no incremental snapshot: {err}"));
    assert!(hashed <= 2048 + 64, "{hashed} pages hashed: {err}");
}

#[test]
fn exit_leaves_no_lock_or_pipe_behind() {
    // The reaper that tears the VM down after the exit holds no file but
    // the VM's: the record directory is free at once, and the output pipes
    // (read to EOF by `output()`) are closed when the process exits.
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let rec = dir.path().join("rec");
    for _ in 0..3 {
        let out = vmm(&[
            "run",
            "--disk",
            disk.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "--cmdline",
            "workload=blk-writes writes=8",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        let mark = vmm(&["log", "mark", rec.to_str().unwrap(), "after"]);
        assert_eq!(mark.status.code(), Some(0), "{}", stderr(&mark));
    }
}
