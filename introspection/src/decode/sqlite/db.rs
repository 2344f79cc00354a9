//! A whole database image: schema plus the rows of every user table.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::btree::{walk, Pager};
use super::header::{Header, TextEncoding};
use super::record::{decode_record, real_value, Val};
use super::schema::{parse_create_table, Affinity, TableDef};
use crate::decode::{bad, is_blank, to_hex, Budget, DecodeError, DecodeLimits, SchemaHints};

/// One row of `sqlite_schema`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaEntry {
    /// `table`, `index`, `view` or `trigger`.
    pub kind: String,
    pub name: String,
    pub tbl_name: String,
    pub rootpage: i64,
    pub sql: Option<String>,
}

impl SchemaEntry {
    /// `{"type", "name", "tbl_name", "sql"}` (the root page is left out: it
    /// moves without a schema change, e.g. under auto-vacuum).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("type".into(), Value::String(self.kind.clone()));
        m.insert("name".into(), Value::String(self.name.clone()));
        m.insert("tbl_name".into(), Value::String(self.tbl_name.clone()));
        m.insert(
            "sql".into(),
            self.sql.clone().map_or(Value::Null, Value::String),
        );
        Value::Object(m)
    }
}

/// How a row is identified.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum RowKey {
    Rowid(i64),
    /// Key columns, as the JSON array of their values (unique, ordered).
    Cols(String),
}

impl RowKey {
    /// The key as shown in a change: the rowid, a single key column's value
    /// (text as is, blob as hex, NULL as `NULL`, numbers as JSON), or the
    /// JSON array of several key columns.
    pub fn display(&self) -> String {
        let canon = match self {
            RowKey::Rowid(r) => return r.to_string(),
            RowKey::Cols(c) => c,
        };
        let single = canon
            .strip_prefix('[')
            .and_then(|c| c.strip_suffix(']'))
            .filter(|_| {
                serde_json::from_str::<Vec<serde::de::IgnoredAny>>(canon)
                    .is_ok_and(|v| v.len() == 1)
            });
        let Some(inner) = single else {
            return canon.clone();
        };
        if inner == "null" {
            return "NULL".into();
        }
        if let Ok(s) = serde_json::from_str::<String>(inner) {
            return s;
        }
        if let Ok(Value::Object(o)) = serde_json::from_str::<Value>(inner) {
            if let Some(Value::String(h)) = o.get("$blob") {
                return h.clone();
            }
        }
        inner.to_owned()
    }
}

/// One row: its key, rowid (0 in WITHOUT ROWID tables) and record bytes.
#[derive(Clone, Debug)]
pub struct Row<'a> {
    pub key: RowKey,
    pub rowid: i64,
    pub payload: Cow<'a, [u8]>,
}

/// A user table and its rows, sorted by key.
#[derive(Clone, Debug)]
pub struct Table<'a> {
    pub def: TableDef,
    pub sql: String,
    pub rows: Vec<Row<'a>>,
    /// Column index -> record position (`usize::MAX` when not stored).
    pos: Vec<usize>,
}

/// A decoded database image.
#[derive(Clone, Debug)]
pub struct Database<'a> {
    /// `None` for a blank image (no database yet).
    pub header: Option<Header>,
    pub encoding: TextEncoding,
    pub schema: Vec<SchemaEntry>,
    /// User tables (not `sqlite_*`, not virtual) by name.
    pub tables: BTreeMap<String, Table<'a>>,
}

fn text(v: Option<&Val>, enc: TextEncoding) -> Option<String> {
    match v {
        Some(Val::Text(t)) => Some(enc.decode(t)),
        _ => None,
    }
}

impl<'a> Table<'a> {
    fn new(def: TableDef, sql: String) -> Table<'a> {
        let mut pos = vec![usize::MAX; def.columns.len()];
        for (p, &c) in def.record_cols.iter().enumerate() {
            pos[c] = p;
        }
        Table {
            def,
            sql,
            rows: Vec::new(),
            pos,
        }
    }

    /// Column `c` of a decoded record as JSON, as `SELECT` reads it: the
    /// rowid for the rowid alias, reals for REAL-affinity integers, the
    /// column default when the record is too short.
    fn column(&self, c: usize, rec: &[Val], rowid: i64, enc: TextEncoding) -> Value {
        let col = &self.def.columns[c];
        let Some(&v) = rec.get(self.pos[c]) else {
            return col.default.clone();
        };
        match v {
            Val::Null if self.def.rowid_alias == Some(c) => Value::from(rowid),
            Val::Int(i) if col.affinity == Affinity::Real => real_value(i as f64),
            v => v.to_json(enc),
        }
    }

    /// The row as `{column: value}` (stored columns in declaration order).
    /// `buf` is scratch space, reused across calls.
    pub fn row_json<'r>(
        &self,
        row: &'r Row,
        enc: TextEncoding,
        buf: &mut Vec<Val<'r>>,
    ) -> Result<Map<String, Value>, DecodeError> {
        let mut budget = Budget::new(&DecodeLimits::default());
        self.row_json_budget(row, enc, buf, &mut budget)
    }

    pub(crate) fn row_json_budget<'r>(
        &self,
        row: &'r Row,
        enc: TextEncoding,
        rec: &mut Vec<Val<'r>>,
        budget: &mut Budget,
    ) -> Result<Map<String, Value>, DecodeError> {
        decode_record(&row.payload, rec)?;
        let mut m = Map::new();
        for (c, col) in self.def.columns.iter().enumerate() {
            if col.stored {
                let len = match rec.get(self.pos[c]) {
                    Some(v) => v.byte_len(),
                    // The default: a literal of the table's sql.
                    None => match &col.default {
                        Value::String(s) => s.len(),
                        Value::Object(o) => {
                            o.get("$blob").and_then(Value::as_str).map_or(8, str::len)
                        }
                        _ => 8,
                    },
                };
                budget.charge_value(len.saturating_add(col.name.len()))?;
                m.insert(col.name.clone(), self.column(c, rec, row.rowid, enc));
            }
        }
        Ok(m)
    }

    fn key(
        &self,
        cols: &[usize],
        rowid: i64,
        payload: &[u8],
        enc: TextEncoding,
        scratch: &mut Vec<Val<'static>>,
    ) -> Result<RowKey, DecodeError> {
        let mut rec = recycle(std::mem::take(scratch));
        decode_record(payload, &mut rec)?;
        let mut out = Vec::with_capacity(32);
        out.push(b'[');
        for (i, &c) in cols.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            self.column_into(&mut out, c, &rec, rowid, enc);
        }
        out.push(b']');
        *scratch = recycle(rec);
        String::from_utf8(out)
            .map(RowKey::Cols)
            .map_err(|_| DecodeError::new("sqlite: key is not valid UTF-8"))
    }

    /// [`Self::column`] written as JSON text, without building a `Value`.
    fn column_into(&self, out: &mut Vec<u8>, c: usize, rec: &[Val], rowid: i64, enc: TextEncoding) {
        let col = &self.def.columns[c];
        // Writing JSON into a Vec cannot fail.
        let _ = match rec.get(self.pos[c]) {
            None => serde_json::to_writer(&mut *out, &col.default),
            Some(Val::Null) if self.def.rowid_alias == Some(c) => {
                serde_json::to_writer(&mut *out, &rowid)
            }
            Some(Val::Null) => {
                out.extend_from_slice(b"null");
                Ok(())
            }
            Some(&Val::Int(i)) if col.affinity == Affinity::Real => {
                serde_json::to_writer(&mut *out, &real_value(i as f64))
            }
            Some(Val::Int(i)) => serde_json::to_writer(&mut *out, i),
            Some(&Val::Real(f)) => serde_json::to_writer(&mut *out, &real_value(f)),
            Some(Val::Text(t)) => match enc {
                TextEncoding::Utf8 => serde_json::to_writer(&mut *out, &String::from_utf8_lossy(t)),
                _ => serde_json::to_writer(&mut *out, &enc.decode(t)),
            },
            Some(Val::Blob(b)) => {
                out.extend_from_slice(b"{\"$blob\":\"");
                out.extend_from_slice(to_hex(b).as_bytes());
                out.extend_from_slice(b"\"}");
                Ok(())
            }
        };
    }
}

/// An emptied buffer for values of another lifetime; the in-place
/// `collect` keeps the allocation.
fn recycle<'y>(mut v: Vec<Val<'_>>) -> Vec<Val<'y>> {
    v.clear();
    v.into_iter().map(|_| Val::Null).collect()
}

impl<'a> Database<'a> {
    /// Decode an image (a blank one is an empty database) within the
    /// default [`DecodeLimits`].
    pub fn decode(data: &'a [u8], hints: &SchemaHints) -> Result<Database<'a>, DecodeError> {
        let mut budget = Budget::new(&DecodeLimits::default());
        Self::decode_with(data, hints, &mut budget)
    }

    pub(crate) fn decode_with(
        data: &'a [u8],
        hints: &SchemaHints,
        budget: &mut Budget,
    ) -> Result<Database<'a>, DecodeError> {
        if is_blank(data) {
            return Ok(Database {
                header: None,
                encoding: TextEncoding::Utf8,
                schema: Vec::new(),
                tables: BTreeMap::new(),
            });
        }
        let header = Header::parse(data)?;
        let enc = header.text_encoding;
        let mut pager = Pager::new(data, &header);
        let mut schema = Vec::new();
        walk(&mut pager, 1, true, &mut |e| {
            let mut rec = Vec::with_capacity(5);
            decode_record(&e.payload, &mut rec)?;
            let rootpage = match rec.get(3) {
                Some(Val::Int(r)) => *r,
                _ => 0,
            };
            let (Some(kind), Some(name)) = (text(rec.first(), enc), text(rec.get(1), enc)) else {
                return bad("sqlite: malformed sqlite_schema row");
            };
            budget.charge_value(e.payload.len())?;
            schema.push(SchemaEntry {
                kind,
                name,
                tbl_name: text(rec.get(2), enc).unwrap_or_default(),
                rootpage,
                sql: text(rec.get(4), enc),
            });
            Ok(())
        })?;
        let mut tables = BTreeMap::new();
        let mut names = std::collections::BTreeSet::new();
        for e in &schema {
            if !names.insert(e.name.to_ascii_lowercase()) {
                return bad(format!("sqlite: duplicate schema entry {}", e.name));
            }
            let Some(sql) = &e.sql else { continue };
            let internal = e
                .name
                .as_bytes()
                .get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case(b"sqlite_"));
            let is_virtual = sql
                .split_whitespace()
                .nth(1)
                .is_some_and(|w| w.eq_ignore_ascii_case("VIRTUAL"));
            if e.kind != "table" || internal || is_virtual || e.rootpage == 0 {
                continue;
            }
            let Ok(root) = u32::try_from(e.rootpage) else {
                return bad(format!(
                    "sqlite: table {} has root page {}",
                    e.name, e.rootpage
                ));
            };
            let def = parse_create_table(sql)?;
            let mut t = Table::new(def, sql.clone());
            let key_cols = key_columns(&t.def, &e.name, hints)?;
            let mut rows = Vec::new();
            let mut last: Option<i64> = None;
            let mut scratch = Vec::new();
            walk(&mut pager, root, !t.def.without_rowid, &mut |en| {
                budget.charge(Budget::VALUE_COST)?;
                let key = match &key_cols {
                    None => {
                        if last.is_some_and(|l| l >= en.rowid) {
                            return bad(format!("sqlite: table {}: rowids out of order", e.name));
                        }
                        last = Some(en.rowid);
                        RowKey::Rowid(en.rowid)
                    }
                    Some(cols) => {
                        let k = t.key(cols, en.rowid, &en.payload, enc, &mut scratch)?;
                        if let RowKey::Cols(canon) = &k {
                            budget.charge(canon.len() as u64)?;
                        }
                        k
                    }
                };
                rows.push(Row {
                    key,
                    rowid: en.rowid,
                    payload: en.payload,
                });
                Ok(())
            })?;
            if key_cols.is_some() {
                rows.sort_by(|a, b| a.key.cmp(&b.key));
                if let Some(w) = rows.windows(2).find(|w| w[0].key == w[1].key) {
                    return bad(format!(
                        "sqlite: table {}: duplicate key {}",
                        e.name,
                        w[0].key.display()
                    ));
                }
            }
            t.rows = rows;
            tables.insert(e.name.clone(), t);
        }
        Ok(Database {
            header: Some(header),
            encoding: enc,
            schema,
            tables,
        })
    }
}

/// The key columns of a table: from the hints, else the PRIMARY KEY of a
/// WITHOUT ROWID table, else `None` (the rowid).
fn key_columns(
    def: &TableDef,
    name: &str,
    hints: &SchemaHints,
) -> Result<Option<Vec<usize>>, DecodeError> {
    let hinted = hints.key_columns.get(name).or_else(|| {
        hints
            .key_columns
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    });
    if let Some(cols) = hinted.filter(|c| !c.is_empty()) {
        let mut idx = Vec::new();
        for c in cols {
            let Some(i) = def
                .columns
                .iter()
                .position(|col| col.stored && col.name.eq_ignore_ascii_case(c))
            else {
                return bad(format!("sqlite: hinted key column {c} not in table {name}"));
            };
            idx.push(i);
        }
        return Ok(Some(idx));
    }
    Ok(def.without_rowid.then(|| def.pk.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_display() {
        let d = |s: &str| RowKey::Cols(s.into()).display();
        assert_eq!(d("[5]"), "5");
        assert_eq!(d("[1.5]"), "1.5");
        assert_eq!(d(r#"["a,b"]"#), "a,b");
        assert_eq!(d("[null]"), "NULL");
        assert_eq!(d(r#"[{"$blob":"00ff"}]"#), "00ff");
        assert_eq!(d(r#"[1,"a"]"#), r#"[1,"a"]"#);
        assert_eq!(RowKey::Rowid(-3).display(), "-3");
    }
}
