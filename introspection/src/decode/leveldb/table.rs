//! LevelDB table files (`NNNNNN.ldb`, formerly `.sst`): a reader of every
//! entry, checking checksums and structure.
//!
//! # Format (google/leveldb doc/table_format.md)
//!
//! ```text
//! file    := data block* | meta block* | metaindex block | index block | footer
//! footer  := metaindex handle | index handle | zero padding to 40 bytes
//!            | magic u64 LE 0xdb4775248b80fb57                (48 bytes)
//! handle  := offset varint64 | size varint64
//! block on disk := contents[size] | type u8 (0 raw, 1 Snappy) | crc u32 LE
//!            (masked CRC32C of contents and type)
//! block   := entry* | restart u32 LE * n | n u32 LE
//! entry   := shared varint32 | unshared varint32 | value_len varint32
//!            | key suffix[unshared] | value[value_len]
//! ```
//!
//! An entry's key is the first `shared` bytes of the previous key plus its
//! suffix; at each restart point (offsets listed at the block's end)
//! `shared` is 0. The index block maps a separator key per data block to
//! that block's handle. Data block keys are internal keys: the user key
//! followed by u64 LE `sequence << 8 | type` (type 1 value, 0 deletion).
//! Meta blocks (filters) do not affect the data and are not read.

use std::borrow::Cow;

use crate::decode::{Budget, DecodeError};

use super::coding::{fixed32, fixed64, masked_crc, varint32, varint64};

/// The table footer's magic number.
pub const TABLE_MAGIC: u64 = 0xdb47_7524_8b80_fb57;
/// Bytes of the footer.
pub const FOOTER_LEN: usize = 48;
/// Bytes after each block's contents (type + crc).
pub const BLOCK_TRAILER_LEN: usize = 5;
/// Block compression types.
pub const RAW: u8 = 0;
pub const SNAPPY: u8 = 1;

/// One entry of a table: a version of a user key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TableEntry<'k> {
    pub user_key: &'k [u8],
    pub seq: u64,
    /// `Some(value)` for a put, `None` for a deletion marker.
    pub value: Option<&'k [u8]>,
}

#[derive(Clone, Copy, Debug)]
struct Handle {
    offset: u64,
    size: u64,
}

fn handle(b: &[u8], at: &mut usize) -> Option<Handle> {
    Some(Handle {
        offset: varint64(b, at)?,
        size: varint64(b, at)?,
    })
}

/// Splits an internal key into (user key, sequence, type).
pub fn split_internal_key(key: &[u8]) -> Option<(&[u8], u64, u8)> {
    let n = key.len().checked_sub(8)?;
    let tag = fixed64(key, n)?;
    Some((&key[..n], tag >> 8, tag as u8))
}

/// Reads the block at `h`, checking its CRC and decompressing it.
fn read_block<'a>(file: &'a [u8], h: Handle, budget: &mut Budget) -> Result<Cow<'a, [u8]>, String> {
    let start = usize::try_from(h.offset).map_err(|_| "block offset too large")?;
    let size = usize::try_from(h.size).map_err(|_| "block size too large")?;
    let fits = start
        .checked_add(size)
        .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN))
        .is_some_and(|e| e <= file.len());
    if !fits {
        return Err(format!(
            "block at offset {start} of {size} bytes lies outside the file"
        ));
    }
    let contents = &file[start..start + size];
    let typ = file[start + size];
    let crc = fixed32(file, start + size + 1).unwrap_or(0);
    if masked_crc(&[contents, &[typ]]) != crc {
        return Err(format!("block at offset {start}: checksum mismatch"));
    }
    match typ {
        RAW => Ok(Cow::Borrowed(contents)),
        SNAPPY => {
            let n = snap::raw::decompress_len(contents)
                .map_err(|e| format!("block at offset {start}: bad Snappy header: {e}"))?;
            budget
                .charge(n as u64)
                .map_err(|_| format!("block at offset {start}: Snappy size {n} over the limit"))?;
            let mut out = vec![0u8; n];
            snap::raw::Decoder::new()
                .decompress(contents, &mut out)
                .map_err(|e| format!("block at offset {start}: bad Snappy data: {e}"))?;
            Ok(Cow::Owned(out))
        }
        other => Err(format!(
            "block at offset {start}: unsupported compression type {other}"
        )),
    }
}

/// Calls `f(key, value)` for each entry of a block, in order, checking the
/// prefix compression and the restart array.
fn block_entries(
    block: &[u8],
    mut f: impl FnMut(&[u8], &[u8]) -> Result<(), String>,
) -> Result<(), String> {
    let n = block.len();
    let restarts = fixed32(block, n.wrapping_sub(4)).ok_or("block shorter than 4 bytes")? as usize;
    let limit = restarts
        .checked_mul(4)
        .and_then(|r| n.checked_sub(4 + r))
        .ok_or("restart count larger than the block")?;
    let restart = |i: usize| fixed32(block, limit + 4 * i).map(|r| r as usize);
    let mut next_restart = 0usize;
    let mut key: Vec<u8> = Vec::new();
    let mut at = 0usize;
    while at < limit {
        let entry_at = at;
        let (Some(shared), Some(unshared), Some(vlen)) = (
            varint32(block, &mut at),
            varint32(block, &mut at),
            varint32(block, &mut at),
        ) else {
            return Err(format!("truncated entry header at block offset {entry_at}"));
        };
        let (shared, unshared, vlen) = (shared as usize, unshared as usize, vlen as usize);
        let kend = at.checked_add(unshared).filter(|&e| e <= limit);
        let vend = kend
            .and_then(|k| k.checked_add(vlen))
            .filter(|&e| e <= limit);
        let (Some(kend), Some(vend)) = (kend, vend) else {
            return Err(format!(
                "entry at block offset {entry_at} runs past the entries"
            ));
        };
        if shared > key.len() {
            return Err(format!(
                "entry at block offset {entry_at} shares more than the previous key"
            ));
        }
        // The restart offsets must be entries, in order, the first at 0.
        let pending = (next_restart < restarts)
            .then(|| restart(next_restart))
            .flatten();
        if pending == Some(entry_at) {
            if shared != 0 {
                return Err(format!(
                    "restart entry at block offset {entry_at} shares a prefix"
                ));
            }
            next_restart += 1;
        } else if entry_at == 0 || pending.is_some_and(|r| r < entry_at) {
            return Err(format!("restart point missing at block offset {entry_at}"));
        }
        key.truncate(shared);
        key.extend_from_slice(&block[at..kend]);
        f(&key, &block[kend..vend])?;
        at = vend;
    }
    if next_restart < restarts && !(limit == 0 && restarts == 1 && restart(0) == Some(0)) {
        return Err("restart points past the last entry".into());
    }
    Ok(())
}

/// Calls `f` for every entry of the table in `file` (key order). Decoded
/// blocks and entries are charged to `budget`; errors name the block's
/// offset.
pub(crate) fn for_each_entry(
    file: &[u8],
    budget: &mut Budget,
    mut f: impl FnMut(TableEntry<'_>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    let bad = |why: String| DecodeError::new(format!("leveldb table: {why}"));
    let footer_at = file
        .len()
        .checked_sub(FOOTER_LEN)
        .ok_or_else(|| bad("shorter than its 48-byte footer".into()))?;
    if fixed64(file, footer_at + 40) != Some(TABLE_MAGIC) {
        return Err(bad("no table magic in the footer".into()));
    }
    let footer = &file[footer_at..footer_at + 40];
    let mut at = 0;
    let (Some(_meta), Some(index)) = (handle(footer, &mut at), handle(footer, &mut at)) else {
        return Err(bad("footer block handles are malformed".into()));
    };
    let index_block = read_block(file, index, budget).map_err(|e| bad(format!("index {e}")))?;
    let mut data_handles = Vec::new();
    block_entries(&index_block, |_, value| {
        let mut at = 0;
        let h = handle(value, &mut at).ok_or("index entry is not a block handle")?;
        data_handles.push(h);
        Ok(())
    })
    .map_err(|e| bad(format!("index block: {e}")))?;
    for h in data_handles {
        let block = read_block(file, h, budget).map_err(|e| bad(format!("data {e}")))?;
        let mut failure: Option<DecodeError> = None;
        block_entries(&block, |key, value| {
            let (user_key, seq, typ) =
                split_internal_key(key).ok_or("internal key shorter than 8 bytes")?;
            // Prefix compression lets a few input bytes name a long key:
            // charge every decoded entry.
            budget
                .charge_value(key.len() + value.len())
                .map_err(|e| e.reason)?;
            let value = match typ {
                1 => Some(value),
                0 => None,
                _ => return Err(format!("unknown internal key type {typ}")),
            };
            f(TableEntry {
                user_key,
                seq,
                value,
            })
            .map_err(|e| {
                let msg = e.reason.clone();
                failure = Some(e);
                msg
            })
        })
        .map_err(|e| {
            failure
                .take()
                .unwrap_or_else(|| bad(format!("data block at offset {}: {e}", h.offset)))
        })?;
    }
    Ok(())
}
