//! `workload=json`: a JSON document rewritten in place.
//!
//! The document lives in the `doc.json` extent (`layout.rs`): its bytes
//! start at the extent's first byte and end at the first NUL byte; every
//! byte after the document up to the end of the extent is zero. Each write
//! puts the whole new document at offset 0, zero-fills what is left of the
//! previous (longer) one, and FLUSHes; the first write zero-fills the whole
//! extent after the document.
//!
//! Document: `{"version":N,"records":[R,...]}`, compact (no whitespace),
//! records in ascending `id` order, each
//! `{"id":1,"name":"..","qty":-3,"price":12.5,"active":true,"tags":["a"],"note":null}`.
//! `version` is the 1-based write number. Strings are UTF-8 with `"`, `\`
//! and control characters escaped; `price` is printed as the shortest
//! decimal that reads back as the same f64 (always with a `.`).
//!
//! Command line: `seed=S` (1), `records=N` (200, in the first document),
//! `rewrites=W` (8 writes in all), `ops=K` (60 record operations before each
//! write after the first). See `spec::JsonScript`.
//!
//! Output: `json: writes=W records=N bytes=B fnv=0x...` (FNV-1a 64 of the
//! final document's bytes).
use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::spec::{Fnv, JsonOp, JsonParams, JsonRecord, JsonScript};
use crate::cmdline::Cmdline;
use crate::disk::Disk;
use crate::layout::{self, DOC_JSON};
use crate::say;

fn escape(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

fn record(out: &mut String, r: &JsonRecord) {
    let _ = write!(out, "{{\"id\":{},\"name\":", r.id);
    escape(out, &r.name);
    let _ = write!(
        out,
        ",\"qty\":{},\"price\":{:?},\"active\":{},\"tags\":[",
        r.qty, r.price, r.active
    );
    for (i, t) in r.tags.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        escape(out, t);
    }
    out.push_str("],\"note\":");
    match &r.note {
        Some(n) => escape(out, n),
        None => out.push_str("null"),
    }
    out.push('}');
}

/// The document for `records` at write number `version`.
pub fn document(version: u64, records: &BTreeMap<u64, JsonRecord>) -> String {
    let mut out = String::new();
    let _ = write!(out, "{{\"version\":{version},\"records\":[");
    for (i, r) in records.values().enumerate() {
        if i > 0 {
            out.push(',');
        }
        record(&mut out, r);
    }
    out.push_str("]}");
    out
}

pub fn run(cmdline: &Cmdline) -> u32 {
    let Some(mut disk) = Disk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    if !layout::announce(&[&DOC_JSON], disk.capacity()) {
        return crate::EXIT_GUEST_ERROR;
    }
    let p = JsonParams {
        seed: cmdline.get_u64("seed", 1),
        records: cmdline.get_u64("records", 200),
        rewrites: cmdline.get_u64("rewrites", 8),
        ops: cmdline.get_u64("ops", 60),
    };
    let mut script = JsonScript::new(p);
    let mut records: BTreeMap<u64, JsonRecord> = BTreeMap::new();
    // The first write clears the whole extent after the document.
    let mut prev_len = DOC_JSON.len as usize;
    let mut writes = 0u64;
    let mut last = Vec::new();
    while let Some(ops) = script.next_round() {
        for op in ops {
            match op {
                JsonOp::Put(r) => {
                    records.insert(r.id, r);
                }
                JsonOp::Patch { id, qty, price } => {
                    if let Some(r) = records.get_mut(&id) {
                        r.qty = qty;
                        r.price = price;
                    }
                }
                JsonOp::Delete(id) => {
                    records.remove(&id);
                }
            }
        }
        writes += 1;
        let doc = document(writes, &records).into_bytes();
        if doc.len() >= DOC_JSON.len as usize {
            say!("json: document of {} bytes does not fit\n", doc.len());
            return 1;
        }
        let span = doc
            .len()
            .max(prev_len)
            .next_multiple_of(4096)
            .min(DOC_JSON.len as usize);
        let mut buf = doc.clone();
        buf.resize(span, 0);
        if disk.write_at(DOC_JSON.offset(), &buf).is_err() || disk.flush().is_err() {
            say!("json: write {writes} failed\n");
            return 1;
        }
        prev_len = doc.len();
        last = doc;
    }
    let mut h = Fnv::default();
    h.write(&last);
    say!(
        "json: writes={writes} records={} bytes={} fnv={:#018x}\n",
        records.len(),
        last.len(),
        h.0
    );
    0
}
