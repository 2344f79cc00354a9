//! The parser: an iterative RFC 8259 parser (strict like `serde_json`:
//! UTF-8, no trailing commas, no comments, no lone surrogates; a duplicate
//! member keeps its last value) into [`Node`]s.
//!
//! Built for throughput on large documents: the input is validated as
//! UTF-8 once up front, so strings, member names and numbers without
//! escapes are borrowed from it (no allocation, no per-string validation);
//! children are gathered on two shared stacks and moved into one exactly
//! sized vector per container when it closes; an object's members are
//! sorted only when they were not written in order; open containers are
//! kept on an explicit stack (no recursion, so no stack overflow on deep
//! input).

use std::borrow::Cow;

use super::node::{Members, Node, MAX_DEPTH, NODE_COST};
use crate::decode::{bad, Budget, DecodeError};

/// An open container while parsing. Its children so far sit at the end of
/// the parser's shared element or member stack, from the index given, and
/// move into one exactly sized vector when it closes (rather than each
/// container growing its own vector by doubling).
enum Frame<'a> {
    Arr(usize),
    /// Where its members start, and the name of the member being parsed.
    Obj(usize, Cow<'a, str>),
}

struct Parser<'a> {
    /// The input, validated as UTF-8 (`s.as_bytes() == b`).
    s: &'a str,
    b: &'a [u8],
    i: usize,
}

/// Bytes that end the plain run of a string: quote, backslash, controls.
const fn string_stops() -> [bool; 256] {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = true;
        c += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
}
static STRING_STOP: [bool; 256] = string_stops();

impl<'a> Parser<'a> {
    #[inline]
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    #[cold]
    fn err<T>(&self, what: &str) -> Result<T, DecodeError> {
        // The byte is shown as a char only when it starts one.
        match self.s.get(self.i..).and_then(|r| r.chars().next()) {
            Some(c) => bad(format!("json: {what} at byte {} (found {c:?})", self.i)),
            None if self.i < self.b.len() => bad(format!(
                "json: {what} at byte {} (found byte {:#04x})",
                self.i, self.b[self.i]
            )),
            None => bad(format!("json: {what} at byte {} (end of input)", self.i)),
        }
    }

    #[inline]
    fn eat(&mut self, c: u8) -> bool {
        self.ws();
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn literal(&mut self, word: &[u8], node: Node<'a>) -> Result<Node<'a>, DecodeError> {
        if self.b[self.i..].starts_with(word) {
            self.i += word.len();
            Ok(node)
        } else {
            self.err("invalid literal")
        }
    }

    /// Digits from `self.i`; returns how many.
    #[inline]
    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
        self.i - s
    }

    fn number(&mut self) -> Result<Node<'a>, DecodeError> {
        let start = self.i;
        let neg = self.b.get(self.i) == Some(&b'-');
        if neg {
            self.i += 1;
        }
        let int_start = self.i;
        match self.b.get(self.i) {
            Some(b'0') => self.i += 1,
            Some(b'1'..=b'9') => {
                self.digits();
            }
            _ => return self.err("invalid number"),
        }
        let int_end = self.i;
        let mut plain = true;
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            plain = false;
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        if let Some(b'e' | b'E') = self.b.get(self.i) {
            self.i += 1;
            plain = false;
            if let Some(b'+' | b'-') = self.b.get(self.i) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return self.err("invalid number");
            }
        }
        let text = &self.s[start..self.i];
        // Canonical integers within i64 become `Int`; 18 digits never
        // overflow, longer ones go through `parse` (which range-checks).
        if plain && !(neg && &self.b[int_start..int_end] == b"0") {
            let digits = &self.b[int_start..int_end];
            if digits.len() <= 18 {
                let v = digits
                    .iter()
                    .fold(0i64, |v, &d| v * 10 + i64::from(d - b'0'));
                return Ok(Node::Int(if neg { -v } else { v }));
            }
            if let Ok(i) = text.parse::<i64>() {
                return Ok(Node::Int(i));
            }
        }
        Ok(Node::Num(text))
    }

    fn hex4(&mut self) -> Result<u32, DecodeError> {
        // Not `u32::from_str_radix`: it takes a sign, so `\u+123` would pass.
        let h = self
            .b
            .get(self.i..self.i + 4)
            .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
            .map(|h| {
                h.iter()
                    .fold(0, |v, &c| v * 16 + (c as char).to_digit(16).unwrap_or(0))
            });
        match h {
            Some(v) => {
                self.i += 4;
                Ok(v)
            }
            None => self.err("invalid \\u escape"),
        }
    }

    /// Advances over plain string bytes (not quote, backslash or control).
    #[inline]
    fn plain_run(&mut self) {
        while self
            .b
            .get(self.i)
            .is_some_and(|&c| !STRING_STOP[c as usize])
        {
            self.i += 1;
        }
    }

    /// A string; `self.i` is at its opening quote. Borrowed from the input
    /// unless it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, DecodeError> {
        self.i += 1;
        let start = self.i;
        self.plain_run();
        if self.b.get(self.i) == Some(&b'"') {
            self.i += 1;
            // Both ends are at ASCII bytes, so on char boundaries.
            return Ok(Cow::Borrowed(&self.s[start..self.i - 1]));
        }
        let mut out = String::from(&self.s[start..self.i]);
        loop {
            match self.b.get(self.i) {
                Some(b'"') => {
                    self.i += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    let ch = self.escape()?;
                    out.push(ch);
                }
                Some(_) => return self.err("control character in a string"),
                None => return self.err("unterminated string"),
            }
            let run = self.i;
            self.plain_run();
            out.push_str(&self.s[run..self.i]);
        }
    }

    /// One escape; `self.i` is at its backslash.
    fn escape(&mut self) -> Result<char, DecodeError> {
        self.i += 1;
        let c = self.b.get(self.i).copied();
        self.i += 1;
        Ok(match c {
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
        })
    }

    /// A member name and its colon.
    fn key(&mut self) -> Result<Cow<'a, str>, DecodeError> {
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

/// Parse one document (no trailing NULs; not blank). Strings, names and
/// numbers borrow from `data`.
pub(crate) fn parse<'a>(data: &'a [u8], budget: &mut Budget) -> Result<Node<'a>, DecodeError> {
    let s = match std::str::from_utf8(data) {
        Ok(s) => s,
        Err(e) => return bad(format!("json: invalid UTF-8 at byte {}", e.valid_up_to())),
    };
    let mut p = Parser { s, b: data, i: 0 };
    let mut stack: Vec<Frame<'a>> = Vec::new();
    let mut elems: Vec<Node<'a>> = Vec::new();
    let mut members: Vec<(Cow<'a, str>, Node<'a>)> = Vec::new();
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
                        Node::Obj(Members::default())
                    } else {
                        let k = p.key()?;
                        budget.charge(k.len() as u64)?;
                        stack.push(Frame::Obj(members.len(), k));
                        continue 'value;
                    }
                } else if p.eat(b']') {
                    Node::Arr(Vec::new())
                } else {
                    stack.push(Frame::Arr(elems.len()));
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
                Some(Frame::Arr(_)) => {
                    elems.push(node);
                    if p.eat(b',') {
                        continue 'value;
                    }
                    if !p.eat(b']') {
                        return p.err("expected ',' or ']'");
                    }
                }
                Some(Frame::Obj(_, k)) => {
                    members.push((std::mem::take(k), node));
                    if p.eat(b',') {
                        let next = p.key()?;
                        budget.charge(next.len() as u64)?;
                        *k = next;
                        continue 'value;
                    }
                    if !p.eat(b'}') {
                        return p.err("expected ',' or '}'");
                    }
                }
            }
            node = match stack.pop() {
                Some(Frame::Arr(start)) => Node::Arr(elems.drain(start..).collect()),
                Some(Frame::Obj(start, _)) => {
                    Node::Obj(Members::from_parsed(members.drain(start..).collect()))
                }
                None => unreachable!("a frame was just examined"),
            };
        }
    }
}
