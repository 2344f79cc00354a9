//! Damage and crashes: torn index tails, corrupt packs, reboots.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::object;
use crate::store::format::{Loc, Record};
use crate::store::{ObjectId, Store, StoreError, StoreOptions, BLOCK_SIZE};

/// The live location of `id` according to the index file.
fn loc_of(dir: &Path, id: &ObjectId) -> Loc {
    let bytes = std::fs::read(dir.join("index.log")).unwrap();
    let mut found = None;
    for rec in bytes[64..].chunks_exact(64) {
        if let Ok(Record::Object { id: i, loc }) = Record::decode(rec.try_into().unwrap()) {
            if i == *id {
                found = Some(loc);
            }
        }
    }
    found.expect("object in index")
}

fn set_index_len(dir: &Path, len: u64) {
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("index.log"))
        .unwrap();
    f.set_len(len).unwrap();
}

fn index_len(dir: &Path) -> u64 {
    std::fs::metadata(dir.join("index.log")).unwrap().len()
}

#[test]
fn torn_index_tail_is_reported_then_truncated_by_next_writer() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..10).map(|n| object(10, n, BLOCK_SIZE)).collect();
    {
        let store = Store::open(tmp.path()).unwrap();
        for d in &data {
            store.put(d).unwrap();
        }
    }
    // A crash in the middle of appending the last record.
    let full = index_len(tmp.path());
    set_index_len(tmp.path(), full - 20);

    let store = Store::open(tmp.path()).unwrap();
    let report = store.open_report();
    let torn = report.torn_tail.as_ref().expect("torn tail reported");
    assert_eq!((torn.offset, torn.bytes), (full - 64, 44));
    assert!(report.warnings[0].contains("partial record"), "{report:?}");
    assert_eq!(report.objects, 9);
    for d in &data[..9] {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d);
    }
    let last = ObjectId::of(&data[9]);
    assert!(matches!(store.get(&last), Err(StoreError::NotFound { .. })));

    // A reader-only handle does not touch the file.
    assert_eq!(index_len(tmp.path()), full - 20);
    // The next writer truncates the tail and appends cleanly.
    let extra = object(10, 100, BLOCK_SIZE);
    store.put_batch(&[&data[9], &extra]).unwrap();
    assert_eq!(index_len(tmp.path()) % 64, 0);
    assert!(store.warnings().iter().any(|w| w.contains("truncated")));
    let reopened = Store::open(tmp.path()).unwrap();
    assert_eq!(reopened.open_report().torn_tail, None);
    for d in data.iter().chain([&extra]) {
        assert_eq!(&reopened.get(&ObjectId::of(d)).unwrap(), d);
    }
}

#[test]
fn corrupt_pack_byte_is_reported_with_the_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let noise = object(11, 1, BLOCK_SIZE);
    let text = object(11, 2, BLOCK_SIZE);
    let ids = store.put_batch(&[&noise, &text]).unwrap();
    for id in &ids {
        let loc = loc_of(tmp.path(), id);
        let pack = tmp.path().join(format!("packs/{:08}.pack", loc.pack));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&pack)
            .unwrap();
        let at = loc.offset + u64::from(loc.stored_len) / 2;
        let mut b = [0u8];
        f.read_exact_at(&mut b, at).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], at).unwrap();
        let err = Store::open(tmp.path()).unwrap().get(id).unwrap_err();
        match &err {
            StoreError::Corrupt { id: bad, path, .. } => {
                assert_eq!(bad, id);
                assert_eq!(path, &pack);
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
        assert!(err.to_string().contains(&id.to_string()), "{err}");
    }
}

#[test]
fn damaged_record_written_this_boot_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..6).map(|n| object(12, n, BLOCK_SIZE)).collect();
    let store = Store::open(tmp.path()).unwrap();
    for d in &data {
        store.put(d).unwrap();
    }
    // Flip a bit in the 4th object record (after header and BOOT record).
    let at = 64 + 64 * 4 + 10;
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(tmp.path().join("index.log"))
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();

    let damaged = Store::open(tmp.path()).unwrap();
    let report = damaged.open_report();
    assert!(report.warnings[0].contains("CRC"), "{report:?}");
    assert_eq!(report.objects, 3);
    assert_eq!(damaged.get(&ObjectId::of(&data[0])).unwrap(), data[0]);
    let err = damaged.put(&object(12, 50, BLOCK_SIZE)).unwrap_err();
    assert!(matches!(err, StoreError::IndexCorrupt { offset, .. } if offset == 64 + 64 * 4));
    assert!(err.to_string().contains("index.log"), "{err}");
}

#[test]
fn reboot_revokes_unsynced_objects_whose_bytes_were_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let opts = StoreOptions::default();
    let synced: Vec<Vec<u8>> = (0..5).map(|n| object(13, n, BLOCK_SIZE)).collect();
    let unsynced: Vec<Vec<u8>> = (5..10).map(|n| object(13, n, BLOCK_SIZE)).collect();
    let first_lost = ObjectId::of(&unsynced[2]);
    {
        let before = Store::open_as(dir, opts.clone(), [1; 16]).unwrap();
        before.put_batch(&synced).unwrap();
        before.sync().unwrap();
        before.put_batch(&unsynced).unwrap();
    }
    // The crash: the pack lost the tail of the unsynced batch, and of the
    // index pages, one holding the 4th unsynced record was not written
    // while a later one was (writeback order is arbitrary).
    let loc = loc_of(dir, &first_lost);
    let pack = dir.join(format!("packs/{:08}.pack", loc.pack));
    OpenOptions::new()
        .write(true)
        .open(&pack)
        .unwrap()
        .set_len(loc.offset + 3)
        .unwrap();
    let end = index_len(dir);
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("index.log"))
        .unwrap();
    f.write_all_at(&[0; 64], end - 2 * 64).unwrap();

    // Same boot: that hole is damage, not a crash tail.
    let same_boot = Store::open_as(dir, opts.clone(), [1; 16]).unwrap();
    assert!(same_boot.put(b"x").is_err());
    drop(same_boot);

    let after = Store::open_as(dir, opts, [2; 16]).unwrap();
    let w = &after.open_report().warnings;
    assert!(
        w.iter().any(|w| w.contains("before the last reboot")),
        "{w:?}"
    );
    // Readers before the first writer see the loss as corruption.
    assert!(matches!(
        after.get(&first_lost),
        Err(StoreError::Corrupt { .. })
    ));
    let fresh = object(13, 99, BLOCK_SIZE);
    after.put(&fresh).unwrap();
    let w = after.warnings();
    assert!(w.iter().any(|w| w.contains("truncated")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("1 object(s)")), "{w:?}");
    for d in synced.iter().chain(&unsynced[..2]).chain([&fresh]) {
        assert_eq!(&after.get(&ObjectId::of(d)).unwrap(), d);
    }
    // unsynced[2] lost its bytes (revoked); [3] and [4] lost their records.
    for d in &unsynced[2..] {
        let id = ObjectId::of(d);
        assert!(matches!(after.get(&id), Err(StoreError::NotFound { .. })));
        assert!(!after.contains(&id));
    }
    // Putting them again stores them again; every handle reads them.
    after.put_batch(&unsynced).unwrap();
    let reader = Store::open_as(dir, StoreOptions::default(), [2; 16]).unwrap();
    assert!(
        reader.open_report().warnings.is_empty(),
        "{:?}",
        reader.open_report()
    );
    for d in synced.iter().chain(&unsynced) {
        assert_eq!(&reader.get(&ObjectId::of(d)).unwrap(), d);
    }
    assert_eq!(reader.stats().objects, 11);
}

#[test]
fn damage_before_a_sync_record_is_not_taken_for_a_crash() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data: Vec<Vec<u8>> = (0..4).map(|n| object(14, n, BLOCK_SIZE)).collect();
    {
        let store = Store::open_as(dir, StoreOptions::default(), [1; 16]).unwrap();
        store.put_batch(&data).unwrap();
        store.sync().unwrap();
    }
    // Damage a synced record, then "reboot".
    let f = OpenOptions::new()
        .write(true)
        .open(dir.join("index.log"))
        .unwrap();
    f.write_all_at(&[0xff; 8], 64 * 3).unwrap();
    let store = Store::open_as(dir, StoreOptions::default(), [2; 16]).unwrap();
    assert!(store.open_report().torn_tail.is_some());
    let err = store.put(&object(14, 9, BLOCK_SIZE)).unwrap_err();
    match err {
        StoreError::IndexCorrupt { offset, detail, .. } => {
            assert_eq!(offset, 64 * 3);
            assert!(detail.contains("sync record"), "{detail}");
        }
        other => panic!("expected IndexCorrupt, got {other:?}"),
    }
    // Nothing was truncated.
    assert_eq!(index_len(dir), 64 * 7);
}
