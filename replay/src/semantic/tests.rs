//! Unit tests of the fold, checksum, filters, merge and outputs (no VM).
use introspection::decode::SchemaHints;
use introspection::semantic::{Change, Format, Op, SemanticChange};
use serde_json::{json, Value};

use super::change::Lifted;
use super::output;
use super::state::{AnomalyKind, Applied, Key, State};
use super::stream::{merge, ChangeFilter, KeyRange, Selection};
use super::{fold, SCHEMA};

fn ch(
    vm: &str,
    seq: u64,
    collection: &str,
    key: &str,
    op: Op,
    before: Option<Value>,
    after: Option<Value>,
) -> Lifted {
    Lifted::from(&SemanticChange::from_change(
        vm,
        seq,
        seq * 10,
        "app.db",
        Format::Sqlite,
        Change {
            collection: collection.into(),
            key: key.into(),
            op,
            before,
            after,
        },
    ))
}

/// A change that lives as long as the test (states borrow their rows).
fn leak(c: Lifted) -> &'static Lifted {
    Box::leak(Box::new(c))
}

fn ins(seq: u64, t: &str, k: &str, v: Value) -> Lifted {
    ch("vm0", seq, t, k, Op::Insert, None, Some(v))
}

#[test]
fn fold_applies_in_order_and_counts_what_does_not_fit() {
    let mut s = State::new();
    assert_eq!(
        s.apply(leak(ins(1, "t", "1", json!({"a": 1})))),
        Applied::Changed
    );
    assert_eq!(
        s.apply(leak(ins(1, "t", "1", json!({"a": 1})))),
        Applied::Unchanged
    );
    let upd = ch(
        "vm0",
        2,
        "t",
        "1",
        Op::Update,
        Some(json!({"a": 1})),
        Some(json!({"a": 2})),
    );
    assert_eq!(s.apply(leak(upd)), Applied::Changed);
    let stale = ch(
        "vm0",
        3,
        "t",
        "1",
        Op::Update,
        Some(json!({"a": 1})),
        Some(json!({"a": 3})),
    );
    assert_eq!(
        s.apply(leak(stale)),
        Applied::Anomaly(AnomalyKind::BeforeMismatch)
    );
    assert_eq!(*s.collections["t"][&Key::Int(1)], json!({"a": 3}));
    assert_eq!(
        s.apply(leak(ins(4, "t", "1", json!({"a": 9})))),
        Applied::Anomaly(AnomalyKind::InsertOverExisting)
    );
    let gone = ch("vm0", 5, "t", "2", Op::Delete, Some(json!({})), None);
    assert_eq!(
        s.apply(leak(gone)),
        Applied::Anomaly(AnomalyKind::DeleteOfMissing)
    );
    let ghost = ch("vm0", 5, "t", "3", Op::Update, None, Some(json!({"a": 0})));
    assert_eq!(
        s.apply(leak(ghost)),
        Applied::Anomaly(AnomalyKind::UpdateOfMissing)
    );
    let del = ch("vm0", 6, "t", "1", Op::Delete, Some(json!({"a": 9})), None);
    assert_eq!(s.apply(leak(del)), Applied::Changed);
    assert_eq!(s.rows(), 1);
}

#[test]
fn checksum_is_canonical() {
    let mut a = State::new();
    a.apply(leak(ins(
        1,
        "t",
        "10",
        json!({"x": 1, "y": [1, {"b": 2, "a": 1}]}),
    )));
    a.apply(leak(ins(1, "t", "9", json!({"x": 2}))));
    let mut b = State::new();
    b.apply(leak(ins(1, "t", "9", json!({"x": 2}))));
    b.apply(leak(ins(
        1,
        "t",
        "10",
        json!({"y": [1, {"a": 1, "b": 2}], "x": 1}),
    )));
    b.apply(leak(ins(1, "empty", "1", json!(1))));
    b.apply(leak(ch("vm0", 2, "empty", "1", Op::Delete, None, None)));
    b.prune();
    assert_eq!(a.checksum(), b.checksum());
    assert!(a.differences(&b, 5).is_empty());
    // Integer keys in numeric order, before text keys; "007" is text.
    let keys: Vec<Key> = super::state::sorted(&a.collections["t"])
        .into_iter()
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(keys, vec![Key::Int(9), Key::Int(10)]);
    assert_eq!(Key::parse("007"), Key::Text("007".into()));
    assert!(Key::Int(i64::MAX) < Key::Text("a".into()));
    b.apply(leak(ins(3, "t", "11", json!(null))));
    assert_ne!(a.checksum(), b.checksum());
    let d = a.differences(&b, 5);
    assert_eq!(
        (d.len(), d[0].key.as_str(), d[0].log.is_none()),
        (1, "11", true)
    );
}

#[test]
fn alter_table_reshapes_the_rows_it_did_not_touch() {
    let schema = |sql: &str| json!({"type": "table", "name": "t", "tbl_name": "t", "sql": sql});
    let v1 = schema("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, gone INT)");
    let v2 = schema("CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, status TEXT DEFAULT 'new')");
    let mut s = State::new();
    s.apply(leak(ins(1, SCHEMA, "t", v1.clone())));
    s.apply(leak(ins(
        1,
        "t",
        "1",
        json!({"id": 1, "a": "x", "gone": 5}),
    )));
    s.apply(leak(ch(
        "vm0",
        2,
        SCHEMA,
        "t",
        Op::Update,
        Some(v1),
        Some(v2),
    )));
    assert_eq!(
        *s.collections["t"][&Key::Int(1)],
        json!({"id": 1, "a": "x", "status": "new"})
    );
    // A change lifted in the same barrier carries the old shape as
    // `before`: that still fits.
    let upd = ch(
        "vm0",
        2,
        "t",
        "1",
        Op::Update,
        Some(json!({"id": 1, "a": "x", "gone": 5})),
        Some(json!({"id": 1, "a": "y", "status": "old"})),
    );
    assert_eq!(s.apply(leak(upd)), Applied::Changed);
}

#[test]
fn selections_and_filters() {
    let r: KeyRange = "5..20".parse().unwrap();
    assert!(r.contains("5") && r.contains("20") && !r.contains("100") && !r.contains("abc"));
    assert!("20..5".parse::<KeyRange>().is_err());
    assert_eq!(
        "seq=3..9".parse::<ChangeFilter>(),
        Ok(ChangeFilter::Seq { first: 3, last: 9 })
    );
    for bad in ["sector=1", "seq=9..3", "key=", "table=", "x"] {
        assert!(bad.parse::<ChangeFilter>().is_err(), "{bad}");
    }
    let sel = Selection {
        table: Some("t".into()),
        keys: Some("1..2".parse().unwrap()),
    };
    let own = json!({"type": "table", "name": "t", "tbl_name": "t", "sql": "CREATE TABLE t(a)"});
    let other = json!({"type": "table", "name": "u", "tbl_name": "u", "sql": "CREATE TABLE u(a)"});
    let changes = vec![
        ins(1, SCHEMA, "t", own),
        ins(1, SCHEMA, "u", other),
        ins(1, "t", "1", json!(1)),
        ins(1, "t", "3", json!(3)),
        ins(2, "u", "1", json!(1)),
        ins(3, "t", "2", json!(2)),
    ];
    let drop = ["seq=3".parse().unwrap()];
    let f = fold(&changes, &sel, &drop);
    assert_eq!((f.applied, f.unselected, f.dropped), (2, 3, 1));
    assert_eq!(f.state.collections["t"].len(), 1);
    assert!(f.state.collections[SCHEMA].contains_key(&Key::Text("t".into())));
}

#[test]
fn merge_orders_stamped_changes_by_hlc_across_hosts() {
    use changelog::{Hlc, NodeId};
    let stamped = |vm: &str, seq: u64, hlc: Hlc| Lifted {
        ts_ns: hlc.physical_ns,
        hlc,
        ..ch(
            vm,
            seq,
            "t",
            &seq.to_string(),
            Op::Insert,
            None,
            Some(json!(seq)),
        )
    };
    let (x, y) = (NodeId(2), NodeId(1));
    // Host x's clock stepped back after seq 1: seq 2 is held at time 50.
    let a = vec![
        stamped("a", 1, Hlc::new(50, 0, x)),
        stamped("a", 2, Hlc::new(50, 1, x)),
    ];
    let b = vec![
        stamped("b", 1, Hlc::new(50, 0, y)),
        stamped("b", 2, Hlc::new(50, 1, y)),
    ];
    let (merged, _) = merge(vec![("a".into(), a), ("b".into(), b)]);
    let order: Vec<String> = merged
        .iter()
        .map(|c| format!("{}{}", c.vm, c.seq))
        .collect();
    // Equal time and counter: node y (b) before node x (a), whatever the
    // order the VMs were named in.
    assert_eq!(order, ["b1", "a1", "b2", "a2"]);
}

#[test]
fn merge_orders_by_time_and_reports_only_diverging_keys() {
    let base = |vm: &str| {
        vec![
            ch(vm, 1, "t", "1", Op::Insert, None, Some(json!("base"))),
            ch(vm, 1, "t", "2", Op::Insert, None, Some(json!("base"))),
        ]
    };
    let mut a = base("a");
    a.push(ch(
        "a",
        5,
        "t",
        "1",
        Op::Update,
        Some(json!("base")),
        Some(json!("a")),
    ));
    let mut b = base("b");
    b.push(ch(
        "b",
        3,
        "t",
        "1",
        Op::Update,
        Some(json!("base")),
        Some(json!("b")),
    ));
    b.push(ch("b", 4, "t", "3", Op::Insert, None, Some(json!("b"))));
    let (merged, conflicts) = merge(vec![("a".into(), a), ("b".into(), b)]);
    let order: Vec<(String, u64)> = merged.iter().map(|c| (c.vm.to_string(), c.seq)).collect();
    assert_eq!(
        order,
        [
            ("a", 1),
            ("a", 1),
            ("b", 1),
            ("b", 1),
            ("b", 3),
            ("b", 4),
            ("a", 5)
        ]
        .map(|(v, s)| (v.to_string(), s))
    );
    assert_eq!(conflicts.len(), 1);
    assert_eq!(
        (conflicts[0].key.as_str(), conflicts[0].vms.len()),
        ("1", 2)
    );
    let f = fold(&merged, &Selection::default(), &[]);
    assert_eq!(*f.state.collections["t"][&Key::Int(1)], json!("a"));
    assert_eq!(f.unchanged, 2); // b's copies of the common inserts
                                // a's update was made on the row b had not changed yet.
    assert_eq!(
        f.anomalies.into_iter().collect::<Vec<_>>(),
        vec![(AnomalyKind::BeforeMismatch, 1)]
    );
}

#[test]
fn sqlite_output_holds_the_rows_and_reads_back_equal() {
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT, score REAL, pic BLOB)";
    let mut s = State::new();
    s.apply(leak(ins(
        1,
        SCHEMA,
        "t",
        json!({"type": "table", "name": "t", "tbl_name": "t", "sql": sql}),
    )));
    s.apply(leak(ins(1, SCHEMA, "t_name", json!({"type": "index", "name": "t_name", "tbl_name": "t", "sql": "CREATE INDEX t_name ON t(name)"}))));
    s.apply(leak(ins(
        1,
        "t",
        "7",
        json!({"id": 7, "name": "Bob", "score": 1.5, "pic": {"$blob": "00ff"}}),
    )));
    s.apply(leak(ins(
        1,
        "t",
        "3",
        json!({"id": 3, "name": null, "score": -2.25, "pic": null}),
    )));
    // A table the log has no schema for: columns from the rows.
    s.apply(leak(ins(1, "loose", "1", json!({"k": "a", "v": 1}))));
    let path = dir.path().join("out.db");
    output::write(&s, Format::Sqlite, &SchemaHints::default(), &path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    let (name, pic): (String, Vec<u8>) = db
        .query_row("SELECT name, pic FROM t WHERE id = 7", [], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })
        .unwrap();
    assert_eq!((name.as_str(), pic), ("Bob", vec![0, 0xff]));
    let n: i64 = db
        .query_row("SELECT count(*) FROM loose", [], |r| r.get(0))
        .unwrap();
    assert_eq!(n, 1);
    drop(db);
    // The read-back check ignores the schema it invented for `loose`...
    output::verify(&s, Format::Sqlite, &SchemaHints::default(), &path).unwrap();
    let mut no_schema = s.clone();
    no_schema.collections.remove(SCHEMA);
    let path2 = dir.path().join("out2.db");
    output::write(&no_schema, Format::Sqlite, &SchemaHints::default(), &path2).unwrap();
    output::verify(&no_schema, Format::Sqlite, &SchemaHints::default(), &path2).unwrap();
    // ...but catches a file that does not hold the state.
    s.apply(leak(ins(
        2,
        "t",
        "8",
        json!({"id": 8, "name": "x", "score": 0.5, "pic": null}),
    )));
    let err = output::verify(&s, Format::Sqlite, &SchemaHints::default(), &path).unwrap_err();
    assert!(err.to_string().contains("t[8]"), "{err}");
    // Never over an existing file.
    assert!(output::write(&s, Format::Sqlite, &SchemaHints::default(), &path).is_err());
}

#[test]
fn sqlite_output_binds_each_row_shape_s_missing_columns_to_null() {
    // Rows of one table with different member sets, in key order: a column
    // a shape lacks must be NULL, never the previous row's value.
    let dir = tempfile::tempdir().unwrap();
    let sql = "CREATE TABLE t(id INTEGER PRIMARY KEY, a TEXT, b TEXT)";
    let mut s = State::new();
    s.apply(leak(ins(
        1,
        SCHEMA,
        "t",
        json!({"type": "table", "name": "t", "tbl_name": "t", "sql": sql}),
    )));
    for (k, row) in [
        ("1", json!({"id": 1, "a": "a1", "b": "b1"})),
        ("2", json!({"id": 2, "a": "a2"})),
        ("3", json!({"id": 3, "b": "b3"})),
        ("4", json!({"id": 4, "a": "a4", "b": "b4"})),
        ("5", json!({"id": 5})),
    ] {
        s.apply(leak(ins(1, "t", k, row)));
    }
    let path = dir.path().join("out.db");
    output::write(&s, Format::Sqlite, &SchemaHints::default(), &path).unwrap();
    let db = rusqlite::Connection::open(&path).unwrap();
    let rows: Vec<(i64, Option<String>, Option<String>)> = db
        .prepare("SELECT id, a, b FROM t ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let text = |s: &str| Some(s.to_string());
    assert_eq!(
        rows,
        vec![
            (1, text("a1"), text("b1")),
            (2, text("a2"), None),
            (3, None, text("b3")),
            (4, text("a4"), text("b4")),
            (5, None, None),
        ]
    );
}

#[test]
fn json_document_and_kv_map() {
    let hints = SchemaHints {
        json_record_path: Some("/records".into()),
        json_record_key: Some("id".into()),
        ..Default::default()
    };
    let json_change = |collection: &str, key: &str, v: Value| {
        let mut c = ins(1, collection, key, v);
        c.format = Format::Json;
        c
    };
    let mut s = State::new();
    s.apply(leak(json_change(
        "/records",
        "2",
        json!({"id": 2, "n": "b"}),
    )));
    s.apply(leak(json_change(
        "/records",
        "1",
        json!({"id": 1, "n": "a"}),
    )));
    s.apply(leak(json_change("", "/version", json!(3))));
    s.apply(leak(json_change("/meta/tags", "/meta/tags/1", json!("y"))));
    s.apply(leak(json_change("/meta/tags", "/meta/tags/0", json!("x"))));
    let doc = output::document(&s, &hints);
    assert_eq!(
        doc,
        json!({"records": [{"id": 1, "n": "a"}, {"id": 2, "n": "b"}], "version": 3, "meta": {"tags": ["x", "y"]}})
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("doc.json");
    output::write(&s, Format::Json, &hints, &path).unwrap();
    output::verify(&s, Format::Json, &hints, &path).unwrap();
    // Nothing yet: an empty file, which reads back as no document.
    let empty = dir.path().join("empty.json");
    output::write(&State::new(), Format::Json, &hints, &empty).unwrap();
    assert_eq!(std::fs::read(&empty).unwrap().len(), 0);
    output::verify(&State::new(), Format::Json, &hints, &empty).unwrap();

    let mut kv = State::new();
    kv.apply(leak(ins(1, "", "k1", json!("v1"))));
    kv.apply(leak(ins(1, "", "k2", json!({"$blob": "00"}))));
    assert_eq!(
        output::kv_map(&kv),
        json!({"k1": "v1", "k2": {"$blob": "00"}})
    );
}

#[test]
fn compact_rows_are_the_json_values() {
    use super::row::{Interner, Row};
    let texts = [
        r#"{"b": 1, "a": "x\"y\u00e9", "c": null, "d": true, "e": false}"#,
        r#"{"id": 18446744073709551615, "neg": -5, "f": 2.0, "g": 0.1, "h": -1e300}"#,
        r#"{"z": {"y": [1, {"b": 2, "a": 1}]}, "a": [], "blob": {"$blob": "00ff"}}"#,
        r#"{"dup": 1, "x": 0, "dup": 2}"#,
        r#"{}"#,
        r#""text""#,
        r#"[1, 2]"#,
        r#"3.5"#,
        r#"null"#,
    ];
    let mut names = Interner::default();
    for text in texts {
        let value: Value = serde_json::from_str(text).unwrap();
        let parsed = Row::parse(text, &mut names).unwrap();
        let converted = Row::from_value(value.clone());
        assert_eq!(parsed, converted, "{text}");
        assert_eq!(parsed.to_value(), value, "{text}");
        let (mut a, mut b) = (Vec::new(), Vec::new());
        parsed.canonical_json(&mut a);
        super::state::canonical_json(&value, &mut b);
        assert_eq!(a, b, "{text}");
    }
    // Rows of one shape share their names; a row differs from another
    // in any member.
    let a = Row::parse(r#"{"a": 1, "b": "x"}"#, &mut names).unwrap();
    let b = Row::parse(r#"{"b": "x", "a": 1}"#, &mut names).unwrap();
    let c = Row::parse(r#"{"a": 1, "b": "y"}"#, &mut names).unwrap();
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_eq!(a.get_str("b"), Some("x"));
    assert_eq!(a.get("a"), Some(json!(1)));
    assert!(Row::parse(r#"{"a": 1"#, &mut names).is_err());
}

#[test]
fn records_read_as_the_log_type_reads_them() {
    use super::change::{parse_record, Lifted, Record, Shared};
    use introspection::lift::SemanticEvent;
    let c = ch(
        "vm0",
        7,
        "t",
        "12",
        Op::Update,
        Some(json!({"a": 1})),
        Some(json!({"a": 2, "b": "x"})),
    );
    let change = SemanticChange::from_change(
        "vm0",
        7,
        70,
        "app.db",
        Format::Sqlite,
        Change {
            collection: "t".into(),
            key: "12".into(),
            op: Op::Update,
            before: Some(json!({"a": 1})),
            after: Some(json!({"a": 2, "b": "x"})),
        },
    );
    let json = serde_json::to_string(&SemanticEvent::Change(change.clone())).unwrap();
    let mut shared = Shared::default();
    match parse_record(&json, "app.db", &mut shared) {
        Record::Change(l) => assert_eq!(
            l,
            Lifted {
                ts_ns: 70,
                hlc: changelog::Hlc::legacy(70),
                ..c.clone()
            }
        ),
        _ => panic!("not read as a change"),
    }
    assert!(matches!(
        parse_record(&json, "other.db", &mut shared),
        Record::Other
    ));
    // What the log type refuses is unreadable here too, also for another
    // file's change.
    let mut broken: Value = serde_json::from_str(&json).unwrap();
    broken.as_object_mut().unwrap().remove("vm");
    for bad in [
        broken.to_string(),
        json.replace("\"change\"", "\"chnage\""),
        json[..json.len() - 1].to_string(),
        json.replace("\"after\":{", "\"after\":{\"a\":"),
    ] {
        assert!(
            serde_json::from_str::<SemanticEvent>(&bad).is_err(),
            "{bad}"
        );
        for file in ["app.db", "other.db"] {
            assert!(
                matches!(parse_record(&bad, file, &mut shared), Record::Unreadable),
                "{bad}"
            );
        }
    }
    // A change without rows (null) and a decode error.
    let deleted = json.replace("\"after\":{\"a\":2,\"b\":\"x\"}", "\"after\":null");
    match parse_record(&deleted, "app.db", &mut shared) {
        Record::Change(l) => assert_eq!(l.after, None),
        _ => panic!("not read as a change"),
    }
    // Rows are read where they stand once the file is known, else kept as
    // text until it is: with the members by name, the rows come first.
    let by_name: serde_json::Map<String, Value> = serde_json::from_str(&json).unwrap();
    let reordered = Value::Object(by_name).to_string();
    assert!(reordered.find("\"after\"") < reordered.find("\"file\""));
    for (text, file) in [(&reordered, "app.db"), (&json, "app.db")] {
        match parse_record(text, file, &mut shared) {
            Record::Change(l) => assert_eq!(
                l,
                Lifted {
                    ts_ns: 70,
                    ..c.clone()
                }
            ),
            _ => panic!("not read as a change: {text}"),
        }
    }
    let twice = json.replace("\"before\":", "\"before\":{\"a\":0},\"before\":");
    assert!(serde_json::from_str::<SemanticEvent>(&twice).is_err());
    assert!(matches!(
        parse_record(&twice, "app.db", &mut shared),
        Record::Unreadable
    ));
    let err = r#"{"event":"decode_error","vm":"vm0","seq":9,"ts_ns":1,"file":"app.db","format":"sqlite","reason":"bad"}"#;
    assert!(matches!(
        parse_record(err, "app.db", &mut shared),
        Record::DecodeError(Format::Sqlite, 9)
    ));
}
