//! Helpers shared by the change-log tests.
#![allow(dead_code)]

pub mod rng;

use std::path::{Path, PathBuf};

use introspection::{BarrierKind, LogOptions, LogReader, Record, RecordKind};

pub fn hashes(n: usize, salt: u64) -> Vec<[u8; 32]> {
    (0..n as u64)
        .map(|i| *blake3::hash(&(salt * 1000 + i).to_le_bytes()).as_bytes())
        .collect()
}

/// Record `i` of a test log: cycles through every kind.
pub fn kind(i: u64) -> RecordKind {
    match i % 5 {
        0 => RecordKind::BlockWrite {
            sector: i * 8,
            len: 4096 * (1 + i as u32 % 3),
            blocks: hashes(1 + i as usize % 3, i),
        },
        1 => RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: hashes(1, i)[0],
        },
        2 => RecordKind::Mark {
            name: format!("mark-{i}"),
        },
        3 => RecordKind::SnapshotTaken {
            id: format!("snap-{i}"),
        },
        _ => RecordKind::Barrier {
            kind: BarrierKind::Fua,
            disk_checksum: [i as u8; 32],
        },
    }
}

pub fn ts(i: u64) -> u64 {
    1_000_000 + 10 * i
}

/// The record with seq `seq` as the tests write it (`kind(seq)` at `ts(seq)`).
pub fn expected(seq: u64) -> Record {
    Record {
        seq,
        ts_ns: ts(seq),
        kind: kind(seq),
    }
}

pub fn small_segments() -> LogOptions {
    LogOptions {
        segment_max_bytes: 2048,
        index_interval_bytes: 1,
        ..LogOptions::default()
    }
}

pub fn log_dir(tmp: &tempfile::TempDir) -> PathBuf {
    tmp.path().join("logs").join("vm-1")
}

pub fn read_all(dir: &Path) -> Vec<Record> {
    LogReader::open(dir)
        .unwrap()
        .iter()
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap()
}

pub fn files_with_ext(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}
