//! `workload=leveldb`: a LevelDB write-ahead log, in LevelDB's real format,
//! fed by the same seeded batches as `workload=kv`.
//!
//! # Format (google/leveldb doc/log_format.md; the host decodes it with
//! `introspection::decode::leveldb`)
//!
//! The `leveldb/000001.log` extent of `layout.rs` holds one log file: 32 KiB
//! blocks of records `crc u32 | length u16 | type u8 | data`, crc = masked
//! CRC32C (Castagnoli) of type and data (`rotr(crc, 15) + 0xa282ead8`), type
//! 1 FULL or 2/3/4 FIRST/MIDDLE/LAST fragments of a record that does not fit
//! in the rest of its block; fewer than 7 bytes left in a block are zeros.
//! Each record is a write batch: `sequence u64 | count u32` then per op
//! `1 | key | value` (put) or `0 | key` (delete), strings as varint32
//! length + bytes; the ops get sequence numbers `sequence, sequence+1, ...`.
//!
//! Appends: each script batch becomes one write batch numbered after the
//! last one, appended as one log record (the blocks it touches are
//! written), then FLUSHed. Compaction, when the log is longer than
//! `compact_at` after a batch: the log is rewritten from offset 0 as one
//! batch holding every live pair in key order, numbered so that its last op
//! has the current last sequence number (replaying it changes nothing, and
//! a reader that saw the old log finds no newer op in it); the rest of the
//! old log is zero-filled in the same write, then FLUSHed. Later batches
//! continue the sequence. (LevelDB itself would flush its memtable to a
//! table file and start a new log; one fixed extent has no room for that.)
//!
//! Each boot starts a fresh log (zeros over the extent).
//!
//! Command line as `workload=kv`: `seed=S` (1), `ops=N` (3000), `batch=B`
//! (20), `keys=K` (400), `compact_at=BYTES` (131072).
//!
//! Output: `leveldb: ops=N batches=B compactions=C live=L last_seq=S
//! log_bytes=X fnv=0x...` (FNV-1a 64 over the live pairs as `workload=kv`).
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;

use super::spec::{Fnv, KvOp, KvScript};
use crate::cmdline::Cmdline;
use crate::disk::{Disk, IoError};
use crate::layout::{self, LEVELDB_LOG};
use crate::say;

const LOG_BLOCK: usize = 32 * 1024;
const HEADER: usize = 7;
const DISK_BLOCK: usize = 4096;
const CASTAGNOLI: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

fn masked_crc(typ: u8, data: &[u8]) -> u32 {
    let mut d = CASTAGNOLI.digest();
    d.update(&[typ]);
    d.update(data);
    d.finalize().rotate_right(15).wrapping_add(0xa282_ead8)
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    put_varint(out, s.len() as u64);
    out.extend_from_slice(s);
}

/// A write batch of `(key, Some(value) | None)` numbered from `seq`.
fn batch<'a>(
    seq: u64,
    ops: impl ExactSizeIterator<Item = (&'a [u8], Option<&'a [u8]>)>,
) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&seq.to_le_bytes());
    b.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for (k, v) in ops {
        b.push(v.is_some() as u8);
        put_string(&mut b, k);
        if let Some(v) = v {
            put_string(&mut b, v);
        }
    }
    b
}

/// Appends `record` to the log `out`, fragmenting it over blocks.
fn append_record(out: &mut Vec<u8>, record: &[u8]) {
    let mut rest = record;
    let mut first = true;
    loop {
        let left = LOG_BLOCK - out.len() % LOG_BLOCK;
        if left < HEADER {
            out.resize(out.len() + left, 0);
            continue;
        }
        let n = rest.len().min(left - HEADER);
        let last = n == rest.len();
        let typ = match (first, last) {
            (true, true) => 1,
            (true, false) => 2,
            (false, false) => 3,
            (false, true) => 4,
        };
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(&masked_crc(typ, chunk).to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.push(typ);
        out.extend_from_slice(chunk);
        rest = tail;
        first = false;
        if last {
            return;
        }
    }
}

/// Writes `log[from..]` and zeros up to `zero_to` (whole disk blocks), then
/// flushes.
fn write_from(disk: &mut Disk, log: &[u8], from: usize, zero_to: usize) -> Result<(), IoError> {
    let start = from / DISK_BLOCK * DISK_BLOCK;
    let end = log
        .len()
        .max(zero_to)
        .next_multiple_of(DISK_BLOCK)
        .min(LEVELDB_LOG.len as usize);
    let mut buf = vec![0u8; end - start];
    let have = log.len().min(end);
    buf[..have - start].copy_from_slice(&log[start..have]);
    disk.write_at(LEVELDB_LOG.offset() + start as u64, &buf)?;
    disk.flush()
}

pub fn run(cmdline: &Cmdline) -> u32 {
    let Some(mut disk) = Disk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    if !layout::announce(&[&LEVELDB_LOG], disk.capacity()) {
        return crate::EXIT_GUEST_ERROR;
    }
    let p = super::kv::params(cmdline);
    let cap = LEVELDB_LOG.len as usize;
    if write_from(&mut disk, &[], 0, cap).is_err() {
        say!("leveldb: cannot initialise the log\n");
        return 1;
    }
    let mut log: Vec<u8> = Vec::new();
    let mut map: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut last_seq = 0u64;
    let mut script = KvScript::new(p);
    let (mut ops, mut batches, mut compactions) = (0u64, 0u64, 0u64);
    while let Some(ops_) = script.next_batch() {
        let from = log.len();
        let record = batch(
            last_seq + 1,
            ops_.iter().map(|op| match op {
                KvOp::Put(k, v) => (&k[..], Some(&v[..])),
                KvOp::Delete(k) => (&k[..], None),
            }),
        );
        append_record(&mut log, &record);
        if log.len() > cap {
            say!("leveldb: log full ({} bytes)\n", log.len());
            return 1;
        }
        for op in &ops_ {
            match op {
                KvOp::Put(k, v) => map.insert(k.clone(), v.clone()),
                KvOp::Delete(k) => map.remove(k),
            };
        }
        last_seq += ops_.len() as u64;
        ops += ops_.len() as u64;
        batches += 1;
        if write_from(&mut disk, &log, from, 0).is_err() {
            say!("leveldb: append failed\n");
            return 1;
        }
        if log.len() as u64 > p.compact_at {
            let old_len = log.len();
            log.clear();
            let first = last_seq + 1 - map.len() as u64;
            let pairs = map.iter().map(|(k, v)| (&k[..], Some(&v[..])));
            append_record(&mut log, &batch(first, pairs));
            if write_from(&mut disk, &log, 0, old_len).is_err() {
                say!("leveldb: compaction failed\n");
                return 1;
            }
            compactions += 1;
        }
    }
    let fnv = Fnv::of_map(&map);
    say!(
        "leveldb: ops={ops} batches={batches} compactions={compactions} live={} last_seq={last_seq} log_bytes={} fnv={:#018x}\n",
        map.len(),
        log.len(),
        fnv
    );
    0
}
