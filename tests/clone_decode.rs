//! A restored VM keeps decoding: the guest's hinted files are part of the
//! snapshot, so a clone restored with `--record` under a new VM id decodes
//! its own application changes (and only those) without its guest hinting
//! its files again.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

/// Every change of `vm` in `rec` (NDJSON of `vmm changes --json`).
fn changes(rec: &Path, vm: &str) -> Vec<Value> {
    changes_json(rec, &["--vm", vm])
}

/// What a change did, without where and when it was seen.
fn what(c: &Value) -> String {
    format!(
        "{} {} {}[{}] {} -> {}",
        c["file"], c["op"], c["collection"], c["key"], c["before"], c["after"]
    )
}

#[test]
fn a_restored_clone_decodes_its_own_changes() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let workload = "workload=sqlite rows=200 seed=3 snap_every=5";
    let out = run_recorded(&disk, &rec, "vm0", workload, &["--timeout", "120"]);
    let summary = stdout(&out);
    assert!(summary.contains("integrity=ok"), "{summary}");

    // The second snapshot: the database holds rows, more are to come.
    let out = vmm(&["snapshot", "list", rec.to_str().unwrap(), "--json"]);
    let snaps: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(snaps.len() >= 3, "{snaps:?}");
    let snap = &snaps[1];
    let seq = snap["log_seq"].as_u64().unwrap();
    let id = snap["id"].as_str().unwrap();
    let path = rec.join("snapshots").join(format!("{id}.snap"));

    // The clone's disk: vm0's disk at the snapshot, rebuilt from the log.
    let clone = dir.path().join("clone1.img");
    let until = format!("seq={seq}");
    let out = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--vm",
        "vm0",
        "--until",
        &until,
        "--out",
        clone.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = vmm(&[
        "restore",
        path.to_str().unwrap(),
        "--disk",
        clone.to_str().unwrap(),
        "--vm-id",
        "clone1",
        "--record",
        rec.to_str().unwrap(),
        "--timeout",
        "120",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(!err.contains("bad hint"), "{err}");
    assert!(!err.contains("WARN"), "{err}");
    // It finished the same workload the same way.
    let line = |s: &str| {
        s.lines()
            .find(|l| l.starts_with("sqlite:"))
            .unwrap()
            .to_string()
    };
    assert_eq!(line(&stdout(&out)), line(&summary));

    // The clone's changes are exactly what vm0 did after the snapshot:
    // nothing from before it reported again (no phantom inserts), nothing
    // missing.
    let mine = changes(&rec, "clone1");
    assert!(mine.len() > 50, "only {} changes", mine.len());
    assert!(mine
        .iter()
        .all(|c| c["event"] == "change" && c["vm"] == "clone1"));
    let theirs: Vec<String> = changes(&rec, "vm0")
        .iter()
        .filter(|c| c["seq"].as_u64().unwrap() > seq)
        .map(what)
        .collect();
    let mut mine: Vec<String> = mine.iter().map(what).collect();
    let mut theirs = theirs;
    mine.sort();
    theirs.sort();
    assert_eq!(mine, theirs);
}
