//! A tokenizer for the SQL text stored in `sqlite_schema`: identifiers
//! (bare, "double", `back` or [bracket] quoted), string and blob literals,
//! numbers, punctuation; comments and whitespace skipped.

use crate::decode::{bad, DecodeError};

#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Tok {
    Word(String),
    Quoted(String),
    Str(String),
    Num(String),
    Blob(Vec<u8>),
    Punct(char),
}

fn is_word_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii()
}

pub(crate) fn tokenize(sql: &str) -> Result<Vec<Tok>, DecodeError> {
    let cs: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let quoted = |i: &mut usize, close: char| -> Result<String, DecodeError> {
        let mut s = String::new();
        *i += 1;
        loop {
            match cs.get(*i) {
                None => return bad("sqlite: unterminated quote in schema sql"),
                Some(&c) if c == close => {
                    if close != ']' && cs.get(*i + 1) == Some(&close) {
                        s.push(c);
                        *i += 2;
                    } else {
                        *i += 1;
                        return Ok(s);
                    }
                }
                Some(&c) => {
                    s.push(c);
                    *i += 1;
                }
            }
        }
    };
    while let Some(&c) = cs.get(i) {
        let next = cs.get(i + 1).copied();
        if c.is_whitespace() {
            i += 1;
        } else if c == '-' && next == Some('-') {
            while i < cs.len() && cs[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            i += 2;
            while i < cs.len() && !(cs[i] == '*' && cs.get(i + 1) == Some(&'/')) {
                i += 1;
            }
            i += 2;
        } else if (c == 'x' || c == 'X') && next == Some('\'') {
            i += 1;
            let hex = quoted(&mut i, '\'')?;
            let bytes: Option<Vec<u8>> = (0..hex.len() / 2)
                .map(|k| u8::from_str_radix(hex.get(2 * k..2 * k + 2)?, 16).ok())
                .collect();
            out.push(Tok::Blob(bytes.unwrap_or_default()));
        } else if c == '\'' {
            out.push(Tok::Str(quoted(&mut i, '\'')?));
        } else if c == '"' || c == '`' || c == '[' {
            let close = if c == '[' { ']' } else { c };
            out.push(Tok::Quoted(quoted(&mut i, close)?));
        } else if c.is_ascii_digit() || (c == '.' && next.is_some_and(|n| n.is_ascii_digit())) {
            let start = i;
            while let Some(&d) = cs.get(i) {
                let exp_sign = (d == '+' || d == '-') && matches!(cs[i - 1], 'e' | 'E');
                // `_`: digit separators (SQLite 3.46+), dropped by the reader.
                if d.is_ascii_alphanumeric() || d == '.' || d == '_' || exp_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            out.push(Tok::Num(cs[start..i].iter().collect()));
        } else if is_word_char(c) {
            let start = i;
            while i < cs.len() && is_word_char(cs[i]) {
                i += 1;
            }
            out.push(Tok::Word(cs[start..i].iter().collect()));
        } else {
            out.push(Tok::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

pub(crate) fn kw(t: Option<&Tok>, k: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(k))
}

pub(crate) fn ident(t: Option<&Tok>) -> Option<String> {
    match t? {
        Tok::Word(s) | Tok::Quoted(s) | Tok::Str(s) => Some(s.clone()),
        _ => None,
    }
}

/// Index just past the group opened at `toks[i] == '('`.
pub(crate) fn skip_group(toks: &[Tok], mut i: usize) -> usize {
    let mut depth = 0usize;
    while let Some(t) = toks.get(i) {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => {
                depth = depth.saturating_sub(1);
                if depth == 0 {
                    return i + 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    i
}

/// Split `toks[i]` = '(' ... ')' into its comma-separated items; the items
/// and the index after the ')'.
pub(crate) fn split_group(toks: &[Tok], i: usize) -> (Vec<&[Tok]>, usize) {
    if toks.get(i) != Some(&Tok::Punct('(')) {
        return (Vec::new(), i.min(toks.len()));
    }
    let end = skip_group(toks, i);
    let inner = &toks[(i + 1).min(end)..end.saturating_sub(1).max(i + 1)];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (k, t) in inner.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth = depth.saturating_sub(1),
            Tok::Punct(',') if depth == 0 => {
                items.push(&inner[start..k]);
                start = k + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    (items, end)
}
