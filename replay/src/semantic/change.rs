//! One change of the stream as the fold uses it ([`Lifted`]), read from a
//! `Semantic` record's JSON without building `serde_json::Value` trees.
//!
//! The record format is the change log's ([`SemanticEvent`], unchanged);
//! [`parse_record`] reads the same records the same way (a record that
//! would not parse as a [`SemanticEvent`] is unreadable here too), but
//! only parses the rows of changes of the file being replayed, straight
//! into the compact [`Row`] form, with the key parsed once and the
//! collection and VM names shared.
use std::borrow::Cow;
use std::sync::Arc;

use introspection::lift::SemanticEvent;
use introspection::semantic::{Format, Op, SemanticChange};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::row::{Interner, Row};
use super::state::Key;

/// One change of a file, in the fold's form.
#[derive(Clone, Debug, PartialEq)]
pub struct Lifted {
    pub vm: Arc<str>,
    /// The barrier it was lifted at.
    pub seq: u64,
    pub ts_ns: u64,
    pub format: Format,
    pub collection: Arc<str>,
    pub key: Key,
    pub op: Op,
    /// Boxed: the fold reads it once, in stream order, while the change
    /// itself is read again (as the row it set) in any order; kept out of
    /// the change, it leaves the stream smaller (inserts have none).
    pub before: Option<Box<Row>>,
    pub after: Option<Row>,
}

impl From<&SemanticChange> for Lifted {
    fn from(c: &SemanticChange) -> Lifted {
        Lifted {
            vm: c.vm.as_str().into(),
            seq: c.seq,
            ts_ns: c.ts_ns,
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

/// A record's members, rows left unparsed.
#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    vm: Option<Cow<'a, str>>,
    seq: Option<u64>,
    ts_ns: Option<u64>,
    #[serde(borrow)]
    file: Option<Cow<'a, str>>,
    format: Option<Format>,
    #[serde(borrow)]
    collection: Option<Cow<'a, str>>,
    #[serde(borrow)]
    key: Option<Cow<'a, str>>,
    op: Option<Op>,
    #[serde(borrow)]
    before: Option<&'a RawValue>,
    #[serde(borrow)]
    after: Option<&'a RawValue>,
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

/// Reads one `Semantic` record for `file`.
pub fn parse_record(json: &str, file: &str, shared: &mut Shared) -> Record {
    let Ok(f) = serde_json::from_str::<Fields>(json) else {
        return Record::Unreadable;
    };
    match &*f.event {
        "change" => {}
        // Rare: read as the log's own type, which says what it requires.
        "decode_error" => {
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
    let mut row = |raw: Option<&RawValue>| match raw {
        // `null` is an absent row, as `Option<Value>` reads it.
        Some(r) if r.get() != "null" => Row::parse(r.get(), &mut shared.rows).map(Some),
        _ => Ok(None),
    };
    if f_file != file {
        // Rows of other files are not parsed: their text was checked by
        // reading it as raw values.
        return Record::Other;
    }
    let (Ok(before), Ok(after)) = (row(f.before), row(f.after)) else {
        return Record::Unreadable;
    };
    let before = before.map(Box::new);
    Record::Change(Lifted {
        vm: shared.name(&vm),
        seq,
        ts_ns,
        format,
        collection: shared.name(&collection),
        key: Key::parse(&key),
        op,
        before,
        after,
    })
}
