//! `vmm diff --format leveldb`: two versions of a real LevelDB directory
//! (written by `rusty-leveldb`) give the puts and deletes in order, with
//! `before` from the older state; a lone write-ahead log decodes too; a
//! file that is not LevelDB is one clear error.

mod common;

use std::path::Path;

use common::*;
use rusty_leveldb::{Options, DB};
use serde_json::{json, Value};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn changes(old: &Path, new: &Path) -> Vec<Value> {
    let (old, new) = (old.to_str().unwrap(), new.to_str().unwrap());
    let out = vmm(&["diff", "--format", "leveldb", old, new, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn diff_of_two_leveldb_directories() {
    let tmp = tempfile::tempdir().unwrap();
    let live = tmp.path().join("db");
    let opts = || Options {
        reuse_logs: false,
        ..Options::default()
    };
    let mut db = DB::open(&live, opts()).unwrap();
    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"2").unwrap();
    db.close().unwrap();
    let old = tmp.path().join("old");
    copy_dir(&live, &old);
    // Reopening writes the recovered memtable to a table and starts a new
    // log: the newer version spans a table and a log.
    let mut db = DB::open(&live, opts()).unwrap();
    db.put(b"a", b"10").unwrap();
    db.delete(b"b").unwrap();
    db.delete(b"absent").unwrap();
    db.put(b"c", &[0xff, 0]).unwrap();
    db.close().unwrap();

    let got: Vec<(Value, Value, Value, Value, Value)> = changes(&old, &live)
        .into_iter()
        .map(|c| {
            let f = |k: &str| c[k].clone();
            (f("collection"), f("key"), f("op"), f("before"), f("after"))
        })
        .collect();
    let db_name = json!(live.to_str().unwrap());
    assert_eq!(
        got,
        [
            (
                db_name.clone(),
                json!("a"),
                json!("update"),
                json!("1"),
                json!("10")
            ),
            (
                db_name.clone(),
                json!("b"),
                json!("delete"),
                json!("2"),
                Value::Null
            ),
            (
                db_name,
                json!("c"),
                json!("insert"),
                Value::Null,
                json!({"$blob": "ff00"})
            ),
        ]
    );

    // A lone write-ahead log: every op, collection "".
    let log = std::fs::read_dir(&old)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "log"))
        .unwrap();
    let empty = tmp.path().join("empty.log");
    std::fs::write(&empty, b"").unwrap();
    let lone = changes(&empty, &log);
    assert_eq!(lone.len(), 2);
    assert_eq!(
        (&lone[0]["key"], &lone[0]["collection"]),
        (&json!("a"), &json!(""))
    );

    let bad = vmm(&[
        "diff",
        "--format",
        "leveldb",
        old.to_str().unwrap(),
        "/etc/hostname",
    ]);
    assert_one_line_error(&bad, 125, "cannot decode");
}
