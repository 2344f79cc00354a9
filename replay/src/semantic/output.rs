//! Writing a folded [`State`] as the application's data: a real SQLite
//! database, the JSON document, or a key-value file's map as JSON.
//!
//! SQLite: tables (then indexes, views and triggers, so that no trigger
//! fires on the replayed rows) are created from the schema entries the log
//! recorded (collection `sqlite_schema`); a table with rows but no recorded
//! schema gets untyped columns named after the row members seen. Rows of a
//! rowid table keyed by rowid keep their rowid. The database is built with
//! the journal off, as a new file under a temporary name that is fsynced
//! and renamed into place only when complete.
//!
//! JSON: leaves are set at their pointers (a missing container along the
//! way becomes an array when the next segment is a number, else an
//! object); the record set becomes an array (in key order) when every
//! record carries its key in the key member, else an object by key; an
//! empty state (no document yet) is an empty file.
//!
//! Key-value: `{"key": value, ...}` in key order.
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use introspection::decode::SchemaHints;
use introspection::semantic::Format;
use rusqlite::types::{ToSqlOutput, Value as SqlValue, ValueRef};
use rusqlite::ToSql;
use serde_json::{Map, Value};

use super::data::Data;
use super::row::{Cell, Names, Row};
use super::state::{prefetch, prefetch_row, sorted, Rows, State, AHEAD};
use super::stream::SCHEMA;
use super::SemanticError;

/// Writes `state` in `format` to the new file `tmp` (fsynced).
pub fn write(
    state: &State<'_>,
    format: Format,
    hints: &SchemaHints,
    tmp: &Path,
) -> Result<(), SemanticError> {
    let io = |source| SemanticError::Io {
        path: tmp.to_path_buf(),
        source,
    };
    match format {
        Format::Sqlite => write_sqlite(state, hints, tmp)?,
        // A LevelDB database folds, like a key-value file, into its map.
        Format::Json | Format::Kv | Format::LevelDb => {
            let value = match format {
                Format::Json => document(state, hints),
                _ => kv_map(state),
            };
            let mut f = File::create_new(tmp).map_err(io)?;
            let mut text = serde_json::to_vec_pretty(&value).expect("values serialize");
            text.push(b'\n');
            if format == Format::Json && state.rows() == 0 {
                // No document yet: an empty file (as the decoder reads one).
                text.clear();
            }
            f.write_all(&text).map_err(io)?;
        }
    }
    File::open(tmp).and_then(|f| f.sync_all()).map_err(io)
}

/// Reads the written file back with the project's decoder and checks
/// that it holds `state` (same canonical checksum).
pub fn verify(
    state: &State<'_>,
    format: Format,
    hints: &SchemaHints,
    path: &Path,
) -> Result<(), SemanticError> {
    let bytes = std::fs::read(path).map_err(|source| SemanticError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let fail = |reason: String| SemanticError::OutputMismatch {
        path: path.to_path_buf(),
        reason,
    };
    let mut back = match format {
        Format::Kv | Format::LevelDb => {
            let map: Value = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
            return if map == kv_map(state) {
                Ok(())
            } else {
                Err(fail("the key-value map read back differs".into()))
            };
        }
        _ => State::from_decoded(
            format,
            introspection::decode::diff(format, &[], &bytes, hints)
                .map_err(|e| fail(e.to_string()))?,
        ),
    };
    // Tables made from the columns seen: their schema entries are ours,
    // not the log's.
    let empty = Rows::default();
    let logged = state.collections.get(SCHEMA).unwrap_or(&empty);
    if let Some(entries) = back.collections.get_mut(SCHEMA) {
        entries.retain(|name, _| {
            logged.contains_key(name) || !state.collections.contains_key(&name.to_string())
        });
    }
    back.prune();
    if back.checksum() == state.checksum() {
        return Ok(());
    }
    let d = state.differences(&back, 1);
    Err(fail(match d.first() {
        Some(d) => format!(
            "{}[{}] reads back as {} instead of {}",
            d.collection,
            d.key,
            d.disk.as_ref().map_or("(absent)".into(), |v| v.to_string()),
            d.log.as_ref().map_or("(absent)".into(), |v| v.to_string())
        ),
        None => "the rows read back differ".into(),
    }))
}

fn sql_err(path: &Path) -> impl Fn(rusqlite::Error) -> SemanticError + '_ {
    move |e| SemanticError::Sqlite {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

fn quote(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A JSON value as SQLite stores it (the decoder's rendering, reversed):
/// numbers as integers or reals, strings as text (borrowed), `{"$blob":
/// hex}` as a blob, null as NULL, anything else as its JSON text.
pub struct Sql<'v>(pub Option<&'v Value>);

impl ToSql for Sql<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            None | Some(Value::Null) => ToSqlOutput::Owned(SqlValue::Null),
            Some(Value::Bool(b)) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(*b))),
            Some(Value::Number(n)) => ToSqlOutput::Owned(match n.as_i64() {
                Some(i) => SqlValue::Integer(i),
                None => SqlValue::Real(n.as_f64().unwrap_or(f64::NAN)),
            }),
            Some(Value::String(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Some(Value::Object(o)) if o.len() == 1 && o.contains_key("$blob") => {
                match o["$blob"].as_str().and_then(unhex) {
                    Some(b) => ToSqlOutput::Owned(SqlValue::Blob(b)),
                    None => ToSqlOutput::Owned(SqlValue::Text(o["$blob"].to_string())),
                }
            }
            Some(other) => ToSqlOutput::Owned(SqlValue::Text(other.to_string())),
        })
    }
}

/// A row's cell as SQLite stores it (see [`Sql`]); text is bound in
/// place.
struct SqlCell<'r>(Option<Cell<'r>>);

impl ToSql for SqlCell<'_> {
    #[inline]
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self.0 {
            None | Some(Cell::Null) => ToSqlOutput::Owned(SqlValue::Null),
            Some(Cell::Bool(b)) => ToSqlOutput::Owned(SqlValue::Integer(i64::from(b))),
            Some(Cell::U64(u)) => ToSqlOutput::Owned(match i64::try_from(u) {
                Ok(i) => SqlValue::Integer(i),
                Err(_) => SqlValue::Real(u as f64),
            }),
            Some(Cell::I64(i)) => ToSqlOutput::Owned(SqlValue::Integer(i)),
            Some(Cell::F64(f)) => ToSqlOutput::Owned(SqlValue::Real(f)),
            Some(Cell::Str(s)) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Some(c @ Cell::Json(_)) => ToSqlOutput::Owned(owned(&c.to_value())?),
        })
    }
}

/// What [`Sql`] makes of `v`, owned.
fn owned(v: &Value) -> rusqlite::Result<SqlValue> {
    Ok(match Sql(Some(v)).to_sql()? {
        ToSqlOutput::Owned(o) => o,
        ToSqlOutput::Borrowed(r) => match r {
            ValueRef::Null => SqlValue::Null,
            ValueRef::Integer(i) => SqlValue::Integer(i),
            ValueRef::Real(r) => SqlValue::Real(r),
            ValueRef::Text(t) => SqlValue::Text(String::from_utf8_lossy(t).into_owned()),
            ValueRef::Blob(b) => SqlValue::Blob(b.to_vec()),
        },
        // Sql makes no other outputs.
        _ => SqlValue::Null,
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Builds the database at `path` (a new file).
pub fn write_sqlite(
    state: &State<'_>,
    hints: &SchemaHints,
    path: &Path,
) -> Result<(), SemanticError> {
    let err = sql_err(path);
    if path.exists() {
        return Err(SemanticError::Io {
            path: path.to_path_buf(),
            source: std::io::ErrorKind::AlreadyExists.into(),
        });
    }
    let mut db = rusqlite::Connection::open(path).map_err(&err)?;
    // Durability comes from fsync + rename of the whole file.
    db.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
        .map_err(&err)?;
    let tx = db.transaction().map_err(&err)?;
    let empty = Rows::default();
    let schema = state.collections.get(SCHEMA).unwrap_or(&empty);
    let entry = |v: &Row, f: &str| v.get_str(f).map(str::to_string);
    let mut later = Vec::new();
    for (_, value) in sorted(schema) {
        let (Some(kind), Some(name), Some(sql)) = (
            entry(value, "type"),
            entry(value, "name"),
            entry(value, "sql"),
        ) else {
            continue; // automatic indexes have no sql
        };
        if name.starts_with("sqlite_") {
            continue;
        }
        let rank = ["table", "index", "view", "trigger"]
            .iter()
            .position(|k| *k == kind)
            .unwrap_or(4);
        if rank == 0 {
            tx.execute_batch(&sql).map_err(&err)?;
        } else {
            later.push((rank, sql));
        }
    }
    for (name, rows) in state.collections.iter().filter(|(n, _)| *n != SCHEMA) {
        let exists: bool = tx
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?1",
                [name],
                |r| r.get::<_, i64>(0),
            )
            .map_err(&err)?
            > 0;
        if !exists {
            let mut cols: Vec<&str> = Vec::new();
            for (_, row) in sorted(rows) {
                for (c, _) in row.members() {
                    if !cols.contains(&c) {
                        cols.push(c);
                    }
                }
            }
            let cols: Vec<String> = cols.iter().map(|c| quote(c)).collect();
            let cols = if cols.is_empty() {
                "\"value\"".to_string()
            } else {
                cols.join(", ")
            };
            tx.execute_batch(&format!("CREATE TABLE {} ({cols});", quote(name)))
                .map_err(&err)?;
        }
        insert_rows(&tx, name, rows, hints).map_err(&err)?;
    }
    later.sort_by_key(|(rank, _)| *rank);
    for (_, sql) in later {
        tx.execute_batch(&sql).map_err(&err)?;
    }
    tx.commit().map_err(&err)?;
    db.close().map_err(|(_, e)| err(e))
}

fn insert_rows(
    tx: &rusqlite::Transaction<'_>,
    table: &str,
    rows: &Rows<'_>,
    hints: &SchemaHints,
) -> rusqlite::Result<()> {
    // Stored, writable columns (not generated, not hidden); whether one is
    // an INTEGER PRIMARY KEY (then it carries the rowid).
    let mut cols: Vec<String> = Vec::new();
    let mut pks: Vec<String> = Vec::new();
    tx.prepare("SELECT name, type, pk, hidden FROM pragma_table_xinfo(?1)")?
        .query_map([table], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, i64>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })?
        .try_for_each(|r| {
            let (name, decl, pk, hidden) = r?;
            if pk > 0 {
                pks.push(decl);
            }
            if hidden == 0 {
                cols.push(name);
            }
            Ok::<_, rusqlite::Error>(())
        })?;
    let rowid_alias = pks.len() == 1 && pks[0].eq_ignore_ascii_case("INTEGER");
    let without_rowid: bool = tx
        .query_row(
            "SELECT wr FROM pragma_table_list WHERE name = ?1 AND schema = 'main'",
            [table],
            |r| r.get::<_, i64>(0),
        )
        .map(|wr| wr != 0)
        .unwrap_or(false);
    let by_rowid = !without_rowid && !rowid_alias && !hints.key_columns.contains_key(table);
    let mut names: Vec<String> = cols.iter().map(|c| quote(c)).collect();
    if by_rowid {
        names.insert(0, "rowid".into());
    }
    let marks = vec!["?"; names.len()].join(",");
    let sql = format!(
        "INSERT INTO {} ({}) VALUES ({marks})",
        quote(table),
        names.join(",")
    );
    let mut stmt = tx.prepare(&sql)?;
    let first = 1 + usize::from(by_rowid);
    // Per row shape (rows of one shape share their name list): which
    // column each member fills, worked out once per shape. A column the
    // shape lacks is bound to NULL then, and keeps that binding (a
    // statement's bindings outlive its executions) until the shape changes.
    let mut plan: Option<(Names, Vec<Option<usize>>)> = None;
    let order = sorted(rows);
    for (i, &(key, row)) in order.iter().enumerate() {
        // The rows lie where the stream put them, not in key order: start
        // loading the next ones while SQLite stores this one.
        if let Some((_, ahead)) = order.get(i + 2 * AHEAD) {
            prefetch_row(ahead);
        }
        if let Some((
            _,
            Row::Object {
                data: Data::Heap(d),
                ..
            },
        )) = order.get(i + AHEAD)
        {
            prefetch(d.as_ptr());
        }
        if by_rowid {
            match key.as_int() {
                Some(rowid) => stmt.raw_bind_parameter(1, rowid)?,
                None => stmt.raw_bind_parameter(1, SqlValue::Null)?,
            }
        }
        match row {
            Row::Object { names, .. } => {
                let fresh = plan.as_ref().is_none_or(|(n, _)| !Arc::ptr_eq(n, names));
                if fresh {
                    let slots: Vec<Option<usize>> = names
                        .iter()
                        .map(|n| cols.iter().position(|c| c.as_str() == &**n))
                        .collect();
                    for c in 0..cols.len() {
                        if !slots.contains(&Some(c)) {
                            stmt.raw_bind_parameter(first + c, SqlValue::Null)?;
                        }
                    }
                    plan = Some((names.clone(), slots));
                }
                let (_, slots) = plan.as_ref().expect("just made");
                for ((cell, _), slot) in row.cells().zip(slots) {
                    if let Some(c) = slot {
                        stmt.raw_bind_parameter(first + c, SqlCell(Some(cell)))?;
                    }
                }
            }
            // A value that is not a row (a table created from values).
            Row::Other(v) => {
                for i in 0..cols.len() {
                    stmt.raw_bind_parameter(first + i, Sql(Some(v)))?;
                }
                // Every column was rebound: the next object row rebinds its
                // shape's NULLs.
                plan = None;
            }
        }
        stmt.raw_execute()?;
    }
    Ok(())
}

/// The key-value map.
pub fn kv_map(state: &State<'_>) -> Value {
    let mut map = Map::new();
    for rows in state.collections.values() {
        for (k, v) in rows {
            map.insert(k.to_string(), v.to_value());
        }
    }
    Value::Object(map)
}

/// The JSON document (see the module doc).
pub fn document(state: &State<'_>, hints: &SchemaHints) -> Value {
    let record_path = hints.json_record_path.as_deref();
    let key_field = hints.json_record_key.as_deref().unwrap_or("id");
    let mut doc = Value::Null;
    let mut records = None;
    for (collection, rows) in &state.collections {
        if Some(collection.as_str()) == record_path {
            records = Some(rows);
            continue;
        }
        for (pointer, v) in sorted(rows) {
            set_pointer(&mut doc, &pointer.to_string(), v.to_value());
        }
    }
    if let (Some(path), Some(rows)) = (record_path, records) {
        let rows = sorted(rows);
        // The decoder renders a string key as is, any other as its JSON.
        let keyed = rows.iter().all(|(k, r)| {
            let key = k.to_string();
            r.get(key_field).is_some_and(|v| match v {
                Value::String(s) => *s == key,
                other => serde_json::to_string(&other).is_ok_and(|text| text == key),
            })
        });
        let set = if keyed {
            Value::Array(rows.iter().map(|(_, v)| v.to_value()).collect())
        } else {
            Value::Object(
                rows.iter()
                    .map(|(k, v)| (k.to_string(), v.to_value()))
                    .collect(),
            )
        };
        set_pointer(&mut doc, path, set);
    }
    doc
}

fn set_pointer(doc: &mut Value, pointer: &str, value: Value) {
    let mut node = doc;
    let segments: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for seg in &segments {
        let index = seg.parse::<usize>().ok().filter(|_| !seg.starts_with('+'));
        if node.is_null() {
            *node = match index {
                Some(_) => Value::Array(Vec::new()),
                None => Value::Object(Map::new()),
            };
        }
        if let (Value::Array(items), None) = (&mut *node, index) {
            // A member name under an array: keep both, as an object.
            let m: Map<String, Value> = items
                .drain(..)
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect();
            *node = Value::Object(m);
        }
        node = match (node, index) {
            (Value::Array(items), Some(i)) => {
                if items.len() <= i {
                    items.resize(i + 1, Value::Null);
                }
                &mut items[i]
            }
            (Value::Object(m), _) => m.entry(seg.clone()).or_insert(Value::Null),
            (other, _) => {
                *other = Value::Object(Map::new());
                other
                    .as_object_mut()
                    .expect("just made")
                    .entry(seg.clone())
                    .or_insert(Value::Null)
            }
        };
    }
    *node = value;
}
