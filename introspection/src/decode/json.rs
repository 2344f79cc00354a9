//! JSON documents, diffed by path.
//!
//! The file lives in a fixed disk extent, so trailing NUL bytes are padding
//! and ignored; a blank file (empty, all NUL or all whitespace) is "no
//! document", and then every record / leaf of the other side is an insert or
//! a delete.
//!
//! Two modes:
//! - **Records** ([`SchemaHints::json_record_path`] given, e.g.
//!   `/customers`): the value at that pointer is a record set, either an
//!   object (each member is a record, keyed by member name) or an array of
//!   objects keyed by the member named by [`SchemaHints::json_record_key`]
//!   (default `id`; a string key as is, any other JSON value as its compact
//!   text; an element without it is keyed `#<index>`). Records are reported
//!   whole: collection = the record path, key = the record key, before/after
//!   = the record. A missing or `null` record set is empty; a duplicate key
//!   or a record set that is neither object nor array is a [`DecodeError`].
//!   Everything outside the record set is reported as in leaf mode.
//! - **Leaves** (no hint): each document is seen as the map from JSON
//!   pointer to leaf (a scalar, `{}` or `[]`); the changes are the
//!   differences of the two maps: key = the leaf's full pointer, collection =
//!   its parent pointer. Array elements are leaves by index, so inserting at
//!   the front of an array shows as updates of every later index.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{bad, Budget, Change, DecodeError, Decoder, Op, SchemaHints};

/// Decoder for JSON documents.
pub struct JsonDecoder;

impl Decoder for JsonDecoder {
    fn diff(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
    ) -> Result<Vec<Change>, DecodeError> {
        let a = parse(old).map_err(|e| e.context("old version"))?;
        let b = parse(new).map_err(|e| e.context("new version"))?;
        let budget = Budget::for_input(old.len().saturating_add(new.len()), 64);
        let record_path = hints.json_record_path.as_deref().map(normalize_pointer);
        let mut w = Walker {
            out: Vec::new(),
            skip: record_path.clone(),
            budget,
        };
        let mut path = String::new();
        w.walk(&mut path, a.as_ref(), b.as_ref())?;
        if let Some(rp) = record_path {
            let key_field = hints.json_record_key.as_deref().unwrap_or("id");
            let ra = records(a.as_ref().and_then(|d| d.pointer(&rp)), key_field)?;
            let rb = records(b.as_ref().and_then(|d| d.pointer(&rp)), key_field)?;
            for (k, va) in &ra {
                match rb.get(k) {
                    None => w.emit(rp.clone(), k.clone(), Some(va), None)?,
                    Some(vb) if vb != va => w.emit(rp.clone(), k.clone(), Some(va), Some(vb))?,
                    Some(_) => {}
                }
            }
            for (k, vb) in &rb {
                if !ra.contains_key(k) {
                    w.emit(rp.clone(), k.clone(), None, Some(vb))?;
                }
            }
        }
        Ok(w.out)
    }
}

/// Parse one version: trailing NULs stripped, blank means no document.
pub fn parse(data: &[u8]) -> Result<Option<Value>, DecodeError> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let data = &data[..end];
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    match serde_json::from_slice(data) {
        Ok(v) => Ok(Some(v)),
        Err(e) => bad(format!("json: {e}")),
    }
}

/// `customers` -> `/customers`; `""` and `/` style pointers are kept.
fn normalize_pointer(p: &str) -> String {
    if p.is_empty() || p.starts_with('/') {
        p.to_owned()
    } else {
        format!("/{p}")
    }
}

/// Escape one reference token (RFC 6901).
fn push_token(path: &mut String, token: &str) {
    path.push('/');
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// The parent pointer of a pointer (`""` for the root and its children).
pub fn parent_pointer(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn render_key(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn records<'v>(
    set: Option<&'v Value>,
    key_field: &str,
) -> Result<BTreeMap<String, &'v Value>, DecodeError> {
    let mut m = BTreeMap::new();
    let mut put = |k: String, v: &'v Value| {
        if m.insert(k.clone(), v).is_some() {
            return bad(format!("json: duplicate record key {k:?}"));
        }
        Ok(())
    };
    match set {
        None | Some(Value::Null) => {}
        Some(Value::Object(o)) => {
            for (k, v) in o {
                put(k.clone(), v)?;
            }
        }
        Some(Value::Array(a)) => {
            for (i, v) in a.iter().enumerate() {
                let k = match v.get(key_field) {
                    Some(k) if v.is_object() => render_key(k),
                    _ => format!("#{i}"),
                };
                put(k, v)?;
            }
        }
        Some(_) => return bad("json: the record path holds neither an object nor an array"),
    }
    Ok(m)
}

struct Walker {
    out: Vec<Change>,
    skip: Option<String>,
    budget: Budget,
}

/// A non-empty object or array (one that has leaves below it).
fn is_branch(v: Option<&Value>) -> bool {
    match v {
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        _ => false,
    }
}

fn child<'v>(v: Option<&'v Value>, key: &str) -> Option<&'v Value> {
    match v? {
        Value::Object(o) => o.get(key),
        Value::Array(a) => {
            if key.len() > 1 && key.starts_with('0') {
                return None;
            }
            a.get(key.parse::<usize>().ok()?)
        }
        _ => None,
    }
}

fn keys(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Object(o)) => o.keys().cloned().collect(),
        Some(Value::Array(a)) => (0..a.len()).map(|i| i.to_string()).collect(),
        _ => Vec::new(),
    }
}

impl Walker {
    fn emit(
        &mut self,
        collection: String,
        key: String,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), DecodeError> {
        self.budget
            .charge_value(collection.len().saturating_add(key.len()))?;
        let op = match (before, after) {
            (None, _) => Op::Insert,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        self.out.push(Change {
            collection,
            key,
            op,
            before: before.cloned(),
            after: after.cloned(),
        });
        Ok(())
    }

    fn leaf(
        &mut self,
        path: &str,
        before: Option<&Value>,
        after: Option<&Value>,
    ) -> Result<(), DecodeError> {
        if before == after {
            return Ok(());
        }
        self.emit(
            parent_pointer(path).to_owned(),
            path.to_owned(),
            before,
            after,
        )
    }

    fn walk(
        &mut self,
        path: &mut String,
        a: Option<&Value>,
        b: Option<&Value>,
    ) -> Result<(), DecodeError> {
        if self.skip.as_deref() == Some(path.as_str()) {
            return Ok(());
        }
        let (ba, bb) = (is_branch(a), is_branch(b));
        if !ba && !bb {
            return self.leaf(path, a, b);
        }
        if !ba {
            self.leaf(path, a, None)?;
        }
        let mut ks = keys(if ba { a } else { None });
        if bb {
            for k in keys(b) {
                if !ba || child(a, &k).is_none() {
                    ks.push(k);
                }
            }
        }
        let len = path.len();
        for k in ks {
            push_token(path, &k);
            let ca = if ba { child(a, &k) } else { None };
            let cb = if bb { child(b, &k) } else { None };
            self.walk(path, ca, cb)?;
            path.truncate(len);
        }
        if !bb {
            self.leaf(path, None, b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn d(old: &str, new: &str, hints: &SchemaHints) -> Vec<Change> {
        JsonDecoder
            .diff(old.as_bytes(), new.as_bytes(), hints)
            .unwrap()
    }

    #[test]
    fn leaves() {
        let c = d(
            r#"{"a":1,"b":{"c":[1,2]},"x/y":0}"#,
            "{\"a\":2,\"b\":{\"c\":[1]},\"z\":{}}\0\0\0",
            &SchemaHints::default(),
        );
        let got: Vec<_> = c.iter().map(|c| (c.key.as_str(), c.op)).collect();
        assert_eq!(
            got,
            vec![
                ("/a", Op::Update),
                ("/b/c/1", Op::Delete),
                ("/x~1y", Op::Delete),
                ("/z", Op::Insert)
            ]
        );
        assert_eq!(c[1].collection, "/b/c");
        // Leaf replaced by a branch and back.
        let c = d(r#"{"a":1}"#, r#"{"a":{"b":1}}"#, &SchemaHints::default());
        assert_eq!(c.len(), 2);
        assert!(d("", "\0\0", &SchemaHints::default()).is_empty());
        assert_eq!(d("", "5", &SchemaHints::default())[0].key, "");
    }

    #[test]
    fn records_by_key() {
        let hints = SchemaHints {
            json_record_path: Some("customers".into()),
            ..Default::default()
        };
        let c = d(
            r#"{"v":1,"customers":[{"id":1,"n":"A"},{"id":2,"n":"B"}]}"#,
            r#"{"v":2,"customers":[{"id":2,"n":"C"},{"id":3,"n":"D"}]}"#,
            &hints,
        );
        let got: Vec<_> = c
            .iter()
            .map(|c| (c.collection.as_str(), c.key.as_str(), c.op))
            .collect();
        assert_eq!(
            got,
            vec![
                ("", "/v", Op::Update),
                ("/customers", "1", Op::Delete),
                ("/customers", "2", Op::Update),
                ("/customers", "3", Op::Insert)
            ]
        );
        assert_eq!(c[2].after, Some(json!({"id":2,"n":"C"})));
        let dup = JsonDecoder.diff(b"", br#"{"customers":[{"id":1},{"id":1}]}"#, &hints);
        assert!(dup.is_err());
        assert!(JsonDecoder.diff(b"", b"{\"a\":", &hints).is_err());
    }
}
