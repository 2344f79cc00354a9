//! The oracle side of the SQLite decoder tests: what SQLite itself says a
//! database holds, and the changes between two such views.

use std::collections::{BTreeMap, BTreeSet};

use introspection::decode::{sort_changes, Change, Op};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;
use serde_json::{json, Map, Value};

pub struct Rng(pub u64);
impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
    pub fn text(&mut self, len: usize) -> String {
        const ALPHA: &[&str] = &["a", "b", "c", "x", "y", "z", " ", "é", "漢", "0", "Q"];
        (0..len)
            .map(|_| ALPHA[self.below(ALPHA.len() as u64) as usize])
            .collect()
    }
    pub fn text_upto(&mut self, min: usize, max: usize) -> String {
        let n = min + self.below((max - min) as u64) as usize;
        self.text(n)
    }
    pub fn blob_upto(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64) as usize;
        self.blob(n)
    }
    pub fn blob(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
    pub fn real(&mut self) -> f64 {
        if self.chance(30) {
            self.below(50) as f64 // integral: stored as an integer in REAL columns
        } else {
            (self.below(2_000_000) as f64 - 1e6) / 7.0
        }
    }
    pub fn int(&mut self) -> i64 {
        match self.below(5) {
            0 => 0,
            1 => 1,
            2 => self.below(300) as i64 - 150,
            3 => (self.next() >> 20) as i64,
            _ => self.next() as i64,
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

pub fn to_json(v: Sql) -> Value {
    match v {
        Sql::Null => Value::Null,
        Sql::Integer(i) => json!(i),
        Sql::Real(f) => json!(f),
        Sql::Text(t) => json!(t),
        Sql::Blob(b) => json!({ "$blob": hex(&b) }),
    }
}

/// What SQLite reads for a column of type `ty` with DEFAULT `expr` in a
/// row written before the column was added: asked of SQLite itself, on a
/// scratch table whose only row predates an `ADD COLUMN`.
fn default_as_read(ty: &str, expr: &str) -> Value {
    let c = Connection::open_in_memory().unwrap();
    c.execute_batch("CREATE TABLE p(x); INSERT INTO p VALUES (1);")
        .unwrap();
    match c.execute_batch(&format!("ALTER TABLE p ADD COLUMN c {ty} DEFAULT {expr}")) {
        Ok(()) => to_json(c.query_row("SELECT c FROM p", [], |r| r.get(0)).unwrap()),
        // Not a constant (allowed only when the table was created with
        // it): no row can be short of it; SQLite would read NULL.
        Err(_) => Value::Null,
    }
}

fn render_key(vals: &[Value]) -> String {
    match vals {
        [Value::String(s)] => s.clone(),
        [Value::Null] => "NULL".into(),
        [v] => v.to_string(),
        _ => Value::Array(vals.to_vec()).to_string(),
    }
}

/// What SQLite says a table holds: its columns (name, default as read for
/// rows written before the column existed) and rows by rendered key.
pub struct TableSnap {
    pub columns: Vec<(String, Value)>,
    pub rows: BTreeMap<String, Map<String, Value>>,
}

pub struct Snap {
    pub schema: BTreeMap<String, Value>,
    pub tables: BTreeMap<String, TableSnap>,
}

pub fn snapshot(c: &Connection) -> Snap {
    let mut schema = BTreeMap::new();
    let mut st = c
        .prepare("SELECT type, name, tbl_name, sql FROM sqlite_master")
        .unwrap();
    let rows = st
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
            ))
        })
        .unwrap();
    for r in rows {
        let (ty, name, tbl, sql) = r.unwrap();
        let v = json!({"type": ty, "name": name, "tbl_name": tbl, "sql": sql});
        schema.insert(name, v);
    }
    let names: Vec<(String, bool)> = c
        .prepare(
            "SELECT name, wr FROM pragma_table_list WHERE schema = 'main' AND type = 'table' \
             AND name NOT LIKE 'sqlite_%'",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get::<_, i64>(1)? != 0)))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let mut tables = BTreeMap::new();
    for (name, without_rowid) in names {
        let mut cols = Vec::new();
        let mut pk = Vec::new();
        let mut st = c
            .prepare(&format!("PRAGMA table_info(\"{name}\")"))
            .unwrap();
        let info = st
            .query_map([], |r| {
                Ok((
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, Option<String>>(4)?,
                    r.get::<_, i64>(5)?,
                ))
            })
            .unwrap();
        for i in info {
            let (cname, ty, dflt, pkn) = i.unwrap();
            let d = match dflt {
                Some(expr) => default_as_read(&ty, &expr),
                None => Value::Null,
            };
            if pkn > 0 {
                pk.push((pkn, cname.clone()));
            }
            cols.push((cname, d));
        }
        pk.sort();
        let sel = if without_rowid { "" } else { "_rowid_, " };
        let mut st = c
            .prepare(&format!("SELECT {sel}* FROM \"{name}\""))
            .unwrap();
        let colnames: Vec<String> = st.column_names().map(|s| s.to_string()).collect();
        let mut rows = BTreeMap::new();
        let mut q = st.query([]).unwrap();
        while let Some(r) = q.next().unwrap() {
            let mut m = Map::new();
            let first = if without_rowid { 0 } else { 1 };
            for (k, name) in colnames.iter().enumerate().skip(first) {
                m.insert(name.clone(), to_json(r.get(k).unwrap()));
            }
            let key = if without_rowid {
                let vals: Vec<Value> = pk.iter().map(|(_, n)| m[n].clone()).collect();
                render_key(&vals)
            } else {
                r.get::<_, i64>(0).unwrap().to_string()
            };
            rows.insert(key, m);
        }
        tables.insert(
            name,
            TableSnap {
                columns: cols,
                rows,
            },
        );
    }
    Snap { schema, tables }
}

/// The changes SQLite's own view implies (same semantics as the decoder's
/// documentation: absent table = no rows; columns the old schema lacked
/// compare against their default).
pub fn expected(a: &Snap, b: &Snap) -> Vec<Change> {
    let mut out = Vec::new();
    let mut push = |coll: &str, key: &str, before: Option<&Value>, after: Option<&Value>| {
        let op = match (before, after) {
            (None, _) => Op::Insert,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        out.push(Change {
            collection: coll.into(),
            key: key.into(),
            op,
            before: before.cloned(),
            after: after.cloned(),
        });
    };
    let names: BTreeSet<&String> = a.schema.keys().chain(b.schema.keys()).collect();
    for n in names {
        let (x, y) = (a.schema.get(n), b.schema.get(n));
        if x != y {
            push("sqlite_schema", n, x, y);
        }
    }
    let empty = TableSnap {
        columns: Vec::new(),
        rows: BTreeMap::new(),
    };
    let names: BTreeSet<&String> = a.tables.keys().chain(b.tables.keys()).collect();
    for n in names {
        let ta = a.tables.get(n).unwrap_or(&empty);
        let tb = b.tables.get(n).unwrap_or(&empty);
        let keys: BTreeSet<&String> = ta.rows.keys().chain(tb.rows.keys()).collect();
        for k in keys {
            let (x, y) = (ta.rows.get(k), tb.rows.get(k));
            let changed = match (x, y) {
                (Some(x), Some(y)) => tb
                    .columns
                    .iter()
                    .any(|(c, d)| x.get(c).unwrap_or(d) != &y[c]),
                _ => true,
            };
            if changed {
                let (x, y) = (x.cloned().map(Value::Object), y.cloned().map(Value::Object));
                push(n, k, x.as_ref(), y.as_ref());
            }
        }
    }
    sort_changes(&mut out);
    out
}
