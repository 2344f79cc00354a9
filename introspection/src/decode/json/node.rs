//! A JSON document as the decoder compares it: [`Node`]s (built by the
//! parser in [`super::parse`]) that keep every number exactly and borrow
//! their text from the input.
//!
//! # Numbers
//! A number is kept as written. Two numbers are the same value when they
//! denote the same decimal number with the same sign: `1`, `1.0`, `1e0`
//! and `10e-1` are equal (JSON has one number type and a rewriter may
//! spell a number differently without changing it), `0` and `-0` are not
//! (IEEE-754 and JavaScript tell them apart, and so does the text), and
//! integers beyond 64 bits or decimals beyond a double's precision compare
//! digit by digit, never through a rounded double.
//!
//! In `before`/`after` a number is a JSON number when `serde_json` holds
//! it exactly (an integer within 64 bits, or a decimal that the shortest
//! double rendering reproduces, e.g. 17-digit floats); any other number is
//! `{"$number": "<text as written>"}` (like `{"$blob": ..}` for SQLite
//! blobs), so no digit is lost.
//!
//! # Limits
//! Nesting deeper than [`MAX_DEPTH`] is an error naming the limit (the
//! parser keeps its own stack; the diff recurses once per level, which
//! the limit keeps well inside a 2 MiB thread stack). Every node is
//! charged to the diff's [`Budget`].

use std::borrow::Cow;

use serde_json::Value;

use crate::decode::{Budget, DecodeError};

/// Deepest nesting of arrays and objects accepted (ten times that of
/// deeply nested documents seen in practice).
pub const MAX_DEPTH: usize = 1000;

/// Bytes a node costs in the budget beyond its text (its size in memory
/// and that of the map entry holding it).
pub(crate) const NODE_COST: u64 = 64;

/// A parsed JSON value, borrowing from the document's bytes.
#[derive(Clone, Debug)]
pub(crate) enum Node<'a> {
    Null,
    Bool(bool),
    /// An integer written in canonical form (no sign on zero, no leading
    /// zeros, no fraction or exponent) that fits in an i64.
    Int(i64),
    /// Any other number, as written (valid JSON number syntax).
    Num(&'a str),
    /// A string, borrowed unless it had escapes.
    Str(Cow<'a, str>),
    Arr(Vec<Node<'a>>),
    Obj(Members<'a>),
}

/// An object's members, sorted by name (byte order, as `BTreeMap<String,
/// _>` would), names unique: of duplicates the last one written wins, as
/// in `serde_json`. A sorted vector rather than a map: one allocation per
/// object, and documents usually hold few members per object.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Members<'a>(Vec<(Cow<'a, str>, Node<'a>)>);

impl<'a> Members<'a> {
    /// The members in document order.
    pub(crate) fn from_parsed(mut v: Vec<(Cow<'a, str>, Node<'a>)>) -> Self {
        // Writers usually emit names sorted (serde_json, Python with
        // sort_keys) or at least unique; sort only when needed.
        if !v.windows(2).all(|w| w[0].0 < w[1].0) {
            // Stable: equal names stay in document order; reversed, the
            // first of each run is the last written, which dedup keeps.
            v.sort_by(|a, b| a.0.cmp(&b.0));
            v.reverse();
            v.dedup_by(|later, kept| later.0 == kept.0);
            v.reverse();
        }
        Members(v)
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Node<'a>> {
        self.0
            .binary_search_by(|(k, _)| (**k).cmp(name))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &Node<'a>)> {
        self.0.iter().map(|(k, v)| (&**k, v))
    }

    /// The members, sorted by name.
    pub(crate) fn entries(&self) -> &[(Cow<'a, str>, Node<'a>)] {
        &self.0
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl PartialEq for Node<'_> {
    fn eq(&self, other: &Node<'_>) -> bool {
        match (self, other) {
            (Node::Null, Node::Null) => true,
            (Node::Bool(a), Node::Bool(b)) => a == b,
            (Node::Int(a), Node::Int(b)) => a == b,
            (Node::Int(_) | Node::Num(_), Node::Int(_) | Node::Num(_)) => {
                self.num_text().map(|t| canon(&t)) == other.num_text().map(|t| canon(&t))
            }
            (Node::Str(a), Node::Str(b)) => a == b,
            (Node::Arr(a), Node::Arr(b)) => a == b,
            (Node::Obj(a), Node::Obj(b)) => a == b,
            _ => false,
        }
    }
}

/// A number's exact value: sign, significant digits (no leading or
/// trailing zeros; empty for zero) and the power of ten of the last digit.
#[derive(Debug, PartialEq, Eq)]
struct Canon {
    neg: bool,
    digits: String,
    pow: i128,
}

/// The exact value of a number in JSON syntax (or Rust's `{:e}` output).
/// Exponents beyond ±10^38 saturate.
fn canon(text: &str) -> Canon {
    let (neg, t) = match text.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, text),
    };
    let (mant, exp) = match t.find(['e', 'E']) {
        Some(i) => (&t[..i], &t[i + 1..]),
        None => (t, "0"),
    };
    let exp: i128 = exp.parse().unwrap_or_else(|_| {
        if exp.starts_with('-') {
            i128::MIN / 2
        } else {
            i128::MAX / 2
        }
    });
    let (int, frac) = mant.split_once('.').unwrap_or((mant, ""));
    let all: String = int.chars().chain(frac.chars()).collect();
    let trimmed = all.trim_end_matches('0');
    let trailing = (all.len() - trimmed.len()) as i128;
    let digits = trimmed.trim_start_matches('0').to_owned();
    let pow = if digits.is_empty() {
        0
    } else {
        exp.saturating_sub(frac.len() as i128)
            .saturating_add(trailing)
    };
    Canon { neg, digits, pow }
}

impl<'a> Node<'a> {
    fn num_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Node::Int(i) => Some(i.to_string().into()),
            Node::Num(t) => Some((*t).into()),
            _ => None,
        }
    }

    /// This value and every value inside it (iterative: no recursion).
    pub(crate) fn count(&self) -> usize {
        let mut n = 0;
        let mut todo = vec![self];
        while let Some(v) = todo.pop() {
            n += 1;
            match v {
                Node::Arr(a) => todo.extend(a.iter()),
                Node::Obj(o) => todo.extend(o.iter().map(|(_, v)| v)),
                _ => {}
            }
        }
        n
    }

    /// A non-empty array or object (one with leaves below it).
    pub(crate) fn is_branch(&self) -> bool {
        match self {
            Node::Arr(a) => !a.is_empty(),
            Node::Obj(o) => !o.is_empty(),
            _ => false,
        }
    }

    /// The member or element named by one pointer token (an array index
    /// is decimal without leading zeros, as RFC 6901 says).
    pub(crate) fn child(&self, token: &str) -> Option<&Node<'a>> {
        match self {
            Node::Obj(o) => o.get(token),
            Node::Arr(a) => {
                if token.len() > 1 && token.starts_with('0') || token.starts_with('+') {
                    return None;
                }
                a.get(token.parse::<usize>().ok()?)
            }
            _ => None,
        }
    }

    /// The node at an RFC 6901 pointer (`""` is the root).
    pub(crate) fn pointer(&self, ptr: &str) -> Option<&Node<'a>> {
        if ptr.is_empty() {
            return Some(self);
        }
        let rest = ptr.strip_prefix('/')?;
        rest.split('/').try_fold(self, |n, tok| {
            n.child(&tok.replace("~1", "/").replace("~0", "~"))
        })
    }

    /// The JSON form shown in a change (see the module docs for numbers),
    /// each node charged to `budget`.
    pub(crate) fn to_value(&self, budget: &mut Budget) -> Result<Value, DecodeError> {
        budget.charge(NODE_COST)?;
        Ok(match self {
            Node::Null => Value::Null,
            Node::Bool(b) => Value::Bool(*b),
            Node::Int(i) => Value::from(*i),
            Node::Num(t) => number_value(t),
            Node::Str(s) => {
                budget.charge(s.len() as u64)?;
                Value::String(s.to_string())
            }
            Node::Arr(a) => Value::Array(
                a.iter()
                    .map(|n| n.to_value(budget))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Obj(o) => {
                let mut m = serde_json::Map::new();
                for (k, v) in o.iter() {
                    budget.charge(k.len() as u64)?;
                    m.insert(k.to_owned(), v.to_value(budget)?);
                }
                Value::Object(m)
            }
        })
    }

    /// A record key: a string as is, a number as written, anything else as
    /// its compact JSON text.
    pub(crate) fn key_text(&self, budget: &mut Budget) -> Result<String, DecodeError> {
        Ok(match self {
            Node::Str(s) => s.to_string(),
            Node::Int(i) => i.to_string(),
            Node::Num(t) => t.to_string(),
            other => other.to_value(budget)?.to_string(),
        })
    }
}

/// A number that is not a canonical i64: a JSON number when `serde_json`
/// holds it exactly, else `{"$number": text}`.
fn number_value(text: &str) -> Value {
    let integral = !text.contains(['.', 'e', 'E']);
    if integral && text != "-0" {
        if let Ok(u) = text.parse::<u64>() {
            return Value::from(u);
        }
        if let Ok(i) = text.parse::<i64>() {
            return Value::from(i);
        }
    }
    if let Ok(f) = text.parse::<f64>() {
        if f.is_finite() && canon(&format!("{f:e}")) == canon(text) {
            if let Some(n) = serde_json::Number::from_f64(f) {
                return Value::Number(n);
            }
        }
    }
    let mut m = serde_json::Map::new();
    m.insert("$number".into(), Value::String(text.to_owned()));
    Value::Object(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::json::parse::parse;
    use crate::decode::DecodeLimits;
    use serde_json::json;

    fn n(s: &str) -> Node<'_> {
        parse(s.as_bytes(), &mut Budget::new(&DecodeLimits::default())).unwrap()
    }

    fn v(s: &str) -> Value {
        n(s).to_value(&mut Budget::new(&DecodeLimits::default()))
            .unwrap()
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(n("1"), n("1.0"));
        assert_eq!(n("1"), n("1e0"));
        assert_eq!(n("100"), n("1E+2"));
        assert_eq!(n("0.5"), n("5e-1"));
        assert_ne!(n("0"), n("-0"));
        assert_eq!(n("-0"), n("-0.0"));
        assert_ne!(
            n("123456789012345678901234567890"),
            n("123456789012345678901234567891")
        );
        assert_eq!(v("0.30000000000000004"), json!(0.30000000000000004));
        assert_eq!(v("18446744073709551615"), json!(u64::MAX));
        assert_eq!(v("-9223372036854775808"), json!(i64::MIN));
        assert_eq!(
            v("123456789012345678901234567890"),
            json!({"$number": "123456789012345678901234567890"})
        );
        assert_eq!(v("1e400"), json!({"$number": "1e400"}));
        assert_eq!(
            v("0.1000000000000000000001"),
            json!({"$number": "0.1000000000000000000001"})
        );
        assert_eq!(v("1.5"), json!(1.5));
        assert!(v("-0")
            .as_f64()
            .is_some_and(|f| f == 0.0 && f.is_sign_negative()));
    }

    #[test]
    fn structure_and_errors() {
        assert_eq!(
            v(r#" {"a":[1,{"b":null}],"a":"\u00e9\ud83d\ude00\n"} "#),
            json!({"a": "é😀\n"})
        );
        assert_ne!(n("[10,20]"), n(r#"{"0":10,"1":20}"#));
        for bad in [
            "[1,]",
            "{\"a\":1,}",
            "01",
            "1.",
            ".5",
            "+1",
            "[1 2]",
            "\"\\ud800\"",
            "\"a\u{1}\"",
            "tru",
            "{1:2}",
            "[1]x",
            "\"\\x\"",
            "[",
            // Found by fuzzing: a sign inside \u escapes was accepted.
            "\"\\u+400\"",
            "\"\\u-001\"",
        ] {
            let r = parse(bad.as_bytes(), &mut Budget::new(&DecodeLimits::default()));
            assert!(r.is_err(), "{bad:?} parsed");
        }
        let deep = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert!(parse(deep.as_bytes(), &mut Budget::new(&DecodeLimits::default())).is_ok());
        let deeper = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
        let e = parse(
            deeper.as_bytes(),
            &mut Budget::new(&DecodeLimits::default()),
        )
        .unwrap_err()
        .reason;
        assert!(e.contains("limit of 1000 levels"), "{e}");
    }
}
