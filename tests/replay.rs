//! Replay: to a seq, time or mark, verified and deterministic; corrupt logs
//! stop at the right place; what-if and step modes; the DR drill.
mod common;

use std::path::{Path, PathBuf};

use changelog::log::{LogReader, RecordKind};
use changelog::recording::RecordDir;
use common::*;

const W: BlkWrites = BlkWrites {
    seed: 9,
    writes: 120,
    max_blocks: 8,
    flush_every: 6,
    dup_every: 5,
};

/// A recorded run of `W` on a fresh 4 MiB disk.
fn recorded(dir: &Path) -> (PathBuf, PathBuf) {
    let disk = blank_disk(dir, "disk.img", 4);
    let rec = dir.join("rec");
    run_recorded(&disk, &rec, "vm0", &W.cmdline(), &[]);
    (disk, rec)
}

fn replay(rec: &Path, out: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec![
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    vmm(&args)
}

fn records(rec: &Path) -> Vec<changelog::Record> {
    LogReader::open(RecordDir::new(rec).log_dir("vm0"))
        .unwrap()
        .iter()
        .unwrap()
        .map(|r| r.unwrap())
        .collect()
}

/// The disk after the guest's first `k` writes.
fn after_writes(k: u64) -> Vec<u8> {
    let mut image = vec![0u8; 4 << 20];
    BlkWrites { writes: k, ..W }.apply(&mut image);
    image
}

fn writes_up_to(records: &[changelog::Record], seq: u64) -> u64 {
    // The base of a zero disk holds no writes: every write is the guest's.
    records
        .iter()
        .filter(|r| r.seq <= seq && matches!(r.kind, RecordKind::BlockWrite { .. }))
        .count() as u64
}

#[test]
fn replay_to_seq_is_verified_exact_and_deterministic() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, rec) = recorded(dir.path());
    let recs = records(&rec);
    let barrier = recs
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Barrier { .. }))
        .nth(8)
        .unwrap()
        .seq;
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    for out in [&a, &b] {
        let o = replay(&rec, out, &["--until", &format!("seq={barrier}"), "--json"]);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(report["last_seq"], barrier);
        assert_eq!(report["verified"], true);
        assert_eq!(report["last_verified_barrier"], barrier);
    }
    assert!(
        std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
        "two replays differ"
    );
    assert!(std::fs::read(&a).unwrap() == after_writes(writes_up_to(&recs, barrier)));

    // To the end: the disk itself.
    let end = dir.path().join("end.img");
    assert_eq!(replay(&rec, &end, &[]).status.code(), Some(0));
    assert!(std::fs::read(&end).unwrap() == std::fs::read(&disk).unwrap());
}

#[test]
fn replay_to_time_and_to_mark() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, rec) = recorded(dir.path());
    let recs = records(&rec);
    let mid = &recs[recs.len() / 2];
    let time = humantime::format_rfc3339_nanos(
        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(mid.ts_ns),
    );
    let expected_seq = LogReader::open(RecordDir::new(&rec).log_dir("vm0"))
        .unwrap()
        .find_seq_at_time(mid.ts_ns)
        .unwrap()
        .unwrap();
    let by_time = dir.path().join("t.img");
    let o = replay(
        &rec,
        &by_time,
        &[
            "--until",
            &format!("time={time}"),
            "--allow-unverified",
            "--json",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report["last_seq"], expected_seq);
    assert!(std::fs::read(&by_time).unwrap() == after_writes(writes_up_to(&recs, expected_seq)));

    // A mark between two runs names the state after the first.
    let state_a = std::fs::read(&disk).unwrap();
    assert_eq!(
        vmm(&["log", "mark", rec.to_str().unwrap(), "before-second-run"])
            .status
            .code(),
        Some(0)
    );
    let second = BlkWrites {
        seed: 77,
        writes: 30,
        ..W
    };
    let o = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--cmdline",
        &second.cmdline(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let by_mark = dir.path().join("m.img");
    let o = replay(&rec, &by_mark, &["--until", "mark=before-second-run"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(std::fs::read(&by_mark).unwrap() == state_a);
    let o = replay(
        &rec,
        &dir.path().join("x.img"),
        &["--until", "mark=no-such-mark"],
    );
    assert_one_line_error(&o, 125, "no mark named 'no-such-mark'");
}

#[test]
fn base_image_starts_at_its_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, rec) = recorded(dir.path());
    let recs = records(&rec);
    let barriers: Vec<u64> = recs
        .iter()
        .filter(|r| matches!(r.kind, RecordKind::Barrier { .. }))
        .map(|r| r.seq)
        .collect();
    let mid = dir.path().join("mid.img");
    assert_eq!(
        replay(&rec, &mid, &["--until", &format!("seq={}", barriers[5])])
            .status
            .code(),
        Some(0)
    );
    let end = dir.path().join("end.img");
    let o = replay(&rec, &end, &["--base", mid.to_str().unwrap(), "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report["from_seq"], barriers[5] + 1);
    assert!(std::fs::read(&end).unwrap() == std::fs::read(&disk).unwrap());

    // An image the log never passed through is refused, and nothing is written.
    let stranger = dir.path().join("stranger.img");
    std::fs::write(&stranger, vec![0x42u8; 4 << 20]).unwrap();
    let out = dir.path().join("never.img");
    let o = replay(&rec, &out, &["--base", stranger.to_str().unwrap()]);
    assert_one_line_error(&o, 125, "matches no barrier of the log");
    assert!(!out.exists());
}

#[test]
fn corrupt_log_stops_at_the_last_verified_barrier_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = recorded(dir.path());
    let reader = LogReader::open(RecordDir::new(&rec).log_dir("vm0")).unwrap();
    let frames = reader.frames().unwrap();
    let victim = &frames[frames.len() / 2];
    let mut bytes = std::fs::read(&victim.segment).unwrap();
    bytes[victim.offset as usize + 120] ^= 0x01;
    std::fs::write(&victim.segment, bytes).unwrap();
    let barrier_before = records_until(&rec, victim.first_seq);
    let out = dir.path().join("out.img");
    let o = replay(&rec, &out, &[]);
    assert_one_line_error(
        &o,
        125,
        &format!("the last verified barrier is seq {barrier_before}"),
    );
    assert!(
        stderr(&o).contains(&format!("seq {}", victim.first_seq)),
        "{}",
        stderr(&o)
    );
    assert!(
        !out.exists(),
        "a partial result was left under the final name"
    );
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().contains("partial"))
        .collect();
    assert!(leftovers.is_empty());
    // The state at that barrier can still be rebuilt, verified.
    let o = replay(&rec, &out, &["--until", &format!("seq={barrier_before}")]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

/// The last barrier strictly before `seq`, read with a tolerant scan.
fn records_until(rec: &Path, seq: u64) -> u64 {
    let reader = LogReader::open(RecordDir::new(rec).log_dir("vm0")).unwrap();
    let mut last = 0;
    for r in reader.iter().unwrap() {
        let Ok(r) = r else { break };
        if r.seq >= seq {
            break;
        }
        if matches!(r.kind, RecordKind::Barrier { .. }) {
            last = r.seq;
        }
    }
    last
}

#[test]
fn missing_object_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = recorded(dir.path());
    // The same log beside an empty store.
    let other = dir.path().join("other");
    std::fs::create_dir_all(other.join("logs")).unwrap();
    let status = std::process::Command::new("cp")
        .args([
            "-r",
            rec.join("logs/vm0").to_str().unwrap(),
            other.join("logs").to_str().unwrap(),
        ])
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::create_dir_all(other.join("store")).unwrap();
    let out = dir.path().join("out.img");
    let o = replay(&other, &out, &[]);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(125), "{err}");
    assert!(
        err.contains("replay stopped: seq ") && err.contains("is not in the store"),
        "{err}"
    );
    assert!(!out.exists());
}

#[test]
fn what_if_drops_writes_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (disk, rec) = recorded(dir.path());
    let out = dir.path().join("w.img");
    let o = replay(&rec, &out, &["--drop", "seq=10..30"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("WHAT-IF: this is NOT the recorded history"),
        "{}",
        stdout(&o)
    );
    assert!(std::fs::read(&out).unwrap() != std::fs::read(&disk).unwrap());
    let o = replay(&rec, &out, &["--drop", "seq=10..30", "--json", "--force"]);
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report["what_if"], true);
    assert_eq!(report["verified"], false);
    assert!(report["writes_dropped"].as_u64().unwrap() > 10);
    // Stopping before a write equals replaying to the record before it.
    let (a, b) = (dir.path().join("a.img"), dir.path().join("b.img"));
    assert_eq!(
        replay(&rec, &a, &["--stop-before", "50", "--allow-unverified"])
            .status
            .code(),
        Some(0)
    );
    assert_eq!(
        replay(&rec, &b, &["--until", "seq=49", "--allow-unverified"])
            .status
            .code(),
        Some(0)
    );
    assert!(std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap());
}

#[test]
fn step_and_speed_show_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = recorded(dir.path());
    let total = records(&rec).len();
    let o = replay(
        &rec,
        &dir.path().join("s.img"),
        &["--step", "barrier", "--until", "seq=30"],
    );
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    assert!(text.contains(": barrier verified"), "{text}");
    assert!(
        text.lines().filter(|l| l.starts_with("seq ")).count() >= 20,
        "{text}"
    );
    let o = replay(&rec, &dir.path().join("p.img"), &["--speed", "1000000"]);
    assert_eq!(o.status.code(), Some(0));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), total);
    assert!(lines.iter().any(|l| l["step"] == "write"));
}

#[test]
fn drill_restores_boots_and_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (_, rec) = recorded(dir.path());
    let o = vmm(&[
        "drill",
        "--log",
        rec.to_str().unwrap(),
        "--at",
        "seq=60",
        "--json",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(report["pass"], true);
    assert_eq!(report["guest_status"], 0);
    assert!(report["guest_output"].as_str().unwrap().contains("bad=0"));
    assert!(report["restore_ms"].as_f64().unwrap() > 0.0);

    // --keep leaves the restored disk behind; any check workload can run.
    let keep = dir.path().join("kept.img");
    let o = vmm(&[
        "drill",
        "--log",
        rec.to_str().unwrap(),
        "--at",
        "end",
        "--keep",
        keep.to_str().unwrap(),
        "--check",
        "workload=blk-checksum",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(keep.exists());
    // A point the log does not have fails the drill with the reason.
    let o = vmm(&["drill", "--log", rec.to_str().unwrap(), "--at", "mark=nope"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("result: FAIL"));
}
