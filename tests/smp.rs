//! Several vCPUs: the microguest's application processors start, share
//! the work, and are snapshotted and restored with the boot CPU.
mod common;

use common::*;

const WORK: &str = "workload=smp-memtest pages=2048 iters=12 work=4 seed=11";

fn run_ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    stdout(&out)
}

/// The result line (the same on any vCPU count) and the jobs line.
fn lines(out: &str) -> (String, String) {
    let mut it = out.lines();
    let result = it.next().unwrap_or_default().to_string();
    let jobs = it.next().unwrap_or_default().to_string();
    (result, jobs)
}

#[test]
fn two_vcpus_split_the_work_and_get_the_one_vcpu_result() {
    let one = run_ok(&["run", "--timeout", "60", "--cmdline", WORK]);
    let two = run_ok(&["run", "--vcpus", "2", "--timeout", "60", "--cmdline", WORK]);
    let (r1, j1) = lines(&one);
    let (r2, j2) = lines(&two);
    assert!(r1.starts_with("smp-memtest: iters=12 sum="), "{one}");
    // The AP worked half of the chunks: had it not run, or run them
    // wrong, the sums would differ (or CPU 0 would wait forever).
    assert_eq!(r1, r2);
    assert_eq!(j1, "smp-memtest: cpus=1 jobs=12");
    // Each CPU counts the jobs it ran itself.
    assert_eq!(j2, "smp-memtest: cpus=2 jobs=12,12");
    let four = run_ok(&["run", "--vcpus", "4", "--timeout", "60", "--cmdline", WORK]);
    assert_eq!(
        lines(&four),
        (r1, "smp-memtest: cpus=4 jobs=12,12,12,12".into())
    );
}

#[test]
fn a_two_vcpu_guest_restores_from_each_snapshot_to_the_same_end() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let plain = run_ok(&["run", "--vcpus", "2", "--timeout", "60", "--cmdline", WORK]);
    // CPU 0 asks for a snapshot while the AP may still be at work.
    let with_snaps = format!("{WORK} snap_every=4");
    let snapped = run_ok(&[
        "run",
        "--vcpus",
        "2",
        "--timeout",
        "60",
        "--snapshots",
        snaps.to_str().unwrap(),
        "--cmdline",
        &with_snaps,
    ]);
    assert_eq!(snapped, plain);
    let list = run_ok(&["snapshot", "list", snaps.to_str().unwrap()]);
    let ids: Vec<&str> = list.lines().filter_map(|l| l.split(' ').next()).collect();
    assert_eq!(ids.len(), 2, "{list}");
    for snap in ids {
        // Without the AP's state the boot CPU would wait for its half of
        // the work until the timeout.
        let restored = run_ok(&["restore", snap, "--timeout", "60"]);
        assert_eq!(restored, plain, "restored from {snap}");
    }
}

#[test]
fn a_vcpu_count_out_of_range_is_refused() {
    for n in ["0", "9", "two"] {
        let out = vmm(&["run", "--vcpus", n, "--cmdline", "workload=hello"]);
        assert_eq!(out.status.code(), Some(64), "{}", stderr(&out));
        assert!(
            stderr(&out).contains("give a number from 1 to 8"),
            "{}",
            stderr(&out)
        );
    }
}
