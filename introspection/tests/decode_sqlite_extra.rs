//! SQLite decoder tests beyond the random oracle: uncommitted WAL frames,
//! torn commit frames, UTF-16 databases, hinted key columns and the
//! one-line rendering of a change.

use introspection::decode::{self, sqlite, Change, Format, Op, SchemaHints};
use rusqlite::Connection;
use serde_json::json;

/// Frames of a transaction that has not committed (written to the WAL when
/// the page cache spills) must not count.
#[test]
fn wal_uncommitted_frames_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    c.execute_batch(
        "PRAGMA page_size = 1024; PRAGMA journal_mode = WAL; PRAGMA cache_size = 5; \
         CREATE TABLE t(id INTEGER PRIMARY KEY, v TEXT); INSERT INTO t(v) VALUES ('one');",
    )
    .unwrap();
    let read = || {
        let db = std::fs::read(dir.path().join("t.db")).unwrap();
        let wal = std::fs::read(dir.path().join("t.db-wal")).unwrap();
        (db, wal)
    };
    let (db0, wal0) = read();
    let committed = sqlite::apply_wal(&db0, &wal0).unwrap();
    c.execute_batch("BEGIN").unwrap();
    for i in 0..400 {
        c.execute(
            "INSERT INTO t(v) VALUES (?)",
            [format!("row {i} {}", "x".repeat(200))],
        )
        .unwrap();
    }
    let (db1, wal1) = read();
    assert!(
        wal1.len() > wal0.len() + 10 * 1024,
        "the cache spilled into the WAL"
    );
    let (mid, info) = sqlite::apply_wal_info(&db1, &wal1).unwrap();
    assert!(info.valid_frames > info.committed_frames);
    let none = decode::diff(Format::Sqlite, &committed, &mid, &SchemaHints::default()).unwrap();
    assert_eq!(none, vec![], "uncommitted rows must not show");
    c.execute_batch("COMMIT").unwrap();
    let (db2, wal2) = read();
    let after = sqlite::apply_wal(&db2, &wal2).unwrap();
    let changes =
        decode::diff(Format::Sqlite, &committed, &after, &SchemaHints::default()).unwrap();
    assert_eq!(changes.len(), 400);
    assert!(changes
        .iter()
        .all(|c| c.op == Op::Insert && c.collection == "t"));
    // A torn last frame (bit flip in the commit frame) drops that commit.
    let mut torn = wal2.clone();
    let n = torn.len();
    torn[n - 10] ^= 0x40;
    let before_commit = sqlite::apply_wal(&db2, &torn).unwrap();
    let changes = decode::diff(
        Format::Sqlite,
        &committed,
        &before_commit,
        &SchemaHints::default(),
    )
    .unwrap();
    assert!(changes.is_empty());
}

/// UTF-16 databases, hinted key columns, and the one-line rendering.
#[test]
fn utf16_and_hinted_keys() {
    for enc in ["UTF-16le", "UTF-16be"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("u.db");
        let c = Connection::open(&path).unwrap();
        c.execute_batch(&format!(
            "PRAGMA encoding = '{enc}'; \
             CREATE TABLE customers(id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT); \
             INSERT INTO customers VALUES (123, 'a@x', 'Alice'), (7, 'b@x', 'Bøb');"
        ))
        .unwrap();
        let old = std::fs::read(&path).unwrap();
        c.execute_batch("UPDATE customers SET name = 'Bob' WHERE id = 123")
            .unwrap();
        let new = std::fs::read(&path).unwrap();
        let got = decode::diff(Format::Sqlite, &old, &new, &SchemaHints::default()).unwrap();
        assert_eq!(
            got,
            vec![Change {
                collection: "customers".into(),
                key: "123".into(),
                op: Op::Update,
                before: Some(json!({"id": 123, "email": "a@x", "name": "Alice"})),
                after: Some(json!({"id": 123, "email": "a@x", "name": "Bob"})),
            }]
        );
        let line = introspection::semantic::SemanticChange::from_change(
            "vm1",
            4711,
            0,
            "app.db",
            Format::Sqlite,
            got[0].clone(),
        )
        .to_string();
        assert_eq!(
            line,
            r#"vm1 seq 4711 app.db customers[123] update: {"name":"Alice"} -> {"name":"Bob"}"#
        );
        let mut hints = SchemaHints::default();
        hints
            .key_columns
            .insert("customers".into(), vec!["email".into()]);
        let all = decode::diff(Format::Sqlite, &[], &new, &hints).unwrap();
        let keys: Vec<_> = all
            .iter()
            .filter(|c| c.collection == "customers")
            .map(|c| c.key.as_str())
            .collect();
        assert_eq!(keys, ["a@x", "b@x"]);
        assert_eq!(
            all.iter()
                .find(|c| c.key == "b@x")
                .unwrap()
                .after
                .as_ref()
                .unwrap()["name"],
            "Bøb"
        );
        hints
            .key_columns
            .insert("customers".into(), vec!["nope".into()]);
        assert!(decode::diff(Format::Sqlite, &[], &new, &hints).is_err());
    }
}
