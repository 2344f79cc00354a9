//! Oracle tests of the JSON decoder: seeded random documents rewritten in
//! place in a zero-filled extent; the expected changes come from the
//! in-memory models that generated them.

use std::collections::{BTreeMap, BTreeSet};

use introspection::decode::{self, sort_changes, Change, Format, Op, SchemaHints};
use serde_json::{json, Map, Value};

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn word(&mut self) -> String {
        const W: &[&str] = &["a", "b", "name", "x/y", "t~1", "é", "0", "01", "", "k k"];
        W[self.below(W.len() as u64) as usize].to_string()
    }
    fn scalar(&mut self) -> Value {
        match self.below(6) {
            0 => Value::Null,
            1 => json!(self.below(2) == 1),
            2 => json!(self.below(1000) as i64 - 500),
            3 => json!(self.below(1000) as f64 / 8.0),
            4 => json!(self.word()),
            _ => json!({}),
        }
    }
    fn value(&mut self, depth: u32) -> Value {
        if depth == 0 || self.below(3) == 0 {
            return self.scalar();
        }
        if self.below(2) == 0 {
            let n = self.below(4);
            Value::Array((0..n).map(|_| self.value(depth - 1)).collect())
        } else {
            let mut m = Map::new();
            for _ in 0..self.below(5) {
                let k = self.word();
                let v = self.value(depth - 1);
                m.insert(k, v);
            }
            Value::Object(m)
        }
    }
    /// A random edit somewhere in `v`.
    fn mutate(&mut self, v: &mut Value, depth: u32) {
        match v {
            Value::Object(m) if !m.is_empty() && self.below(4) != 0 => {
                let keys: Vec<String> = m.keys().cloned().collect();
                let k = &keys[self.below(keys.len() as u64) as usize];
                match self.below(4) {
                    0 => {
                        m.remove(k);
                    }
                    1 => {
                        let nk = self.word();
                        let nv = self.value(depth);
                        m.insert(nk, nv);
                    }
                    _ => {
                        let child = m.get_mut(k).unwrap();
                        self.mutate(child, depth.saturating_sub(1));
                    }
                }
            }
            Value::Array(a) if !a.is_empty() && self.below(4) != 0 => match self.below(4) {
                0 => {
                    a.pop();
                }
                1 => {
                    let nv = self.value(depth);
                    a.push(nv);
                }
                _ => {
                    let i = self.below(a.len() as u64) as usize;
                    self.mutate(&mut a[i], depth.saturating_sub(1));
                }
            },
            _ => *v = self.value(depth),
        }
    }
}

/// Pointer -> leaf (scalars, `{}`, `[]`), the model of leaf mode, for
/// both versions at once: a non-empty array on one side and a non-empty
/// object on the other at the same pointer are leaves there, whole.
fn flatten(
    a: Option<&Value>,
    b: Option<&Value>,
    path: String,
    fa: &mut BTreeMap<String, Value>,
    fb: &mut BTreeMap<String, Value>,
) {
    let esc = |k: &str| k.replace('~', "~0").replace('/', "~1");
    let children = |v: Option<&Value>| -> Option<Vec<(String, Value)>> {
        match v? {
            Value::Object(m) if !m.is_empty() => {
                Some(m.iter().map(|(k, c)| (esc(k), c.clone())).collect())
            }
            Value::Array(a) if !a.is_empty() => Some(
                a.iter()
                    .enumerate()
                    .map(|(i, c)| (i.to_string(), c.clone()))
                    .collect(),
            ),
            _ => None,
        }
    };
    let (ca, cb) = (children(a), children(b));
    let replaced = ca.is_some() && cb.is_some() && a.unwrap().is_array() != b.unwrap().is_array();
    if replaced {
        fa.insert(path.clone(), a.unwrap().clone());
        fb.insert(path, b.unwrap().clone());
        return;
    }
    if let (None, Some(v)) = (&ca, a) {
        fa.insert(path.clone(), v.clone());
    }
    if let (None, Some(v)) = (&cb, b) {
        fb.insert(path.clone(), v.clone());
    }
    let ma: BTreeMap<String, Value> = ca.unwrap_or_default().into_iter().collect();
    let mb: BTreeMap<String, Value> = cb.unwrap_or_default().into_iter().collect();
    let keys: BTreeSet<&String> = ma.keys().chain(mb.keys()).collect();
    for k in keys {
        flatten(ma.get(k), mb.get(k), format!("{path}/{k}"), fa, fb);
    }
}

fn parent(p: &str) -> String {
    p.rfind('/').map_or(String::new(), |i| p[..i].to_string())
}

fn map_diff<K: Ord + Clone>(
    a: &BTreeMap<K, Value>,
    b: &BTreeMap<K, Value>,
    mut f: impl FnMut(&K, Op, Option<&Value>, Option<&Value>),
) {
    let keys: BTreeSet<&K> = a.keys().chain(b.keys()).collect();
    for k in keys {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x != y => f(k, Op::Update, Some(x), Some(y)),
            (Some(x), None) => f(k, Op::Delete, Some(x), None),
            (None, Some(y)) => f(k, Op::Insert, None, Some(y)),
            _ => {}
        }
    }
}

fn leaf_changes(a: Option<&Value>, b: Option<&Value>) -> Vec<Change> {
    let (mut fa, mut fb) = (BTreeMap::new(), BTreeMap::new());
    flatten(a, b, String::new(), &mut fa, &mut fb);
    let mut out = Vec::new();
    map_diff(&fa, &fb, |k, op, x, y| {
        out.push(Change {
            collection: parent(k),
            key: k.clone(),
            op,
            before: x.cloned(),
            after: y.cloned(),
        })
    });
    out
}

/// The document written into a 16 KiB extent, the rest zero.
fn extent(doc: Option<&Value>, pretty: bool) -> Vec<u8> {
    let mut b = match doc {
        None => Vec::new(),
        Some(d) if pretty => serde_json::to_vec_pretty(d).unwrap(),
        Some(d) => serde_json::to_vec(d).unwrap(),
    };
    assert!(b.len() <= 16384);
    b.resize(16384, 0);
    b
}

fn check(old: &[u8], new: &[u8], hints: &SchemaHints, mut want: Vec<Change>, what: &str) {
    let mut got = decode::diff(Format::Json, old, new, hints).unwrap();
    sort_changes(&mut got);
    sort_changes(&mut want);
    assert_eq!(got, want, "{what}");
}

#[test]
fn oracle_leaf_mode() {
    let mut rng = Rng(0x1234_5678_9abc);
    let mut changes = 0;
    for round in 0..60 {
        let mut doc: Option<Value> = None;
        let mut prev = extent(None, false);
        for step in 0..25 {
            let mut next = doc.clone().unwrap_or_else(|| rng.value(4));
            if doc.is_some() {
                for _ in 0..1 + rng.below(3) {
                    rng.mutate(&mut next, 3);
                }
            }
            let next = if rng.below(20) == 0 { None } else { Some(next) };
            let img = extent(next.as_ref(), step % 2 == 0);
            let want = leaf_changes(doc.as_ref(), next.as_ref());
            changes += want.len();
            check(
                &prev,
                &img,
                &SchemaHints::default(),
                want,
                &format!("round {round} step {step}"),
            );
            doc = next;
            prev = img;
        }
    }
    eprintln!("leaf mode: 1500 document versions, {changes} changes");
    assert!(changes > 1000);
}

#[test]
fn oracle_record_mode() {
    let mut rng = Rng(0xfeed_beef);
    let mut changes = 0;
    for as_object in [false, true] {
        let hints = SchemaHints {
            json_record_path: Some("/data/customers".into()),
            json_record_key: Some("id".into()),
            ..Default::default()
        };
        let mut model: BTreeMap<String, Value> = BTreeMap::new();
        let mut meta = json!({"version": 0, "owner": "a"});
        let mut prev_doc: Option<Value> = None;
        let mut prev = extent(None, false);
        for step in 0..300u64 {
            let old_model = model.clone();
            for _ in 0..1 + rng.below(4) {
                let id = rng.below(40);
                match rng.below(3) {
                    0 => {
                        model.remove(&id.to_string());
                    }
                    _ => {
                        let rec = json!({
                            "id": id,
                            "name": rng.word(),
                            "tags": rng.value(2),
                            "score": rng.below(100),
                        });
                        model.insert(id.to_string(), rec);
                    }
                }
            }
            if rng.below(5) == 0 {
                rng.mutate(&mut meta, 2);
            }
            let set = if as_object {
                Value::Object(
                    model
                        .iter()
                        .map(|(k, v)| (format!("c{k}"), v.clone()))
                        .collect(),
                )
            } else {
                // Array order is not significant for records: shuffle it.
                let mut recs: Vec<Value> = model.values().cloned().collect();
                for i in (1..recs.len()).rev() {
                    recs.swap(i, rng.below(i as u64 + 1) as usize);
                }
                Value::Array(recs)
            };
            let doc = json!({"meta": meta, "data": {"customers": set}});
            let img = extent(Some(&doc), step % 3 == 0);
            // Expected: records from the model, everything else by leaf.
            let mut want = Vec::new();
            let key = |k: &String| {
                if as_object {
                    format!("c{k}")
                } else {
                    k.clone()
                }
            };
            let (om, nm): (BTreeMap<_, _>, BTreeMap<_, _>) = (
                old_model.iter().map(|(k, v)| (key(k), v.clone())).collect(),
                model.iter().map(|(k, v)| (key(k), v.clone())).collect(),
            );
            map_diff(&om, &nm, |k, op, x, y| {
                want.push(Change {
                    collection: "/data/customers".into(),
                    key: k.clone(),
                    op,
                    before: x.cloned(),
                    after: y.cloned(),
                })
            });
            let strip = |d: Option<&Value>| {
                d.map(|d| {
                    let mut d = d.clone();
                    d["data"].as_object_mut().unwrap().remove("customers");
                    d
                })
            };
            let mut rest = leaf_changes(
                strip(prev_doc.as_ref()).as_ref(),
                strip(Some(&doc)).as_ref(),
            );
            // `/data` became `{}` in the stripped model only; it is never a
            // leaf in the real document (it always holds the record set).
            rest.retain(|c| c.key != "/data");
            changes += want.len() + rest.len();
            want.extend(rest);
            check(
                &prev,
                &img,
                &hints,
                want,
                &format!("object={as_object} step {step}"),
            );
            prev_doc = Some(doc);
            prev = img;
        }
    }
    eprintln!("record mode: 600 document versions, {changes} changes");
    assert!(changes > 1000);
}

#[test]
fn garbage_is_an_error() {
    let ok = extent(Some(&json!({"a": 1})), false);
    for bad in [&b"{\"a\": "[..], b"\xff\xfe", b"{\"a\":1} x", b"[1,2"] {
        assert!(decode::diff(Format::Json, &ok, bad, &SchemaHints::default()).is_err());
    }
    let deep = "[".repeat(100_000);
    assert!(decode::diff(Format::Json, &ok, deep.as_bytes(), &SchemaHints::default()).is_err());
}
