//! The decode budget: valid files that decode to far more than they store
//! (a wide, sparse table with long column names; a JSON document of 3,000
//! leaves at depth 101) decode within the default budget, while a hostile
//! file that expands without bound (short rows reading long ADD COLUMN
//! defaults) is rejected with an error naming the limit and the flag that
//! raises it, and raising it is honoured.

use introspection::decode::{
    self, DecodeLimits, Format, Op, SchemaHints, DEFAULT_DECODE_BUDGET_MIB,
};
use rusqlite::Connection;
use serde_json::Value;

const COLS: usize = 1800;

fn col(i: usize) -> String {
    format!(
        "customer_account_preference_attribute_{i:04}_description_text_value_as_entered_by_the_user"
    )
}

/// ~0.5 MB: 1800 columns with 90-character names, 200 rows with 5 values
/// each (the rest NULL).
fn wide_sparse_table(dir: &std::path::Path) -> (Vec<u8>, Connection) {
    let c = Connection::open(dir.join("w.db")).unwrap();
    let cols: Vec<String> = (0..COLS).map(|i| format!("{} TEXT", col(i))).collect();
    c.execute_batch(&format!(
        "PRAGMA synchronous = OFF; CREATE TABLE wide(id INTEGER PRIMARY KEY, {});",
        cols.join(", ")
    ))
    .unwrap();
    c.execute_batch("BEGIN").unwrap();
    for r in 0..200usize {
        let set: Vec<usize> = (0..5).map(|k| (r * 37 + k * 401) % COLS).collect();
        let names: Vec<String> = set.iter().map(|&i| col(i)).collect();
        let vals: Vec<String> = set.iter().map(|i| format!("'v{r}_{i}'")).collect();
        c.execute_batch(&format!(
            "INSERT INTO wide(id, {}) VALUES ({r}, {});",
            names.join(", "),
            vals.join(", ")
        ))
        .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
    (std::fs::read(dir.join("w.db")).unwrap(), c)
}

#[test]
fn wide_sparse_table_with_long_column_names_decodes() {
    let dir = tempfile::tempdir().unwrap();
    let (img, c) = wide_sparse_table(dir.path());
    assert!(
        (400_000..800_000).contains(&img.len()),
        "{} bytes",
        img.len()
    );
    let h = SchemaHints::default();
    let changes = decode::diff(Format::Sqlite, b"", &img, &h).unwrap();
    let rows: Vec<_> = changes.iter().filter(|c| c.collection == "wide").collect();
    assert_eq!(rows.len(), 200);
    let decoded: usize = rows
        .iter()
        .map(|c| serde_json::to_vec(&c.after).unwrap().len())
        .sum();
    eprintln!(
        "wide sparse table: {} input bytes decode to {decoded} bytes of JSON ({:.0} x)",
        img.len(),
        decoded as f64 / img.len() as f64
    );
    // The former limit, relative to the input (64 units per input byte
    // plus 1 MiB, a value costing 32 + its name and bytes), rejected it.
    let old_units: usize = rows
        .iter()
        .flat_map(|c| c.after.as_ref().unwrap().as_object().unwrap())
        .map(|(k, v)| 32 + k.len() + v.as_str().map_or(8, str::len))
        .sum();
    assert!(old_units > 64 * img.len() + (1 << 20));
    let row = rows[7].after.as_ref().unwrap();
    let want: String = c
        .query_row(
            &format!("SELECT {} FROM wide WHERE id = 7", col(7 * 37)),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(row[col(7 * 37)], Value::String(want));
    assert_eq!(row[col(1)], Value::Null);
    // Every row changed: both versions decoded and kept.
    c.execute_batch(&format!("UPDATE wide SET {} = 'x'", col(0)))
        .unwrap();
    let img2 = std::fs::read(dir.path().join("w.db")).unwrap();
    let upd = decode::diff(Format::Sqlite, &img, &img2, &h).unwrap();
    assert_eq!(upd.iter().filter(|c| c.op == Op::Update).count(), 200);
    // A budget set lower than what it needs is refused, naming it.
    let small = DecodeLimits { budget_mib: 8 };
    let e = decode::diff_with(Format::Sqlite, &img, &img2, &h, &small).unwrap_err();
    assert!(
        e.reason.contains("budget of 8 MiB") && e.reason.contains("--decode-budget-mib"),
        "{e}"
    );
}

#[test]
fn json_of_3000_leaves_at_depth_101_decodes() {
    let doc = |v: usize| {
        let mut s = String::new();
        for d in 0..100 {
            s.push_str(&format!("{{\"lvl{d:03}\":"));
        }
        let leaves: Vec<String> = (0..3000)
            .map(|i| format!("\"kk{i:04}\":{}", i * v))
            .collect();
        s.push_str(&format!("{{{}}}", leaves.join(",")));
        s.push_str(&"}".repeat(100));
        s
    };
    let (a, b) = (doc(1), doc(2));
    assert!((40_000..46_000).contains(&a.len()), "{} bytes", a.len());
    let h = SchemaHints::default();
    let ins = decode::diff(Format::Json, b"", a.as_bytes(), &h).unwrap();
    assert_eq!(ins.len(), 3000);
    assert_eq!(ins[0].key.matches('/').count(), 101, "leaves at depth 101");
    let upd = decode::diff(Format::Json, a.as_bytes(), b.as_bytes(), &h).unwrap();
    // k0000 is 0 in both.
    assert_eq!(upd.len(), 2999);
    assert!(upd.iter().all(|c| c.op == Op::Update));
}

/// Short rows written before five columns with 64 KiB defaults were
/// added: each of 1000 tiny records reads 320 KiB.
#[test]
fn hostile_expansion_is_rejected_with_the_named_limit() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("h.db")).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF; CREATE TABLE t(a); BEGIN;")
        .unwrap();
    for i in 0..1000 {
        c.execute(&format!("INSERT INTO t VALUES ({i})"), [])
            .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
    for k in 0..5 {
        let big = "x".repeat(64 << 10);
        c.execute_batch(&format!("ALTER TABLE t ADD COLUMN d{k} DEFAULT '{big}'"))
            .unwrap();
    }
    let img = std::fs::read(dir.path().join("h.db")).unwrap();
    assert!(img.len() < 1_000_000);
    let h = SchemaHints::default();
    let t = std::time::Instant::now();
    let e = decode::diff(Format::Sqlite, b"", &img, &h).unwrap_err();
    assert!(
        e.reason
            .contains(&format!("budget of {DEFAULT_DECODE_BUDGET_MIB} MiB"))
            && e.reason.contains("--decode-budget-mib"),
        "{e}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20));
}

/// Nesting up to the limit decodes on a thread with a 2 MiB stack (the
/// lifter's), in both modes; one level more is refused, naming the limit.
#[test]
fn json_nesting_limit_is_stack_safe_and_named() {
    let deep = |levels: usize, leaf: &str| {
        format!("{}{leaf}{}", "{\"a\":".repeat(levels), "}".repeat(levels))
    };
    let max = decode::json::node::MAX_DEPTH;
    let t = std::thread::Builder::new()
        .stack_size(2 << 20)
        .spawn(move || {
            let (a, b) = (deep(max - 1, "[1]"), deep(max - 1, "{\"x\":2}"));
            let h = SchemaHints::default();
            let c = decode::diff(Format::Json, a.as_bytes(), b.as_bytes(), &h).unwrap();
            assert_eq!(c.len(), 1, "array replaced by an object at the bottom");
            let rec = SchemaHints {
                json_record_path: Some("/a".into()),
                ..Default::default()
            };
            let c = decode::diff(Format::Json, a.as_bytes(), b.as_bytes(), &rec).unwrap();
            assert_eq!(c.len(), 1);
            let e = decode::diff(Format::Json, b"", deep(max + 1, "1").as_bytes(), &h).unwrap_err();
            assert!(e.reason.contains(&format!("limit of {max} levels")), "{e}");
        })
        .unwrap();
    t.join().unwrap();
}
