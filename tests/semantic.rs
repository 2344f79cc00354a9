//! Semantic changes: what the host lifts from a guest's recorded writes and
//! hints equals what the applications inside the guest did.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use common::*;
use serde_json::Value;

/// Runs a workload on a fresh 64 MiB recorded disk; returns (stdout, image).
fn recorded(dir: &Path, cmdline: &str) -> (String, Vec<u8>) {
    let disk = blank_disk(dir, "disk.img", 64);
    let out = run_recorded(
        &disk,
        &dir.join("rec"),
        "vm0",
        cmdline,
        &["--timeout", "120"],
    );
    (stdout(&out), std::fs::read(&disk).unwrap())
}

fn changes(dir: &Path, extra: &[&str]) -> Vec<Value> {
    changes_json(&dir.join("rec"), extra)
}

/// Applies every change in order: collection -> key -> row.
fn fold(events: &[Value]) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut state: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for e in events {
        assert_eq!(e["event"], "change", "{e}");
        let table = state
            .entry(e["collection"].as_str().unwrap().to_string())
            .or_default();
        let key = e["key"].as_str().unwrap().to_string();
        match e["op"].as_str().unwrap() {
            "insert" | "update" => {
                table.insert(key, e["after"].clone());
            }
            "delete" => {
                assert!(
                    table.remove(&key).is_some(),
                    "delete of a row never inserted: {e}"
                );
            }
            op => panic!("unknown op {op}"),
        }
    }
    state
}

/// The database the guest left: app.db at sector 4096, its size in the VFS
/// directory at sector 2048 (guest-tools/microguest/src/sqlite/vfs/mod.rs).
fn guest_database(image: &[u8], dir: &Path) -> rusqlite::Connection {
    let entry = 2048 * 512 + 32;
    let size = u64::from_le_bytes(image[entry + 48..entry + 56].try_into().unwrap()) as usize;
    let path = dir.join("final.db");
    std::fs::write(&path, &image[4096 * 512..4096 * 512 + size]).unwrap();
    rusqlite::Connection::open(&path).unwrap()
}

fn sqlite_changes_equal_the_database(journal: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (out, image) = recorded(
        dir.path(),
        &format!("workload=sqlite rows=300 seed=11 journal={journal} close=1"),
    );
    assert!(out.contains("integrity=ok"), "{out}");
    let events = changes(dir.path(), &["--file", "app.db"]);
    assert!(events.len() > 300, "only {} changes", events.len());
    let state = fold(&events);
    let db = guest_database(&image, dir.path());
    let tables: Vec<String> = db
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .map(|r| r.unwrap())
        .collect();
    assert!(tables.len() >= 4, "{tables:?}");
    for t in &tables {
        let count: i64 = db
            .query_row(&format!("SELECT count(*) FROM \"{t}\""), [], |r| r.get(0))
            .unwrap();
        let lifted = state.get(t).map_or(0, |rows| rows.len());
        assert_eq!(
            lifted as i64, count,
            "table {t}: changes leave {lifted} rows, SQLite has {count}"
        );
    }
    // Row values too: every customer's name and score as SQLite has them.
    let mut stmt = db.prepare("SELECT id, name, score FROM customers").unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<i64>>(2)?,
            ))
        })
        .unwrap();
    let customers = &state["customers"];
    let mut checked = 0;
    for row in rows {
        let (id, name, score) = row.unwrap();
        let lifted = &customers[&id.to_string()];
        assert_eq!(lifted["name"], Value::from(name), "customer {id}");
        assert_eq!(lifted["score"].as_i64(), score, "customer {id}");
        checked += 1;
    }
    assert!(checked > 0);
    // The schema table is tracked as a collection of its own.
    assert!(state["sqlite_schema"].contains_key("customers"));
}

#[test]
fn sqlite_changes_in_rollback_journal_mode_equal_the_database() {
    sqlite_changes_equal_the_database("delete");
}

#[test]
fn sqlite_changes_in_wal_mode_equal_the_database() {
    sqlite_changes_equal_the_database("wal");
}

#[test]
fn json_and_kv_changes_equal_the_final_files() {
    let dir = tempfile::tempdir().unwrap();
    let (out, image) = recorded(
        dir.path(),
        "workload=json seed=5 records=80 rewrites=6 ops=30",
    );
    assert!(out.contains("json: writes="), "{out}");
    let state = fold(&changes(dir.path(), &["--file", "doc.json"]));
    // The document: zero-padded JSON in the doc.json extent (sector 118784).
    let raw = &image[118784 * 512..118784 * 512 + (2 << 20)];
    let end = raw.iter().position(|b| *b == 0).unwrap_or(raw.len());
    let doc: Value = serde_json::from_slice(&raw[..end]).unwrap();
    let records = doc["records"].as_array().unwrap();
    let lifted = &state["/records"];
    assert_eq!(lifted.len(), records.len());
    for r in records {
        assert_eq!(&lifted[&r["id"].to_string()], r, "record {}", r["id"]);
    }

    let dir = tempfile::tempdir().unwrap();
    let (out, _) = recorded(
        dir.path(),
        "workload=kv seed=3 ops=1500 batch=20 keys=150 compact_at=65536",
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
    assert!(out.contains("compactions="), "{out}");
    let state = fold(&changes(dir.path(), &["--file", "kv.log"]));
    let keys: BTreeSet<&String> = state.values().flat_map(|t| t.keys()).collect();
    assert_eq!(
        keys.len(),
        live,
        "KV changes leave {} keys, the guest has {live}",
        keys.len()
    );
}

#[test]
fn leveldb_wal_changes_equal_the_guest_log() {
    // The microguest writes a real LevelDB write-ahead log (with
    // compactions: the log rewritten as one batch of the live pairs).
    let dir = tempfile::tempdir().unwrap();
    let (out, image) = recorded(
        dir.path(),
        "workload=leveldb seed=3 ops=1500 batch=20 keys=150 compact_at=65536",
    );
    let field = |name: &str| -> usize {
        let line = out
            .lines()
            .find(|l| l.starts_with("leveldb: "))
            .expect(&out);
        line.split(&format!("{name}="))
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("compactions") >= 2, "{out}");
    let events = changes(dir.path(), &["--file", "leveldb/000001.log"]);
    assert!(events
        .iter()
        .all(|e| e["format"] == "leveldb" && e["collection"] == "leveldb"));
    // Compactions replay nothing new: at most one change per op.
    assert!(events.len() <= field("ops"), "{} changes", events.len());
    let state = fold(&events);
    // The log on the disk (sector 126976), decoded on its own, holds the
    // same live pairs the changes leave.
    let extent = &image[126976 * 512..126976 * 512 + (2 << 20)];
    let mut live = BTreeMap::new();
    for op in introspection::decode::leveldb::wal_ops(extent).unwrap() {
        let key = introspection::decode::kv::render_key(&op.key);
        match op.value {
            Some(v) => live.insert(key, introspection::decode::kv::render_value(&v)),
            None => live.remove(&key),
        };
    }
    assert_eq!(live.len(), field("live"));
    assert_eq!(state["leveldb"], live);
}

#[test]
fn history_lists_every_version_of_a_row() {
    let dir = tempfile::tempdir().unwrap();
    recorded(
        dir.path(),
        "workload=sqlite rows=200 seed=2 journal=wal close=1",
    );
    let events = changes(dir.path(), &["--file", "app.db", "--table", "customers"]);
    let updated = events
        .iter()
        .find(|e| e["op"] == "update")
        .expect("some customer was updated");
    let key = updated["key"].as_str().unwrap();
    let rec = dir.path().join("rec");
    let out = vmm(&[
        "history",
        rec.to_str().unwrap(),
        "--file",
        "app.db",
        "--table",
        "customers",
        "--key",
        key,
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let versions: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let expected = events.iter().filter(|e| e["key"] == key).count();
    assert_eq!(versions.len(), expected);
    assert_eq!(versions[0]["op"], "insert");
    assert!(versions
        .windows(2)
        .all(|w| w[0]["seq"].as_u64() <= w[1]["seq"].as_u64()));
}

#[test]
fn hostile_hints_become_errors_and_the_host_stays_up() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let rec = dir.path().join("rec");
    let out = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--cmdline",
        "workload=evil-hints",
    ]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("disk I/O ok"));
    let err = stderr(&out);
    for needle in [
        "lies outside the",
        "overlaps file 12",
        "which no File hint declared",
        "bad magic",
        "too large",
        "unsupported hint protocol version",
    ] {
        assert!(err.contains(needle), "missing '{needle}' in: {err}");
    }
    let errors = changes(dir.path(), &["--errors"]);
    assert!(
        errors
            .iter()
            .any(|e| e["event"] == "decode_error" && e["file"] == "lies.db"),
        "{errors:?}"
    );
    let verify = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));
}

#[test]
fn diff_decodes_two_versions_offline() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (dir.path().join("old.db"), dir.path().join("new.db"));
    let db = rusqlite::Connection::open(&old).unwrap();
    db.execute_batch("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT); INSERT INTO t VALUES (1,'Alice'),(2,'Carol');").unwrap();
    drop(db);
    std::fs::copy(&old, &new).unwrap();
    let db = rusqlite::Connection::open(&new).unwrap();
    db.execute_batch("UPDATE t SET name='Bob' WHERE id=1; DELETE FROM t WHERE id=2; INSERT INTO t VALUES (3,'Dan');").unwrap();
    drop(db);
    let out = vmm(&[
        "diff",
        "--format",
        "sqlite",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let ch: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ops: BTreeSet<(String, String)> = ch
        .iter()
        .map(|c| {
            (
                c["key"].as_str().unwrap().into(),
                c["op"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        ops,
        [("1", "update"), ("2", "delete"), ("3", "insert")]
            .iter()
            .map(|(k, o)| (k.to_string(), o.to_string()))
            .collect()
    );
    let text = vmm(&[
        "diff",
        "--format",
        "sqlite",
        old.to_str().unwrap(),
        new.to_str().unwrap(),
    ]);
    assert!(
        stdout(&text).contains("t[1] update: {\"name\":\"Alice\"} -> {\"name\":\"Bob\"}"),
        "{}",
        stdout(&text)
    );
    let bad = vmm(&[
        "diff",
        "--format",
        "sqlite",
        old.to_str().unwrap(),
        "/etc/hostname",
    ]);
    assert_one_line_error(&bad, 125, "cannot decode");
}
