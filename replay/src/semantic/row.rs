//! The compact form of one row (record, key-value pair) the fold holds.
//!
//! A change log row is a JSON value, almost always an object of scalars
//! (an SQLite row: column -> value). As a `serde_json::Value` tree each
//! row is a map node plus one allocation per member name, scattered over
//! the heap: reading 100k of them back out costs more than SQLite takes to
//! store them. A [`Row::Object`] instead keeps its member names sorted in a
//! list shared by every row of the same shape (interned while parsing, see
//! [`Interner`]) and its values encoded in one byte buffer, read in place
//! (text is bound to SQLite straight from it), in the row itself when
//! short (see [`Data`]).
//!
//! The form is canonical: every JSON object is a [`Row::Object`] (members
//! sorted by name, a repeated name keeps its last value, as
//! `serde_json::Value` does) and anything else a [`Row::Other`], so two
//! rows are equal exactly when their canonical JSON is (which is
//! `serde_json::Value` equality, except that `-0.0` and `0.0` differ), and
//! [`Row::canonical_json`] writes the same bytes as
//! [`super::state::canonical_json`] of [`Row::to_value`].
//!
//! # Cell encoding (in memory only, never stored)
//! ```text
//! per member, in name order: tag u8 | payload
//!   0 null | 1 false | 2 true | 3 u64le (non-negative integer)
//!   4 i64le (negative integer) | 5 f64le (other number)
//!   6 u32le len | UTF-8 (string) | 7 u32le len | canonical JSON (array, object)
//! ```
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use serde::de::value::{MapAccessDeserializer, SeqAccessDeserializer};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::data::Data;
use super::state::canonical_json;

/// Member names of a row shape, sorted.
pub type Names = Arc<[Box<str>]>;

/// Aligned to cache lines: the fold and the output read rows in random
/// order, and an unaligned row would straddle one line more (see
/// [`super::data`]).
#[derive(Clone, Debug)]
#[repr(align(64))]
pub enum Row {
    /// A JSON object: member `i` is named `names[i]`; `data` holds the
    /// members' values (see the module doc).
    Object { names: Names, data: Data },
    /// Any other JSON value.
    Other(Value),
}

impl PartialEq for Row {
    fn eq(&self, other: &Row) -> bool {
        match (self, other) {
            (Row::Object { names, data }, Row::Object { names: n, data: d }) => {
                // Rows of one shape share their (interned) name list: the
                // common case is one pointer comparison, not one per name.
                (Arc::ptr_eq(names, n) || names == n) && data == d
            }
            (Row::Other(a), Row::Other(b)) => a == b,
            _ => false,
        }
    }
}

/// The row of a change without one (`null`).
pub static NULL: Row = Row::Other(Value::Null);

/// One member's value, read in place.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Cell<'r> {
    Null,
    Bool(bool),
    U64(u64),
    I64(i64),
    F64(f64),
    Str(&'r str),
    /// An array or object, as canonical JSON.
    Json(&'r str),
}

impl Cell<'_> {
    pub fn to_value(self) -> Value {
        match self {
            Cell::Null => Value::Null,
            Cell::Bool(b) => Value::Bool(b),
            Cell::U64(u) => Value::Number(u.into()),
            Cell::I64(i) => Value::Number(i.into()),
            Cell::F64(f) => Number::from_f64(f).map_or(Value::Null, Value::Number),
            Cell::Str(s) => Value::String(s.to_string()),
            // Written by `encode` from a value: it reads back.
            Cell::Json(j) => serde_json::from_str(j).unwrap_or(Value::Null),
        }
    }

    fn canonical_json(self, out: &mut Vec<u8>) {
        // Writing JSON into a Vec cannot fail.
        let _ = match self {
            Cell::Null => serde_json::to_writer(&mut *out, &()),
            Cell::Bool(b) => serde_json::to_writer(&mut *out, &b),
            Cell::U64(u) => serde_json::to_writer(&mut *out, &u),
            Cell::I64(i) => serde_json::to_writer(&mut *out, &i),
            Cell::F64(f) => serde_json::to_writer(&mut *out, &f),
            Cell::Str(s) => serde_json::to_writer(&mut *out, s),
            Cell::Json(j) => {
                out.extend_from_slice(j.as_bytes());
                Ok(())
            }
        };
    }
}

/// Appends `value` encoded (see the module doc).
fn encode(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => out.push(0),
        Value::Bool(b) => out.push(1 + u8::from(*b)),
        Value::Number(n) => encode_number(n, out),
        Value::String(s) => encode_text(6, s, out),
        other => {
            let mut text = Vec::new();
            canonical_json(other, &mut text);
            encode_text(7, std::str::from_utf8(&text).expect("JSON is UTF-8"), out);
        }
    }
}

fn encode_number(n: &Number, out: &mut Vec<u8>) {
    if let Some(u) = n.as_u64() {
        out.push(3);
        out.extend_from_slice(&u.to_le_bytes());
    } else if let Some(i) = n.as_i64() {
        out.push(4);
        out.extend_from_slice(&i.to_le_bytes());
    } else {
        out.push(5);
        out.extend_from_slice(&n.as_f64().unwrap_or(f64::NAN).to_le_bytes());
    }
}

fn encode_text(tag: u8, s: &str, out: &mut Vec<u8>) {
    out.push(tag);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// The cells of `data`, in order, each with its encoded bytes.
pub struct Cells<'r>(&'r [u8]);

impl<'r> Iterator for Cells<'r> {
    type Item = (Cell<'r>, &'r [u8]);
    // Inlined into the loops that bind or compare cells: a call returns
    // the cell through memory, which costs more than decoding it.
    #[inline(always)]
    fn next(&mut self) -> Option<Self::Item> {
        let (&tag, rest) = self.0.split_first()?;
        let word = |at: usize| -> [u8; 8] { rest[at..at + 8].try_into().expect("8 bytes") };
        let text = || {
            let len = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            // Encoded from a &str by `encode_text`.
            (
                std::str::from_utf8(&rest[4..4 + len]).unwrap_or(""),
                4 + len,
            )
        };
        let (cell, len) = match tag {
            0 => (Cell::Null, 0),
            1 | 2 => (Cell::Bool(tag == 2), 0),
            3 => (Cell::U64(u64::from_le_bytes(word(0))), 8),
            4 => (Cell::I64(i64::from_le_bytes(word(0))), 8),
            5 => (Cell::F64(f64::from_le_bytes(word(0))), 8),
            6 => {
                let (s, n) = text();
                (Cell::Str(s), n)
            }
            _ => {
                let (s, n) = text();
                (Cell::Json(s), n)
            }
        };
        let (bytes, next) = self.0.split_at(1 + len);
        self.0 = next;
        Some((cell, bytes))
    }
}

impl Row {
    /// The canonical form of `value` (see the module doc).
    pub fn from_value(value: Value) -> Row {
        match value {
            Value::Object(map) => {
                let mut members = Members::default();
                for (name, v) in &map {
                    members.push(Cow::Borrowed(name.as_str()), |out| encode(v, out));
                }
                members.finish(None)
            }
            other => Row::Other(other),
        }
    }

    /// The row as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Row::Object { .. } => Value::Object(
                self.members()
                    .map(|(n, c)| (n.to_string(), c.to_value()))
                    .collect::<Map<String, Value>>(),
            ),
            Row::Other(v) => v.clone(),
        }
    }

    /// The cells of an object row, in name order (none for other rows).
    pub fn cells(&self) -> Cells<'_> {
        match self {
            Row::Object { data, .. } => Cells(data),
            Row::Other(_) => Cells(&[]),
        }
    }

    /// The members of an object row, by name.
    pub fn members(&self) -> impl Iterator<Item = (&str, Cell<'_>)> {
        self.names()
            .iter()
            .map(|n| &**n)
            .zip(self.cells().map(|c| c.0))
    }

    fn names(&self) -> &[Box<str>] {
        match self {
            Row::Object { names, .. } => names,
            Row::Other(_) => &[],
        }
    }

    fn member(&self, name: &str) -> Option<(Cell<'_>, &[u8])> {
        let i = self.names().binary_search_by(|n| (**n).cmp(name)).ok()?;
        self.cells().nth(i)
    }

    /// The member `name` of an object row.
    pub fn get(&self, name: &str) -> Option<Value> {
        match self {
            Row::Object { .. } => self.member(name).map(|(c, _)| c.to_value()),
            Row::Other(v) => v.get(name).cloned(),
        }
    }

    /// The member `name` of an object row, as a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        match self {
            Row::Object { .. } => match self.member(name)?.0 {
                Cell::Str(s) => Some(s),
                _ => None,
            },
            Row::Other(v) => v.get(name)?.as_str(),
        }
    }

    /// Whether every member of `self` that `other` also has is equal there
    /// (both objects).
    pub fn agrees_with(&self, other: &Row) -> bool {
        matches!((self, other), (Row::Object { .. }, Row::Object { .. }))
            && self
                .names()
                .iter()
                .zip(self.cells())
                .all(|(n, (_, bytes))| other.member(n).is_none_or(|(_, b)| b == bytes))
    }

    /// Writes the row as canonical JSON (see [`canonical_json`]).
    pub fn canonical_json(&self, out: &mut Vec<u8>) {
        match self {
            Row::Object { .. } => {
                out.push(b'{');
                for (i, (n, c)) in self.members().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Writing JSON into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, n);
                    out.push(b':');
                    c.canonical_json(out);
                }
                out.push(b'}');
            }
            Row::Other(v) => canonical_json(v, out),
        }
    }

    /// Keeps only the members named in `keep` (name, default), adding a
    /// missing one as its default: the row as a table with those columns
    /// reads it. Other rows stay as they are.
    pub fn reshape(&mut self, keep: &[(&str, &Value)]) {
        let Row::Object { .. } = self else { return };
        let mut members = Members::default();
        for (name, default) in keep {
            match self.member(name) {
                Some((_, bytes)) => members.push(Cow::Borrowed(name), |out| {
                    out.extend_from_slice(bytes);
                }),
                None => members.push(Cow::Borrowed(name), |out| encode(default, out)),
            }
        }
        *self = members.finish(None);
    }

    /// Parses one JSON value (a change's `before` or `after`).
    pub fn parse(json: &str, names: &mut Interner) -> serde_json::Result<Row> {
        let mut de = serde_json::Deserializer::from_str(json);
        let row = RowSeed(names).deserialize(&mut de)?;
        de.end()?;
        Ok(row)
    }
}

impl PartialEq<Value> for Row {
    fn eq(&self, other: &Value) -> bool {
        self.to_value() == *other
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// An object's members as they are read: names, and their encoded values
/// in one buffer.
#[derive(Default)]
struct Members<'n> {
    names: Vec<(Cow<'n, str>, Range<usize>)>,
    data: Vec<u8>,
}

impl<'n> Members<'n> {
    fn push(&mut self, name: Cow<'n, str>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.data.len();
        write(&mut self.data);
        self.names.push((name, start..self.data.len()));
    }

    /// The canonical object (members sorted, of a repeated name the last).
    fn finish(mut self, interner: Option<&mut Interner>) -> Row {
        if !self.names.is_sorted_by(|a, b| a.0 < b.0) {
            // Stable: of a repeated name, the last stays last.
            self.names.sort_by(|a, b| a.0.cmp(&b.0));
            let mut kept: Vec<(Cow<'n, str>, Range<usize>)> = Vec::new();
            for m in self.names {
                match kept.last_mut() {
                    Some(last) if last.0 == m.0 => *last = m,
                    _ => kept.push(m),
                }
            }
            let mut data = Vec::with_capacity(self.data.len());
            for (_, r) in &mut kept {
                let start = data.len();
                data.extend_from_slice(&self.data[r.clone()]);
                *r = start..data.len();
            }
            self.names = kept;
            self.data = data;
        }
        let names = self.names.iter().map(|m| &*m.0);
        let Some(interner) = interner else {
            return Row::Object {
                names: names.map(Box::from).collect(),
                data: Data::from(&self.data[..]),
            };
        };
        let row = Row::Object {
            names: interner.intern(names),
            data: Data::from(&self.data[..]),
        };
        self.data.clear();
        interner.spare = Members {
            names: recycle(self.names),
            data: self.data,
        };
        row
    }
}

/// `v`'s allocation, emptied, for names of another lifetime (collecting a
/// vector's items into a vector of a type of the same layout reuses its
/// allocation; none is left to convert).
fn recycle<'b>(mut v: Vec<(Cow<'_, str>, Range<usize>)>) -> Vec<(Cow<'b, str>, Range<usize>)> {
    v.clear();
    v.into_iter().map(|_| unreachable!("emptied")).collect()
}

/// Shares the name lists of rows of the same shape: a stream's rows come
/// in a few shapes (one per table), often the same as the row before.
#[derive(Default)]
pub struct Interner {
    recent: Vec<Names>,
    /// The buffers the last object was read with, for the next one: two
    /// allocations per stream, not two per row.
    spare: Members<'static>,
}

impl Interner {
    /// How many shapes are looked through before a new list is made.
    const KEEP: usize = 32;

    /// Empty buffers to read an object's members into.
    fn members<'n>(&mut self) -> Members<'n> {
        let spare = std::mem::take(&mut self.spare);
        Members {
            names: recycle(spare.names),
            data: spare.data,
        }
    }

    fn intern<'n>(&mut self, names: impl Iterator<Item = &'n str> + Clone) -> Names {
        let same = |shape: &Names| shape.iter().map(|n| &**n).eq(names.clone());
        if let Some(i) = self.recent.iter().rposition(same) {
            let shape = self.recent[i].clone();
            if i + 1 != self.recent.len() {
                let moved = self.recent.remove(i);
                self.recent.push(moved);
            }
            return shape;
        }
        let shape: Names = names.map(Box::from).collect();
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push(shape.clone());
        shape
    }
}

/// A member name (or any string), borrowed from the JSON text when it has
/// no escapes (serde's own `Cow<str>` always copies).
pub(super) struct Name<'de>(pub(super) Cow<'de, str>);

impl std::ops::Deref for Name<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Name<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E: de::Error>(self, s: &'de str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Borrowed(s)))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s.to_string())))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Name<'de>, E> {
                Ok(Name(Cow::Owned(s)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Deserializes a [`Row`] straight from JSON, without a `Value` tree for
/// the object itself; other values are read as `serde_json::Value` reads
/// them.
pub(super) struct RowSeed<'i>(pub(super) &'i mut Interner);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let mut members = self.0.members();
        while let Some(Name(name)) = map.next_key()? {
            let start = members.data.len();
            map.next_value_seed(CellSeed(&mut members.data))?;
            members.names.push((name, start..members.data.len()));
        }
        Ok(members.finish(Some(self.0)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Row, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Value>()? {
            items.push(v);
        }
        Ok(Row::Other(Value::Array(items)))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Row, E> {
        Ok(Row::Other(Value::Bool(b)))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Row, E> {
        Ok(Row::Other(Value::Number(i.into())))
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Row, E> {
        Ok(Row::Other(Value::Number(u.into())))
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<Row, E> {
        Ok(Row::Other(
            Number::from_f64(f).map_or(Value::Null, Value::Number),
        ))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Row, E> {
        Ok(Row::Other(Value::String(s.to_string())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Row, E> {
        Ok(Row::Other(Value::String(s)))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Row, E> {
        Ok(Row::Other(Value::Null))
    }
    fn visit_none<E: de::Error>(self) -> Result<Row, E> {
        Ok(Row::Other(Value::Null))
    }
}

/// Encodes one member's value straight from JSON.
struct CellSeed<'o>(&'o mut Vec<u8>);

impl<'de> DeserializeSeed<'de> for CellSeed<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for CellSeed<'_> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        encode(
            &Value::deserialize(MapAccessDeserializer::new(map))?,
            self.0,
        );
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        encode(
            &Value::deserialize(SeqAccessDeserializer::new(seq))?,
            self.0,
        );
        Ok(())
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<(), E> {
        self.0.push(1 + u8::from(b));
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<(), E> {
        encode_number(&i.into(), self.0);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<(), E> {
        encode_number(&u.into(), self.0);
        Ok(())
    }
    fn visit_f64<E: de::Error>(self, f: f64) -> Result<(), E> {
        match Number::from_f64(f) {
            Some(n) => encode_number(&n, self.0),
            None => self.0.push(0),
        }
        Ok(())
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<(), E> {
        encode_text(6, s, self.0);
        Ok(())
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.0.push(0);
        Ok(())
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.0.push(0);
        Ok(())
    }
}
