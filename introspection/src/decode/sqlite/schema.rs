//! Enough of `CREATE TABLE` to name the values of a table's records.
//!
//! From the `sql` column of `sqlite_schema` we take: the column names in
//! order, each column's declared type (for its affinity), its `DEFAULT`
//! literal (what rows written before an `ALTER TABLE ADD COLUMN` read as),
//! whether it is a VIRTUAL generated column (not stored), the PRIMARY KEY
//! columns and `WITHOUT ROWID`. From those follow the rowid alias (a single
//! `INTEGER PRIMARY KEY` column of a rowid table, stored as NULL) and the
//! order of values in a record (for WITHOUT ROWID: the key columns first).
//! Defaults are evaluated as SQLite does (see [`super::default`]).

use serde_json::Value;

use super::default::default_value;
use super::sql::{ident, kw, skip_group, split_group, tokenize, Tok};
use crate::decode::{bad, DecodeError};

/// Column affinity (datatype3 §3.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Affinity {
    Integer,
    Text,
    Blob,
    Real,
    Numeric,
}

impl Affinity {
    /// The affinity rules applied to a declared type.
    pub fn of(decl_type: &str) -> Affinity {
        let t = decl_type.to_ascii_uppercase();
        if t.contains("INT") {
            Affinity::Integer
        } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
            Affinity::Text
        } else if t.contains("BLOB") || t.trim().is_empty() {
            Affinity::Blob
        } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
            Affinity::Real
        } else {
            Affinity::Numeric
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Column {
    pub name: String,
    pub decl_type: String,
    pub affinity: Affinity,
    /// The value of the column in a record too short to hold it (its
    /// DEFAULT as SQLite evaluates it, see [`super::default`]).
    pub default: Value,
    /// False for VIRTUAL generated columns (not in the record).
    pub stored: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TableDef {
    pub name: String,
    pub columns: Vec<Column>,
    pub without_rowid: bool,
    /// PRIMARY KEY columns (indexes into `columns`), in key order.
    pub pk: Vec<usize>,
    /// The INTEGER PRIMARY KEY column that aliases the rowid.
    pub rowid_alias: Option<usize>,
    /// Record position -> column index.
    pub record_cols: Vec<usize>,
}

const CONSTRAINT_KW: &[&str] = &[
    "CONSTRAINT",
    "PRIMARY",
    "NOT",
    "NULL",
    "UNIQUE",
    "CHECK",
    "DEFAULT",
    "COLLATE",
    "REFERENCES",
    "GENERATED",
    "AS",
];

fn parse_column(
    item: &[Tok],
    pk_inline: &mut Vec<(usize, bool)>,
    idx: usize,
) -> Result<Column, DecodeError> {
    let Some(name) = ident(item.first()) else {
        return bad("sqlite: column without a name in schema sql");
    };
    let mut i = 1;
    let mut ty = Vec::new();
    while let Some(t) = item.get(i) {
        match t {
            Tok::Word(w) if !CONSTRAINT_KW.iter().any(|k| w.eq_ignore_ascii_case(k)) => {
                ty.push(w.clone());
                i += 1;
            }
            Tok::Punct('(') => i = skip_group(item, i),
            _ => break,
        }
    }
    let decl_type = ty.join(" ");
    let affinity = Affinity::of(&decl_type);
    let (mut default, mut stored) = (Value::Null, true);
    while i < item.len() {
        let t = &item[i];
        if kw(Some(t), "PRIMARY") && kw(item.get(i + 1), "KEY") {
            pk_inline.push((idx, kw(item.get(i + 2), "DESC")));
            i += 2;
        } else if kw(Some(t), "DEFAULT") {
            default = default_value(&item[i + 1..], affinity);
            i += 1;
        } else if kw(Some(t), "AS") && matches!(item.get(i + 1), Some(Tok::Punct('('))) {
            let after = skip_group(item, i + 1);
            stored = kw(item.get(after), "STORED");
            i = after;
        } else if matches!(t, Tok::Punct('(')) {
            i = skip_group(item, i);
        } else {
            i += 1;
        }
    }
    Ok(Column {
        name,
        decl_type,
        affinity,
        default,
        stored,
    })
}

/// Parse the `sql` of a table entry of `sqlite_schema`.
pub fn parse_create_table(sql: &str) -> Result<TableDef, DecodeError> {
    let toks = tokenize(sql)?;
    let Some(t) = toks.iter().take(4).position(|t| kw(Some(t), "TABLE")) else {
        return bad("sqlite: schema sql is not CREATE TABLE");
    };
    if !kw(toks.first(), "CREATE") || toks[..t].iter().any(|t| kw(Some(t), "VIRTUAL")) {
        return bad("sqlite: schema sql is not CREATE TABLE");
    }
    let mut i = t + 1;
    if kw(toks.get(i), "IF") {
        i += 3;
    }
    let mut name = ident(toks.get(i)).unwrap_or_default();
    i += 1;
    if matches!(toks.get(i), Some(Tok::Punct('.'))) {
        name = ident(toks.get(i + 1)).unwrap_or_default();
        i += 2;
    }
    if !matches!(toks.get(i), Some(Tok::Punct('('))) {
        return bad(format!("sqlite: CREATE TABLE {name}: no column list"));
    }
    let (items, end) = split_group(&toks, i);
    let rest = &toks[end.min(toks.len())..];
    let without_rowid = rest
        .windows(2)
        .any(|w| kw(Some(&w[0]), "WITHOUT") && kw(Some(&w[1]), "ROWID"));
    let mut columns = Vec::new();
    let mut pk_inline = Vec::new();
    let mut pk_names: Option<Vec<String>> = None;
    for item in items {
        let first = item.first();
        let table_constraint = ["CONSTRAINT", "PRIMARY", "UNIQUE", "CHECK", "FOREIGN"]
            .iter()
            .any(|k| kw(first, k));
        if table_constraint {
            let pk_at = item
                .windows(2)
                .position(|w| kw(Some(&w[0]), "PRIMARY") && kw(Some(&w[1]), "KEY"));
            if let Some(p) = pk_at {
                let open = item[p..].iter().position(|t| *t == Tok::Punct('('));
                let (cols, _) = split_group(item, p + open.unwrap_or(item.len()));
                pk_names = Some(cols.iter().filter_map(|c| ident(c.first())).collect());
            }
            continue;
        }
        let idx = columns.len();
        columns.push(parse_column(item, &mut pk_inline, idx)?);
    }
    if columns.is_empty() {
        return bad(format!("sqlite: CREATE TABLE {name}: no columns"));
    }
    let mut pk = Vec::new();
    let mut desc = false;
    // Linear-time lookups: a hostile schema may declare very many columns.
    let mut in_key = vec![false; columns.len()];
    if let Some(names) = pk_names {
        let by_name: std::collections::HashMap<String, usize> = columns
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.to_ascii_lowercase(), i))
            .collect();
        for n in names {
            let Some(&c) = by_name.get(&n.to_ascii_lowercase()) else {
                return bad(format!(
                    "sqlite: {name}: PRIMARY KEY names unknown column {n}"
                ));
            };
            if !in_key[c] {
                in_key[c] = true;
                pk.push(c);
            }
        }
    } else if let Some(&(c, d)) = pk_inline.first() {
        in_key[c] = true;
        pk.push(c);
        desc = d;
    }
    if without_rowid && pk.is_empty() {
        return bad(format!(
            "sqlite: WITHOUT ROWID table {name} has no PRIMARY KEY"
        ));
    }
    let rowid_alias = match pk[..] {
        [c] if !without_rowid && !desc && columns[c].decl_type.eq_ignore_ascii_case("INTEGER") => {
            Some(c)
        }
        _ => None,
    };
    let mut record_cols: Vec<usize> = if without_rowid {
        pk.clone()
    } else {
        Vec::new()
    };
    for (k, c) in columns.iter().enumerate() {
        if c.stored && !(without_rowid && in_key[k]) {
            record_cols.push(k);
        }
    }
    Ok(TableDef {
        name,
        columns,
        without_rowid,
        pk,
        rowid_alias,
        record_cols,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rowid_table() {
        let t = parse_create_table(
            "CREATE TABLE \"cust omers\" (id INTEGER PRIMARY KEY, name VARCHAR(20) NOT NULL, \
             score REAL DEFAULT 1, -- comment\n tag TEXT DEFAULT 'x''y', n INT DEFAULT -5, \
             b BLOB DEFAULT X'0aff', g AS (n+1), CHECK (n > 0))",
        )
        .unwrap();
        assert_eq!(t.name, "cust omers");
        let names: Vec<_> = t.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "name", "score", "tag", "n", "b", "g"]);
        assert_eq!(t.rowid_alias, Some(0));
        assert_eq!(t.columns[1].affinity, Affinity::Text);
        assert_eq!(t.columns[2].default, json!(1.0));
        assert_eq!(t.columns[3].default, json!("x'y"));
        assert_eq!(t.columns[4].default, json!(-5));
        assert_eq!(t.columns[5].default, json!({"$blob": "0aff"}));
        assert!(!t.columns[6].stored);
        assert_eq!(t.record_cols, vec![0, 1, 2, 3, 4, 5]);
    }

    #[test]
    fn without_rowid_and_table_pk() {
        let t = parse_create_table(
            "CREATE TABLE IF NOT EXISTS main.kv(v BLOB, k TEXT, n INTEGER, \
             CONSTRAINT pk PRIMARY KEY (k, n DESC)) WITHOUT ROWID",
        )
        .unwrap();
        assert_eq!(t.name, "kv");
        assert!(t.without_rowid);
        assert_eq!(t.pk, vec![1, 2]);
        assert_eq!(t.record_cols, vec![1, 2, 0]);
        assert_eq!(t.rowid_alias, None);
        let t = parse_create_table("CREATE TABLE t(a INTEGER, b, PRIMARY KEY(a))").unwrap();
        assert_eq!(t.rowid_alias, Some(0));
        let t = parse_create_table("CREATE TABLE t(a INTEGER PRIMARY KEY DESC, b)").unwrap();
        assert_eq!(t.rowid_alias, None);
        assert!(parse_create_table("CREATE VIRTUAL TABLE v USING fts5(x)").is_err());
        assert!(parse_create_table("CREATE TABLE t(a) WITHOUT ROWID").is_err());
        assert!(parse_create_table("CREATE TABLE t(").is_err());
    }
}
