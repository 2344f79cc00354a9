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
//!   the front of an array shows as updates of every later index. A
//!   non-empty array that becomes a non-empty object (or back) is one update
//!   at its pointer, before/after the whole containers: `[10,20]` and
//!   `{"0":10,"1":20}` have the same leaves but are different values.
//!
//! Values are compared exactly: numbers by their decimal value and sign
//! (`1` = `1.0`, `0` ≠ `-0`, big integers digit by digit) and shown without
//! loss; see [`node`] for the parser, the number rules and the nesting
//! limit ([`node::MAX_DEPTH`]).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{bad, Budget, Change, DecodeError, DecodeLimits, Decoder, Op, SchemaHints};

pub mod node;
mod parse;

use node::Node;

/// Decoder for JSON documents.
pub struct JsonDecoder;

impl Decoder for JsonDecoder {
    fn diff_with(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
        limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError> {
        let mut budget = Budget::new(limits);
        let a = parse(old, &mut budget).map_err(|e| e.context("old version"))?;
        let b = parse(new, &mut budget).map_err(|e| e.context("new version"))?;
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
            let ra = records(
                a.as_ref().and_then(|d| d.pointer(&rp)),
                key_field,
                &mut w.budget,
            )?;
            let rb = records(
                b.as_ref().and_then(|d| d.pointer(&rp)),
                key_field,
                &mut w.budget,
            )?;
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
fn parse<'a>(data: &'a [u8], budget: &mut Budget) -> Result<Option<Node<'a>>, DecodeError> {
    let end = data.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let data = &data[..end];
    if data.iter().all(|b| b.is_ascii_whitespace()) {
        return Ok(None);
    }
    parse::parse(data, budget).map(Some)
}

/// The number of values (scalars, arrays and objects) in one version of a
/// document, 0 for a blank file: a parse without a diff, for callers that
/// only need to know the file is valid JSON, and for the benchmark.
pub fn count_values(data: &[u8], limits: &DecodeLimits) -> Result<usize, DecodeError> {
    Ok(parse(data, &mut Budget::new(limits))?.map_or(0, |n| n.count()))
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
    if !token.contains(['~', '/']) {
        path.push_str(token);
        return;
    }
    for c in token.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

/// One step of a pointer: a member name or an array index.
enum Token<'k> {
    Name(&'k str),
    Index(usize),
}

/// A branch's children with their tokens, in order.
fn children<'n, 'a>(n: &'n Node<'a>) -> Box<dyn Iterator<Item = (Token<'n>, &'n Node<'a>)> + 'n> {
    match n {
        Node::Obj(o) => Box::new(o.iter().map(|(k, v)| (Token::Name(k), v))),
        Node::Arr(a) => Box::new(a.iter().enumerate().map(|(i, v)| (Token::Index(i), v))),
        _ => Box::new(std::iter::empty()),
    }
}

/// The parent pointer of a pointer (`""` for the root and its children).
pub fn parent_pointer(p: &str) -> &str {
    p.rfind('/').map_or("", |i| &p[..i])
}

fn records<'v>(
    set: Option<&'v Node<'_>>,
    key_field: &str,
    budget: &mut Budget,
) -> Result<BTreeMap<String, &'v Node<'v>>, DecodeError> {
    let mut m = BTreeMap::new();
    let mut put = |k: String, v: &'v Node| {
        if m.insert(k.clone(), v).is_some() {
            return bad(format!("json: duplicate record key {k:?}"));
        }
        Ok(())
    };
    match set {
        None | Some(Node::Null) => {}
        Some(Node::Obj(o)) => {
            for (k, v) in o.iter() {
                put(k.to_owned(), v)?;
            }
        }
        Some(Node::Arr(a)) => {
            for (i, v) in a.iter().enumerate() {
                let k = match v {
                    Node::Obj(o) => match o.get(key_field) {
                        Some(k) => k.key_text(budget)?,
                        None => format!("#{i}"),
                    },
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

impl Walker {
    fn emit(
        &mut self,
        collection: String,
        key: String,
        before: Option<&Node<'_>>,
        after: Option<&Node<'_>>,
    ) -> Result<(), DecodeError> {
        self.budget
            .charge_value(collection.len().saturating_add(key.len()))?;
        let before = before.map(|n| n.to_value(&mut self.budget)).transpose()?;
        let after = after.map(|n| n.to_value(&mut self.budget)).transpose()?;
        let op = match (&before, &after) {
            (None, _) => Op::Insert,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        self.out.push(Change {
            collection,
            key,
            op,
            before,
            after,
        });
        Ok(())
    }

    fn leaf(
        &mut self,
        path: &str,
        before: Option<&Node<'_>>,
        after: Option<&Node<'_>>,
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

    /// [`Self::walk`] of one child: its token appended to `path` (of
    /// length `len`), then removed.
    fn child(
        &mut self,
        path: &mut String,
        len: usize,
        token: Token<'_>,
        a: Option<&Node<'_>>,
        b: Option<&Node<'_>>,
    ) -> Result<(), DecodeError> {
        match token {
            Token::Name(k) => push_token(path, k),
            Token::Index(i) => {
                let _ = write!(path, "/{i}");
            }
        }
        self.walk(path, a, b)?;
        path.truncate(len);
        Ok(())
    }

    /// Recurses once per nesting level, at most [`node::MAX_DEPTH`].
    fn walk(
        &mut self,
        path: &mut String,
        a: Option<&Node<'_>>,
        b: Option<&Node<'_>>,
    ) -> Result<(), DecodeError> {
        if self.skip.as_deref() == Some(path.as_str()) {
            return Ok(());
        }
        let ba = a.filter(|n| n.is_branch());
        let bb = b.filter(|n| n.is_branch());
        match (ba, bb) {
            (None, None) => return self.leaf(path, a, b),
            // Array <-> object: the same leaves may sit under both.
            (Some(x), Some(y)) if matches!(x, Node::Arr(_)) != matches!(y, Node::Arr(_)) => {
                return self.leaf(path, a, b);
            }
            _ => {}
        }
        if ba.is_none() {
            self.leaf(path, a, None)?;
        }
        // Children in the order: `a`'s (members by name, elements by
        // index), then those only `b` has. Objects are merge-joined over
        // their sorted members, so no child is looked up by name.
        let len = path.len();
        match (ba, bb) {
            (Some(Node::Obj(x)), Some(Node::Obj(y))) => {
                let (xs, ys) = (x.entries(), y.entries());
                let mut j = 0;
                for (k, ca) in xs {
                    while ys.get(j).is_some_and(|(yk, _)| yk < k) {
                        j += 1;
                    }
                    let cb = ys.get(j).filter(|(yk, _)| yk == k).map(|(_, v)| v);
                    self.child(path, len, Token::Name(k), Some(ca), cb)?;
                }
                let mut i = 0;
                for (k, cb) in ys {
                    while xs.get(i).is_some_and(|(xk, _)| xk < k) {
                        i += 1;
                    }
                    if xs.get(i).is_none_or(|(xk, _)| xk != k) {
                        self.child(path, len, Token::Name(k), None, Some(cb))?;
                    }
                }
            }
            (Some(Node::Arr(x)), Some(Node::Arr(y))) => {
                for i in 0..x.len().max(y.len()) {
                    self.child(path, len, Token::Index(i), x.get(i), y.get(i))?;
                }
            }
            (Some(n), None) => {
                for (t, c) in children(n) {
                    self.child(path, len, t, Some(c), None)?;
                }
            }
            (None, Some(n)) => {
                for (t, c) in children(n) {
                    self.child(path, len, t, None, Some(c))?;
                }
            }
            _ => {}
        }
        if bb.is_none() {
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
