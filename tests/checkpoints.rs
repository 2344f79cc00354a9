//! Temporal checkpoints: a recording takes them every N barriers, `vmm
//! replay` starts from the nearest one at or before its target and gives
//! exactly the bytes of a replay of the whole log, a damaged checkpoint is
//! passed over, and checkpoints travel to a cluster with `log push`.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const WORK: &str = "workload=blk-writes seed=11 writes=60 max_blocks=16 flush_every=2";

fn ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "vmm {args:?}: {}", stderr(&out));
    stdout(&out)
}

fn checkpoints(source: &str) -> Vec<Value> {
    ok(&["log", "checkpoints", source, "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn replay(source: &str, until: &str, out: &Path, extra: &[&str]) -> Value {
    let mut args = vec![
        "replay",
        "--log",
        source,
        "--until",
        until,
        "--out",
        out.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    serde_json::from_str(ok(&args).trim()).unwrap()
}

fn recorded(dir: &Path) -> std::path::PathBuf {
    let rec = dir.join("rec");
    let disk = blank_disk(dir, "d.img", 16);
    run_recorded(&disk, &rec, "vm0", WORK, &["--checkpoint-every", "7"]);
    rec
}

#[test]
fn replays_start_from_the_nearest_checkpoint_and_match_a_whole_replay() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec_s = rec.to_str().unwrap();
    let cps = checkpoints(rec_s);
    assert!(cps.len() >= 3, "30 barriers, one checkpoint per 7: {cps:?}");
    let seqs: Vec<u64> = cps.iter().map(|c| c["seq"].as_u64().unwrap()).collect();

    // To the end, to a checkpoint's own barrier, and between two.
    let between = format!("seq={}", seqs[1] + 3);
    let at = format!("seq={}", seqs[1]);
    for until in ["end", at.as_str(), between.as_str()] {
        let a = dir.path().join("a.img");
        let b = dir.path().join("b.img");
        let fast = replay(rec_s, until, &a, &["--force"]);
        let whole = replay(rec_s, until, &b, &["--force", "--no-checkpoints"]);
        assert_eq!(whole["checkpoint"], Value::Null);
        assert_eq!(whole["from_seq"], 1);
        let used = fast["checkpoint"].as_u64().expect("a checkpoint was used");
        assert!(seqs.contains(&used));
        assert_eq!(fast["from_seq"], used + 1);
        assert!(fast["records_read"].as_u64() < whole["records_read"].as_u64());
        assert_eq!(fast["checksum"], whole["checksum"], "{until}");
        assert_eq!(fast["verified"], true);
        assert_eq!(
            std::fs::read(&a).unwrap(),
            std::fs::read(&b).unwrap(),
            "{until}"
        );
    }
    // Text output says where it started.
    let out = dir.path().join("t.img");
    let text = ok(&["replay", "--log", rec_s, "--out", out.to_str().unwrap()]);
    assert!(
        text.contains("started from the checkpoint at seq"),
        "{text}"
    );
    // To a checkpoint's own barrier no record follows it, and the disk is
    // verified there.
    let out_s = out.to_str().unwrap();
    let text = ok(&[
        "replay", "--log", rec_s, "--until", &at, "--force", "--out", out_s,
    ]);
    assert!(text.contains(&format!("to seq {}", seqs[1])), "{text}");
    assert!(!text.contains("not yet confirmed"), "{text}");
    let exact = replay(rec_s, &at, &out, &["--force"]);
    assert_eq!(exact["last_seq"], seqs[1]);
    assert_eq!(exact["last_verified_barrier"], seqs[1]);
}

/// At twenty random points after the first checkpoint, a replay from the
/// nearest checkpoint and one of the whole log give the same bytes.
#[test]
fn checkpoint_replays_equal_whole_replays_at_twenty_random_points() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec_s = rec.to_str().unwrap();
    let first = checkpoints(rec_s)[0]["seq"].as_u64().unwrap();
    let last = changes_last_seq(rec_s);
    let mut rng = Rng::new(20);
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    for _ in 0..20 {
        let until = format!("seq={}", first + rng.next_u64() % (last - first + 1));
        let fast = replay(rec_s, &until, &a, &["--force"]);
        let whole = replay(rec_s, &until, &b, &["--force", "--no-checkpoints"]);
        assert!(fast["checkpoint"].as_u64().is_some(), "{until}: {fast}");
        assert_eq!(fast["last_seq"], whole["last_seq"], "{until}");
        assert_eq!(fast["checksum"], whole["checksum"], "{until}");
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{until}"
        );
    }
}

#[test]
fn a_damaged_checkpoint_is_passed_over() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec_s = rec.to_str().unwrap();
    let index = rec.join("logs/vm0/checkpoints");
    let text = std::fs::read_to_string(&index).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    let n = lines.len();
    // The newest claims another disk checksum (its line's CRC made to
    // match, so only the map check can catch it).
    let (json, _) = lines[n - 1].rsplit_once('\t').unwrap();
    let mut cp: Value = serde_json::from_str(json).unwrap();
    let newest = cp["seq"].as_u64().unwrap();
    cp["disk_checksum"] = Value::String("00".repeat(32));
    let json = cp.to_string();
    lines[n - 1] = format!("{json}\t{:08x}", crc32fast::hash(json.as_bytes()));
    // And a torn line after it.
    lines.push("{\"seq\":9".into());
    std::fs::write(&index, lines.join("\n") + "\n").unwrap();

    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let fast = replay(rec_s, "end", &a, &[]);
    let whole = replay(rec_s, "end", &b, &["--no-checkpoints"]);
    let used = fast["checkpoint"].as_u64().unwrap();
    assert!(used < newest, "the damaged newest one ({newest}) was used");
    assert_eq!(fast["checksum"], whole["checksum"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

#[test]
fn checkpoints_travel_to_the_cluster() {
    let Some(cluster) = jetstream::cluster::TestCluster::start_or_skip(3) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec_s = rec.to_str().unwrap();
    let url = format!("nats://{}/cps", cluster.urls().replace("nats://", ""));
    let pushed: Value =
        serde_json::from_str(ok(&["log", "push", rec_s, "--to", &url, "--json"]).trim()).unwrap();
    let local = checkpoints(rec_s);
    assert_eq!(pushed["checkpoints_sent"], local.len() as u64);
    assert_eq!(checkpoints(&url), local);
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let remote = replay(&url, "end", &a, &[]);
    let whole = replay(rec_s, "end", &b, &["--no-checkpoints"]);
    assert!(remote["checkpoint"].as_u64().is_some());
    assert_eq!(remote["checksum"], whole["checksum"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
}

/// A record set whose log stream ages out old records (the engine's own
/// `max_age`): what is kept replays from a checkpoint, byte for byte as
/// the local log; a point in the removed part is refused, saying why; and
/// `log verify` checks from the checkpoint.
#[test]
fn records_aged_out_by_retention_leave_the_rest_replayable() {
    let Some(cluster) = jetstream::cluster::TestCluster::start_or_skip(3) else {
        return;
    };
    const AGE: u64 = 8;
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec_s = rec.to_str().unwrap();
    let url = format!("nats://{}/aged", cluster.urls().replace("nats://", ""));
    let age = format!("{AGE}s");
    let first = ok(&["log", "push", rec_s, "--to", &url, "--max-age", &age]);
    assert!(first.contains("kept for 8s"), "{first}");
    let first_pushed = std::time::Instant::now();
    let first_last = changes_last_seq(rec_s);
    // Pushed well after the first (its records then outlive the first
    // run's by seconds, whatever this machine's load).
    let later = std::time::Duration::from_millis(AGE * 1000 - 3000);
    std::thread::sleep(later.saturating_sub(first_pushed.elapsed()));

    // A second run on the same disk continues the log; pushed later, its
    // records outlive the first run's.
    let disk = dir.path().join("d.img");
    let again = WORK.replace("seed=11", "seed=12");
    run_recorded(&disk, &rec, "vm0", &again, &["--checkpoint-every", "7"]);
    ok(&["log", "push", rec_s, "--to", &url]);
    let wait = std::time::Duration::from_millis(AGE * 1000 + 1500);
    std::thread::sleep(wait.saturating_sub(first_pushed.elapsed()));

    // The first run's records are gone from the cluster.
    let shown = ok(&["log", "show", &url, "--json"]);
    let first_kept: u64 = serde_json::from_str::<Value>(shown.lines().next().unwrap()).unwrap()
        ["seq"]
        .as_u64()
        .unwrap();
    assert!(
        first_kept > first_last,
        "seq {first_kept} kept, the first run ended at {first_last}"
    );

    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    let remote = replay(&url, "end", &a, &[]);
    let local = replay(rec_s, "end", &b, &["--no-checkpoints"]);
    assert!(remote["checkpoint"].as_u64().unwrap() + 1 >= first_kept);
    assert_eq!(remote["checksum"], local["checksum"]);
    assert_eq!(std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());

    let gone = vmm(&[
        "replay",
        "--log",
        &url,
        "--until",
        &format!("seq={}", first_last / 2),
        "--out",
        dir.path().join("c.img").to_str().unwrap(),
    ]);
    assert_eq!(gone.status.code(), Some(125), "{}", stderr(&gone));
    assert!(stderr(&gone).contains("retention"), "{}", stderr(&gone));

    let verify = ok(&["log", "verify", &url]);
    assert!(
        verify.contains("OK") && verify.contains("retention"),
        "{verify}"
    );
}

/// The last seq of the local log.
fn changes_last_seq(rec: &str) -> u64 {
    let shown = ok(&["log", "show", rec, "--json"]);
    let last = shown.lines().last().unwrap();
    serde_json::from_str::<Value>(last).unwrap()["seq"]
        .as_u64()
        .unwrap()
}

/// `restore --rebuild-disk`: the snapshot's disk comes from the log (from
/// the checkpoint taken with the snapshot), and the restored VM finishes
/// its workload exactly as the original did.
#[test]
fn a_restore_rebuilds_its_disk_from_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let workload = "workload=sqlite rows=200 seed=3 snap_every=5";
    let out = run_recorded(&disk, &rec, "vm0", workload, &["--timeout", "120"]);
    let summary = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("sqlite: "))
            .unwrap_or_default()
            .to_string()
    };
    let original = summary(&stdout(&out));
    assert!(original.contains("integrity=ok"), "{original}");
    let snaps: Vec<Value> = ok(&["snapshot", "list", rec.to_str().unwrap(), "--json"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let snap = &snaps[1];
    let seq = snap["log_seq"].as_u64().unwrap();
    // The recorder took a checkpoint with the snapshot.
    let cps = checkpoints(rec.to_str().unwrap());
    assert!(cps.iter().any(|c| c["seq"] == seq), "{cps:?}");
    let path = rec
        .join("snapshots")
        .join(format!("{}.snap", snap["id"].as_str().unwrap()));
    let clone = dir.path().join("clone.img");
    let restore = |extra: &[&str]| {
        let mut args = vec![
            "restore",
            path.to_str().unwrap(),
            "--rebuild-disk",
            clone.to_str().unwrap(),
            "--vm-id",
            "clone1",
            "--record",
            rec.to_str().unwrap(),
            "--timeout",
            "120",
        ];
        args.extend_from_slice(extra);
        vmm(&args)
    };
    let out = restore(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!(
            "at seq {seq} of VM vm0 from the checkpoint at seq {seq}"
        )),
        "{}",
        stderr(&out)
    );
    assert_eq!(summary(&stdout(&out)), original);
    // The disk is there now: not replaced without --force.
    let again = restore(&[]);
    assert_eq!(again.status.code(), Some(125), "{}", stderr(&again));
    assert!(stderr(&again).contains("--force"), "{}", stderr(&again));
}
