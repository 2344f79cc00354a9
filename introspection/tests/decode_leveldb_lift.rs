//! Lifting a LevelDB database through the guest-hint pipeline: every file
//! of the directory laid out on a fake disk and hinted (`CURRENT` as main,
//! the rest as parts, format leveldb); at each barrier the lifter bundles
//! the files and the differ reports the puts/deletes in order, collection =
//! the database directory, `before` from the previous state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use hint_proto::{decode, encode_extents, encode_file, encode_size, Extent, Format, Role};
use introspection::lift::{Differ, Lifted, Lifter};
use introspection::{Change, Op};
use rusty_leveldb::{Options, DB};
use serde_json::json;

const DISK: usize = 16 << 20;
const CURRENT_ID: u32 = 1;

/// Lays the directory's files out on `disk` (4 KiB aligned, from `at`, a
/// region no current extent uses) and tells the lifter with hints, as a
/// guest agent would.
fn lay_out(
    dir: &Path,
    disk: &mut [u8],
    mut at: usize,
    lifter: &mut Lifter,
    ids: &mut BTreeMap<String, u32>,
) {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    // Files gone from the directory: the guest says so.
    let gone: Vec<String> = ids.keys().filter(|n| !names.contains(n)).cloned().collect();
    for name in gone {
        let mut buf = [0u8; 64];
        let n = encode_size(ids[&name], 0, false, &mut buf).unwrap();
        lifter.table.apply(&decode(&buf[..n]).unwrap().0).unwrap();
        let n = hint_proto::encode_forget(ids[&name], &mut buf).unwrap();
        lifter.table.apply(&decode(&buf[..n]).unwrap().0).unwrap();
        ids.remove(&name);
    }
    for name in names {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        let next = ids.values().max().copied().unwrap_or(CURRENT_ID) + 1;
        let id = if name == "CURRENT" {
            CURRENT_ID
        } else {
            *ids.entry(name.clone()).or_insert(next)
        };
        ids.insert(name.clone(), id);
        let role = if id == CURRENT_ID {
            Role::Main
        } else {
            Role::Part
        };
        let mut buf = vec![0u8; 4096];
        let path = format!("/data/db/{name}");
        let n = encode_file(id, CURRENT_ID, Format::LevelDb, role, &path, &mut buf).unwrap();
        lifter.table.apply(&decode(&buf[..n]).unwrap().0).unwrap();
        let len = bytes.len().max(1);
        disk[at..at + bytes.len()].copy_from_slice(&bytes);
        let ext = [Extent {
            file_offset: 0,
            sector: (at / 512) as u64,
            len: len as u64,
        }];
        let n = encode_extents(id, &ext, &mut buf).unwrap();
        lifter.table.apply(&decode(&buf[..n]).unwrap().0).unwrap();
        let n = encode_size(id, bytes.len() as u64, true, &mut buf).unwrap();
        lifter.table.apply(&decode(&buf[..n]).unwrap().0).unwrap();
        at += len.div_ceil(4096) * 4096;
    }
}

fn lift(disk: &[u8], lifter: &mut Lifter, differ: &mut Differ) -> Vec<Change> {
    let written: BTreeSet<u64> = (0..(DISK / 4096) as u64).collect();
    let hinted: BTreeSet<u32> = lifter.table.files().map(|(id, _)| *id).collect();
    let mut read = |off: u64, len: usize| Ok(disk[off as usize..off as usize + len].to_vec());
    let versions = lifter.versions(&written, &hinted, &mut read);
    let mut out = Vec::new();
    for l in differ.diff(versions) {
        match l {
            Lifted::Changes {
                file,
                format,
                changes,
                ..
            } => {
                assert_eq!(
                    (file.as_str(), format),
                    ("/data/db/CURRENT", introspection::Format::LevelDb)
                );
                out.extend(changes);
            }
            Lifted::Error { reason, .. } => panic!("lift error: {reason}"),
        }
    }
    out
}

#[test]
fn hinted_leveldb_directory_lifts_puts_and_deletes() {
    let dir = tempfile::tempdir().unwrap();
    let opts = || Options {
        write_buffer_size: 4 << 10,
        ..Options::default()
    };
    let mut db = DB::open(dir.path(), opts()).unwrap();
    let mut disk = vec![0u8; DISK];
    let mut lifter = Lifter::new(DISK as u64);
    let mut differ = Differ::default();
    let mut ids = BTreeMap::new();

    db.put(b"a", b"1").unwrap();
    db.put(b"b", b"2").unwrap();
    db.flush().unwrap();
    lay_out(dir.path(), &mut disk, 0, &mut lifter, &mut ids);
    let first = lift(&disk, &mut lifter, &mut differ);
    let keys: Vec<(&str, Op)> = first.iter().map(|c| (c.key.as_str(), c.op)).collect();
    assert_eq!(keys, [("a", Op::Insert), ("b", Op::Insert)]);
    assert!(first.iter().all(|c| c.collection == "/data/db"));

    db.put(b"a", b"10").unwrap();
    db.delete(b"b").unwrap();
    db.delete(b"never").unwrap();
    db.put(b"c", b"3").unwrap();
    db.flush().unwrap();
    lay_out(dir.path(), &mut disk, 4 << 20, &mut lifter, &mut ids);
    let second = lift(&disk, &mut lifter, &mut differ);
    let got: Vec<_> = second
        .iter()
        .map(|c| (c.key.as_str(), c.op, c.before.clone(), c.after.clone()))
        .collect();
    assert_eq!(
        got,
        [
            ("a", Op::Update, Some(json!("1")), Some(json!("10"))),
            ("b", Op::Delete, Some(json!("2")), None),
            ("c", Op::Insert, None, Some(json!("3"))),
        ]
    );

    // Enough writes to flush memtables into tables and start new logs:
    // the lifted changes still follow the state.
    let mut expect: BTreeMap<String, String> = [("a", "10"), ("c", "3")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut state = expect.clone();
    for i in 0..400 {
        let k = format!("k{}", i % 37);
        let v = format!("value-{i}-{}", "x".repeat(i % 50));
        db.put(k.as_bytes(), v.as_bytes()).unwrap();
        expect.insert(k, v);
    }
    db.flush().unwrap();
    lay_out(dir.path(), &mut disk, 8 << 20, &mut lifter, &mut ids);
    assert!(
        ids.keys().any(|n| n.ends_with(".ldb")),
        "memtables were flushed: {ids:?}"
    );
    for c in lift(&disk, &mut lifter, &mut differ) {
        match c.after {
            Some(serde_json::Value::String(v)) => state.insert(c.key, v),
            _ => state.remove(&c.key),
        };
    }
    assert_eq!(state, expect);
}
