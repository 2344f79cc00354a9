//! Phantom changes: a recorded run that only opens a database logs no
//! changes; the first decode of a file in a run is diffed against the
//! file's state at the end of the previous recorded run (issue 10).
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// Applies every change in order, refusing what a real history cannot
/// contain: an insert of a row that exists, an update or delete of one
/// that does not (what phantom inserts produce).
fn strict_fold(events: &[Value]) -> BTreeMap<(String, String), Value> {
    let mut rows = BTreeMap::new();
    for e in events {
        assert_eq!(e["event"], "change", "{e}");
        let key = (
            e["collection"].as_str().unwrap().to_string(),
            e["key"].as_str().unwrap().to_string(),
        );
        match e["op"].as_str().unwrap() {
            "insert" => assert!(
                rows.insert(key, e["after"].clone()).is_none(),
                "insert of a row that exists: {e}"
            ),
            "update" => assert!(
                rows.insert(key, e["after"].clone()).is_some(),
                "update of a row that does not exist: {e}"
            ),
            "delete" => assert!(rows.remove(&key).is_some(), "delete of a missing row: {e}"),
            op => panic!("unknown op {op}"),
        }
    }
    rows
}

fn summary_line(out: &std::process::Output) -> String {
    let text = stdout(out);
    text.lines()
        .find(|l| l.starts_with("sqlite-summary: "))
        .unwrap_or_else(|| panic!("no summary in: {text}"))
        .to_string()
}

const FIRST: &str = "workload=sqlite rows=150 seed=2 close=1";

#[test]
fn a_read_only_run_logs_no_changes_and_each_row_is_inserted_once() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "vm0", FIRST, &["--timeout", "120"]);
    let first = changes_json(&rec, &["--errors"]);
    assert!(first.len() > 150, "the first run inserted rows");
    let out = run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=sqlite-summary",
        &["--timeout", "60"],
    );
    assert!(summary_line(&out).contains("integrity=ok"));
    let after = changes_json(&rec, &["--errors"]);
    assert_eq!(
        after.len(),
        first.len(),
        "the read-only run logged events: {:?}",
        &after[first.len()..]
    );
    strict_fold(&after);
    let key = first
        .iter()
        .find(|e| e["collection"] == "customers" && e["op"] == "insert")
        .unwrap()["key"]
        .as_str()
        .unwrap()
        .to_string();
    let out = vmm(&[
        "history",
        rec.to_str().unwrap(),
        "--file",
        "app.db",
        "--table",
        "customers",
        "--key",
        &key,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let inserts = stdout(&out)
        .lines()
        .filter(|l| serde_json::from_str::<Value>(l).unwrap()["op"] == "insert")
        .count();
    assert_eq!(inserts, 1, "row {key} inserted once");
}

/// Changes app.db inside the image the way another program would, without
/// the recorder: updates customer `update`, deletes customer `delete`.
/// app.db sits at sector 4096, its size in the VFS directory entry at
/// sector 2048 (guest-tools/microguest/src/sqlite/vfs/mod.rs); the file
/// keeps its size.
fn change_outside(disk: &Path, work: &Path, update: &str, delete: &str) {
    let mut image = std::fs::read(disk).unwrap();
    let entry = 2048 * 512 + 32;
    let size = u64::from_le_bytes(image[entry + 48..entry + 56].try_into().unwrap()) as usize;
    let at = 4096 * 512;
    let db = work.join("outside.db");
    std::fs::write(&db, &image[at..at + size]).unwrap();
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE customers SET name = 'changed outside' WHERE id = ?1",
        [update],
    )
    .unwrap();
    conn.execute("DELETE FROM customers WHERE id = ?1", [delete])
        .unwrap();
    drop(conn);
    let bytes = std::fs::read(&db).unwrap();
    assert_eq!(bytes.len(), size, "the database kept its size");
    image[at..at + size].copy_from_slice(&bytes);
    std::fs::write(disk, &image).unwrap();
}

#[test]
fn a_disk_changed_between_runs_is_one_labelled_difference() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "vm0", FIRST, &["--timeout", "120"]);
    let first = changes_json(&rec, &["--errors"]);
    let rows = strict_fold(&first);
    let mut ids = rows
        .keys()
        .filter(|(table, _)| table == "customers")
        .map(|(_, key)| key.clone());
    let (update, delete) = (ids.next().unwrap(), ids.next().unwrap());
    change_outside(&disk, dir.path(), &update, &delete);
    let out = run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=sqlite-summary",
        &["--timeout", "60"],
    );
    assert!(summary_line(&out).contains("integrity=ok"));
    let all = changes_json(&rec, &["--errors"]);
    let new: Vec<(&str, &str, &str)> = all[first.len()..]
        .iter()
        .map(|e| {
            assert_eq!(e["source"], "outside-recording", "{e}");
            (
                e["collection"].as_str().unwrap(),
                e["key"].as_str().unwrap(),
                e["op"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        new,
        vec![
            ("customers", update.as_str(), "update"),
            ("customers", delete.as_str(), "delete")
        ]
    );
    let after = strict_fold(&all);
    assert_eq!(
        after[&("customers".to_string(), update.clone())]["name"],
        "changed outside"
    );
    // Reported once: a further read-only run adds nothing.
    run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=sqlite-summary",
        &["--timeout", "60"],
    );
    assert_eq!(changes_json(&rec, &["--errors"]).len(), all.len());
}

#[test]
fn the_decode_budget_flag_reaches_the_recorder() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    let cmdline = "workload=sqlite rows=50 seed=2 close=1";
    run_recorded(
        &disk,
        &rec,
        "vm0",
        cmdline,
        &["--timeout", "120", "--decode-budget-mib", "0"],
    );
    let events = changes_json(&rec, &["--errors"]);
    assert!(!events.is_empty());
    assert!(
        events.iter().all(|e| e["event"] == "decode_error"
            && e["reason"]
                .as_str()
                .unwrap()
                .contains("--decode-budget-mib")),
        "every decode ran out of a zero budget: {:?}",
        events.first()
    );
}

/// Runs `cmdline` recorded twice on one disk; every change of both runs
/// must fold as a real history does (no second insert of a key).
fn rerun_folds_strictly(cmdline: &str) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "vm0", cmdline, &["--timeout", "120"]);
    let first = changes_json(&rec, &[]).len();
    run_recorded(&disk, &rec, "vm0", cmdline, &["--timeout", "120"]);
    let all = changes_json(&rec, &[]);
    strict_fold(&all);
    (first, all.len())
}

#[test]
fn rerunning_json_kv_and_leveldb_workloads_keeps_a_real_history() {
    for cmdline in [
        "workload=json seed=5 records=40 rewrites=3 ops=20",
        "workload=kv seed=3 ops=300 batch=20 keys=50 compact_at=65536",
        "workload=leveldb seed=3 ops=300 batch=20 keys=50 compact_at=65536",
    ] {
        let (first, all) = rerun_folds_strictly(cmdline);
        eprintln!("{cmdline}: {first} changes, then {all}");
        assert!(first > 0, "{cmdline}");
    }
}
