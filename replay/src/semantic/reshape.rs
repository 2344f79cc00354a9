//! SQLite schema changes in the fold.
//!
//! `ALTER TABLE ... ADD COLUMN` and `DROP COLUMN` change what every row of
//! a table reads as without rewriting (or even touching) the rows, so the
//! change log records only the schema entry's update: the rows that were
//! not written keep their old members in the stream. The decoder reads them
//! as SQLite does — a column added later reads as its default, a dropped
//! one is gone — so the fold does the same when a table's `CREATE TABLE`
//! changes: every row of the table gets the new definition's stored
//! columns, a missing one as its default, and loses members the table no
//! longer has.
use super::row::Row;
use super::state::Rows;
use introspection::decode::sqlite::schema::parse_create_table;

/// Reshapes `rows` to the table defined by `sql` (a `CREATE TABLE`).
/// A definition the parser does not understand leaves the rows as they
/// are (the proof then says whether that mattered).
pub fn reshape_rows(rows: &mut Rows<'_>, sql: &str) {
    let Ok(def) = parse_create_table(sql) else {
        return;
    };
    let stored: Vec<_> = def
        .columns
        .iter()
        .filter(|c| c.stored)
        .map(|c| (c.name.as_str(), &c.default))
        .collect();
    for row in rows.values_mut() {
        if let Row::Object { .. } = **row {
            row.to_mut().reshape(&stored);
        }
    }
}

/// The table a schema entry defines and its sql, when it is a table.
pub fn table_entry(entry: &Row) -> Option<(&str, &str)> {
    if entry.get_str("type")? != "table" {
        return None;
    }
    Some((entry.get_str("tbl_name")?, entry.get_str("sql")?))
}
