//! `workload=kv`: an append-only key/value log with compaction.
//!
//! # KV log format v1 (the `kv.log` extent of `layout.rs`)
//!
//! All integers little-endian.
//! ```text
//! header (16 bytes):  magic "VMMKV001" (8) | generation u64
//! record:             len u32 | op u8 | klen u32 | vlen u32 | key | value | crc32 u32
//!                     len = 1 + 4 + 4 + klen + vlen (the bytes op..value)
//!                     op: 1 = put, 2 = delete (vlen = 0)
//!                     crc32: IEEE CRC-32 (as crc32fast computes) of op..value
//! ```
//! Records follow the header back to back. The log ends at the first record
//! whose len is 0, whose bounds leave the extent or disagree with
//! klen/vlen, whose op is unknown, or whose CRC is wrong. Everything after
//! the log's end is zero (each batch is appended after the previous end;
//! compaction zero-fills the rest of the old log).
//!
//! Appends: each batch of records is written after the log's end (the
//! blocks it touches), then FLUSHed. Compaction, when the log is longer
//! than `compact_at` after a batch: the log is rewritten from offset 0 with
//! generation + 1 and one put record per live key (ascending key order),
//! the rest of the old log is zero-filled in the same write, then FLUSHed.
//!
//! On start the workload reads the extent: a valid header means an earlier
//! boot's log, whose records are replayed and whose tail after the valid
//! end is zero-filled; otherwise a fresh log of generation 1 is written
//! (header, then zeros over the whole extent).
//!
//! Command line: `seed=S` (1), `ops=N` (3000), `batch=B` (20), `keys=K`
//! (400), `compact_at=BYTES` (131072). See `spec::KvScript`.
//!
//! Output: `kv: ops=N batches=B compactions=C generation=G live=L log_bytes=X fnv=0x...`
//! (FNV-1a 64 over the live pairs in key order, each as
//! `klen u32 | key | vlen u32 | value`).
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::spec::{Fnv, KvOp, KvParams, KvScript};
use crate::cmdline::Cmdline;
use crate::disk::{Disk, IoError};
use crate::layout::{self, KV_LOG};
use crate::say;

pub const MAGIC: &[u8; 8] = b"VMMKV001";
pub const HEADER: usize = 16;
const OP_PUT: u8 = 1;
const OP_DELETE: u8 = 2;
const BLOCK: usize = 4096;

fn encode(out: &mut Vec<u8>, op: u8, key: &[u8], value: &[u8]) {
    let len = 1 + 4 + 4 + key.len() + value.len();
    out.extend_from_slice(&(len as u32).to_le_bytes());
    let body = out.len();
    out.push(op);
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    let crc = crc32fast::hash(&out[body..]);
    out.extend_from_slice(&crc.to_le_bytes());
}

fn header(generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER);
    h.extend_from_slice(MAGIC);
    h.extend_from_slice(&generation.to_le_bytes());
    h
}

/// Replays a log image: (generation, live pairs, end of the valid log), or
/// None without a valid header.
#[allow(clippy::type_complexity)]
fn replay(img: &[u8]) -> Option<(u64, BTreeMap<Vec<u8>, Vec<u8>>, usize)> {
    if img.len() < HEADER || &img[..8] != MAGIC {
        return None;
    }
    let generation = u64::from_le_bytes(img[8..16].try_into().ok()?);
    let mut map = BTreeMap::new();
    let mut pos = HEADER;
    let u32_at = |o: usize| u32::from_le_bytes(img[o..o + 4].try_into().unwrap()) as usize;
    while pos + 4 <= img.len() {
        let len = u32_at(pos);
        if len < 9 || pos + 4 + len + 4 > img.len() {
            break;
        }
        let body = &img[pos + 4..pos + 4 + len];
        let (op, klen, vlen) = (body[0], u32_at(pos + 5), u32_at(pos + 9));
        if klen.checked_add(vlen).and_then(|n| n.checked_add(9)) != Some(len)
            || !(op == OP_PUT || op == OP_DELETE && vlen == 0)
            || u32_at(pos + 4 + len) as u32 != crc32fast::hash(body)
        {
            break;
        }
        let key = body[9..9 + klen].to_vec();
        if op == OP_PUT {
            map.insert(key, body[9 + klen..].to_vec());
        } else {
            map.remove(&key);
        }
        pos += 4 + len + 4;
    }
    Some((generation, map, pos))
}

struct Log {
    disk: Disk,
    /// The log's bytes (header and records); the disk holds zeros after.
    bytes: Vec<u8>,
    generation: u64,
}

impl Log {
    /// Writes `bytes[from..]` and zeros up to `zero_to` (whole blocks), then
    /// flushes.
    fn write_from(&mut self, from: usize, zero_to: usize) -> Result<(), IoError> {
        let start = from / BLOCK * BLOCK;
        let end = self.bytes.len().max(zero_to).next_multiple_of(BLOCK);
        let end = end.min(KV_LOG.len as usize);
        let mut buf = vec![0u8; end - start];
        let have = self.bytes.len().min(end);
        buf[..have - start].copy_from_slice(&self.bytes[start..have]);
        self.disk.write_at(KV_LOG.offset() + start as u64, &buf)?;
        self.disk.flush()
    }
}

/// The key-value script's options (shared with `workload=leveldb`).
pub(super) fn params(cmdline: &Cmdline) -> KvParams {
    KvParams {
        seed: cmdline.get_u64("seed", 1),
        ops: cmdline.get_u64("ops", 3000),
        batch: cmdline.get_u64("batch", 20),
        keys: cmdline.get_u64("keys", 400),
        compact_at: cmdline.get_u64("compact_at", 128 << 10),
    }
}

pub fn run(cmdline: &Cmdline) -> u32 {
    let Some(mut disk) = Disk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    if !layout::announce(&[&KV_LOG], disk.capacity()) {
        return crate::EXIT_GUEST_ERROR;
    }
    let p = params(cmdline);
    let mut img = vec![0u8; KV_LOG.len as usize];
    if disk.read_at(KV_LOG.offset(), &mut img).is_err() {
        say!("kv: cannot read the log\n");
        return 1;
    }
    let (generation, mut map, end) = match replay(&img) {
        Some(r) => r,
        None => (1, BTreeMap::new(), 0),
    };
    let fresh = end == 0;
    let mut log = Log {
        disk,
        bytes: if fresh {
            header(1)
        } else {
            img[..end].to_vec()
        },
        generation,
    };
    drop(img);
    // Zeros from the valid end (or the header) to the end of the extent.
    if log
        .write_from(if fresh { 0 } else { end }, KV_LOG.len as usize)
        .is_err()
    {
        say!("kv: cannot initialise the log\n");
        return 1;
    }
    let mut script = KvScript::new(p);
    let (mut ops, mut batches, mut compactions) = (0u64, 0u64, 0u64);
    while let Some(batch) = script.next_batch() {
        let from = log.bytes.len();
        for op in &batch {
            match op {
                KvOp::Put(k, v) => {
                    encode(&mut log.bytes, OP_PUT, k, v);
                    map.insert(k.clone(), v.clone());
                }
                KvOp::Delete(k) => {
                    encode(&mut log.bytes, OP_DELETE, k, &[]);
                    map.remove(k);
                }
            }
        }
        if log.bytes.len() + 4 > KV_LOG.len as usize {
            say!("kv: log full ({} bytes)\n", log.bytes.len());
            return 1;
        }
        ops += batch.len() as u64;
        batches += 1;
        if log.write_from(from, 0).is_err() {
            say!("kv: append failed\n");
            return 1;
        }
        if log.bytes.len() as u64 > p.compact_at {
            let old_len = log.bytes.len();
            log.generation += 1;
            log.bytes = header(log.generation);
            for (k, v) in &map {
                encode(&mut log.bytes, OP_PUT, k, v);
            }
            if log.write_from(0, old_len).is_err() {
                say!("kv: compaction failed\n");
                return 1;
            }
            compactions += 1;
        }
    }
    let fnv = Fnv::of_map(&map);
    say!(
        "kv: ops={ops} batches={batches} compactions={compactions} generation={} live={} log_bytes={} fnv={:#018x}\n",
        log.generation,
        map.len(),
        log.bytes.len(),
        fnv
    );
    0
}
