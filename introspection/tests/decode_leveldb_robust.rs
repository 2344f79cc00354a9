//! The LevelDB decoder on damaged input: a real database (written by
//! `rusty-leveldb`) with random byte flips and truncations in each of its
//! files never makes the decoder panic; a truncated write-ahead log is a
//! torn tail (a prefix of its ops); damage before intact log blocks is an
//! error naming the offset; hostile sizes are refused, not allocated.

mod common;

use common::rng::Rng;
use introspection::decode::leveldb::log::append_record;
use introspection::decode::leveldb::{batch, bundle, file_kind, wal_ops, Database, FileKind};
use introspection::decode::{diff, Format, SchemaHints};
use rusty_leveldb::{Options, DB};

/// A small real database: tables (Snappy), a MANIFEST and a live log
/// (memtables of `write_buffer` bytes).
fn sample_db(write_buffer: usize) -> Vec<(String, Vec<u8>)> {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options {
        write_buffer_size: write_buffer,
        block_size: 512,
        compressor: 1,
        ..Options::default()
    };
    let mut db = DB::open(dir.path(), opts()).unwrap();
    let mut rng = Rng::new(7);
    for i in 0..1500u64 {
        let k = format!("key{:03}", rng.below(200));
        if i % 5 == 0 {
            db.delete(k.as_bytes()).unwrap();
        } else {
            let n = rng.below(120) as usize + if i % 97 == 0 { 40_000 } else { 0 };
            let v = rng.bytes(n);
            db.put(k.as_bytes(), &v).unwrap();
        }
        if i == 700 {
            db.compact_range(b"key000", b"key300").unwrap();
        }
    }
    db.flush().unwrap();
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().into_string().unwrap(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

fn open(files: &[(String, Vec<u8>)]) -> Result<Database<'_>, introspection::decode::DecodeError> {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    Database::open(&refs)
}

fn bundle_of(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    bundle::encode("/db", &refs)
}

#[test]
fn flips_and_truncations_never_panic() {
    let files = sample_db(16 << 10);
    let good = open(&files).unwrap();
    assert!(good.manifest.as_ref().is_some_and(|m| !m.files.is_empty()));
    assert!(!good.wal_ops.is_empty());
    let good_bundle = bundle_of(&files);
    let mut rng = Rng::new(99);
    let (mut errors, mut oks) = (0, 0);
    for round in 0..600 {
        let mut damaged = files.clone();
        let i = rng.below(damaged.len() as u64) as usize;
        let f = &mut damaged[i].1;
        if f.is_empty() {
            continue;
        }
        if round % 3 == 0 {
            let cut = rng.below(f.len() as u64) as usize;
            f.truncate(cut);
        } else {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(f.len() as u64) as usize;
                f[at] ^= 1 << rng.below(8);
            }
        }
        match open(&damaged) {
            Ok(_) => oks += 1,
            Err(e) => {
                assert!(!e.reason.is_empty());
                errors += 1;
            }
        }
        let b = bundle_of(&damaged);
        let _ = diff(Format::LevelDb, &good_bundle, &b, &SchemaHints::default());
        let _ = diff(Format::LevelDb, &b, &good_bundle, &SchemaHints::default());
        let _ = wal_ops(&damaged[i].1);
    }
    assert!(errors > 50 && oks > 50, "{errors} errors, {oks} oks");
    // Raw garbage and truncated bundles.
    for n in [1usize, 7, 48, 1000, 40_000] {
        let g = rng.bytes(n);
        let _ = diff(Format::LevelDb, &[], &g, &SchemaHints::default());
        let _ = diff(
            Format::LevelDb,
            &[],
            &good_bundle[..n.min(good_bundle.len())],
            &SchemaHints::default(),
        );
    }
}

#[test]
fn truncated_log_is_a_torn_tail_and_middle_damage_names_the_offset() {
    let files = sample_db(4 << 20);
    let (_, log) = files
        .iter()
        .filter(|(n, _)| matches!(file_kind(n), FileKind::Log(_)))
        .max_by_key(|(n, _)| n.clone())
        .unwrap();
    let all = wal_ops(log).unwrap();
    assert!(log.len() > 2 * 32 * 1024, "the sample log spans blocks");
    let mut rng = Rng::new(5);
    for _ in 0..300 {
        let cut = rng.below(log.len() as u64) as usize;
        let got = wal_ops(&log[..cut]).expect("a truncated log is a torn tail");
        assert!(got.len() <= all.len() && got[..] == all[..got.len()]);
        // Zero fill after the cut (a preallocated or not yet written tail)
        // is the same torn tail.
        let mut padded = log[..cut].to_vec();
        padded.resize(cut + 4096, 0);
        assert_eq!(wal_ops(&padded).unwrap(), got);
    }
    // A flip in the first block, with intact blocks after it.
    let mut bad = log.clone();
    bad[100] ^= 0x10;
    let e = wal_ops(&bad).unwrap_err();
    assert!(e.reason.contains("at offset"), "{e}");
}

#[test]
fn hostile_lengths_are_refused_not_allocated() {
    // A batch claiming a 4 GiB key.
    let mut rec = Vec::new();
    rec.extend_from_slice(&1u64.to_le_bytes());
    rec.extend_from_slice(&1u32.to_le_bytes());
    rec.extend_from_slice(&[batch::TAG_PUT, 0xff, 0xff, 0xff, 0xff, 0x0f]);
    let mut log = Vec::new();
    append_record(&mut log, &rec);
    assert!(wal_ops(&log).is_err());
    // A batch whose count is huge but which holds one op.
    let mut rec = Vec::new();
    batch::encode(1, &[(b"k", Some(b"v"))], &mut rec);
    rec[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
    let mut log = Vec::new();
    append_record(&mut log, &rec);
    assert!(wal_ops(&log).is_err());
    // A table whose only block claims a 2 GiB Snappy expansion.
    let files = sample_db(16 << 10);
    let mut damaged = files.clone();
    let (_, t) = damaged
        .iter_mut()
        .find(|(n, _)| matches!(file_kind(n), FileKind::Table(_)))
        .unwrap();
    let mut snappy = vec![0xff, 0xff, 0xff, 0xff, 0x07, 0]; // varint length 2^31-1
    snappy.extend_from_slice(&[0u8; 10]);
    let mut block = snappy.clone();
    block.push(1);
    let crc = introspection::decode::leveldb::coding::masked_crc(&[&snappy, &[1]]);
    block.extend_from_slice(&crc.to_le_bytes());
    // Point the index at it: rewrite the table as block + footer.
    let mut table = block;
    let mut footer = Vec::new();
    introspection::decode::leveldb::coding::put_varint(&mut footer, 0);
    introspection::decode::leveldb::coding::put_varint(&mut footer, 0);
    introspection::decode::leveldb::coding::put_varint(&mut footer, 0);
    introspection::decode::leveldb::coding::put_varint(&mut footer, snappy.len() as u64);
    footer.resize(40, 0);
    footer.extend_from_slice(&introspection::decode::leveldb::table::TABLE_MAGIC.to_le_bytes());
    table.extend_from_slice(&footer);
    *t = table;
    let e = open(&damaged).unwrap_err();
    assert!(e.reason.contains("over the limit"), "{e}");
}
