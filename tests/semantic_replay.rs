//! `vmm replay --semantic`: an application file's data rebuilt from the
//! semantic change log equals the file decoded from the block-level replay
//! at every barrier of recorded SQLite (rollback journal and WAL), JSON and
//! key-value workloads; selective, what-if and merged replays say they are
//! not the recorded history; wrong inputs are refused.
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// Records `cmdline` as `vm` into `dir/rec` on its own fresh 64 MiB disk;
/// returns the disk image's bytes and the guest's stdout.
fn record(dir: &Path, vm: &str, cmdline: &str) -> (Vec<u8>, String) {
    let disk = blank_disk(dir, &format!("{vm}.img"), 64);
    let out = run_recorded(&disk, &dir.join("rec"), vm, cmdline, &["--timeout", "120"]);
    (std::fs::read(&disk).unwrap(), stdout(&out))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The seqs of `vm`'s barrier records.
fn barriers(rec: &Path, vm: &str) -> Vec<u64> {
    let out = vmm(&["log", "show", s(rec), "--vm", vm, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|r| r["type"] == "barrier")
        .map(|r| r["seq"].as_u64().unwrap())
        .collect()
}

/// `vmm replay --log REC --semantic --json ARGS`: the status and report.
fn semantic(rec: &Path, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["replay", "--log", s(rec), "--semantic", "--json"];
    all.extend_from_slice(args);
    let out = vmm(&all);
    let report = stdout(&out)
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or(Value::Null);
    (out.status.code().unwrap(), report, stderr(&out))
}

/// Replays `file` at every barrier; each must be proved equal to the disk
/// (or have nothing to prove before the file's first barrier). Returns the
/// output of the last one and how many proofs fell back to the last lift
/// (the file was not consistent at the barrier itself).
fn proved_at_every_barrier(dir: &Path, file: &str) -> (PathBuf, usize) {
    let rec = dir.join("rec");
    let all = barriers(&rec, "vm0");
    assert!(all.len() > 2, "{all:?}");
    let mut verified = 0;
    let mut fell_back = 0;
    let mut last = PathBuf::new();
    for b in &all {
        let out = dir.join(format!("out-{b}"));
        let until = format!("seq={b}");
        let (code, r, err) = semantic(&rec, &["--file", file, "--until", &until, "--out", s(&out)]);
        assert_eq!(code, 0, "{file} at {until}: {err}\n{r}");
        assert_eq!(r["recorded_history"], true);
        match r["proof"]["status"].as_str().unwrap() {
            "verified" => {
                verified += 1;
                assert_eq!(r["proof"]["disk_checksum"], r["checksum"], "{r}");
                let at = r["proof"]["barrier"].as_u64().unwrap();
                assert!(at <= *b);
                if at < *b {
                    fell_back += 1;
                    assert!(r["proof"]["note"]
                        .as_str()
                        .unwrap()
                        .contains("not at a consistent point"));
                }
            }
            other => panic!("{file} at {until}: proof {other}: {r}"),
        }
        assert!(out.is_file());
        last = out;
    }
    assert_eq!(verified, all.len());
    (last, fell_back)
}

/// The database the guest left (see tests/semantic.rs).
fn guest_database(image: &[u8], dir: &Path) -> rusqlite::Connection {
    let entry = 2048 * 512 + 32;
    let size = u64::from_le_bytes(image[entry + 48..entry + 56].try_into().unwrap()) as usize;
    let path = dir.join("guest.db");
    std::fs::write(&path, &image[4096 * 512..4096 * 512 + size]).unwrap();
    rusqlite::Connection::open(&path).unwrap()
}

/// Every user table's rows as text, sorted.
fn dump(db: &rusqlite::Connection) -> Vec<(String, Vec<String>)> {
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    tables
        .into_iter()
        .map(|t| {
            let mut stmt = db.prepare(&format!("SELECT * FROM \"{t}\"")).unwrap();
            let n = stmt.column_count();
            let mut rows: Vec<String> = stmt
                .query_map([], |r| {
                    Ok((0..n)
                        .map(|i| format!("{:?}", r.get_ref(i).unwrap()))
                        .collect::<Vec<_>>()
                        .join("|"))
                })
                .unwrap()
                .map(|r| r.unwrap())
                .collect();
            rows.sort();
            (t, rows)
        })
        .collect()
}

fn sqlite_workload(journal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (image, out) = record(
        dir.path(),
        "vm0",
        &format!("workload=sqlite rows=120 seed=11 journal={journal} close=1"),
    );
    assert!(out.contains("integrity=ok"), "{out}");
    let (last, fell_back) = proved_at_every_barrier(dir.path(), "app.db");
    if journal == "delete" {
        // Barriers inside a transaction (hot journal) are proved at the
        // last lift before them.
        assert!(fell_back > 0);
    }
    // The last output is a real database with exactly the guest's rows.
    let replayed = rusqlite::Connection::open(&last).unwrap();
    let check: String = replayed
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let guest = guest_database(&image, dir.path());
    let (want, got) = (dump(&guest), dump(&replayed));
    assert!(want.len() >= 4 && want.iter().any(|(_, rows)| rows.len() > 50));
    assert_eq!(got, want);
}

#[test]
fn sqlite_rollback_journal_replays_equal_the_disk_at_every_barrier() {
    sqlite_workload("delete");
}

#[test]
fn sqlite_wal_replays_equal_the_disk_at_every_barrier() {
    sqlite_workload("wal");
}

#[test]
fn json_and_kv_replays_equal_the_disk_at_every_barrier() {
    let dir = tempfile::tempdir().unwrap();
    let (image, _) = record(
        dir.path(),
        "vm0",
        "workload=json seed=5 records=40 rewrites=4 ops=20",
    );
    let (last, _) = proved_at_every_barrier(dir.path(), "doc.json");
    let doc: Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    // The document the guest left (zero-padded at sector 118784).
    let raw = &image[118784 * 512..118784 * 512 + (2 << 20)];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let guest: Value = serde_json::from_slice(&raw[..end]).unwrap();
    assert_eq!(doc["records"], guest["records"]);

    let dir = tempfile::tempdir().unwrap();
    let (_, out) = record(
        dir.path(),
        "vm0",
        "workload=kv seed=3 ops=600 batch=20 keys=80 compact_at=16384",
    );
    let live: usize = out
        .split("live=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let (last, _) = proved_at_every_barrier(dir.path(), "kv.log");
    let map: Value = serde_json::from_slice(&std::fs::read(&last).unwrap()).unwrap();
    assert_eq!(map.as_object().unwrap().len(), live);
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db)
        .unwrap()
        .query_row(sql, [], |r| r.get(0))
        .unwrap()
}

#[test]
fn selective_and_what_if_replays_are_labelled_and_not_proved() {
    let dir = tempfile::tempdir().unwrap();
    record(
        dir.path(),
        "vm0",
        "workload=sqlite rows=120 seed=4 journal=wal close=1",
    );
    let rec = dir.path().join("rec");
    let p = |n: &str| dir.path().join(n);
    let (code, full, err) = semantic(&rec, &["--file", "app.db", "--out", s(&p("full.db"))]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(full["proof"]["status"], "verified");
    let orders = full["collections"]["orders"].as_u64().unwrap();
    assert!(orders > 0);

    // One table, one key range.
    let (code, r, err) = semantic(
        &rec,
        &[
            "--file",
            "app.db",
            "--table",
            "customers",
            "--key",
            "1..20",
            "--out",
            s(&p("sel.db")),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["recorded_history"], false);
    assert_eq!(r["proof"]["status"], "skipped");
    let labels = r["labels"].to_string();
    assert!(
        labels.contains("selective") && labels.contains("customers"),
        "{labels}"
    );
    let want = count(
        &p("full.db"),
        "SELECT count(*) FROM customers WHERE rowid BETWEEN 1 AND 20",
    );
    assert!(want > 0);
    assert_eq!(count(&p("sel.db"), "SELECT count(*) FROM customers"), want);
    assert_eq!(
        count(&p("sel.db"), "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name <> 'customers' AND name NOT LIKE 'sqlite_%'"),
        0
    );

    // What-if: the orders' changes dropped.
    let (code, r, err) = semantic(
        &rec,
        &[
            "--file",
            "app.db",
            "--drop",
            "table=orders",
            "--out",
            s(&p("whatif.db")),
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["recorded_history"], false);
    assert_eq!(r["proof"]["status"], "skipped");
    assert!(r["changes_dropped"].as_u64().unwrap() >= orders);
    assert!(r["labels"].to_string().contains("what-if"));
    assert_eq!(count(&p("whatif.db"), "SELECT count(*) FROM orders"), 0);
    assert_eq!(
        count(&p("whatif.db"), "SELECT count(*) FROM customers"),
        count(&p("full.db"), "SELECT count(*) FROM customers")
    );
    // The text report says so too.
    let out = vmm(&[
        "replay",
        "--log",
        s(&rec),
        "--semantic",
        "--file",
        "app.db",
        "--drop",
        "seq=1..40",
        "--out",
        s(&p("whatif2.db")),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("NOT THE RECORDED HISTORY: what-if"), "{text}");
    assert!(text.contains("block-level proof skipped"), "{text}");
}

#[test]
fn merged_clones_report_their_conflicting_keys() {
    let dir = tempfile::tempdir().unwrap();
    record(
        dir.path(),
        "a",
        "workload=sqlite rows=60 seed=1 journal=wal close=1",
    );
    record(
        dir.path(),
        "b",
        "workload=sqlite rows=60 seed=2 journal=wal close=1",
    );
    let rec = dir.path().join("rec");
    let out = dir.path().join("merged.db");
    let (code, r, err) = semantic(&rec, &["--file", "app.db", "--vm", "a,b", "--out", s(&out)]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(r["recorded_history"], false);
    assert_eq!(r["proof"]["status"], "skipped");
    assert_eq!(r["vms"].as_array().unwrap().len(), 2);
    assert!(r["labels"].to_string().contains("merged"));
    let conflicts = r["conflicts"].as_array().unwrap();
    let customers: BTreeSet<&str> = conflicts
        .iter()
        .filter(|c| c["collection"] == "customers")
        .map(|c| c["key"].as_str().unwrap())
        .collect();
    assert!(!customers.is_empty(), "{conflicts:?}");
    for c in conflicts {
        assert_eq!(c["vms"], serde_json::json!(["a", "b"]));
    }
    // The merged database holds every customer either VM has.
    let a = dir.path().join("a.db");
    let b = dir.path().join("b.db");
    for (vm, path) in [("a", &a), ("b", &b)] {
        let (code, _, err) = semantic(&rec, &["--file", "app.db", "--vm", vm, "--out", s(path)]);
        assert_eq!(code, 0, "{err}");
    }
    let ids = |p: &Path| -> BTreeSet<i64> {
        let db = rusqlite::Connection::open(p).unwrap();
        let mut stmt = db.prepare("SELECT id FROM customers").unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(|r| r.unwrap())
            .collect()
    };
    let union: BTreeSet<i64> = ids(&a).union(&ids(&b)).copied().collect();
    let merged = ids(&out);
    assert!(merged.is_subset(&union) && merged.len() >= ids(&a).len().min(ids(&b).len()));
    // The conflicting customers really differ between the clones (their
    // histories differ; their final rows differ for most of them).
    let row = |p: &Path, key: i64| -> Option<String> {
        rusqlite::Connection::open(p)
            .unwrap()
            .query_row(
                "SELECT name || '/' || ifnull(score, '') FROM customers WHERE id = ?1",
                [key],
                |r| r.get(0),
            )
            .ok()
    };
    let differing = customers
        .iter()
        .map(|k| k.parse::<i64>().unwrap())
        .filter(|k| row(&a, *k) != row(&b, *k))
        .count();
    assert!(differing > 0, "{customers:?}");
    // Both clones ran the same DDL: the schema entries they made the same
    // way are no conflicts.
    assert!(
        conflicts.iter().all(|c| c["collection"] != "sqlite_schema"),
        "{conflicts:?}"
    );
}

#[test]
fn refusals_and_a_log_that_disagrees_with_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    record(
        dir.path(),
        "vm0",
        "workload=kv seed=9 ops=200 batch=20 keys=40 compact_at=65536",
    );
    let rec = dir.path().join("rec");
    let out = dir.path().join("kv.json");
    std::fs::write(&out, "mine").unwrap();
    let base = ["replay", "--log", s(&rec), "--semantic", "--file", "kv.log"];
    let run = |extra: &[&str]| {
        let mut args = base.to_vec();
        args.extend_from_slice(extra);
        vmm(&args)
    };
    // An existing file is kept unless --force.
    assert_one_line_error(&run(&["--out", s(&out)]), 125, "pass --force");
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "mine");
    assert_eq!(run(&["--out", s(&out), "--force"]).status.code(), Some(0));
    assert_ne!(std::fs::read_to_string(&out).unwrap(), "mine");
    // Never into the record directory.
    let inside = rec.join("kv.json");
    assert_one_line_error(
        &run(&["--out", s(&inside)]),
        125,
        "inside the record directory",
    );
    assert!(!inside.exists());
    // Filters and flags of the other mode are usage errors.
    let fresh = dir.path().join("fresh.json");
    assert_eq!(
        run(&["--drop", "sector=8", "--out", s(&fresh)])
            .status
            .code(),
        Some(64)
    );
    assert_eq!(
        run(&["--step", "barrier", "--out", s(&fresh)])
            .status
            .code(),
        Some(64)
    );
    let block = vmm(&[
        "replay",
        "--log",
        s(&rec),
        "--drop",
        "key=7",
        "--out",
        s(&fresh),
    ]);
    assert_eq!(block.status.code(), Some(64), "{}", stderr(&block));
    let no_semantic = vmm(&[
        "replay",
        "--log",
        s(&rec),
        "--table",
        "t",
        "--out",
        s(&fresh),
    ]);
    assert_eq!(no_semantic.status.code(), Some(64));
    let no_file = vmm(&["replay", "--log", s(&rec), "--semantic", "--out", s(&fresh)]);
    assert_eq!(no_file.status.code(), Some(64));
    // Unknown file and VM.
    let mut args = base.to_vec();
    args[5] = "nosuch.db";
    args.extend_from_slice(&["--out", s(&fresh)]);
    assert_one_line_error(&vmm(&args), 125, "nosuch.db");
    assert_one_line_error(&run(&["--vm", "nosuch", "--out", s(&fresh)]), 125, "nosuch");
    assert!(!fresh.exists());

    // A forged change: the log no longer matches the disk. Exit 1, the
    // differing key named, nothing written.
    let last = *barriers(&rec, "vm0").last().unwrap();
    let (mut log, _) = changelog::LogWriter::open(rec.join("logs/vm0"), "vm0").unwrap();
    let forged = serde_json::json!({
        "event": "change", "vm": "vm0", "seq": last, "ts_ns": 1, "file": "kv.log",
        "format": "kv", "collection": "", "key": "forged", "op": "insert",
        "before": null, "after": "x"
    });
    log.append(changelog::RecordKind::Semantic {
        json: forged.to_string(),
    })
    .unwrap();
    log.close().unwrap();
    let bad = run(&["--out", s(&fresh)]);
    assert_eq!(bad.status.code(), Some(1), "{}", stderr(&bad));
    let text = stdout(&bad);
    assert!(
        text.contains("MISMATCH") && text.contains("[forged]"),
        "{text}"
    );
    assert_one_line_error(&bad, 1, "disagree");
    assert!(!fresh.exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
