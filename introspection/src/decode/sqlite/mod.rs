//! SQLite databases, decoded from the file format
//! (<https://www.sqlite.org/fileformat2.html>) and diffed per row.
//!
//! - [`header`]: the 100-byte database header (page size including the
//!   65536 encoding, reserved bytes, database size, text encoding: UTF-8 and
//!   both UTF-16s).
//! - [`btree`]: b-tree pages (table/index, interior/leaf), cells, varints,
//!   overflow chains with the X/M/K local-size rules; every page is used at
//!   most once per decode, so cycles are errors and work is bounded.
//! - [`record`]: the record format, all serial types.
//! - [`schema`]: `CREATE TABLE` parsing (columns, affinity, defaults,
//!   PRIMARY KEY, WITHOUT ROWID, rowid alias).
//! - [`default`]: the value a column added by `ALTER TABLE ADD COLUMN`
//!   reads in older, shorter records (the DEFAULT evaluated as SQLite does).
//! - [`db`]: a whole image: `sqlite_schema` and the rows of every user
//!   table. Free pages (the freelist) are never read.
//! - [`wal`]: [`apply_wal`] overlays the committed frames of a WAL.
//!
//! # Semantics of [`diff`]
//! - Rows are keyed by rowid, by the PRIMARY KEY of a WITHOUT ROWID table,
//!   or by the columns hinted in [`SchemaHints::key_columns`]. The key is
//!   rendered as the rowid, a single key column's value, or a JSON array of
//!   the key columns' values.
//! - `before`/`after` are the rows as `SELECT *` reads them, as JSON objects
//!   `{column: value}`: integers and reals as numbers, text as strings,
//!   blobs as `{"$blob": "<hex>"}`, NULL as null (VIRTUAL generated columns
//!   are left out).
//! - A table that does not exist in one version has no rows there: creating
//!   a table with rows inserts them, dropping one deletes them.
//! - A row is updated when a column of the new version's schema reads
//!   differently; a column the old schema lacked compares against its
//!   default (so `ALTER TABLE ADD COLUMN` alone changes no row), columns
//!   that were dropped are not compared. Columns are matched by name.
//! - Schema changes (any `sqlite_schema` entry created, dropped or whose
//!   type, table or sql changed) are changes in collection `sqlite_schema`,
//!   keyed by entry name, with `{type, name, tbl_name, sql}`.
//! - Internal tables (`sqlite_sequence`, `sqlite_stat*`) and virtual tables
//!   are not decoded.
//! - Rollback-journal mode: pass the main file at a consistency point. WAL
//!   mode: pass [`apply_wal`]`(db, wal)`.

use serde_json::Value;

use crate::decode::{Budget, Change, DecodeError, DecodeLimits, Decoder, Op, SchemaHints};

pub mod btree;
pub mod db;
mod default;
pub mod header;
mod numtext;
pub mod record;
pub mod schema;
mod sql;
pub mod wal;

pub use db::{Database, Row, RowKey, SchemaEntry, Table};
pub use header::{Header, TextEncoding};
pub use wal::{apply_wal, apply_wal_info, WalInfo};

/// Collection name of schema changes.
pub const SCHEMA_COLLECTION: &str = "sqlite_schema";

/// Decoder for SQLite database images.
pub struct SqliteDecoder;

impl Decoder for SqliteDecoder {
    fn diff_with(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
        limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError> {
        diff_with(old, new, hints, limits)
    }
}

/// The changes between two database images (see the module docs).
pub fn diff(old: &[u8], new: &[u8], hints: &SchemaHints) -> Result<Vec<Change>, DecodeError> {
    diff_with(old, new, hints, &DecodeLimits::default())
}

/// [`diff`] within `limits`.
pub fn diff_with(
    old: &[u8],
    new: &[u8],
    hints: &SchemaHints,
    limits: &DecodeLimits,
) -> Result<Vec<Change>, DecodeError> {
    let mut budget = Budget::new(limits);
    let a = Database::decode_with(old, hints, &mut budget).map_err(|e| e.context("old version"))?;
    let b = Database::decode_with(new, hints, &mut budget).map_err(|e| e.context("new version"))?;
    let mut out = Vec::new();
    schema_changes(&a, &b, &mut out);
    let mut names: Vec<&String> = a.tables.keys().chain(b.tables.keys()).collect();
    names.sort();
    names.dedup();
    for name in names {
        let sa = a.tables.get(name).map(|t| (t, a.encoding));
        let sb = b.tables.get(name).map(|t| (t, b.encoding));
        diff_table(name, sa, sb, &mut budget, &mut out)?;
    }
    Ok(out)
}

fn schema_changes(a: &Database, b: &Database, out: &mut Vec<Change>) {
    let key = |e: &SchemaEntry| e.name.clone();
    let mut old: Vec<&SchemaEntry> = a.schema.iter().collect();
    let mut new: Vec<&SchemaEntry> = b.schema.iter().collect();
    old.sort_by_key(|e| key(e));
    new.sort_by_key(|e| key(e));
    let change =
        |name: &str, op, before: Option<&SchemaEntry>, after: Option<&SchemaEntry>| Change {
            collection: SCHEMA_COLLECTION.into(),
            key: name.into(),
            op,
            before: before.map(SchemaEntry::to_json),
            after: after.map(SchemaEntry::to_json),
        };
    for e in &old {
        match new.binary_search_by(|n| n.name.cmp(&e.name)) {
            Err(_) => out.push(change(&e.name, Op::Delete, Some(e), None)),
            Ok(i) => {
                let n = new[i];
                if (&n.kind, &n.tbl_name, &n.sql) != (&e.kind, &e.tbl_name, &e.sql) {
                    out.push(change(&e.name, Op::Update, Some(e), Some(n)));
                }
            }
        }
    }
    for n in &new {
        if old.binary_search_by(|e| e.name.cmp(&n.name)).is_err() {
            out.push(change(&n.name, Op::Insert, None, Some(n)));
        }
    }
}

type Side<'t, 'a> = Option<(&'t Table<'a>, TextEncoding)>;

fn diff_table(
    name: &str,
    a: Side,
    b: Side,
    budget: &mut Budget,
    out: &mut Vec<Change>,
) -> Result<(), DecodeError> {
    let same_schema = match (a, b) {
        (Some((ta, ea)), Some((tb, eb))) => ta.sql == tb.sql && ea == eb,
        _ => false,
    };
    let rows_a = a.map_or(&[][..], |(t, _)| &t.rows[..]);
    let rows_b = b.map_or(&[][..], |(t, _)| &t.rows[..]);
    let mut buf = Vec::new();
    let mut json = |side: Side, row, budget: &mut Budget| -> Result<Value, DecodeError> {
        let Some((t, enc)) = side else {
            return Err(DecodeError::new("sqlite: row without a table"));
        };
        Ok(Value::Object(
            t.row_json_budget(row, enc, &mut buf, budget)?,
        ))
    };
    let (mut i, mut j) = (0, 0);
    loop {
        let ord = match (rows_a.get(i), rows_b.get(j)) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(ra), Some(rb)) => ra.key.cmp(&rb.key),
        };
        let change = match ord {
            std::cmp::Ordering::Less => {
                let ra = &rows_a[i];
                i += 1;
                Change {
                    collection: name.into(),
                    key: ra.key.display(),
                    op: Op::Delete,
                    before: Some(json(a, ra, budget)?),
                    after: None,
                }
            }
            std::cmp::Ordering::Greater => {
                let rb = &rows_b[j];
                j += 1;
                Change {
                    collection: name.into(),
                    key: rb.key.display(),
                    op: Op::Insert,
                    before: None,
                    after: Some(json(b, rb, budget)?),
                }
            }
            std::cmp::Ordering::Equal => {
                let (ra, rb) = (&rows_a[i], &rows_b[j]);
                i += 1;
                j += 1;
                if same_schema && ra.payload == rb.payload && ra.rowid == rb.rowid {
                    continue;
                }
                let mark = budget.mark();
                let before = json(a, ra, budget)?;
                let after = json(b, rb, budget)?;
                if b.is_some_and(|(tb, _)| !row_changed(&before, &after, tb)) {
                    // Not kept: its state is freed.
                    budget.restore(mark);
                    continue;
                }
                Change {
                    collection: name.into(),
                    key: rb.key.display(),
                    op: Op::Update,
                    before: Some(before),
                    after: Some(after),
                }
            }
        };
        out.push(change);
    }
    Ok(())
}

/// Whether a column of the new schema reads differently (a column the old
/// row lacks compares against the new column's default).
fn row_changed(before: &Value, after: &Value, new_table: &Table) -> bool {
    let (Value::Object(b), Value::Object(a)) = (before, after) else {
        return before != after;
    };
    new_table.def.columns.iter().filter(|c| c.stored).any(|c| {
        let av = a.get(&c.name).unwrap_or(&Value::Null);
        let bv = b.get(&c.name).unwrap_or(&c.default);
        av != bv
    })
}
