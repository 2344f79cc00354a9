//! The `VMMKV001` append-only key/value log: format, encoder, decoder.
//!
//! # Format v1 (all integers little-endian)
//!
//! ```text
//! header  (16 bytes): magic "VMMKV001" (8) | generation u64
//! record  (17 + klen + vlen bytes):
//!     len  u32   bytes of op..value = 1 + 4 + 4 + klen + vlen
//!     op   u8    1 = put, 2 = delete (a delete has vlen = 0)
//!     klen u32
//!     vlen u32
//!     key  [klen]
//!     value[vlen]
//!     crc  u32   crc32 (IEEE, as crc32fast) over op..value
//! ```
//!
//! Records follow the header back to back. The valid log ends at the first
//! record whose `len` is 0, whose fields disagree (`len != 9 + klen + vlen`,
//! unknown op, a delete with a value), that does not fit in the file, or
//! whose CRC fails: the rest of the extent is zero fill or stale bytes of an
//! older generation. Replaying the valid records in order (last write wins,
//! delete removes) gives the live map.
//!
//! Compaction rewrites the file from offset 0 with `generation + 1`, holding
//! one put per live key, then zero-fills the rest of what was written before.
//! A blank (all-zero) file is an empty log.
//!
//! The encoder is plain functions over byte slices (no allocation), so that
//! a `no_std` guest workload and the host tests share the format.

use std::collections::BTreeMap;

use serde_json::Value;

use super::{
    bad, blob_value, is_blank, to_hex, Change, DecodeError, DecodeLimits, Decoder, Op, SchemaHints,
};

/// The 8-byte magic at offset 0.
pub const MAGIC: &[u8; 8] = b"VMMKV001";
/// Size of the file header.
pub const HEADER_LEN: usize = 16;
/// `op` of a put record.
pub const OP_PUT: u8 = 1;
/// `op` of a delete record.
pub const OP_DELETE: u8 = 2;
/// Bytes a record takes beyond its key and value (len, op, klen, vlen, crc).
pub const RECORD_OVERHEAD: usize = 4 + 1 + 4 + 4 + 4;

/// The 16-byte header for a log of the given generation.
pub fn encode_header(generation: u64) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(MAGIC);
    h[8..].copy_from_slice(&generation.to_le_bytes());
    h
}

/// Bytes one record with this key and value takes.
pub fn record_len(key_len: usize, value_len: usize) -> usize {
    RECORD_OVERHEAD + key_len + value_len
}

fn encode_record(out: &mut [u8], op: u8, key: &[u8], value: &[u8]) -> Option<usize> {
    let total = RECORD_OVERHEAD
        .checked_add(key.len())?
        .checked_add(value.len())?;
    let body = u32::try_from(total - 8).ok()?;
    let out = out.get_mut(..total)?;
    out[..4].copy_from_slice(&body.to_le_bytes());
    out[4] = op;
    out[5..9].copy_from_slice(&(key.len() as u32).to_le_bytes());
    out[9..13].copy_from_slice(&(value.len() as u32).to_le_bytes());
    out[13..13 + key.len()].copy_from_slice(key);
    out[13 + key.len()..total - 4].copy_from_slice(value);
    let crc = crc32fast::hash(&out[4..total - 4]);
    out[total - 4..].copy_from_slice(&crc.to_le_bytes());
    Some(total)
}

/// Write a put record at the start of `out`; the bytes written, or `None`
/// when `out` is too short.
pub fn encode_put(out: &mut [u8], key: &[u8], value: &[u8]) -> Option<usize> {
    encode_record(out, OP_PUT, key, value)
}

/// Write a delete record at the start of `out`; the bytes written, or `None`
/// when `out` is too short.
pub fn encode_delete(out: &mut [u8], key: &[u8]) -> Option<usize> {
    encode_record(out, OP_DELETE, key, &[])
}

/// One valid record of a log, borrowing the file bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Entry<'a> {
    Put(&'a [u8], &'a [u8]),
    Delete(&'a [u8]),
}

/// A parsed log: its generation, the valid records and where they end.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Log<'a> {
    pub generation: u64,
    pub entries: Vec<Entry<'a>>,
    /// Offset just past the last valid record (0 for a blank file).
    pub end: usize,
}

impl<'a> Log<'a> {
    /// The live map after replaying every record.
    pub fn replay(&self) -> BTreeMap<&'a [u8], &'a [u8]> {
        let mut m = BTreeMap::new();
        for e in &self.entries {
            match *e {
                Entry::Put(k, v) => {
                    m.insert(k, v);
                }
                Entry::Delete(k) => {
                    m.remove(k);
                }
            }
        }
        m
    }
}

fn le32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parse one record at `at`; `None` ends the log.
fn parse_record(data: &[u8], at: usize) -> Option<(Entry<'_>, usize)> {
    let len = le32(data, at)? as usize;
    if len < 9 {
        return None;
    }
    let body_start = at.checked_add(4)?;
    let body_end = body_start.checked_add(len)?;
    let end = body_end.checked_add(4)?;
    if end > data.len() {
        return None;
    }
    let body = &data[body_start..body_end];
    let op = body[0];
    let klen = le32(body, 1)? as usize;
    let vlen = le32(body, 5)? as usize;
    if (klen as u64) + (vlen as u64) + 9 != len as u64 {
        return None;
    }
    if crc32fast::hash(body) != le32(data, body_end)? {
        return None;
    }
    let key = &body[9..9 + klen];
    let value = &body[9 + klen..];
    let entry = match op {
        OP_PUT => Entry::Put(key, value),
        OP_DELETE if vlen == 0 => Entry::Delete(key),
        _ => return None,
    };
    Some((entry, end))
}

/// Parse a log file. A blank file is an empty log; a non-blank file without
/// the magic is a [`DecodeError`]. The entries borrow `data`, so memory is
/// bounded by the input (one `Entry` per at least 17 input bytes).
pub fn parse(data: &[u8]) -> Result<Log<'_>, DecodeError> {
    if data.len() < HEADER_LEN || &data[..8] != MAGIC {
        if is_blank(data) {
            return Ok(Log::default());
        }
        return bad("kv: no VMMKV001 header");
    }
    let generation = u64::from_le_bytes(data[8..16].try_into().unwrap_or([0; 8]));
    let mut entries = Vec::new();
    let mut at = HEADER_LEN;
    while let Some((e, next)) = parse_record(data, at) {
        entries.push(e);
        at = next;
    }
    Ok(Log {
        generation,
        entries,
        end: at,
    })
}

/// The live map of a log file.
pub fn replay(data: &[u8]) -> Result<BTreeMap<&[u8], &[u8]>, DecodeError> {
    Ok(parse(data)?.replay())
}

/// A key as text: UTF-8 as is, anything else as `0x` + hex.
pub fn render_key(key: &[u8]) -> String {
    match std::str::from_utf8(key) {
        Ok(s) => s.to_owned(),
        Err(_) => format!("0x{}", to_hex(key)),
    }
}

/// A value as JSON: a string when UTF-8, else `{"$blob": "<hex>"}`.
pub fn render_value(value: &[u8]) -> Value {
    match std::str::from_utf8(value) {
        Ok(s) => Value::String(s.to_owned()),
        Err(_) => blob_value(value),
    }
}

/// Decoder for the `VMMKV001` log: replays both versions and diffs the maps
/// (collection `""`, key = [`render_key`], values = [`render_value`]).
pub struct KvDecoder;

impl Decoder for KvDecoder {
    /// The state a KV diff holds borrows the logs (a map of key and value
    /// slices), so it is bounded by the input, not by `limits`.
    fn diff_with(
        &self,
        old: &[u8],
        new: &[u8],
        _hints: &SchemaHints,
        _limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError> {
        let a = replay(old).map_err(|e| e.context("old version"))?;
        let b = replay(new).map_err(|e| e.context("new version"))?;
        let mut out = Vec::new();
        let change = |key: &[u8], op, before: Option<&[u8]>, after: Option<&[u8]>| Change {
            collection: String::new(),
            key: render_key(key),
            op,
            before: before.map(render_value),
            after: after.map(render_value),
        };
        // Both maps are sorted: merge them.
        let mut ia = a.iter().peekable();
        let mut ib = b.iter().peekable();
        loop {
            match (ia.peek(), ib.peek()) {
                (None, None) => break,
                (Some((ka, va)), None) => {
                    out.push(change(ka, Op::Delete, Some(va), None));
                    ia.next();
                }
                (None, Some((kb, vb))) => {
                    out.push(change(kb, Op::Insert, None, Some(vb)));
                    ib.next();
                }
                (Some((ka, va)), Some((kb, vb))) => match ka.cmp(kb) {
                    std::cmp::Ordering::Less => {
                        out.push(change(ka, Op::Delete, Some(va), None));
                        ia.next();
                    }
                    std::cmp::Ordering::Greater => {
                        out.push(change(kb, Op::Insert, None, Some(vb)));
                        ib.next();
                    }
                    std::cmp::Ordering::Equal => {
                        if va != vb {
                            out.push(change(ka, Op::Update, Some(va), Some(vb)));
                        }
                        ia.next();
                        ib.next();
                    }
                },
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_stop_at_garbage() {
        let mut f = vec![0u8; 256];
        f[..16].copy_from_slice(&encode_header(3));
        let mut at = 16;
        at += encode_put(&mut f[at..], b"a", b"1").unwrap();
        at += encode_put(&mut f[at..], b"b", &[0xff]).unwrap();
        let del_at = at;
        at += encode_delete(&mut f[at..], b"a").unwrap();
        let log = parse(&f).unwrap();
        assert_eq!(log.generation, 3);
        assert_eq!(log.entries.len(), 3);
        assert_eq!(log.end, at);
        let m = log.replay();
        assert_eq!(m.len(), 1);
        assert_eq!(m[&b"b"[..]], &[0xff]);
        // A corrupted CRC ends the log there.
        f[del_at + 13] ^= 1;
        assert_eq!(parse(&f).unwrap().entries.len(), 2);
        assert!(encode_put(&mut [0u8; 10], b"k", b"v").is_none());
        assert!(parse(b"not a kv log at all").is_err());
        assert!(parse(&[0u8; 64]).unwrap().entries.is_empty());
    }
}
