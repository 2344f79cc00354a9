//! Recording: every guest write lands in a verifiable change log and a
//! deduplicating content store, and the log reproduces the disk.
mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use changelog::log::LogReader;
use changelog::recording::RecordDir;
use common::*;

const WORKLOAD: BlkWrites = BlkWrites {
    seed: 21,
    writes: 200,
    max_blocks: 16,
    flush_every: 5,
    dup_every: 4,
};

fn record(disk: &Path, rec: &Path, vm: &str, w: &BlkWrites) -> std::process::Output {
    run_recorded(disk, rec, vm, &w.cmdline(), &[])
}

fn store_stats(rec: &Path) -> serde_json::Value {
    let out = vmm(&["store", "stats", rec.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    serde_json::from_str(stdout(&out).trim()).unwrap()
}

#[test]
fn log_verifies_and_reproduces_the_disk_byte_for_byte() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    // A non-zero original image, so the base matters.
    let original: Vec<u8> = (0..4u32 << 20).map(|i| (i / 4096 % 7) as u8).collect();
    std::fs::write(&disk, &original).unwrap();
    let rec = dir.path().join("rec");
    let out = record(&disk, &rec, "vm0", &WORKLOAD);
    assert!(
        stderr(&out).contains("recorded 200 writes"),
        "{}",
        stderr(&out)
    );

    let verify = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert!(stdout(&verify).starts_with("vm0: OK: "));

    let mut expected = original.clone();
    WORKLOAD.apply(&mut expected);
    assert!(
        std::fs::read(&disk).unwrap() == expected,
        "disk differs from the workload"
    );

    // The log alone rebuilds the disk from zeros (its base is in the log) ...
    let from_zero = blank_disk(dir.path(), "from-zero.img", 4);
    let report = replay::apply(&RecordDir::new(&rec), "vm0", &from_zero, 1, None).unwrap();
    assert!(report.barriers_verified >= 41, "{report:?}");
    assert!(std::fs::read(&from_zero).unwrap() == expected);

    // ... and the guest's writes alone turn a copy of the original into it.
    let copy = dir.path().join("copy.img");
    std::fs::write(&copy, &original).unwrap();
    let base_end = LogReader::open(RecordDir::new(&rec).log_dir("vm0"))
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| r.unwrap())
        .find(|r| matches!(r.kind, changelog::RecordKind::Barrier { .. }))
        .unwrap()
        .seq;
    let report = replay::apply(&RecordDir::new(&rec), "vm0", &copy, base_end + 1, None).unwrap();
    assert_eq!(report.writes_applied, 200);
    assert!(std::fs::read(&copy).unwrap() == expected);
}

#[test]
fn two_vms_writing_the_same_data_store_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let a = blank_disk(dir.path(), "a.img", 4);
    let b = blank_disk(dir.path(), "b.img", 4);
    record(&a, &rec, "a", &WORKLOAD);
    let one = store_stats(&rec);
    record(&b, &rec, "b", &WORKLOAD);
    let two = store_stats(&rec);
    assert_eq!(
        one["objects"], two["objects"],
        "second VM stored new objects"
    );
    assert_eq!(one["stored_bytes"], two["stored_bytes"]);
    let logical = |v: &serde_json::Value| v["logical_bytes"].as_u64().unwrap();
    assert_eq!(logical(&two), 2 * logical(&one));
    assert!(two["dedup_ratio"].as_f64().unwrap() > 2.0);
}

#[test]
fn four_vms_recording_at_once_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let children: Vec<_> = (0..4)
        .map(|i| {
            let disk = blank_disk(dir.path(), &format!("d{i}.img"), 4);
            // Two pairs of VMs run the same workload: half the data is shared.
            let w = BlkWrites {
                seed: 100 + i % 2,
                ..WORKLOAD
            };
            let child = Command::new(VMM)
                .args(["run", "--disk", disk.to_str().unwrap(), "--record"])
                .arg(&rec)
                .args(["--vm-id", &format!("vm{i}"), "--cmdline", &w.cmdline()])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            (disk, w, child)
        })
        .collect();
    for (disk, w, child) in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut expected = vec![0u8; 4 << 20];
        w.apply(&mut expected);
        assert!(std::fs::read(&disk).unwrap() == expected);
    }
    let verify = vmm(&["log", "verify", rec.to_str().unwrap(), "--json"]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    assert_eq!(stdout(&verify).lines().count(), 4);
    // Every VM's log rebuilds its disk from the shared store.
    for i in 0..4 {
        let img = blank_disk(dir.path(), &format!("r{i}.img"), 4);
        replay::apply(&RecordDir::new(&rec), &format!("vm{i}"), &img, 1, None).unwrap();
        assert!(
            std::fs::read(&img).unwrap()
                == std::fs::read(dir.path().join(format!("d{i}.img"))).unwrap()
        );
    }
}

/// The segment file of `vm`'s log and its frames (offset, first seq).
fn frames(rec: &Path, vm: &str) -> (std::path::PathBuf, Vec<(u64, u64)>) {
    let reader = LogReader::open(RecordDir::new(rec).log_dir(vm)).unwrap();
    let frames = reader.frames().unwrap();
    let seg = frames[0].segment.clone();
    (
        seg,
        frames.iter().map(|f| (f.offset, f.first_seq)).collect(),
    )
}

#[test]
fn flipped_bit_is_reported_at_the_right_record() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 4);
    record(&disk, &rec, "vm0", &WORKLOAD);
    let (seg, frames) = frames(&rec, "vm0");
    assert!(frames.len() > 4);
    let (offset, first_seq) = frames[frames.len() / 2];
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[offset as usize + 100] ^= 0x10; // inside that frame's records
    std::fs::write(&seg, bytes).unwrap();
    let out = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("FAILED at seq {first_seq} ")),
        "{text}"
    );
    assert!(text.contains(&format!("offset {offset}")), "{text}");
}

#[test]
fn a_cleanly_closed_log_cut_mid_record_is_damage_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 4);
    record(&disk, &rec, "vm0", &WORKLOAD);
    let (seg, frames) = frames(&rec, "vm0");
    // Cut inside the frame before the final barrier's: acknowledged writes.
    let (offset, first_seq) = frames[frames.len() - 2];
    let next = frames[frames.len() - 1].0;
    let cut = offset + (next - offset) / 2;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(cut)
        .unwrap();

    let out = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let text = stdout(&out);
    assert!(
        text.contains(&format!("FAILED at seq {first_seq} ")),
        "{text}"
    );
    assert!(
        text.contains("sealed by a clean close, so this is damage, not a torn tail"),
        "{text}"
    );

    // The next recording refuses the log (never cuts acknowledged records).
    let out = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--cmdline",
        &WORKLOAD.cmdline(),
    ]);
    assert_one_line_error(
        &out,
        125,
        &format!("is damaged at offset {offset} (seq {first_seq})"),
    );
    assert_eq!(
        std::fs::metadata(&seg).unwrap().len(),
        cut,
        "nothing was cut"
    );
}

/// Starts a recorded run of `w`, waits until `ready` says so (at most 20 s),
/// then kills the VMM with SIGKILL.
fn kill_recording(disk: &Path, rec: &Path, w: &BlkWrites, ready: impl Fn() -> bool) {
    let mut child = Command::new(VMM)
        .args(["run", "--disk", disk.to_str().unwrap(), "--record"])
        .arg(rec)
        .args(["--cmdline", &w.cmdline()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    while !ready() && start.elapsed() < std::time::Duration::from_secs(20) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn killed_vmm_leaves_a_log_that_verifies_to_its_last_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 16);
    let w = BlkWrites {
        writes: 1_000_000,
        ..WORKLOAD
    };
    let started = std::time::Instant::now();
    kill_recording(&disk, &rec, &w, || {
        started.elapsed() > std::time::Duration::from_millis(400)
    });
    let out = vmm(&["log", "verify", rec.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    // Either clean, or only a torn tail: never damage before it.
    if let Some(p) = report["problem"].as_object() {
        assert_eq!(p["torn_tail"], true, "{report}");
    }
    assert!(report["barriers_checked"].as_u64().unwrap() > 1, "{report}");
}

#[test]
fn a_torn_tail_after_a_kill_is_cut_and_the_log_replays() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 16);
    let log_dir = RecordDir::new(&rec).log_dir("vm0");
    // No flushes: after the base barrier, frames are written (when 16 MiB
    // of blocks are stored) but never synced, as a crash would find them.
    let w = BlkWrites {
        writes: 1_000_000,
        flush_every: 0,
        ..WORKLOAD
    };
    kill_recording(&disk, &rec, &w, || {
        LogReader::open(&log_dir)
            .and_then(|r| r.frames())
            .is_ok_and(|f| f.len() >= 3)
    });
    let frames = LogReader::open(&log_dir).unwrap().frames().unwrap();
    assert!(frames.len() >= 3, "the guest wrote too little: {frames:?}");
    // Tear the last frame, as a power cut after the kill could have.
    let last = frames.last().unwrap().clone();
    let torn_at = last.offset + 56 + u64::from(last.stored_len) / 2;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&last.segment)
        .unwrap();
    f.set_len(torn_at).unwrap();
    let out = vmm(&["log", "verify", rec.to_str().unwrap(), "--json"]);
    let report: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(report["problem"]["torn_tail"], true, "{report}");

    // The next recording cuts the torn tail, says so, re-bases the writes
    // it lost, and the log replays to the disk byte for byte.
    let again = BlkWrites {
        seed: 5,
        writes: 20,
        ..WORKLOAD
    };
    let out = run_recorded(&disk, &rec, "vm0", &again.cmdline(), &[]);
    let err = stderr(&out);
    let cut = format!(
        "cut {} bytes after seq {}",
        torn_at - last.offset,
        last.first_seq - 1
    );
    assert!(err.contains(&cut), "{err}");
    assert!(err.contains("as a new base"), "{err}");
    let out = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    // The torn frame's seqs are not reused.
    let torn = last.first_seq..last.first_seq + u64::from(last.count);
    let reader = LogReader::open(&log_dir).unwrap();
    let mut records = reader.iter().unwrap().map(|r| r.unwrap().seq);
    assert!(!records.any(|s| torn.contains(&s)), "torn seqs were reused");
    let replayed = dir.path().join("replayed.img");
    let out = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        replayed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read(&replayed).unwrap() == std::fs::read(&disk).unwrap());
}

#[test]
fn record_needs_exactly_one_disk() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let out = vmm(&["run", "--record", rec.to_str().unwrap()]);
    assert_one_line_error(&out, 125, "--record records one disk; this VM has 0");
    let out = vmm(&["run", "--disk", "x", "--record", "r", "--vm-id", "../etc"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(stderr(&out).contains("not a valid VM id"));
}

#[test]
fn reopening_uses_a_checkpoint_and_survives_a_bad_one() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 4);
    record(&disk, &rec, "vm0", &WORKLOAD);
    let ckpt = RecordDir::new(&rec).log_dir("vm0").join("state.ckpt");
    assert!(ckpt.exists(), "no checkpoint after a clean close");
    // A second run on the unchanged disk needs no new base.
    let again = BlkWrites {
        seed: 8,
        writes: 30,
        ..WORKLOAD
    };
    let out = record(&disk, &rec, "vm0", &again);
    assert!(!stderr(&out).contains("new base"), "{}", stderr(&out));
    // A damaged checkpoint is ignored (the log is scanned instead).
    let mut bytes = std::fs::read(&ckpt).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&ckpt, bytes).unwrap();
    let third = BlkWrites {
        seed: 9,
        writes: 30,
        ..WORKLOAD
    };
    let out = record(&disk, &rec, "vm0", &third);
    assert!(!stderr(&out).contains("new base"), "{}", stderr(&out));
    // Changed outside the recorder: re-based from the checkpoint's state.
    let mut image = std::fs::read(&disk).unwrap();
    image[..4096].fill(0x77);
    std::fs::write(&disk, &image).unwrap();
    let out = record(
        &disk,
        &rec,
        "vm0",
        &BlkWrites {
            seed: 10,
            writes: 5,
            ..WORKLOAD
        },
    );
    assert!(
        stderr(&out).contains("logged 1 differing blocks as a new base"),
        "{}",
        stderr(&out)
    );
    let verify = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
    let img = blank_disk(dir.path(), "replayed.img", 4);
    replay::apply(&RecordDir::new(&rec), "vm0", &img, 1, None).unwrap();
    assert!(std::fs::read(&img).unwrap() == std::fs::read(&disk).unwrap());
}
