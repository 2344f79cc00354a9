//! Oracle test of `ALTER TABLE ... ADD COLUMN ... DEFAULT x`: rows written
//! before the ALTER hold records shorter than the schema, and SQLite reads
//! the missing columns as the DEFAULT evaluated with the column's affinity.
//! For every (declared type, DEFAULT form) pair that SQLite accepts, the
//! decoded value of every row (written before and after the ALTER) must
//! equal what rusqlite's `SELECT` returns, type included; adding the
//! columns must not show as row updates, and updating an old row must show
//! SQLite's values as `before`.

#[allow(dead_code)]
mod decode_sqlite_oracle;

use decode_sqlite_oracle::Rng;
use introspection::decode::{self, sqlite::Database, Change, Format, Op, SchemaHints};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use serde_json::{json, Map, Value};

/// Declared types: one or more per affinity (and the empty type).
const TYPES: &[&str] = &[
    "",
    "INTEGER",
    "INT",
    "TEXT",
    "VARCHAR(10)",
    "REAL",
    "DOUBLE",
    "FLOAT",
    "NUMERIC",
    "DECIMAL(10,2)",
    "BOOLEAN",
    "BLOB",
    "DATE",
];

/// DEFAULT forms, as written after `DEFAULT`.
const FORMS: &[&str] = &[
    "'it''s'",
    "'abc'",
    "''",
    "'7'",
    "' 7 '",
    "'7.0'",
    "'7.5'",
    "'1e3'",
    "'0x10'",
    "'-5'",
    "'+5'",
    "'.5'",
    "'5.'",
    "'9223372036854775808'",
    "'-9223372036854775808'",
    "'1e400'",
    "'12abc'",
    "'é漢'",
    "abc",
    "\"abc\"",
    "[abc]",
    "`abc`",
    "+5",
    "-5",
    "5",
    "0",
    "-0",
    "00",
    "007",
    "0x1F",
    "0X1f",
    "-0x1F",
    "0x7FFFFFFF",
    "0x80000000",
    "0xFFFFFFFF",
    "0x100000000",
    "0x7FFFFFFFFFFFFFFF",
    "0x8000000000000000",
    "0xFFFFFFFFFFFFFFFF",
    "-0x7FFFFFFFFFFFFFFF",
    "1e3",
    "1E3",
    "1e+3",
    "1.5e-3",
    "-1.5e-3",
    ".5",
    "5.",
    "-5.",
    "1.0",
    "-0.0",
    "0.0",
    "1e15",
    "1e16",
    "1.5e300",
    "1e309",
    "-1e309",
    "0.1",
    "0.30000000000000004",
    "3.14159265358979",
    "2147483647",
    "2147483648",
    "-2147483648",
    "-2147483649",
    "9223372036854775807",
    "9223372036854775808",
    "-9223372036854775808",
    "-9223372036854775809",
    "18446744073709551616",
    "123456789012345678901234567890",
    "1_000",
    "1_000.5",
    "NULL",
    "null",
    "TRUE",
    "FALSE",
    "true",
    "False",
    "X'ABCD'",
    "x''",
    "X'00ff'",
    "CURRENT_TIME",
    "CURRENT_DATE",
    "CURRENT_TIMESTAMP",
    "(1+2)",
    "(5)",
    "((5))",
    "(-5)",
    "(+5)",
    "('a')",
    "(-(-5))",
    "(- -5)",
    "(-(1.5))",
    "(-'5')",
    "(-'abc')",
    "(-(-9223372036854775808))",
    "(-9223372036854775808)",
    "(-(0x10))",
    "(-TRUE)",
    "(CAST('5' AS INTEGER))",
    "(CAST(5 AS TEXT))",
    "(CAST(1.5 AS TEXT))",
    "(CAST(-1.5 AS TEXT))",
    "(CAST('1e3' AS REAL))",
    "(CAST(X'41' AS TEXT))",
    "('x' COLLATE nocase)",
    "(NULL)",
    "(TRUE)",
    "(X'01')",
    "(abs(-5))",
    "(1.5)",
    "(-(-(0.1)))",
    "(-(1e20))",
    "(-(-1e300))",
    "(CAST(0.1 AS TEXT))",
    "(CAST(1e20 AS TEXT))",
    "(CAST(1e-7 AS TEXT))",
    "(- 'x')",
    "-'5'",
    "+'5'",
    "-'x'",
    "-X'35'",
    "-NULL",
    "- 5",
    "-1.5",
    "-.5",
    "-1e3",
    "(CAST(1.5 AS INTEGER))",
    "(CAST('12abc' AS INTEGER))",
    "(CAST('1e3' AS INTEGER))",
    "(CAST(5 AS BLOB))",
    "(CAST('x' AS NUMERIC))",
    "(CAST('2.0' AS NUMERIC))",
    "(CAST(2.5 AS DECIMAL(10,2)))",
    "(-(CAST('9e18' AS REAL)))",
    "(-(-X'3132'))",
    "(-'12.5abc')",
    "(-'1e3x')",
    "(-' 7 ')",
    "(-'')",
    "(-(-(-9223372036854775807)))",
];

fn sql_json(v: Sql) -> Value {
    match v {
        Sql::Null => Value::Null,
        Sql::Integer(i) => json!(i),
        Sql::Real(f) if f.is_nan() => Value::Null,
        Sql::Real(f) if f.is_infinite() => {
            json!(if f > 0.0 { "Infinity" } else { "-Infinity" })
        }
        Sql::Real(f) => json!(f),
        Sql::Text(t) => json!(t),
        Sql::Blob(b) => decode::blob_value(&b),
    }
}

/// Rows by rowid as SQLite reads them.
fn select(c: &Connection, table: &str) -> Vec<(i64, Map<String, Value>)> {
    let mut st = c
        .prepare(&format!("SELECT _rowid_, * FROM \"{table}\""))
        .unwrap();
    let names: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
    let mut q = st.query([]).unwrap();
    let mut out = Vec::new();
    while let Some(r) = q.next().unwrap() {
        let mut m = Map::new();
        for (k, n) in names.iter().enumerate().skip(1) {
            m.insert(n.clone(), sql_json(r.get(k).unwrap()));
        }
        out.push((r.get(0).unwrap(), m));
    }
    out
}

fn decoded(img: &[u8], table: &str) -> Vec<(i64, Map<String, Value>)> {
    let db = Database::decode(img, &SchemaHints::default()).unwrap();
    let t = &db.tables[table];
    let mut buf = Vec::new();
    t.rows
        .iter()
        .map(|r| (r.rowid, t.row_json(r, db.encoding, &mut buf).unwrap()))
        .collect()
}

fn image(dir: &std::path::Path) -> Vec<u8> {
    std::fs::read(dir.join("d.db")).unwrap()
}

#[test]
fn add_column_defaults_read_as_sqlite_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("d.db")).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF").unwrap();
    // Per type: table name, and the forms SQLite accepted (column index).
    let mut tables = Vec::new();
    for ti in 0..TYPES.len() {
        let name = format!("t{ti}");
        c.execute_batch(&format!(
            "CREATE TABLE {name}(id INTEGER PRIMARY KEY, a); \
             INSERT INTO {name}(a) VALUES ('old1'), (NULL);"
        ))
        .unwrap();
        tables.push(name);
    }
    let before_alter = image(dir.path());
    let mut accepted = Vec::new();
    let mut refused = 0;
    for (ti, ty) in TYPES.iter().enumerate() {
        for (fi, form) in FORMS.iter().enumerate() {
            let sql = format!("ALTER TABLE t{ti} ADD COLUMN c{fi} {ty} DEFAULT {form}");
            match c.execute_batch(&sql) {
                Ok(()) => accepted.push((ti, fi)),
                Err(_) => refused += 1,
            }
        }
    }
    let after_alter = image(dir.path());
    for t in &tables {
        c.execute_batch(&format!("INSERT INTO {t}(a) VALUES ('new')"))
            .unwrap();
    }
    let after_insert = image(dir.path());
    let snap: Vec<_> = tables.iter().map(|t| select(&c, t)).collect();

    // Every accepted (type, form): the decoded values of all rows.
    let mut failures = Vec::new();
    let got: Vec<_> = tables.iter().map(|t| decoded(&after_insert, t)).collect();
    for &(ti, fi) in &accepted {
        let col = format!("c{fi}");
        for ((rid, want), (gid, have)) in snap[ti].iter().zip(&got[ti]) {
            assert_eq!(rid, gid);
            if want.get(&col) != have.get(&col) {
                failures.push(format!(
                    "{} DEFAULT {} (row {rid}): sqlite {:?}, decoded {:?}",
                    TYPES[ti],
                    FORMS[fi],
                    want.get(&col),
                    have.get(&col)
                ));
                break;
            }
        }
    }
    let cases = accepted.len();
    eprintln!(
        "ADD COLUMN defaults: {} of {cases} (type, DEFAULT) cases exact ({refused} forms \
         refused by SQLite)",
        cases - failures.len()
    );
    for f in failures.iter().take(40) {
        eprintln!("  {f}");
    }
    assert!(cases > 800, "SQLite accepted only {cases} forms");

    // Adding columns changes no row; inserting shows SQLite's values.
    let h = SchemaHints::default();
    let alter = decode::diff(Format::Sqlite, &before_alter, &after_alter, &h).unwrap();
    let false_updates = alter
        .iter()
        .filter(|ch| ch.collection != "sqlite_schema")
        .count();
    let inserts = decode::diff(Format::Sqlite, &after_alter, &after_insert, &h).unwrap();
    let mut insert_failures = 0;
    for (ti, t) in tables.iter().enumerate() {
        let new_row = snap[ti].last().unwrap();
        let want = Change {
            collection: t.clone(),
            key: new_row.0.to_string(),
            op: Op::Insert,
            before: None,
            after: Some(Value::Object(new_row.1.clone())),
        };
        if !inserts.contains(&want) {
            insert_failures += 1;
        }
    }
    // Updating an old row: `before` is the row as SQLite read it.
    c.execute_batch(
        &tables
            .iter()
            .map(|t| format!("UPDATE {t} SET a = 'upd' WHERE id = 1;"))
            .collect::<String>(),
    )
    .unwrap();
    let after_update = image(dir.path());
    let updates = decode::diff(Format::Sqlite, &after_insert, &after_update, &h).unwrap();
    let mut update_failures = 0;
    for (ti, t) in tables.iter().enumerate() {
        let mut after = snap[ti][0].1.clone();
        after.insert("a".into(), json!("upd"));
        let want = Change {
            collection: t.clone(),
            key: "1".into(),
            op: Op::Update,
            before: Some(Value::Object(snap[ti][0].1.clone())),
            after: Some(Value::Object(after)),
        };
        if !updates.contains(&want) {
            update_failures += 1;
        }
    }
    eprintln!(
        "false updates on ADD COLUMN: {false_updates}; inserts wrong: {insert_failures}/{}; \
         updates of old rows wrong: {update_failures}/{} ({} changes)",
        tables.len(),
        tables.len(),
        updates.len()
    );
    assert!(
        failures.is_empty(),
        "{} defaults read wrong",
        failures.len()
    );
    assert_eq!(false_updates, 0, "ADD COLUMN showed as row updates");
    assert_eq!(insert_failures, 0);
    assert_eq!(update_failures, 0);
    assert_eq!(updates.len(), tables.len());
}

/// Reals that SQLite turns into text while evaluating a default (negated
/// twice in a TEXT column): its 17-digit rendering, every magnitude.
#[test]
fn real_defaults_render_as_sqlite_renders_them() {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("d.db")).unwrap();
    c.execute_batch(
        "PRAGMA synchronous = OFF; CREATE TABLE r(id INTEGER PRIMARY KEY, a); \
         INSERT INTO r(a) VALUES (1);",
    )
    .unwrap();
    let mut rng = Rng(0x005e_ed0f_2ea1);
    let mut lits = Vec::new();
    for i in 0..400 {
        let f = f64::from_bits(rng.next());
        let lit = match i % 4 {
            _ if !f.is_finite() => continue,
            0 => format!("{f:e}"),
            1 => format!("{:.3e}", f),
            2 => format!("{}", (rng.below(1_000_000) as f64) / 1000.0),
            _ => format!("{}.{}", rng.below(100_000), rng.below(1000)),
        };
        lits.push(lit);
    }
    lits.extend(
        [
            "0.1",
            "49.47",
            "1e16",
            "1e17",
            "123456789.125",
            "0.0001",
            "0.00001",
        ]
        .map(String::from),
    );
    for (k, lit) in lits.iter().enumerate() {
        c.execute_batch(&format!(
            "ALTER TABLE r ADD COLUMN c{k} TEXT DEFAULT (-(- {lit}))"
        ))
        .unwrap();
    }
    let img = std::fs::read(dir.path().join("d.db")).unwrap();
    let want = select(&c, "r");
    let got = decoded(&img, "r");
    let wrong: Vec<String> = (0..lits.len())
        .filter(|k| want[0].1[&format!("c{k}")] != got[0].1[&format!("c{k}")])
        .map(|k| {
            format!(
                "{}: sqlite {}, decoded {}",
                lits[k],
                want[0].1[&format!("c{k}")],
                got[0].1[&format!("c{k}")]
            )
        })
        .collect();
    eprintln!(
        "real defaults as text: {} of {} exact",
        lits.len() - wrong.len(),
        lits.len()
    );
    assert!(wrong.is_empty(), "{wrong:#?}");
}
