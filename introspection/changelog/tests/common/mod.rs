//! Helpers shared by the change-log tests.
#![allow(dead_code)]

// The one test generator of the workspace's storage and decoder tests.
#[path = "../../../tests/common/rng.rs"]
pub mod rng;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use changelog::log::FrameInfo;
use changelog::{BarrierKind, Hlc, LogOptions, LogReader, LogWriter, NodeId, Record, RecordKind};

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
    // Times increase by record: every stamp's logical part is 0.
    Record::new(seq, Hlc::new(ts(seq), 0, NodeId::local()), kind(seq))
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

/// A log of `frames` frames of 5 records each (seq = 5 * frame + 1 ..).
pub fn make_log(dir: &Path, frames: u64, opts: LogOptions) -> Vec<FrameInfo> {
    let (mut w, _) = LogWriter::open_with(dir, "vm-1", opts).unwrap();
    for seq in 1..=frames * 5 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        if seq % 5 == 0 {
            w.commit().unwrap();
        }
    }
    w.close().unwrap();
    frames_of(dir, frames)
}

/// Like [`make_log`], but the writer "crashes" (is dropped without a close)
/// after syncing only the first `synced` frames: the log is unsealed and
/// its later frames lie after the last sync point.
pub fn make_crashed_log(dir: &Path, frames: u64, synced: u64, opts: LogOptions) -> Vec<FrameInfo> {
    let (mut w, _) = LogWriter::open_with(dir, "vm-1", opts).unwrap();
    for seq in 1..=frames * 5 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        if seq % 5 == 0 {
            w.commit().unwrap();
        }
        if seq == synced * 5 {
            w.sync().unwrap();
        }
    }
    drop(w);
    frames_of(dir, frames)
}

fn frames_of(dir: &Path, frames: u64) -> Vec<FrameInfo> {
    let f = LogReader::open(dir).unwrap().frames().unwrap();
    assert_eq!(f.len() as u64, frames);
    f
}

pub fn flip_bit(path: &Path, offset: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, offset).unwrap();
    f.write_all_at(&[b[0] ^ 0x08], offset).unwrap();
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}
