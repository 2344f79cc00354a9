//! Snapshots of a running VM pre-copied while the guest runs: full and
//! incremental ones restore to exactly the uninterrupted run's output, a
//! stop-the-world one is still there on request, and a run that ends
//! during a pre-copy answers with an error and saves nothing.
mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// memtest over 32 MiB for several seconds: long enough for three
/// snapshots while it runs.
const WORK: &str = "workload=memtest pages=8192 iters=30000 seed=11";

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

fn create(sock: &str, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["snapshot", "create", "--api-sock", sock, "--json"];
    args.extend_from_slice(extra);
    let out = vmm(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

fn snapshot_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("snapshots"))
        .map(|d| {
            d.filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "snap"))
            })
            .count()
        })
        .unwrap_or(0)
}

#[test]
fn precopied_full_and_incremental_snapshots_restore_to_the_uninterrupted_output() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap();
    let expected = vmm(&["run", "--mem-mib", "64", "--cmdline", WORK]);
    assert_eq!(expected.status.code(), Some(0), "{}", stderr(&expected));
    let expected = stdout(&expected);
    let child = start(
        &[
            "run",
            "--mem-mib",
            "64",
            "--api-sock",
            s,
            "--snapshots",
            dir.path().to_str().unwrap(),
            "--cmdline",
            WORK,
        ],
        &sock,
    );
    std::thread::sleep(Duration::from_millis(300));
    let full = create(s, &[]);
    assert_eq!(
        (full["kind"].as_str(), full["mode"].as_str()),
        (Some("full"), Some("precopy")),
        "{full}"
    );
    assert_eq!(full["durable"], true, "{full}");
    let rounds = full["rounds"].as_u64().unwrap();
    assert!((1..=8).contains(&rounds), "{full}");
    // The first round hashed every page; the guest ran and wrote on.
    let pages = full["pages"].as_u64().unwrap();
    assert!(full["hashed_pages"].as_u64().unwrap() > pages, "{full}");

    std::thread::sleep(Duration::from_millis(200));
    let inc = create(s, &["--incremental"]);
    assert_eq!(
        (inc["kind"].as_str(), inc["mode"].as_str()),
        (Some("incremental"), Some("precopy")),
        "{inc}"
    );
    let m = snapshot::manifest::decode(
        &std::fs::read(inc["path"].as_str().unwrap()).unwrap(),
        Path::new(inc["path"].as_str().unwrap()),
    )
    .unwrap();
    assert_eq!(m.parent.as_deref(), full["id"].as_str(), "{inc}");

    let stw = create(s, &["--stop-the-world"]);
    assert_eq!(
        (stw["mode"].as_str(), stw["rounds"].as_u64()),
        (Some("stop-the-world"), Some(0)),
        "{stw}"
    );
    assert_eq!(stw["hashed_pages"], stw["pages"], "{stw}");

    let run = child.wait_with_output().unwrap();
    assert_eq!(run.status.code(), Some(0), "{}", stderr(&run));
    assert_eq!(stdout(&run), expected, "snapshots disturbed the guest");
    for snap in [&full, &inc, &stw] {
        let path = snap["path"].as_str().unwrap();
        let out = vmm(&["restore", path, "--timeout", "120"]);
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert_eq!(stdout(&out), expected, "restore of {snap}");
    }
    // Eagerly too: every page comes from the store before the vCPU runs.
    let path = inc["path"].as_str().unwrap();
    let out = vmm(&["restore", path, "--memory", "eager", "--timeout", "120"]);
    assert_eq!(stdout(&out), expected, "eager restore of the incremental");
}

#[test]
fn a_run_stopped_during_the_precopy_answers_an_error_and_saves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap().to_string();
    // 1 GiB touched: its first round alone takes far longer (over a
    // second) than the 500 ms before the signal.
    let mut child = start(
        &[
            "run",
            "--mem-mib",
            "1040",
            "--api-sock",
            &s,
            "--snapshots",
            dir.path().to_str().unwrap(),
            "--cmdline",
            "workload=memtest pages=262144 iters=100000 seed=3",
        ],
        &sock,
    );
    std::thread::sleep(Duration::from_secs(3));
    let asked = std::thread::spawn(move || vmm(&["snapshot", "create", "--api-sock", &s]));
    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = asked.join().unwrap();
    assert_one_line_error(&out, 125, "pre-copy");
    assert!(
        stderr(&out).contains("nothing was saved"),
        "{}",
        stderr(&out)
    );
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "stopped cleanly on SIGTERM");
    assert_eq!(snapshot_files(dir.path()), 0, "a manifest was written");
}
