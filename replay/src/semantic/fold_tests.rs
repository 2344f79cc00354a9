//! Unit tests of what makes the fold and the SQLite output fast: the fold's
//! look-ahead over a batch of changes, rows whose values are kept in the
//! row or on the heap, and rows put in key order without sorting. Each
//! must leave the results exactly as the plain way gives them.
use introspection::semantic::{Change, Format, Op, SemanticChange};
use serde_json::{json, Value};

use super::change::Lifted;
use super::data::{Data, INLINE};
use super::row::{Interner, Row};
use super::state::{sorted, AnomalyKind, Key, State};
use super::{fold, Selection};

fn ch(seq: u64, key: &str, op: Op, before: Option<Value>, after: Option<Value>) -> Lifted {
    Lifted::from(&SemanticChange::from_change(
        "vm0",
        seq,
        seq,
        "app.db",
        Format::Sqlite,
        Change {
            collection: "t".into(),
            key: key.into(),
            op,
            before,
            after,
        },
    ))
}

/// A row of `n`'s generation: short, or with a value too long to be kept
/// in the row.
fn row(n: u64) -> Value {
    let text = if n % 3 == 0 {
        "long ".repeat(40) + &n.to_string()
    } else {
        format!("short {n}")
    };
    json!({"id": n % 7, "text": text})
}

#[test]
fn a_batched_fold_is_the_changes_applied_one_by_one() {
    // Few keys, so that a batch often changes one key several times; a
    // `before` is now and then stale, and ops do not always fit.
    let mut x = 0x2545f4914f6cdd1du64;
    let mut now: Vec<Option<u64>> = vec![None; 5];
    let mut changes = Vec::new();
    for seq in 0..600u64 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let k = (x % 5) as usize;
        let key = k.to_string();
        let stale = x % 11 == 0;
        let before = now[k].map(|g| row(if stale { g + 1 } else { g }));
        let (op, after) = match (x >> 8) % 4 {
            0 | 1 => (Op::Insert, Some(seq)),
            2 => (Op::Update, Some(seq)),
            _ => (Op::Delete, None),
        };
        let before = if op == Op::Insert { None } else { before };
        changes.push(ch(seq, &key, op, before, after.map(row)));
        now[k] = after;
    }
    let folded = fold(&changes, &Selection::default(), &[]);
    let mut one_by_one = State::new();
    let mut anomalies = std::collections::BTreeMap::new();
    for c in &changes {
        if let super::Applied::Anomaly(kind) = one_by_one.apply(c) {
            *anomalies.entry(kind).or_insert(0u64) += 1;
        }
    }
    one_by_one.prune();
    assert_eq!(folded.anomalies, anomalies);
    for kind in [
        AnomalyKind::BeforeMismatch,
        AnomalyKind::InsertOverExisting,
        AnomalyKind::DeleteOfMissing,
    ] {
        assert!(anomalies.get(&kind).is_some_and(|n| *n > 0), "{kind:?}");
    }
    assert_eq!(folded.state, one_by_one);
    assert_eq!(folded.state.checksum(), one_by_one.checksum());
}

#[test]
fn values_in_the_row_or_on_the_heap_read_and_compare_alike() {
    let mut names = Interner::default();
    // {"a": text, "b": 1} encodes as a tag, a length and the text, then a
    // tag and 8 bytes: 14 bytes more than the text.
    for len in [0, INLINE - 15, INLINE - 14, INLINE - 13, 4 * INLINE] {
        let text = "é".repeat(len / 2) + &"x".repeat(len % 2);
        let value = json!({"a": text, "b": 1});
        let parsed = Row::parse(&value.to_string(), &mut names).unwrap();
        assert_eq!(parsed, Row::from_value(value.clone()), "{len}");
        assert_eq!(parsed.to_value(), value, "{len}");
        assert_eq!(parsed.get_str("a"), Some(text.as_str()));
        let inline = matches!(
            parsed,
            Row::Object {
                data: Data::Inline { .. },
                ..
            }
        );
        assert_eq!(inline, len + 14 <= INLINE, "{len}");
        // A row differing in its last byte only is another row, and a
        // `before` that says so is a mismatch.
        let other = Row::from_value(json!({"a": text, "b": 2}));
        assert_ne!(parsed, other, "{len}");
        let stale = json!({"a": text, "b": 2});
        let changes = [
            ch(1, "1", Op::Insert, None, Some(value.clone())),
            ch(2, "1", Op::Update, Some(stale.clone()), Some(value.clone())),
            ch(3, "1", Op::Update, Some(value.clone()), Some(value.clone())),
            ch(4, "1", Op::Delete, Some(stale), None),
        ];
        let f = fold(&changes, &Selection::default(), &[]);
        assert_eq!(
            f.anomalies.get(&AnomalyKind::BeforeMismatch),
            Some(&2),
            "{len}"
        );
    }
}

#[test]
fn rows_come_out_in_key_order_dense_sparse_or_text() {
    let orders: [&[&str]; 4] = [
        &["3", "-2", "0", "1", "-1", "2", "5"],
        &["9223372036854775807", "-9223372036854775808", "0", "7"],
        &["10", "b", "9", "a", "007", "-3"],
        &[],
    ];
    for keys in orders {
        let changes: Vec<Lifted> = keys
            .iter()
            .map(|k| ch(1, k, Op::Insert, None, Some(json!(k))))
            .collect();
        let f = fold(&changes, &Selection::default(), &[]);
        let mut want: Vec<Key> = keys.iter().map(|k| Key::parse(k)).collect();
        want.sort();
        let empty = Default::default();
        let rows = f.state.collections.get("t").unwrap_or(&empty);
        let got: Vec<(Key, Value)> = sorted(rows)
            .into_iter()
            .map(|(k, r)| (k.clone(), r.to_value()))
            .collect();
        let want: Vec<(Key, Value)> = want
            .into_iter()
            .map(|k| (k.clone(), json!(k.to_string())))
            .collect();
        assert_eq!(got, want);
    }
}
