//! The index snapshot: used when it belongs to the index, ignored (a full
//! replay) when damaged or stale, and a snapshot plus its tail gives the
//! view a full replay gives.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::object;
use crate::format::{encode_header, Loc, Record, FLAG_ZSTD, INDEX_MAGIC, RECORD_LEN};
use crate::index::IndexView;
use crate::{snap, ObjectId, Store};

fn put_many(store: &Store, seed: u64, n: u64) -> Vec<(ObjectId, Vec<u8>)> {
    let data: Vec<Vec<u8>> = (0..n).map(|i| object(seed, i, 100)).collect();
    let ids = store.put_batch(&data).unwrap();
    store.sync().unwrap();
    ids.into_iter().zip(data).collect()
}

/// (index bytes the handle's snapshot covers, its entries).
fn base_of(store: &Store) -> (u64, u64) {
    store.inner().view.base_info()
}

fn all_readable(store: &Store, objects: &[(ObjectId, Vec<u8>)]) {
    for (id, data) in objects {
        assert_eq!(&store.get(id).unwrap(), data);
    }
}

#[test]
fn a_store_opens_from_its_snapshot_and_replays_the_tail() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let mut objects = put_many(&store, 1, 3000);
    drop(store); // saves the snapshot: 3000 records is worth it
    assert!(tmp.path().join(snap::SNAP_FILE).is_file());

    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(base_of(&store).1, 3000);
    objects.extend(put_many(&store, 2, 50));
    let stats = store.stats();
    drop(store); // 50 new records: not worth a new snapshot

    let store = Store::open(tmp.path()).unwrap();
    let (covered, entries) = base_of(&store);
    assert_eq!(entries, 3000);
    assert!(
        covered < store.open_report().index_bytes,
        "a tail was replayed"
    );
    assert_eq!(store.stats(), stats);
    all_readable(&store, &objects);
    assert!(!store.save_index_snapshot().unwrap(), "tail too short");
}

#[test]
fn a_damaged_snapshot_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let objects = put_many(&store, 3, 2000);
    let stats = store.stats();
    drop(store);
    let path = tmp.path().join(snap::SNAP_FILE);
    let mut bytes = std::fs::read(&path).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x10;
    std::fs::write(&path, &bytes).unwrap();

    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(base_of(&store), (0, 0), "full replay");
    assert_eq!(store.stats(), stats);
    all_readable(&store, &objects);
}

#[test]
fn a_snapshot_of_another_index_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let objects = put_many(&store, 4, 2000);
    drop(store);
    let saved = std::fs::read(tmp.path().join(snap::SNAP_FILE)).unwrap();

    // A compaction renames a new index over the old one.
    let store = Store::open(tmp.path()).unwrap();
    let keep: std::collections::HashSet<ObjectId> =
        objects.iter().step_by(2).map(|(id, _)| *id).collect();
    let lock = store.gc_lock().unwrap();
    store.compact(&lock, |id| keep.contains(id)).unwrap();
    drop(lock);
    drop(store);
    std::fs::write(tmp.path().join(snap::SNAP_FILE), &saved).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(base_of(&store), (0, 0), "another inode: full replay");
    assert_eq!(store.stats().objects, 1000);
    for (i, (id, data)) in objects.iter().enumerate() {
        assert_eq!(store.contains(id), i % 2 == 0);
        if i % 2 == 0 {
            assert_eq!(&store.get(id).unwrap(), data);
        }
    }
}

#[test]
fn a_snapshot_past_the_end_of_the_index_is_ignored() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let objects = put_many(&store, 5, 2000);
    drop(store);
    // The index lost its last records (as if the snapshot outlived them).
    let index = tmp.path().join("index.log");
    let len = std::fs::metadata(&index).unwrap().len();
    let f = OpenOptions::new().write(true).open(&index).unwrap();
    f.set_len(len - 2 * RECORD_LEN as u64).unwrap();
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(base_of(&store), (0, 0));
    let present = objects.iter().filter(|(id, _)| store.contains(id)).count();
    assert!((1990..2000).contains(&present), "{present}");
}

/// Index records for `ids`, each in pack 0 at its own offset.
fn object_record(id: u8, offset: u64) -> Record {
    Record::Object {
        id: ObjectId([id; 32]),
        loc: Loc {
            pack: u32::from(id % 3),
            offset,
            stored_len: 10 + u32::from(id),
            raw_len: 100,
            flags: FLAG_ZSTD,
        },
    }
}

fn append(index: &File, records: &[Record]) {
    let len = index.metadata().unwrap().len();
    let bytes: Vec<u8> = records.iter().flat_map(|r| r.encode()).collect();
    index.write_all_at(&bytes, len).unwrap();
}

fn view_of(dir: &Path, index: &File, use_snapshot: bool) -> IndexView {
    let ident = crate::file_identity(index, dir).unwrap();
    let base = use_snapshot
        .then(|| snap::load(dir, index, ident))
        .flatten();
    assert_eq!(base.is_some(), use_snapshot);
    let mut view = base.unwrap_or_else(IndexView::new);
    view.tail(index, &dir.join("index.log")).unwrap();
    view
}

#[test]
fn snapshot_and_tail_give_the_view_of_a_full_replay() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("index.log");
    std::fs::write(&path, encode_header(INDEX_MAGIC, RECORD_LEN as u32)).unwrap();
    let index = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let first: Vec<Record> = (1..=40)
        .map(|i| object_record(i, 64 * u64::from(i)))
        .collect();
    append(&index, &first);
    append(
        &index,
        &[Record::Sync {
            boot: [1; 16],
            covers: 64 * 41,
        }],
    );
    let view = view_of(tmp.path(), &index, false);
    let ident = crate::file_identity(&index, tmp.path()).unwrap();
    snap::save(tmp.path(), &view, &index, ident).unwrap();

    // The tail: revokes, an object moved, new objects, a revoke of one
    // that comes back.
    append(
        &index,
        &[
            Record::Revoke {
                id: ObjectId([3; 32]),
            },
            Record::Revoke {
                id: ObjectId([4; 32]),
            },
            object_record(5, 99_999),
            object_record(41, 8000),
            object_record(4, 7000),
            Record::Boot { boot: [2; 16] },
        ],
    );
    let full = view_of(tmp.path(), &index, false);
    let snapped = view_of(tmp.path(), &index, true);
    let sorted = |v: &IndexView| {
        let mut e: Vec<(ObjectId, Loc)> = v.entries().collect();
        e.sort_by_key(|(id, _)| id.0);
        e
    };
    assert_eq!(sorted(&full), sorted(&snapped));
    assert_eq!(full.totals(), snapped.totals());
    assert_eq!(full.pos, snapped.pos);
    assert_eq!(
        (full.vouched, full.data_end),
        (snapped.vouched, snapped.data_end)
    );
    assert_eq!(full.last_boot, snapped.last_boot);
    assert_eq!(
        format!("{:?}", full.pack_rows()),
        format!("{:?}", snapped.pack_rows())
    );
    for i in 0..=45u8 {
        let id = ObjectId([i; 32]);
        assert_eq!(full.get(&id), snapped.get(&id), "object {i}");
    }
    assert_eq!(snapped.get(&ObjectId([3; 32])), None);
    assert_eq!(snapped.get(&ObjectId([5; 32])).unwrap().offset, 99_999);
}
