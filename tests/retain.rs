//! `vmm store retain`: history older than the window goes at checkpoint
//! granularity; what is kept replays and verifies exactly as before, the
//! old checkpoints kept stay restorable after `store gc`, points between
//! them are refused by name, and a recording VM's log is not touched.
mod common;

use std::io::BufRead;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "vmm {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn json_lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The disk checksum a replay to `until` gives.
fn replayed(rec: &str, until: &str, out: &Path) -> String {
    let r: Value = serde_json::from_str(&ok(&[
        "replay",
        "--log",
        rec,
        "--until",
        until,
        "--out",
        out.to_str().unwrap(),
        "--force",
        "--json",
    ]))
    .unwrap();
    r["checksum"].as_str().unwrap().to_string()
}

fn segments(rec: &Path) -> usize {
    std::fs::read_dir(rec.join("logs/vm0"))
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "seg")
        })
        .count()
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

#[test]
fn retain_drops_old_history_and_keeps_checkpoints_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rec_s = rec.to_str().unwrap();
    let disk = blank_disk(dir.path(), "d.img", 16);
    let opts = ["--log-segment-kib", "8", "--checkpoint-every", "5"];
    let run = |seed: u32| {
        let work = format!("workload=blk-writes seed={seed} writes=60 flush_every=2");
        run_recorded(&disk, &rec, "vm0", &work, &opts);
    };
    run(1);
    run(2);
    std::thread::sleep(Duration::from_millis(2500));
    let cut_ns = now_ns() - 1_250_000_000;
    run(3);
    let before = json_lines(&ok(&["log", "checkpoints", rec_s, "--json"]));
    let old: Vec<u64> = before
        .iter()
        .filter(|c| c["ts_ns"].as_u64().unwrap() <= cut_ns)
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    assert!(old.len() >= 4, "{before:?}");
    let base = *old.last().unwrap();
    let img = dir.path().join("x.img");
    let sums: Vec<(u64, String)> = before
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .map(|s| (s, replayed(rec_s, &format!("seq={s}"), &img)))
        .collect();
    let end = replayed(rec_s, "end", &img);
    let segs = segments(&rec);
    assert!(segs > 4, "{segs} segments");

    // The window reaches back to the cut: the base is the last checkpoint
    // before it; of the older ones, one per hour is kept (the first).
    let keep = format!("{}ms", (now_ns() - cut_ns) / 1_000_000);
    let args = [
        "store",
        "retain",
        rec_s,
        "--keep",
        &keep,
        "--checkpoint-every",
        "1h",
        "--json",
    ];
    let dry = &json_lines(&ok(&args))[0];
    assert_eq!(dry["applied"], false);
    assert_eq!(dry["base_checkpoint"], base);
    assert!(!dry["segments_removed"].as_array().unwrap().is_empty());
    assert_eq!(segments(&rec), segs, "a dry run changes nothing");
    let applied = &json_lines(&ok(&[&args[..], &["--apply"]].concat()))[0];
    assert_eq!(applied["applied"], true);
    let first_kept = applied["first_kept_seq"].as_u64().unwrap();
    assert!(first_kept > 1 && first_kept <= base + 1);
    assert!(segments(&rec) < segs);
    let kept: Vec<u64> = json_lines(&ok(&["log", "checkpoints", rec_s, "--json"]))
        .iter()
        .map(|c| c["seq"].as_u64().unwrap())
        .collect();
    let expect: Vec<u64> = std::iter::once(old[0])
        .chain(sums.iter().map(|s| s.0).filter(|&s| s >= base))
        .collect();
    assert_eq!(kept, expect);

    // Verified from the base, collected, and still exact.
    assert!(ok(&["log", "verify", rec_s]).contains(&format!("from the checkpoint at seq {base}")));
    ok(&["store", "gc", rec_s]);
    ok(&["store", "verify", rec_s, "--deep"]);
    assert_eq!(replayed(rec_s, "end", &img), end);
    for (seq, sum) in sums.iter().filter(|s| kept.contains(&s.0)) {
        assert_eq!(
            &replayed(rec_s, &format!("seq={seq}"), &img),
            sum,
            "seq {seq}"
        );
    }
    let gone = vmm(&[
        "replay",
        "--log",
        rec_s,
        "--until",
        &format!("seq={}", old[0] + 1),
        "--out",
        dir.path().join("gone.img").to_str().unwrap(),
    ]);
    assert_one_line_error(&gone, 125, "older records were removed");

    // A recording VM's log is left alone.
    let mut vm = Command::new(env!("CARGO_BIN_EXE_vmm"))
        .args(["run", "--disk", disk.to_str().unwrap(), "--record", rec_s])
        .args(["--cmdline", "workload=spin"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(vm.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let n = segments(&rec);
    let locked = vmm(&["store", "retain", rec_s, "--keep", "0s", "--apply"]);
    let _ = vm.kill();
    let _ = vm.wait();
    assert_one_line_error(&locked, 125, "is recording");
    assert_eq!(segments(&rec), n);
}
