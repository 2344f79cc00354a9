//! Damage and crashes: torn index tails, corrupt packs, reboots.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::object;
use crate::format::{Loc, Record};
use crate::{ObjectId, Store, StoreError, StoreOptions, BLOCK_SIZE};

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

fn flip(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 1], at).unwrap();
}

#[test]
fn damaged_record_mid_index_is_skipped_reported_and_never_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..6).map(|n| object(12, n, BLOCK_SIZE)).collect();
    let store = Store::open(tmp.path()).unwrap();
    for d in &data {
        store.put(d).unwrap();
    }
    // Flip a bit in the 4th object record (after header and BOOT record).
    let bad_at = 64 + 64 * 4;
    flip(&tmp.path().join("index.log"), bad_at + 10);
    let len = index_len(tmp.path());

    let damaged = Store::open(tmp.path()).unwrap();
    let report = damaged.open_report();
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert_eq!(
        (report.damaged[0].offset, report.damaged[0].records),
        (bad_at, 1)
    );
    assert!(report.warnings[0].contains("CRC"), "{report:?}");
    assert!(report.warnings[0].contains("repair"), "{report:?}");
    assert_eq!(report.torn_tail, None);
    // Every object after the damaged record is still read.
    assert_eq!(report.objects, 5);
    for (i, d) in data.iter().enumerate().filter(|(i, _)| *i != 3) {
        assert_eq!(&damaged.get(&ObjectId::of(d)).unwrap(), d, "object {i}");
    }
    let err = damaged.get(&ObjectId::of(&data[3])).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("damaged records from byte 320") && msg.contains("repair"),
        "{msg}"
    );
    assert!(!msg.contains("sync"), "{msg}");
    let stats = damaged.stats();
    assert_eq!(stats.damaged_index_records, 1);
    assert_eq!(stats.first_damaged_index_offset, Some(bad_at));

    // A writer appends after the valid records; nothing is cut.
    let extra = object(12, 50, BLOCK_SIZE);
    damaged.put(&extra).unwrap();
    assert!(index_len(tmp.path()) > len);
    let reopened = Store::open(tmp.path()).unwrap();
    assert_eq!(reopened.open_report().damaged.len(), 1);
    assert_eq!(reopened.get(&ObjectId::of(&extra)).unwrap(), extra);
    assert_eq!(reopened.get(&ObjectId::of(&data[5])).unwrap(), data[5]);
}

#[test]
fn damaged_record_at_the_very_end_written_this_boot_refuses_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let data: Vec<Vec<u8>> = (0..3).map(|n| object(15, n, BLOCK_SIZE)).collect();
    let store = Store::open(tmp.path()).unwrap();
    store.put_batch(&data).unwrap();
    let len = index_len(tmp.path());
    flip(&tmp.path().join("index.log"), len - 30);
    let damaged = Store::open(tmp.path()).unwrap();
    assert!(damaged.open_report().torn_tail.is_some());
    assert!(damaged.open_report().damaged.is_empty());
    let err = damaged.put(&object(15, 50, BLOCK_SIZE)).unwrap_err();
    assert!(matches!(err, StoreError::IndexCorrupt { offset, .. } if offset == len - 64));
    assert!(err.to_string().contains("store repair"), "{err}");
    assert_eq!(index_len(tmp.path()), len);
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

    let after = Store::open_as(dir, opts, [2; 16]).unwrap();
    let w = &after.open_report().warnings;
    assert!(
        w.iter().any(|w| w.contains("before the last reboot")),
        "{w:?}"
    );
    // The hole has a valid record after it: damage, skipped, not cut.
    assert_eq!(after.open_report().damaged.len(), 1);
    // Readers before the first writer see the loss as corruption.
    assert!(matches!(
        after.get(&first_lost),
        Err(StoreError::Corrupt { .. })
    ));
    let fresh = object(13, 99, BLOCK_SIZE);
    after.put(&fresh).unwrap();
    let w = after.warnings();
    assert!(!w.iter().any(|w| w.contains("truncated")), "{w:?}");
    // [2] and [4] lost their bytes (revoked); [3] lost its record.
    assert!(w.iter().any(|w| w.contains("2 object(s)")), "{w:?}");
    for d in synced.iter().chain(&unsynced[..2]).chain([&fresh]) {
        assert_eq!(&after.get(&ObjectId::of(d)).unwrap(), d);
    }
    for d in &unsynced[2..] {
        let id = ObjectId::of(d);
        assert!(matches!(after.get(&id), Err(StoreError::NotFound { .. })));
        assert!(!after.contains(&id));
    }
    // Putting them again stores them again; every handle reads them.
    after.put_batch(&unsynced).unwrap();
    let reader = Store::open_as(dir, StoreOptions::default(), [2; 16]).unwrap();
    let w = &reader.open_report().warnings;
    assert!(w.iter().all(|w| w.contains("damaged record")), "{w:?}");
    for d in synced.iter().chain(&unsynced) {
        assert_eq!(&reader.get(&ObjectId::of(d)).unwrap(), d);
    }
    assert_eq!(reader.stats().objects, 11);
}

#[test]
fn damage_before_a_sync_record_is_skipped_never_truncated() {
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
    assert!(store.open_report().torn_tail.is_none());
    assert_eq!(store.open_report().damaged[0].offset, 64 * 3);
    store.put(&object(14, 9, BLOCK_SIZE)).unwrap();
    // Nothing was truncated: the records after the damage are all there.
    assert!(index_len(dir) > 64 * 7);
    for (i, d) in data.iter().enumerate().filter(|(i, _)| *i != 1) {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d, "object {i}");
    }
}
