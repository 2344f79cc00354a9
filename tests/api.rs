//! The control socket: pause, snapshot (full and incremental), resume and
//! mark a running VM; restored snapshots finish like an uninterrupted run.
mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const WORK: &str = "workload=memtest pages=1024 iters=1000000 seed=9";

fn start(args: &[&str], sock: &Path) -> Child {
    let child = Command::new(VMM)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "no control socket appeared"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

fn ok(out: std::process::Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

#[test]
fn pause_snapshot_resume_and_restore() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap();
    let expected = ok(vmm(&["run", "--cmdline", WORK]));
    let child = start(
        &[
            "run",
            "--api-sock",
            s,
            "--snapshots",
            dir.path().to_str().unwrap(),
            "--cmdline",
            WORK,
        ],
        &sock,
    );

    ok(vmm(&["pause", "--api-sock", s]));
    let full = ok(vmm(&["snapshot", "create", "--api-sock", s]))
        .trim()
        .to_string();
    ok(vmm(&["resume", "--api-sock", s]));
    let inc = ok(vmm(&[
        "snapshot",
        "create",
        "--api-sock",
        s,
        "--incremental",
        "--json",
    ]));
    let inc: serde_json::Value = serde_json::from_str(inc.trim()).unwrap();
    assert_eq!(inc["kind"], "incremental");
    assert!(
        inc["hashed_pages"].as_u64().unwrap() < inc["pages"].as_u64().unwrap() / 4,
        "{inc}"
    );
    // Marks need a recorded disk.
    let out = vmm(&["mark", "--api-sock", s, "x"]);
    assert_one_line_error(&out, 125, "not recording");

    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(0));
    assert_eq!(stdout(&run), expected, "snapshots disturbed the guest");
    assert!(!sock.exists(), "the socket outlived the VM");
    for snap in [full.as_str(), inc["path"].as_str().unwrap()] {
        let out = ok(vmm(&["restore", snap, "--timeout", "60"]));
        assert_eq!(out, expected, "restore of {snap}");
    }
}

#[test]
fn marks_land_in_the_log_and_bad_requests_get_errors() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let rec = dir.path().join("rec");
    let child = start(
        &[
            "run",
            "--api-sock",
            s,
            "--disk",
            disk.to_str().unwrap(),
            "--record",
            rec.to_str().unwrap(),
            "--cmdline",
            WORK,
        ],
        &sock,
    );

    let out = ok(vmm(&["mark", "--api-sock", s, "before-upgrade"]));
    assert!(out.starts_with("mark 'before-upgrade' at seq "), "{out}");

    let mut raw = UnixStream::connect(&sock).unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap()).lines();
    for bad in [
        "this is not json",
        "{\"cmd\":\"explode\"}",
        "{\"cmd\":\"snapshot\",\"kind\":\"sideways\"}",
    ] {
        writeln!(raw, "{bad}").unwrap();
        let answer: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        assert_eq!(answer["ok"], false, "{bad}");
        assert!(answer["error"].as_str().unwrap().len() > 10);
    }
    writeln!(raw, "{{\"cmd\":\"status\"}}").unwrap();
    let status: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    assert_eq!(status["state"], "running");
    assert_eq!(status["recording"], true);
    drop(raw);

    assert_eq!(child.wait_with_output().unwrap().status.code(), Some(0));
    let o = vmm(&["log", "show", rec.to_str().unwrap(), "--json"]);
    assert!(stdout(&o).contains("\"name\":\"before-upgrade\""));
    // A socket path that is taken is refused.
    std::fs::write(&sock, b"").unwrap();
    let out = vmm(&["run", "--api-sock", s]);
    assert_one_line_error(&out, 125, "already exists");
    let out = vmm(&["pause", "--api-sock", "/nonexistent/sock"]);
    assert_one_line_error(&out, 125, "cannot reach a VMM");
}
