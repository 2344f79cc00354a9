//! Snapshots are durable when acknowledged and manageable: a VMM killed
//! right after answering a snapshot request leaves that snapshot whole;
//! the answer counts what the store gained; disks are found from any
//! directory and checked (size, content); snapshots are deleted without
//! breaking chains and their pages collected.
mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Long enough (seconds) that the guest is still running while a test
/// talks to it; the answer does not depend on where it is interrupted.
const LONG: &str = "workload=memtest pages=1024 iters=300000 seed=9";
const SHORT: &str = "workload=memtest pages=256 iters=30 seed=4";

fn vmm_in(cwd: &Path, args: &[&str]) -> Output {
    Command::new(VMM)
        .current_dir(cwd)
        .args(args)
        .output()
        .expect("the vmm binary runs")
}

fn ok(out: Output) -> String {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
}

fn store_objects(dir: &Path) -> u64 {
    store::Store::open(dir.join("store"))
        .unwrap()
        .stats()
        .objects
}

fn snaps(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir.join("snapshots"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "snap"))
        .collect();
    v.sort();
    v
}

fn start(args: &[&str], sock: &Path) -> Child {
    let child = Command::new(VMM)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(t.elapsed() < Duration::from_secs(20), "no control socket");
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

/// A 64 MiB disk of random bytes (nothing sparse to skip when hashing).
fn random_disk(path: &Path, mib: usize) {
    let mut rng = Rng::new(7);
    let data: Vec<u8> = (0..mib << 17)
        .flat_map(|_| rng.next_u64().to_le_bytes())
        .collect();
    std::fs::write(path, data).unwrap();
}

#[test]
fn an_acknowledged_snapshot_survives_sigkill_and_counts_what_the_store_gained() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap();
    let disk = dir.path().join("disk.img");
    random_disk(&disk, 64);
    let d = disk.to_str().unwrap();
    let expected = ok(vmm(&["run", "--disk", d, "--cmdline", LONG]));
    let mut child = start(
        &[
            "run",
            "--api-sock",
            s,
            "--disk",
            d,
            "--snapshots",
            dir.path().to_str().unwrap(),
            "--cmdline",
            LONG,
        ],
        &sock,
    );
    let create = |extra: &[&str]| -> serde_json::Value {
        let mut args = vec!["snapshot", "create", "--api-sock", s, "--json"];
        args.extend_from_slice(extra);
        serde_json::from_str(ok(vmm(&args)).trim()).unwrap()
    };
    let full = create(&[]);
    assert_eq!(
        (full["durable"].as_bool(), full["kind"].as_str()),
        (Some(true), Some("full"))
    );
    assert_eq!(
        full["new_objects"].as_u64().unwrap(),
        store_objects(dir.path()),
        "{full}"
    );
    let before = store_objects(dir.path());
    let inc = create(&["--incremental"]);
    // Killed the moment the answer is in: nothing may be in flight.
    child.kill().unwrap();
    let err = String::from_utf8_lossy(&child.wait_with_output().unwrap().stderr).into_owned();
    assert_eq!(inc["kind"], "incremental", "{inc} {err}");
    let grew = store_objects(dir.path()) - before;
    assert!(grew > 0, "memtest dirtied pages: {inc}");
    assert_eq!(inc["new_objects"].as_u64().unwrap(), grew, "{inc}");
    eprintln!(
        "64 MiB disk: hashed in {} us; pauses: full {} us, incremental {} us; incremental durable after {} us",
        inc["disk_hash_us"], full["pause_us"], inc["pause_us"], inc["durable_us"]
    );
    let path = inc["path"].as_str().unwrap();
    assert!(
        Path::new(path).is_file(),
        "{path} is missing after the kill"
    );
    let out = ok(vmm(&["restore", path, "--timeout", "60"]));
    assert_eq!(out, expected, "the restored guest diverged");
}

/// Runs SHORT with a relative disk and snapshot directory from `cwd`
/// (the guest asks for snapshots); returns its output.
fn run_with_relative_paths(cwd: &Path) -> String {
    blank_disk(cwd, "disk.img", 4);
    ok(vmm_in(
        cwd,
        &[
            "run",
            "--disk",
            "disk.img",
            "--snapshots",
            "snaps",
            "--cmdline",
            &format!("{SHORT} snap_every=10"),
        ],
    ))
}

#[test]
fn restores_from_another_directory_and_reads_old_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let expected = run_with_relative_paths(dir.path());
    let snap = snaps(&dir.path().join("snaps"))[0].clone();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = ok(vmm_in(
        elsewhere.path(),
        &["restore", snap.to_str().unwrap(), "--timeout", "30"],
    ));
    assert_eq!(out, expected);

    // A manifest written before paths were absolute: the path as given.
    let bytes = std::fs::read(&snap).unwrap();
    let mut m = snapshot::manifest::decode(&bytes, &snap).unwrap();
    m.annotations.insert("disk0.path".into(), "disk.img".into());
    std::fs::write(&snap, snapshot::manifest::encode(&m).unwrap()).unwrap();
    let out = vmm_in(
        dir.path(),
        &["restore", snap.to_str().unwrap(), "--timeout", "30"],
    );
    assert_eq!(stdout(&out), expected, "{}", stderr(&out));
    assert!(
        stderr(&out).contains("current directory"),
        "{}",
        stderr(&out)
    );
    let out = vmm_in(elsewhere.path(), &["restore", snap.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "relative path disk.img");
    assert!(stderr(&out).contains("--disk"), "{}", stderr(&out));
}

#[test]
fn restore_refuses_a_disk_of_another_size_or_content() {
    let dir = tempfile::tempdir().unwrap();
    let expected = run_with_relative_paths(dir.path());
    let snap = snaps(&dir.path().join("snaps"))[0].clone();
    let snap = snap.to_str().unwrap();
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", snap, "--timeout", "30"];
        args.extend_from_slice(extra);
        vmm_in(dir.path(), &args)
    };
    let big = blank_disk(dir.path(), "big.img", 8);
    let out = restore(&["--disk", big.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "8388608 bytes");
    assert!(stderr(&out).contains("4194304 bytes"), "{}", stderr(&out));

    // The same size, another content: the guest would read garbage.
    let disk = dir.path().join("disk.img");
    let mut bytes = std::fs::read(&disk).unwrap();
    bytes[12345] ^= 1;
    std::fs::write(&disk, &bytes).unwrap();
    let out = restore(&[]);
    assert_one_line_error(&out, 125, "BLAKE3");
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    assert_eq!(stdout(&out), "", "a refused restore ran");
    let out = restore(&["--force"]);
    assert_eq!(stdout(&out), expected, "{}", stderr(&out));
    bytes[12345] ^= 1;
    std::fs::write(&disk, &bytes).unwrap();
    assert_eq!(ok(restore(&[])), expected);
}

#[test]
fn delete_keeps_chains_whole_and_gc_then_frees_the_pages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let expected = ok(vmm(&[
        "run",
        "--snapshots",
        d,
        "--cmdline",
        &format!("{SHORT} snap_every=10"),
    ]));
    let all = snaps(dir.path());
    assert_eq!(all.len(), 2, "full + incremental");
    let id = |p: &Path| p.file_stem().unwrap().to_str().unwrap().to_string();
    let (full, inc) = (id(&all[0]), id(&all[1]));
    let out = vmm(&["snapshot", "delete", d, &full]);
    assert_one_line_error(&out, 125, &inc);
    assert!(stderr(&out).contains("--with-children"), "{}", stderr(&out));
    assert_eq!(snaps(dir.path()).len(), 2);

    // A merged copy of the chain to keep (it needs no parent), then the
    // chain goes.
    let merged = ok(vmm(&["snapshot", "merge", all[1].to_str().unwrap()]));
    let kept = vec![PathBuf::from(merged.trim())];
    let out = ok(vmm(&[
        "snapshot",
        "delete",
        all[0].to_str().unwrap(),
        "--with-children",
        "--json",
    ]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(v["deleted"], serde_json::json!([inc, full]));
    assert_eq!(snaps(dir.path()), kept);
    let gc: serde_json::Value =
        serde_json::from_str(ok(vmm(&["store", "gc", d, "--json"])).trim()).unwrap();
    assert!(
        gc["store"]["objects_kept"].as_u64() < gc["store"]["objects_before"].as_u64(),
        "{gc}"
    );
    // What is left restores exactly after the collection.
    let out = ok(vmm(&[
        "restore",
        kept[0].to_str().unwrap(),
        "--timeout",
        "30",
    ]));
    assert_eq!(out, expected);
    let out = vmm(&["snapshot", "delete", d, &full]);
    assert_one_line_error(&out, 125, "no snapshot");
}

#[test]
fn listing_what_is_not_a_snapshot_directory_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope");
    let out = vmm(&["snapshot", "list", missing.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "does not exist");
    assert!(stderr(&out).contains(missing.to_str().unwrap()));
    assert!(!missing.exists(), "listing created the directory");
    let out = vmm(&["snapshot", "list", dir.path().to_str().unwrap()]);
    assert_one_line_error(&out, 125, "no snapshots/");
    let out = vmm(&["snapshot", "delete", missing.to_str().unwrap(), "x"]);
    assert_one_line_error(&out, 125, "not a snapshot directory");
}

#[test]
fn the_disk_fingerprint_follows_the_guests_writes_between_snapshots() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let s = sock.to_str().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 16);
    let writes = "workload=blk-writes seed=3 writes=10000000 max_blocks=4 flush_every=8";
    let mut child = start(
        &[
            "run",
            "--api-sock",
            s,
            "--disk",
            disk.to_str().unwrap(),
            "--snapshots",
            dir.path().to_str().unwrap(),
            "--cmdline",
            writes,
        ],
        &sock,
    );
    let snapshot_while_paused = |extra: &[&str]| {
        ok(vmm(&["pause", "--api-sock", s]));
        let mut args = vec!["snapshot", "create", "--api-sock", s, "--json"];
        args.extend_from_slice(extra);
        let answer: serde_json::Value = serde_json::from_str(ok(vmm(&args)).trim()).unwrap();
        // Still paused: the image is what the snapshot saw.
        let path = PathBuf::from(answer["path"].as_str().unwrap());
        let m = snapshot::manifest::decode(&std::fs::read(&path).unwrap(), &path).unwrap();
        let recorded = m.disks().unwrap()[0].blake3.unwrap();
        let now = blake3_of(&disk);
        ok(vmm(&["resume", "--api-sock", s]));
        (recorded, now)
    };
    std::thread::sleep(Duration::from_millis(300));
    let (recorded, now) = snapshot_while_paused(&[]);
    assert_eq!(recorded, now, "full snapshot");
    std::thread::sleep(Duration::from_millis(300));
    let (recorded2, now2) = snapshot_while_paused(&["--incremental"]);
    assert_ne!(now, now2, "the guest wrote its disk in between");
    assert_eq!(recorded2, now2, "the incremental missed the guest's writes");
    child.kill().unwrap();
    child.wait().unwrap();
}

/// BLAKE3 of a whole file (what `b3sum` prints).
fn blake3_of(path: &Path) -> [u8; 32] {
    store::ObjectId::of(&std::fs::read(path).unwrap()).0
}
