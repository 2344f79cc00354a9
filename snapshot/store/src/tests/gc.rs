//! Compaction: stale handles, crashed compactions, pack numbering.

use super::object;
use crate::{ObjectId, Store, StoreOptions, BLOCK_SIZE};

fn packs(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn compact_keeps_live_objects_and_rolls_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        pack_target_size: 64 << 10,
        ..StoreOptions::default()
    };
    let store = Store::open_with(tmp.path(), opts).unwrap();
    let data: Vec<Vec<u8>> = (0..100).map(|n| object(1, n, BLOCK_SIZE)).collect();
    let ids = store.put_batch(&data).unwrap();
    let odd_zero = store.put(&[0u8; 5000]).unwrap();
    store.sync().unwrap();
    let before = store.stats();
    assert!(before.packs > 1);

    let lock = store.gc_lock().unwrap();
    let live: std::collections::HashSet<ObjectId> =
        ids.iter().step_by(2).copied().chain([odd_zero]).collect();
    let r = store.compact(&lock, |id| live.contains(id)).unwrap();
    drop(lock);
    assert_eq!((r.objects_before, r.objects_kept), (100, 50));
    assert!(r.stored_bytes_after < r.stored_bytes_before);
    assert!(r.bytes_freed > 0);
    for (i, (id, d)) in ids.iter().zip(&data).enumerate() {
        if i % 2 == 0 {
            assert_eq!(&store.get(id).unwrap(), d);
        } else {
            assert!(!store.contains(id));
        }
    }
    assert_eq!(store.get(&odd_zero).unwrap(), vec![0u8; 5000]);
    assert!(!tmp.path().join("index.log.compact").exists());
    // Old pack numbers are gone and not reused.
    let names = packs(tmp.path());
    assert!(
        names[0].as_str() > format!("{:08}.pack", before.packs - 1).as_str(),
        "{names:?}"
    );
    let reopened = Store::open(tmp.path()).unwrap();
    assert!(reopened.open_report().warnings.is_empty());
    assert_eq!(reopened.stats().objects, 50);
}

#[test]
fn uncompressed_puts_are_compressed_by_compaction() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    // Even objects compress, odd ones do not (see `object`).
    let data: Vec<Vec<u8>> = (0..20).map(|n| object(3, n, BLOCK_SIZE)).collect();
    let ids: Vec<ObjectId> = data.iter().map(|d| ObjectId::of(d)).collect();
    let (_, put) = store.put_batch_hashed_raw_report(&data, &ids).unwrap();
    assert_eq!(put.new_objects, 20);
    assert_eq!(
        put.new_stored_bytes,
        20 * BLOCK_SIZE as u64,
        "stored as they are"
    );
    store.sync().unwrap();

    let lock = store.gc_lock().unwrap();
    let r = store.compact(&lock, |_| true).unwrap();
    drop(lock);
    assert_eq!(r.objects_kept, 20);
    // The ten compressible objects shrank; the ten others kept their size.
    assert!(
        r.stored_bytes_after < 10 * BLOCK_SIZE as u64 + 10 * 200,
        "{r:?}"
    );
    assert!(r.stored_bytes_after > 10 * BLOCK_SIZE as u64, "{r:?}");
    for (id, d) in ids.iter().zip(&data) {
        assert_eq!(&store.get(id).unwrap(), d);
    }
    let reopened = Store::open(tmp.path()).unwrap();
    assert!(reopened.open_report().warnings.is_empty());
    assert_eq!(reopened.stats().stored_bytes, r.stored_bytes_after);
    for (id, d) in ids.iter().zip(&data) {
        assert_eq!(&reopened.get(id).unwrap(), d);
    }
}

#[test]
fn a_damaged_uncompressed_object_is_copied_as_it_is_and_still_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let d = object(4, 0, BLOCK_SIZE);
    let id = ObjectId::of(&d);
    store.put_batch_hashed_raw_report(&[&d], &[id]).unwrap();
    store.sync().unwrap();
    // Flip a byte of the stored value (the pack's last byte is its last).
    let pack = tmp.path().join("packs").join(&packs(tmp.path())[0]);
    let mut bytes = std::fs::read(&pack).unwrap();
    *bytes.last_mut().unwrap() ^= 1;
    std::fs::write(&pack, &bytes).unwrap();

    let lock = store.gc_lock().unwrap();
    let r = store.compact(&lock, |_| true).unwrap();
    drop(lock);
    // Copied as it is, not compressed: the damage is still what a get
    // reports.
    assert_eq!(r.stored_bytes_after, BLOCK_SIZE as u64);
    assert!(store.get(&id).is_err());
}

#[test]
fn a_writer_with_a_stale_view_stores_again_what_compaction_dropped() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path()).unwrap();
    let b = Store::open(tmp.path()).unwrap();
    let x = object(2, 1, BLOCK_SIZE);
    let id = a.put(&x).unwrap();
    assert!(b.contains(&id), "b's view has x");
    let lock = a.gc_lock().unwrap();
    a.compact(&lock, |_| false).unwrap();
    drop(lock);
    assert!(!a.contains(&id));
    // b's unlocked dedup check still sees x, but the put must store it.
    b.put(&x).unwrap();
    assert_eq!(a.get(&id).unwrap(), x);
    assert_eq!(b.get(&id).unwrap(), x);
}

#[test]
fn a_crashed_compaction_leaves_the_store_usable_and_is_cleaned_up() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let data: Vec<Vec<u8>> = (0..20).map(|n| object(3, n, BLOCK_SIZE)).collect();
    let ids = store.put_batch(&data).unwrap();
    store.sync().unwrap();
    drop(store);
    // What a compaction that died before its rename leaves: a new pack
    // above the others and a half-written new index.
    std::fs::write(tmp.path().join("packs/00000005.pack"), vec![7u8; 1000]).unwrap();
    std::fs::write(tmp.path().join("index.log.compact"), b"half").unwrap();

    let store = Store::open(tmp.path()).unwrap();
    assert!(store.open_report().warnings.is_empty());
    for (id, d) in ids.iter().zip(&data) {
        assert_eq!(&store.get(id).unwrap(), d);
    }
    let more = store.put(&object(3, 99, BLOCK_SIZE)).unwrap();
    let lock = store.gc_lock().unwrap();
    let r = store.compact(&lock, |_| true).unwrap();
    assert_eq!(r.objects_kept, 21);
    assert_eq!(packs(tmp.path()), vec!["00000006.pack".to_string()]);
    drop(lock);
    assert!(store.get(&more).is_ok());
    assert!(!tmp.path().join("index.log.compact").exists());
}

#[test]
fn pins_and_the_collection_lock_exclude_each_other() {
    let tmp = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(Store::open(tmp.path()).unwrap());
    let pin = store.pin().unwrap();
    let pin2 = store.pin().unwrap(); // shared
    let (tx, rx) = std::sync::mpsc::channel();
    let s = store.clone();
    let t = std::thread::spawn(move || {
        let _lock = s.gc_lock().unwrap();
        tx.send(()).unwrap();
    });
    std::thread::sleep(std::time::Duration::from_millis(100));
    assert!(rx.try_recv().is_err(), "gc must wait for the pins");
    drop(pin);
    drop(pin2);
    rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
    t.join().unwrap();
}
