//! A memory region shared by several VMs.
mod common;

use std::process::{Command, Stdio};

use common::*;

#[test]
fn two_vms_pass_data_through_a_shared_region() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("mailbox");
    let spec = format!("mailbox,4,{}", file.display());
    // The reader starts first and waits for the writer's message.
    let reader = Command::new(VMM)
        .args([
            "run",
            "--shared-mem",
            &spec,
            "--timeout",
            "60",
            "--cmdline",
            "workload=shm-read seq=42",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let writer = vmm(&[
        "run",
        "--shared-mem",
        &spec,
        "--cmdline",
        "workload=shm-write seq=42 msg=hello-vm2",
    ]);
    assert_eq!(writer.status.code(), Some(0), "{}", stderr(&writer));
    let out = reader.wait_with_output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "shm-read: seq=42 msg=hello-vm2 checksum ok\n"
    );
}

#[test]
fn snapshots_capture_the_shared_region_once() {
    let dir = tempfile::tempdir().unwrap();
    let snaps = dir.path().join("snaps");
    let file = dir.path().join("region");
    let spec = format!("box,2,{}", file.display());
    // Fill the region with a message, then two VMs mapping it snapshot.
    assert_eq!(
        vmm(&[
            "run",
            "--shared-mem",
            &spec,
            "--cmdline",
            "workload=shm-write seq=1 msg=shared"
        ])
        .status
        .code(),
        Some(0)
    );
    for vm in ["a", "b"] {
        let out = vmm(&[
            "run",
            "--shared-mem",
            &spec,
            "--snapshots",
            snaps.to_str().unwrap(),
            "--vm-id",
            vm,
            "--cmdline",
            "workload=memtest pages=64 iters=4 snap_every=2",
        ]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let list = vmm(&["snapshot", "list", snaps.to_str().unwrap(), "--json"]);
    let rows: Vec<serde_json::Value> = stdout(&list)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    for r in &rows {
        assert_eq!(r["memory_bytes"], (128u64 << 20) + (2 << 20), "{r}");
    }
    // A restored VM finds the region (a file: used live) and finishes.
    let snap = snaps
        .join("snapshots")
        .join(format!("{}.snap", rows[0]["id"].as_str().unwrap()));
    let out = vmm(&["restore", snap.to_str().unwrap(), "--timeout", "30"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("memtest: iters=4 "));
    // The region's pages were stored once for both VMs.
    let stats = vmm(&["store", "stats", snaps.to_str().unwrap(), "--json"]);
    let stats: serde_json::Value = serde_json::from_str(stdout(&stats).trim()).unwrap();
    assert!(stats["stored_bytes"].as_u64().unwrap() < 2 << 20, "{stats}");
}

#[test]
fn bad_shared_specs_are_usage_errors() {
    for bad in ["box", "box,0", "box,9999", "bad name,4"] {
        let out = vmm(&["run", "--shared-mem", bad]);
        assert_eq!(out.status.code(), Some(64), "{bad}");
        assert!(
            stderr(&out).contains("NAME,SIZE_MIB[,PATH]"),
            "{}",
            stderr(&out)
        );
    }
    let out = vmm(&["run", "--shared-mem", "box,1,/nonexistent/dir/region"]);
    assert_one_line_error(&out, 125, "/nonexistent/dir/region");
}
