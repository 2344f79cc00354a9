//! SQLite decoding throughput against a memcpy of the same pages, in one
//! run: `cargo bench -p introspection --bench decode`.
//!
//! Builds a ~40 MB database with rusqlite (several tables, overflow rows),
//! then times: memcpy of the file (baseline), a full decode of every table
//! (b-tree walk + records), and a diff of two versions one update apart
//! (what the host does at a barrier).
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::best;

use introspection::decode::{self, SchemaHints};
use introspection::semantic::Format;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bench.db");
    let db = rusqlite::Connection::open(&path).unwrap();
    db.execute_batch(
        "PRAGMA page_size=4096; PRAGMA journal_mode=DELETE;
         CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, email TEXT, balance REAL, note BLOB);
         CREATE TABLE events(id INTEGER PRIMARY KEY, customer INTEGER, kind TEXT, payload TEXT);
         CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;",
    )
    .unwrap();
    let tx = db.unchecked_transaction().unwrap();
    for i in 0..120_000i64 {
        tx.execute(
            "INSERT INTO customers VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                i,
                format!("customer {i}"),
                format!("c{i}@example.com"),
                i as f64 * 1.5,
                vec![(i % 251) as u8; (i % 7 * 50) as usize]
            ],
        )
        .unwrap();
        tx.execute(
            "INSERT INTO events VALUES (?1, ?2, 'update', ?3)",
            rusqlite::params![i, i % 1000, "x".repeat((i % 13 * 40) as usize)],
        )
        .unwrap();
        if i % 10 == 0 {
            tx.execute(
                "INSERT INTO kv VALUES (?1, ?2)",
                rusqlite::params![format!("key{i:08}"), vec![1u8; 6000]],
            )
            .unwrap();
        }
    }
    tx.commit().unwrap();
    let old = std::fs::read(&path).unwrap();
    db.execute("UPDATE customers SET name = 'changed' WHERE id = 777", [])
        .unwrap();
    drop(db);
    let new = std::fs::read(&path).unwrap();
    let mb = old.len() as f64 / 1e6;

    let mut dst = vec![0u8; old.len()];
    dst.copy_from_slice(&old);
    let copy = best(5, || {
        dst.copy_from_slice(&old);
        black_box(&dst);
    });
    let hints = SchemaHints::default();
    let full = best(3, || {
        black_box(decode::sqlite::Database::decode(&old, &hints).unwrap());
    });
    let mut n = 0;
    let diff = best(3, || {
        n = decode::diff(Format::Sqlite, &old, &new, &hints)
            .unwrap()
            .len();
    });
    assert_eq!(n, 1, "one update");
    let rate = |d: Duration| mb / d.as_secs_f64();
    println!("SQLite decode benchmark: {mb:.1} MB database, best of 3-5");
    println!("{:<44} {:>9} {:>10}", "", "MB/s", "x memcpy");
    println!(
        "{:<44} {:>9.0} {:>10}",
        "memcpy of the file (baseline)",
        rate(copy),
        "1.00"
    );
    println!(
        "{:<44} {:>9.0} {:>10.3}",
        "full decode (every page, row and record)",
        rate(full),
        copy.as_secs_f64() / full.as_secs_f64()
    );
    println!(
        "{:<44} {:>9.0} {:>10.3}",
        "diff of two versions (decode both + compare)",
        2.0 * rate(diff),
        2.0 * copy.as_secs_f64() / diff.as_secs_f64()
    );
    println!(
        "goal: page decoding at least 500 MB/s: {}",
        if rate(full) >= 500.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
