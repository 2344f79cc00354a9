//! The value SQLite reads for a column that a record is too short to hold
//! (rows written before `ALTER TABLE ... ADD COLUMN ... DEFAULT x`).
//!
//! SQLite keeps the DEFAULT as SQL text in the schema and, when a record
//! lacks the column, evaluates it with `sqlite3ValueFromExpr` under the
//! column's affinity (then `OP_RealAffinity` for REAL columns). This module
//! mirrors that evaluation: the forms it can evaluate are literals
//! (numbers of every spelling, strings, blobs, NULL, TRUE/FALSE), a bare or
//! quoted identifier (SQLite reads `DEFAULT abc` as the text `'abc'`),
//! unary minus/plus, parentheses, `CAST(x AS type)` and `COLLATE`; anything
//! else (functions, `CURRENT_TIME`, binary operators) reads as NULL, as in
//! SQLite (which refuses such a default for ADD COLUMN on a non-empty
//! table, so no short record can need it). Numeric literals follow SQLite:
//! an integer literal that fits in 64 bits (hex included, `0xFFFF...` wraps
//! to negative) is an integer, any other number is its text converted by
//! the affinity (so a TEXT column keeps `1e3` as `'1e3'`), and
//! text-to-number conversion follows `sqlite3AtoF`/`sqlite3Atoi64`.

use serde_json::Value;

use super::numtext::{atof, atoi64, real_same_as_int, real_text};
use super::record::real_value;
use super::schema::Affinity;
use super::sql::{kw, Tok};
use crate::decode::blob_value;

/// A value during evaluation (one storage class at a time, as SQLite's
/// `Mem` is once a literal has been converted).
#[derive(Clone, Debug, PartialEq)]
enum Mem {
    Null,
    Int(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// The subset of SQL expressions `sqlite3ValueFromExpr` evaluates.
#[derive(Clone, Debug)]
enum Expr {
    /// An integer (`int == true`) or float literal token, digit
    /// separators removed.
    Num {
        text: String,
        int: bool,
    },
    Str(String),
    Blob(Vec<u8>),
    Null,
    Bool(bool),
    Neg(Box<Expr>),
    Cast(Box<Expr>, Affinity),
    /// Anything SQLite cannot evaluate without running it.
    Other,
}

/// Deepest nesting of the DEFAULT expression we follow (SQLite's own
/// limit is 1000; a hostile schema must not exhaust the stack).
const MAX_DEPTH: usize = 100;

/// The value of the DEFAULT clause whose tokens (after the keyword) start
/// `toks`, read by a column of affinity `aff`, as JSON.
pub(crate) fn default_value(toks: &[Tok], aff: Affinity) -> Value {
    let expr = parse_clause(toks);
    let v = eval(&expr, aff, 0).unwrap_or(Mem::Null);
    let v = match v {
        Mem::Int(i) if aff == Affinity::Real => Mem::Real(i as f64),
        v => v,
    };
    match v {
        Mem::Null => Value::Null,
        Mem::Int(i) => Value::from(i),
        Mem::Real(f) => real_value(f),
        Mem::Text(s) => Value::String(s),
        Mem::Blob(b) => blob_value(&b),
    }
}

/// `DEFAULT` is followed by `(expr)`, a signed term, a term or an
/// identifier (column-constraint grammar of parse.y).
fn parse_clause(toks: &[Tok]) -> Expr {
    match toks.first() {
        Some(Tok::Punct('(')) => {
            let mut p = Parser { toks, at: 0 };
            p.unary(0)
        }
        Some(Tok::Punct('-')) => Expr::Neg(Box::new(term(toks.get(1), false))),
        Some(Tok::Punct('+')) => term(toks.get(1), false),
        t => term(t, true),
    }
}

/// One literal token; `id_is_text`: a bare or quoted identifier is the
/// text of its name (true outside parentheses).
fn term(t: Option<&Tok>, id_is_text: bool) -> Expr {
    match t {
        Some(Tok::Num(n)) => number(n),
        Some(Tok::Str(s)) => Expr::Str(s.clone()),
        Some(Tok::Blob(b)) => Expr::Blob(b.clone()),
        Some(Tok::Quoted(s)) if id_is_text => Expr::Str(s.clone()),
        Some(w @ Tok::Word(s)) => {
            if kw(Some(w), "NULL") {
                Expr::Null
            } else if kw(Some(w), "TRUE") || kw(Some(w), "FALSE") {
                Expr::Bool(kw(Some(w), "TRUE"))
            } else if id_is_text && !s.to_ascii_uppercase().starts_with("CURRENT_") {
                Expr::Str(s.clone())
            } else {
                Expr::Other
            }
        }
        _ => Expr::Other,
    }
}

fn number(n: &str) -> Expr {
    let hex = n.len() > 2 && (n.starts_with("0x") || n.starts_with("0X"));
    let text: String = n.chars().filter(|&c| c != '_').collect();
    let int = hex || text.bytes().all(|b| b.is_ascii_digit());
    Expr::Num { text, int }
}

struct Parser<'t> {
    toks: &'t [Tok],
    at: usize,
}

impl<'t> Parser<'t> {
    fn peek(&self) -> Option<&'t Tok> {
        self.toks.get(self.at)
    }

    /// A unary expression, then any `COLLATE name` (which does not change
    /// the value); anything else following makes the whole `Other`.
    fn unary(&mut self, depth: usize) -> Expr {
        if depth > MAX_DEPTH {
            return Expr::Other;
        }
        let e = match self.peek() {
            Some(Tok::Punct('-')) => {
                self.at += 1;
                Expr::Neg(Box::new(self.unary(depth + 1)))
            }
            Some(Tok::Punct('+')) => {
                self.at += 1;
                self.unary(depth + 1)
            }
            Some(Tok::Punct('(')) => {
                self.at += 1;
                let e = self.unary(depth + 1);
                if self.peek() != Some(&Tok::Punct(')')) {
                    return Expr::Other;
                }
                self.at += 1;
                e
            }
            t if kw(t, "CAST") => self.cast(depth),
            t => {
                let e = term(t, false);
                self.at += 1;
                e
            }
        };
        while kw(self.peek(), "COLLATE") {
            self.at += 2;
        }
        match self.peek() {
            None | Some(Tok::Punct(')')) | Some(Tok::Word(_)) => e,
            Some(_) => Expr::Other,
        }
    }

    fn cast(&mut self, depth: usize) -> Expr {
        self.at += 1;
        if self.peek() != Some(&Tok::Punct('(')) {
            return Expr::Other;
        }
        self.at += 1;
        let e = self.unary(depth + 1);
        if !kw(self.peek(), "AS") {
            return Expr::Other;
        }
        self.at += 1;
        // The type name, with its own parentheses (`DECIMAL(10,2)`).
        let mut ty = Vec::new();
        let mut depth = 0usize;
        loop {
            match self.peek() {
                None => return Expr::Other,
                Some(Tok::Punct(')')) if depth == 0 => break,
                Some(Tok::Punct('(')) => depth += 1,
                Some(Tok::Punct(')')) => depth -= 1,
                Some(Tok::Word(w)) if depth == 0 => ty.push(w.as_str()),
                Some(_) => {}
            }
            self.at += 1;
        }
        self.at += 1;
        Expr::Cast(Box::new(e), Affinity::of(&ty.join(" ")))
    }
}

/// `sqlite3ValueFromExpr`: `None` when SQLite has no value (reads NULL).
fn eval(e: &Expr, aff: Affinity, depth: usize) -> Option<Mem> {
    if depth > MAX_DEPTH {
        return None;
    }
    Some(match e {
        Expr::Cast(inner, to) => {
            let v = eval(inner, *to, depth + 1)?;
            apply_affinity(cast(v, *to), aff)
        }
        // A negated number literal is read in one step (so that
        // -9223372036854775808 stays an integer), except a hex literal
        // too large for 32 bits.
        Expr::Neg(inner) => match &**inner {
            Expr::Num { text, int } if !is_hex(text) || int32(text).is_some() => {
                literal(text, *int, true, aff)
            }
            inner => {
                let v = numerify(eval(inner, aff, depth + 1)?);
                let v = match v {
                    Mem::Real(f) => Mem::Real(-f),
                    Mem::Int(i64::MIN) => Mem::Real(-(i64::MIN as f64)),
                    Mem::Int(i) => Mem::Int(-i),
                    other => other,
                };
                apply_affinity(v, aff)
            }
        },
        Expr::Num { text, int } => literal(text, *int, false, aff),
        Expr::Str(s) => apply_affinity(Mem::Text(s.clone()), aff),
        Expr::Null => Mem::Null,
        Expr::Blob(b) => Mem::Blob(b.clone()),
        Expr::Bool(b) => apply_affinity(Mem::Int(i64::from(*b)), aff),
        Expr::Other => return None,
    })
}

fn is_hex(t: &str) -> bool {
    t.starts_with("0x") || t.starts_with("0X")
}

/// `sqlite3GetInt32` on a literal token: decimal or hex fitting in 31 bits.
fn int32(t: &str) -> Option<i64> {
    let v = if is_hex(t) {
        let h = t[2..].trim_start_matches('0');
        if h.len() > 8 {
            return None;
        }
        i64::from_str_radix(if h.is_empty() { "0" } else { h }, 16).ok()?
    } else {
        let d = t.trim_start_matches('0');
        if d.len() > 10 {
            return None;
        }
        if d.is_empty() {
            0
        } else {
            d.parse().ok()?
        }
    };
    (v <= i64::from(i32::MAX)).then_some(v)
}

/// `sqlite3DecOrHexToI64` on an unsigned literal token.
fn dec_or_hex(t: &str) -> Option<i64> {
    if is_hex(t) {
        let h = t[2..].trim_start_matches('0');
        if h.len() > 16 {
            return None;
        }
        return u64::from_str_radix(if h.is_empty() { "0" } else { h }, 16)
            .ok()
            .map(|u| u as i64);
    }
    t.parse::<i64>().ok()
}

/// A number literal token (optionally negated) under affinity `aff`.
fn literal(text: &str, int: bool, neg: bool, aff: Affinity) -> Mem {
    let sign = if neg { -1 } else { 1 };
    if int {
        if let Some(v) = int32(text).or_else(|| dec_or_hex(text)) {
            return apply_affinity(Mem::Int(v.wrapping_mul(sign)), aff);
        }
    }
    let s = if neg {
        format!("-{text}")
    } else {
        text.to_owned()
    };
    match aff {
        // Under no affinity a float literal is its value as a real (even
        // when integral, and -0.0 stays negative); an integer literal too
        // large for 64 bits is converted as NUMERIC.
        Affinity::Blob if int => apply_affinity(Mem::Text(s), Affinity::Numeric),
        Affinity::Blob => Mem::Real(atof(&s).0),
        aff => apply_affinity(Mem::Text(s), aff),
    }
}

/// `applyAffinity`.
fn apply_affinity(v: Mem, aff: Affinity) -> Mem {
    match aff {
        Affinity::Numeric | Affinity::Integer | Affinity::Real => match v {
            Mem::Real(f) => integer_affinity(f),
            Mem::Text(s) => numeric_text(&s).unwrap_or(Mem::Text(s)),
            v => v,
        },
        Affinity::Text => match v {
            Mem::Int(i) => Mem::Text(i.to_string()),
            Mem::Real(f) => Mem::Text(real_text(f)),
            v => v,
        },
        Affinity::Blob => v,
    }
}

/// `sqlite3VdbeIntegerAffinity`: a real that is exactly an integer
/// strictly inside the i64 range becomes that integer.
fn integer_affinity(f: f64) -> Mem {
    let ix = f as i64; // saturating, like doubleToInt64
    if f == ix as f64 && ix > i64::MIN && ix < i64::MAX {
        Mem::Int(ix)
    } else {
        Mem::Real(f)
    }
}

/// `applyNumericAffinity(.., 1)`: text that is entirely a number becomes
/// that number (an integer when it is one).
fn numeric_text(s: &str) -> Option<Mem> {
    let (r, kind) = atof(s);
    if kind <= 0 {
        return None;
    }
    if kind == 1 {
        if let (i, 0) = atoi64(s) {
            return Some(Mem::Int(i));
        }
    }
    Some(integer_affinity(r))
}

/// `sqlite3VdbeMemNumerify` (text and blobs by their numeric prefix).
fn numerify(v: Mem) -> Mem {
    let s = match v {
        Mem::Text(s) => s,
        Mem::Blob(b) => String::from_utf8_lossy(&b).into_owned(),
        v => return v,
    };
    let (r, kind) = atof(&s);
    let (ix, rc) = atoi64(&s);
    if (kind == 0 || kind == 1) && rc <= 1 {
        return Mem::Int(ix);
    }
    let ri = r as i64;
    if real_same_as_int(r, ri) {
        Mem::Int(ri)
    } else {
        Mem::Real(r)
    }
}

/// `sqlite3VdbeMemCast` to a CAST's affinity.
fn cast(v: Mem, to: Affinity) -> Mem {
    if v == Mem::Null {
        return v;
    }
    match to {
        Affinity::Blob => match apply_affinity(v, Affinity::Text) {
            Mem::Text(s) => Mem::Blob(s.into_bytes()),
            v => v,
        },
        Affinity::Numeric => numerify(v),
        Affinity::Integer => Mem::Int(match v {
            Mem::Int(i) => i,
            Mem::Real(f) => f as i64,
            Mem::Text(s) => atoi64(&s).0,
            Mem::Blob(b) => atoi64(&String::from_utf8_lossy(&b)).0,
            Mem::Null => 0,
        }),
        Affinity::Real => Mem::Real(match v {
            Mem::Int(i) => i as f64,
            Mem::Real(f) => f,
            Mem::Text(s) => atof(&s).0,
            Mem::Blob(b) => atof(&String::from_utf8_lossy(&b)).0,
            Mem::Null => 0.0,
        }),
        Affinity::Text => match v {
            Mem::Blob(b) => Mem::Text(String::from_utf8_lossy(&b).into_owned()),
            v => apply_affinity(v, Affinity::Text),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::sqlite::sql::tokenize;
    use serde_json::json;

    fn d(sql: &str, aff: Affinity) -> Value {
        default_value(&tokenize(sql).unwrap(), aff)
    }

    #[test]
    fn literals_and_affinity() {
        use Affinity::*;
        assert_eq!(d("'it''s'", Blob), json!("it's"));
        assert_eq!(d("abc", Integer), json!("abc"));
        assert_eq!(d("\"true\"", Blob), json!("true"));
        assert_eq!(d("true", Text), json!("1"));
        assert_eq!(d("-9223372036854775808", Blob), json!(i64::MIN));
        assert_eq!(d("9223372036854775808", Numeric), json!(-(i64::MIN as f64)));
        assert_eq!(d("0xFFFFFFFFFFFFFFFF", Blob), json!(-1));
        assert_eq!(d("1e3", Text), json!("1e3"));
        assert_eq!(d("1e3", Blob), json!(1000.0));
        assert_eq!(d("1e3", Numeric), json!(1000));
        assert_eq!(d("5", Real), json!(5.0));
        assert_eq!(d("'7'", Integer), json!(7));
        assert_eq!(d("' 7 '", Numeric), json!(7));
        assert_eq!(d("'7'", Blob), json!("7"));
        assert_eq!(d("X'0aFF'", Integer), json!({"$blob": "0aff"}));
        assert_eq!(d("(-(-5))", Text), json!("5"));
        assert_eq!(d("(-'abc')", Blob), json!(0));
        assert_eq!(d("(1+2)", Blob), Value::Null);
        assert_eq!(d("CURRENT_TIME", Text), Value::Null);
        assert_eq!(d("(CAST('5' AS INTEGER))", Text), json!("5"));
        assert_eq!(d(&"(".repeat(500), Blob), Value::Null);
    }
}
