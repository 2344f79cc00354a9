//! One change of the stream as the fold uses it ([`Lifted`]), read from a
//! `Semantic` record's JSON without building `serde_json::Value` trees.
//!
//! The record format is the change log's ([`SemanticEvent`], unchanged);
//! [`parse_record`] reads the same records the same way (a record that
//! would not parse as a [`SemanticEvent`] is unreadable here too), but
//! only parses the rows of changes of the file being replayed, straight
//! into the compact [`Row`] form, with the key parsed once and the
//! collection and VM names shared.
use std::fmt;
use std::sync::Arc;

use changelog::Hlc;
use introspection::lift::SemanticEvent;
use introspection::semantic::{Format, Op, SemanticChange};
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::row::{Interner, Name, Row, RowSeed};
use super::state::Key;

/// One change of a file, in the fold's form.
///
/// Laid out by hand (`repr(C)`): what the fold reads of every change comes
/// first, in one cache line, and the row it sets (read later, by key, as
/// the state's row) after it, on lines of its own. A fold streams through
/// every change; in the order the compiler chose, that was two lines of
/// each, not one.
#[derive(Clone, Debug, PartialEq)]
#[repr(C)]
pub struct Lifted {
    pub collection: Arc<str>,
    pub key: Key,
    /// Boxed: the fold reads it once, in stream order, while the change
    /// itself is read again (as the row it set) in any order; kept out of
    /// the change, it leaves the stream smaller (inserts have none).
    pub before: Option<Box<Row>>,
    pub op: Op,
    pub format: Format,
    pub vm: Arc<str>,
    /// The barrier it was lifted at.
    pub seq: u64,
    pub ts_ns: u64,
    /// The barrier's HLC stamp (the legacy stamp of `ts_ns` for changes
    /// recorded before stamps): the order VMs merge in.
    pub hlc: Hlc,
    pub after: Option<Row>,
}

// The fold's part of a change is its first cache line.
const _: () = assert!(std::mem::offset_of!(Lifted, format) < 64);

impl From<&SemanticChange> for Lifted {
    fn from(c: &SemanticChange) -> Lifted {
        Lifted {
            vm: c.vm.as_str().into(),
            seq: c.seq,
            ts_ns: c.ts_ns,
            hlc: c.hlc.unwrap_or_else(|| Hlc::legacy(c.ts_ns)),
            format: c.format,
            collection: c.collection.as_str().into(),
            key: Key::parse(&c.key),
            op: c.op,
            before: c.before.clone().map(|v| Box::new(Row::from_value(v))),
            after: c.after.clone().map(Row::from_value),
        }
    }
}

/// What one record holds for the file being read.
// One record at a time is read, and its change moves on into the stream:
// boxing it would cost an allocation per change for nothing.
#[allow(clippy::large_enum_variant)]
pub enum Record {
    Change(Lifted),
    /// A decode error of the file: its format and barrier.
    DecodeError(Format, u64),
    /// Another file's event (or a change of it).
    Other,
    /// Not a semantic event.
    Unreadable,
}

/// A record's members. Read in one pass: the rows of a change of the file
/// being read are parsed where they stand, those of other files only
/// checked (the log writes `file` before the rows; were it after them,
/// they are kept as raw text and parsed once it is known).
#[derive(Default)]
struct Fields<'a> {
    event: Option<Name<'a>>,
    vm: Option<Name<'a>>,
    seq: Option<u64>,
    ts_ns: Option<u64>,
    hlc: Option<Hlc>,
    file: Option<Name<'a>>,
    format: Option<Format>,
    collection: Option<Name<'a>>,
    key: Option<Name<'a>>,
    op: Option<Op>,
    before: Option<Rows<'a>>,
    after: Option<Rows<'a>>,
}

/// A change's row as read: parsed (`None`: `null`), or its text.
enum Rows<'a> {
    Parsed(Option<Row>),
    Raw(&'a RawValue),
}

/// Reads [`Fields`] for `file`, with the stream's shared names.
struct FieldsSeed<'s, 'i> {
    file: &'s str,
    rows: &'i mut Interner,
}

impl<'de> DeserializeSeed<'de> for FieldsSeed<'_, '_> {
    type Value = Fields<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Fields<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FieldsSeed<'_, '_> {
    type Value = Fields<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a semantic event")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        // As a derived `Deserialize` reads it: unknown members are skipped,
        // a repeated one is an error, `null` is an absent value.
        fn set<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
            slot: &mut Option<T>,
            name: &'static str,
            map: &mut A,
        ) -> Result<(), A::Error> {
            if slot.is_some() {
                return Err(de::Error::duplicate_field(name));
            }
            *slot = map.next_value::<Option<T>>()?;
            Ok(())
        }
        let mut f = Fields::default();
        while let Some(name) = map.next_key::<Name<'de>>()? {
            let ours = f.file.as_deref() == Some(self.file) && f.event.as_deref() == Some("change");
            match &*name {
                "event" => set(&mut f.event, "event", &mut map)?,
                "vm" => set(&mut f.vm, "vm", &mut map)?,
                "seq" => set(&mut f.seq, "seq", &mut map)?,
                "ts_ns" => set(&mut f.ts_ns, "ts_ns", &mut map)?,
                "hlc" => set(&mut f.hlc, "hlc", &mut map)?,
                "file" => set(&mut f.file, "file", &mut map)?,
                "format" => set(&mut f.format, "format", &mut map)?,
                "collection" => set(&mut f.collection, "collection", &mut map)?,
                "key" => set(&mut f.key, "key", &mut map)?,
                "op" => set(&mut f.op, "op", &mut map)?,
                "before" => read_row(&mut f.before, "before", ours, self.rows, &mut map)?,
                "after" => read_row(&mut f.after, "after", ours, self.rows, &mut map)?,
                _ => {
                    map.next_value::<de::IgnoredAny>()?;
                }
            }
        }
        Ok(f)
    }
}

/// Reads a change's row into `slot`: parsed when the change is of the
/// file being read (`ours`), else only checked.
fn read_row<'de, A: MapAccess<'de>>(
    slot: &mut Option<Rows<'de>>,
    name: &'static str,
    ours: bool,
    rows: &mut Interner,
    map: &mut A,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::duplicate_field(name));
    }
    *slot = Some(if ours {
        Rows::Parsed(map.next_value_seed(OptionRow(rows))?)
    } else {
        Rows::Raw(map.next_value::<&RawValue>()?)
    });
    Ok(())
}

/// Names shared across a stream's changes.
#[derive(Default)]
pub struct Shared {
    rows: Interner,
    names: Vec<Arc<str>>,
}

impl Shared {
    fn name(&mut self, s: &str) -> Arc<str> {
        if let Some(n) = self.names.iter().rev().find(|n| ***n == *s) {
            return n.clone();
        }
        if self.names.len() == 64 {
            self.names.remove(0);
        }
        let n: Arc<str> = s.into();
        self.names.push(n.clone());
        n
    }
}

/// Deserializes an optional [`Row`] (`null`: none) straight from JSON.
struct OptionRow<'i>(&'i mut Interner);

impl<'de> DeserializeSeed<'de> for OptionRow<'_> {
    type Value = Option<Row>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<Row>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> Visitor<'de> for OptionRow<'_> {
    type Value = Option<Row>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_none<E: de::Error>(self) -> Result<Option<Row>, E> {
        Ok(None)
    }
    fn visit_unit<E: de::Error>(self) -> Result<Option<Row>, E> {
        Ok(None)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Option<Row>, D::Error> {
        RowSeed(self.0).deserialize(d).map(Some)
    }
}

/// Reads one `Semantic` record for `file`.
pub fn parse_record(json: &str, file: &str, shared: &mut Shared) -> Record {
    let mut de = serde_json::Deserializer::from_str(json);
    let seed = FieldsSeed {
        file,
        rows: &mut shared.rows,
    };
    let Ok(f) = seed.deserialize(&mut de).and_then(|f| de.end().map(|()| f)) else {
        return Record::Unreadable;
    };
    match f.event.as_deref() {
        Some("change") => {}
        // Rare: read as the log's own type, which says what it requires.
        Some("decode_error") => {
            return match serde_json::from_str::<SemanticEvent>(json) {
                Ok(SemanticEvent::DecodeError(e)) if e.file == file => {
                    Record::DecodeError(e.format, e.seq)
                }
                Ok(_) => Record::Other,
                Err(_) => Record::Unreadable,
            }
        }
        _ => return Record::Unreadable,
    }
    let (Some(vm), Some(seq), Some(ts_ns), Some(f_file), Some(format)) =
        (f.vm, f.seq, f.ts_ns, f.file, f.format)
    else {
        return Record::Unreadable;
    };
    let (Some(collection), Some(key), Some(op)) = (f.collection, f.key, f.op) else {
        return Record::Unreadable;
    };
    if *f_file != *file {
        // Rows of other files are not parsed: their text was checked by
        // reading it as raw values.
        return Record::Other;
    }
    let mut row = |read: Option<Rows>| match read {
        Some(Rows::Parsed(row)) => Ok(row),
        // `null` is an absent row, as `Option<Value>` reads it.
        Some(Rows::Raw(r)) if r.get() != "null" => Row::parse(r.get(), &mut shared.rows).map(Some),
        _ => Ok(None),
    };
    let (Ok(before), Ok(after)) = (row(f.before), row(f.after)) else {
        return Record::Unreadable;
    };
    Record::Change(Lifted {
        vm: shared.name(&vm),
        seq,
        ts_ns,
        hlc: f.hlc.unwrap_or_else(|| Hlc::legacy(ts_ns)),
        format,
        collection: shared.name(&collection),
        key: Key::parse(&key),
        op,
        before: before.map(Box::new),
        after,
    })
}
