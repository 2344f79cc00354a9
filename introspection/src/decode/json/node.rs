//! A JSON document as the decoder compares it: an iterative, stack-safe
//! RFC 8259 parser (strict like `serde_json`: UTF-8, no trailing commas,
//! no comments, no lone surrogates; a duplicate member keeps its last
//! value) into [`Node`]s that keep every number exactly.
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

use std::collections::BTreeMap;

use serde_json::Value;

use crate::decode::{bad, Budget, DecodeError};

/// Deepest nesting of arrays and objects accepted (ten times that of
/// deeply nested documents seen in practice).
pub const MAX_DEPTH: usize = 1000;

/// Bytes a node costs in the budget beyond its text (its size in memory
/// and that of the map entry holding it).
const NODE_COST: u64 = 64;

/// A parsed JSON value.
#[derive(Clone, Debug)]
pub(crate) enum Node {
    Null,
    Bool(bool),
    /// An integer written in canonical form (no sign on zero, no leading
    /// zeros, no fraction or exponent) that fits in an i64.
    Int(i64),
    /// Any other number, as written (valid JSON number syntax).
    Num(Box<str>),
    Str(String),
    Arr(Vec<Node>),
    Obj(BTreeMap<String, Node>),
}

impl PartialEq for Node {
    fn eq(&self, other: &Node) -> bool {
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

impl Node {
    fn num_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        match self {
            Node::Int(i) => Some(i.to_string().into()),
            Node::Num(t) => Some((&**t).into()),
            _ => None,
        }
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
    pub(crate) fn child(&self, token: &str) -> Option<&Node> {
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

    /// The tokens of a branch's children, in order.
    pub(crate) fn keys(&self) -> Vec<String> {
        match self {
            Node::Obj(o) => o.keys().cloned().collect(),
            Node::Arr(a) => (0..a.len()).map(|i| i.to_string()).collect(),
            _ => Vec::new(),
        }
    }

    /// The node at an RFC 6901 pointer (`""` is the root).
    pub(crate) fn pointer(&self, ptr: &str) -> Option<&Node> {
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
                Value::String(s.clone())
            }
            Node::Arr(a) => Value::Array(
                a.iter()
                    .map(|n| n.to_value(budget))
                    .collect::<Result<_, _>>()?,
            ),
            Node::Obj(o) => {
                let mut m = serde_json::Map::new();
                for (k, v) in o {
                    budget.charge(k.len() as u64)?;
                    m.insert(k.clone(), v.to_value(budget)?);
                }
                Value::Object(m)
            }
        })
    }

    /// A record key: a string as is, a number as written, anything else as
    /// its compact JSON text.
    pub(crate) fn key_text(&self, budget: &mut Budget) -> Result<String, DecodeError> {
        Ok(match self {
            Node::Str(s) => s.clone(),
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

/// An open container while parsing.
enum Frame {
    Arr(Vec<Node>),
    Obj(BTreeMap<String, Node>, String),
}

struct Parser<'a> {
    b: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.b.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn err<T>(&self, what: &str) -> Result<T, DecodeError> {
        match self.b.get(self.i) {
            Some(&c) => bad(format!(
                "json: {what} at byte {} (found {:?})",
                self.i, c as char
            )),
            None => bad(format!("json: {what} at byte {} (end of input)", self.i)),
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8], node: Node) -> Result<Node, DecodeError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(node)
        } else {
            self.err("invalid literal")
        }
    }

    fn number(&mut self) -> Result<Node, DecodeError> {
        let start = self.i;
        let digits = |p: &mut Self| {
            let s = p.i;
            while p.b.get(p.i).is_some_and(u8::is_ascii_digit) {
                p.i += 1;
            }
            p.i - s
        };
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return self.err("invalid number"),
        }
        let mut plain = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            plain = false;
            if digits(self) == 0 {
                return self.err("invalid number");
            }
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            plain = false;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if digits(self) == 0 {
                return self.err("invalid number");
            }
        }
        // Only ASCII was consumed.
        let text = std::str::from_utf8(&self.b[start..self.i]).unwrap_or("0");
        if plain && text != "-0" {
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Node::Int(i));
            }
        }
        Ok(Node::Num(text.into()))
    }

    fn hex4(&mut self) -> Result<u32, DecodeError> {
        let h = self
            .b
            .get(self.i..self.i + 4)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u32::from_str_radix(h, 16).ok());
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("invalid \\u escape"),
        }
    }

    /// A string; `self.i` is at its opening quote.
    fn string(&mut self) -> Result<String, DecodeError> {
        self.i += 1;
        let mut out = Vec::new();
        loop {
            let start = self.i;
            while self
                .b
                .get(self.i)
                .is_some_and(|&c| c != b'"' && c != b'\\' && c >= 0x20)
            {
                self.i += 1;
            }
            out.extend_from_slice(&self.b[start..self.i]);
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return match String::from_utf8(out) {
                        Ok(s) => Ok(s),
                        Err(_) => bad(format!(
                            "json: invalid UTF-8 in a string before byte {}",
                            self.i
                        )),
                    };
                }
                Some(b'\\') => {
                    self.i += 1;
                    let c = self.b.get(self.i).copied();
                    self.i += 1;
                    let ch = match c {
                        Some(b'"') => '"',
                        Some(b'\\') => '\\',
                        Some(b'/') => '/',
                        Some(b'b') => '\u{8}',
                        Some(b'f') => '\u{c}',
                        Some(b'n') => '\n',
                        Some(b'r') => '\r',
                        Some(b't') => '\t',
                        Some(b'u') => {
                            let hi = self.hex4()?;
                            let cp = if (0xD800..0xDC00).contains(&hi) {
                                if !self.b[self.i..].starts_with(b"\\u") {
                                    return self.err("lone leading surrogate in \\u escape");
                                }
                                self.i += 2;
                                let lo = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&lo) {
                                    return self.err("invalid surrogate pair in \\u escape");
                                }
                                0x10000 + ((hi - 0xD800) << 10) + (lo - 0xDC00)
                            } else {
                                hi
                            };
                            match char::from_u32(cp) {
                                Some(ch) => ch,
                                None => return self.err("lone trailing surrogate in \\u escape"),
                            }
                        }
                        _ => {
                            self.i -= 1;
                            return self.err("invalid escape");
                        }
                    };
                    let mut buf = [0u8; 4];
                    out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
                }
                Some(_) => return self.err("control character in a string"),
                None => return self.err("unterminated string"),
            }
        }
    }

    /// A member name and its colon.
    fn key(&mut self) -> Result<String, DecodeError> {
        self.ws();
        if self.b.get(self.i) != Some(&b'"') {
            return self.err("expected a member name");
        }
        let k = self.string()?;
        if !self.eat(b':') {
            return self.err("expected ':'");
        }
        Ok(k)
    }
}

/// Parse one document (no trailing NULs; not blank).
pub(crate) fn parse(data: &[u8], budget: &mut Budget) -> Result<Node, DecodeError> {
    let mut p = Parser { b: data, i: 0 };
    let mut stack: Vec<Frame> = Vec::new();
    'value: loop {
        p.ws();
        budget.charge(NODE_COST)?;
        let mut node = match p.b.get(p.i) {
            Some(b'{') | Some(b'[') => {
                if stack.len() >= MAX_DEPTH {
                    return bad(format!(
                        "json: nesting deeper than the limit of {MAX_DEPTH} levels at byte {}",
                        p.i
                    ));
                }
                let obj = p.b[p.i] == b'{';
                p.i += 1;
                if obj {
                    if p.eat(b'}') {
                        Node::Obj(BTreeMap::new())
                    } else {
                        let k = p.key()?;
                        budget.charge(k.len() as u64)?;
                        stack.push(Frame::Obj(BTreeMap::new(), k));
                        continue 'value;
                    }
                } else if p.eat(b']') {
                    Node::Arr(Vec::new())
                } else {
                    stack.push(Frame::Arr(Vec::new()));
                    continue 'value;
                }
            }
            Some(b'"') => {
                let s = p.string()?;
                budget.charge(s.len() as u64)?;
                Node::Str(s)
            }
            Some(b't') => p.literal(b"true", Node::Bool(true))?,
            Some(b'f') => p.literal(b"false", Node::Bool(false))?,
            Some(b'n') => p.literal(b"null", Node::Null)?,
            Some(b'-' | b'0'..=b'9') => {
                let n = p.number()?;
                if let Node::Num(t) = &n {
                    budget.charge(t.len() as u64)?;
                }
                n
            }
            _ => return p.err("expected a value"),
        };
        // Hand the finished value to its container, closing containers.
        loop {
            match stack.last_mut() {
                None => {
                    p.ws();
                    if p.i != p.b.len() {
                        return p.err("trailing characters");
                    }
                    return Ok(node);
                }
                Some(Frame::Arr(a)) => {
                    a.push(node);
                    if p.eat(b',') {
                        continue 'value;
                    }
                    if !p.eat(b']') {
                        return p.err("expected ',' or ']'");
                    }
                }
                Some(Frame::Obj(o, k)) => {
                    o.insert(std::mem::take(k), node);
                    if p.eat(b',') {
                        let k = p.key()?;
                        budget.charge(k.len() as u64)?;
                        if let Some(Frame::Obj(_, slot)) = stack.last_mut() {
                            *slot = k;
                        }
                        continue 'value;
                    }
                    if !p.eat(b'}') {
                        return p.err("expected ',' or '}'");
                    }
                }
            }
            node = match stack.pop() {
                Some(Frame::Arr(a)) => Node::Arr(a),
                Some(Frame::Obj(o, _)) => Node::Obj(o),
                None => unreachable!("a frame was just examined"),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::DecodeLimits;
    use serde_json::json;

    fn n(s: &str) -> Node {
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
