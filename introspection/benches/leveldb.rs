//! LevelDB write-ahead-log decoding throughput against a memcpy and a
//! CRC32C of the same bytes, in one run:
//! `cargo bench -p introspection --bench leveldb`.
//!
//! The log is written by the real engine (`rusty-leveldb`, memtable large
//! enough that nothing is flushed): ~64 MB of puts, deletes and small
//! batches, 16-byte keys and 40..400-byte values. Timed: memcpy of the log
//! (baseline), CRC32C over it (the checksum floor), the streaming decode
//! (`for_each_wal_op`: records, checksums, batches, borrowed ops), the
//! collected decode (`wal_ops`) and the live state of the whole directory
//! (`Database::open`: MANIFEST + log replay into a map).
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::best;

use introspection::decode::leveldb::{file_kind, for_each_wal_op, wal_ops, Database, FileKind};
use rusty_leveldb::{Options, WriteBatch, DB};

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        write_buffer_size: 1 << 30,
        ..Options::default()
    };
    let mut db = DB::open(dir.path(), opts).unwrap();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut rand = move || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let value: Vec<u8> = (0..400u32).map(|i| b'a' + (i % 26) as u8).collect();
    let mut written = 0usize;
    while written < 64 << 20 {
        let r = rand();
        let key = format!("user{:012}", r % 1_000_000);
        match r % 20 {
            0 => db.delete(key.as_bytes()).unwrap(),
            1 => {
                let mut b = WriteBatch::default();
                for i in 0..8 {
                    b.put(format!("{key}{i}").as_bytes(), &value[..100]);
                }
                db.write(b, false).unwrap();
                written += 8 * 120;
            }
            _ => {
                let v = &value[..40 + (r >> 32) as usize % 360];
                db.put(key.as_bytes(), v).unwrap();
                written += key.len() + v.len();
            }
        }
    }
    db.flush().unwrap();
    let mut files = Vec::new();
    for e in std::fs::read_dir(dir.path()).unwrap() {
        let e = e.unwrap();
        files.push((
            e.file_name().into_string().unwrap(),
            std::fs::read(e.path()).unwrap(),
        ));
    }
    let log = &files
        .iter()
        .filter(|(n, _)| matches!(file_kind(n), FileKind::Log(_)))
        .max_by_key(|(_, b)| b.len())
        .unwrap()
        .1;
    let mb = log.len() as f64 / 1e6;

    let mut dst = vec![0u8; log.len()];
    let copy = best(5, || {
        dst.copy_from_slice(log);
        black_box(&dst);
    });
    let crc = best(5, || {
        black_box(crc32c::crc32c(log));
    });
    let mut ops = 0usize;
    let stream = best(5, || {
        ops = 0;
        for_each_wal_op(log, |_, op| {
            black_box(op);
            ops += 1;
        })
        .unwrap();
    });
    let owned = best(3, || {
        black_box(wal_ops(log).unwrap());
    });
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    let mut live = 0;
    let state = best(3, || {
        live = Database::open(&refs).unwrap().live.len();
    });
    let rate = |d: Duration| mb / d.as_secs_f64();
    let row = |name: &str, d: Duration| {
        println!(
            "{name:<52} {:>9.0} {:>10.3}",
            rate(d),
            copy.as_secs_f64() / d.as_secs_f64()
        );
    };
    println!(
        "LevelDB WAL decode benchmark: {mb:.1} MB log, {ops} ops, {live} live keys, best of 3-5"
    );
    println!("{:<52} {:>9} {:>10}", "", "MB/s", "x memcpy");
    row("memcpy of the log (baseline)", copy);
    row("CRC32C of the log (checksum floor)", crc);
    row("streaming decode (records + CRC + batches)", stream);
    row("decode to a Vec of ops (borrowing the log)", owned);
    row("live state (MANIFEST + log replay into a map)", state);
    println!(
        "goal: WAL decode at least 500 MB/s: {}",
        if rate(stream) >= 500.0 {
            "met"
        } else {
            "NOT met"
        }
    );
}
