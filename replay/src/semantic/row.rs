//! The compact form of one row (record, key-value pair) the fold holds.
//!
//! A change log row is a JSON value, almost always an object of scalars
//! (an SQLite row: column -> value). As a `serde_json::Value` tree each
//! row is a map node plus one allocation per member name, scattered over
//! the heap: reading 100k of them back out costs more than SQLite takes to
//! store them. A [`Row::Object`] instead keeps its member names sorted in a
//! list shared by every row of the same shape (interned while parsing, see
//! [`Interner`]) and its values in one contiguous slice.
//!
//! The form is canonical: every JSON object is a [`Row::Object`] (members
//! sorted by name, a repeated name keeps its last value, as
//! `serde_json::Value` does) and anything else a [`Row::Other`], so two
//! rows are equal exactly when their JSON values are, and
//! [`Row::canonical_json`] writes the same bytes as
//! [`super::state::canonical_json`] of [`Row::to_value`].
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;
use serde_json::{Map, Number, Value};

use super::state::canonical_json;

/// Member names of a row shape, sorted.
pub type Names = Arc<[Box<str>]>;

#[derive(Clone, Debug, PartialEq)]
pub enum Row {
    /// A JSON object: `cells[i]` is the member named `names[i]`.
    Object { names: Names, cells: Box<[Value]> },
    /// Any other JSON value.
    Other(Value),
}

/// The row of a change without one (`null`).
pub static NULL: Row = Row::Other(Value::Null);

impl Row {
    /// The canonical form of `value` (see the module doc).
    pub fn from_value(value: Value) -> Row {
        match value {
            Value::Object(map) => {
                let members: Vec<(String, Value)> = map.into_iter().collect();
                object(members.into_iter().map(|(n, v)| (Cow::Owned(n), v)).collect(), None)
            }
            other => Row::Other(other),
        }
    }

    /// The row as a JSON value.
    pub fn to_value(&self) -> Value {
        match self {
            Row::Object { names, cells } => Value::Object(
                names
                    .iter()
                    .zip(cells.iter())
                    .map(|(n, v)| (n.to_string(), v.clone()))
                    .collect::<Map<String, Value>>(),
            ),
            Row::Other(v) => v.clone(),
        }
    }

    /// The member `name` of an object row.
    pub fn get(&self, name: &str) -> Option<&Value> {
        match self {
            Row::Object { names, cells } => names
                .binary_search_by(|n| (**n).cmp(name))
                .ok()
                .map(|i| &cells[i]),
            Row::Other(v) => v.get(name),
        }
    }

    /// The member `name` of an object row, as a string.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        self.get(name)?.as_str()
    }

    /// The members of an object row, by name (none for other rows).
    pub fn members(&self) -> impl Iterator<Item = (&str, &Value)> {
        let (names, cells): (&[Box<str>], &[Value]) = match self {
            Row::Object { names, cells } => (names, cells),
            Row::Other(_) => (&[], &[]),
        };
        names.iter().map(|n| &**n).zip(cells.iter())
    }

    /// Writes the row as canonical JSON (see [`canonical_json`]).
    pub fn canonical_json(&self, out: &mut Vec<u8>) {
        match self {
            Row::Object { names, cells } => {
                out.push(b'{');
                for (i, (n, v)) in names.iter().zip(cells.iter()).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    // Writing JSON into a Vec cannot fail.
                    let _ = serde_json::to_writer(&mut *out, n);
                    out.push(b':');
                    canonical_json(v, out);
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
        let members = keep
            .iter()
            .map(|(name, default)| {
                let v = self.get(name).unwrap_or(default).clone();
                (Cow::Owned(name.to_string()), v)
            })
            .collect();
        *self = object(members, None);
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
        match (self, other) {
            (Row::Other(v), _) => v == other,
            (Row::Object { .. }, Value::Object(o)) => {
                self.members().count() == o.len()
                    && self.members().all(|(n, v)| o.get(n) == Some(v))
            }
            _ => false,
        }
    }
}

impl fmt::Display for Row {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_value())
    }
}

/// The canonical object of `members` (any order, names maybe repeated).
fn object(mut members: Vec<(Cow<'_, str>, Value)>, names: Option<&mut Interner>) -> Row {
    if !members.is_sorted_by(|a, b| a.0 < b.0) {
        // Stable: of a repeated name, the last stays last.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        let mut kept: Vec<(Cow<'_, str>, Value)> = Vec::with_capacity(members.len());
        for m in members {
            match kept.last_mut() {
                Some(last) if last.0 == m.0 => *last = m,
                _ => kept.push(m),
            }
        }
        members = kept;
    }
    let shared = match names {
        Some(interner) => interner.intern(members.iter().map(|m| &*m.0)),
        None => members.iter().map(|m| Box::from(&*m.0)).collect(),
    };
    Row::Object {
        names: shared,
        cells: members.into_iter().map(|m| m.1).collect(),
    }
}

/// Shares the name lists of rows of the same shape: a stream's rows come
/// in a few shapes (one per table), often the same as the row before.
#[derive(Default)]
pub struct Interner {
    recent: Vec<Names>,
}

impl Interner {
    /// How many shapes are looked through before a new list is made.
    const KEEP: usize = 32;

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

/// A member name, borrowed from the JSON text when it has no escapes.
struct Name<'de>(Cow<'de, str>);

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
struct RowSeed<'i>(&'i mut Interner);

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
        let mut members: Vec<(Cow<'de, str>, Value)> = Vec::with_capacity(8);
        while let Some(Name(name)) = map.next_key()? {
            members.push((name, map.next_value()?));
        }
        Ok(object(members, Some(self.0)))
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
        Ok(Row::Other(Number::from_f64(f).map_or(Value::Null, Value::Number)))
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
