//! Single-process behaviour: roundtrips, zero objects, dedup, ids, packs.

use super::{object, object_records};
use crate::{ObjectId, Store, StoreError, StoreOptions, BLOCK_SIZE, MAX_OBJECT_LEN};

fn pack_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join("packs"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

fn index_len(dir: &std::path::Path) -> u64 {
    std::fs::metadata(dir.join("index.log")).unwrap().len()
}

#[test]
fn roundtrip_compressible_and_incompressible() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let text = object(1, 0, BLOCK_SIZE);
    let noise = object(1, 1, BLOCK_SIZE);
    let id_text = store.put(&text).unwrap();
    assert_eq!(id_text, ObjectId::of(&text));
    let s = store.stats();
    assert_eq!((s.objects, s.raw_bytes, s.packs), (1, 4096, 1));
    assert!(
        s.stored_bytes < 1024,
        "text must be stored compressed: {s:?}"
    );

    let id_noise = store.put(&noise).unwrap();
    let s2 = store.stats();
    assert_eq!(
        s2.stored_bytes - s.stored_bytes,
        4096,
        "noise must be stored raw"
    );

    // Odd sizes, tiny, and large objects.
    let big = object(1, 3, 1 << 20);
    let big_text = object(1, 4, 1 << 20);
    let odd = [
        object(1, 5, 1),
        object(1, 6, 5000),
        big.clone(),
        big_text.clone(),
    ];
    let ids = store.put_batch(&odd).unwrap();
    assert_eq!(store.get(&id_text).unwrap(), text);
    assert_eq!(store.get(&id_noise).unwrap(), noise);
    for (id, data) in ids.iter().zip(&odd) {
        assert_eq!(&store.get(id).unwrap(), data);
    }
    // A second handle (fresh view from disk) reads the same.
    let again = Store::open(tmp.path()).unwrap();
    assert!(again.open_report().warnings.is_empty());
    assert_eq!(again.open_report().objects, 6);
    for (id, data) in ids.iter().zip(&odd) {
        assert_eq!(&again.get(id).unwrap(), data);
    }
    assert_eq!(again.stats(), store.stats());
}

#[test]
fn zero_objects_store_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let header_only = index_len(tmp.path());
    assert_eq!(header_only, 64);

    let zero = vec![0u8; BLOCK_SIZE];
    let ids = store
        .put_batch(&[&zero[..], &[0u8; 8192][..], &[][..], &zero[..512]])
        .unwrap();
    assert_eq!(ids[0], ObjectId::ZERO_BLOCK);
    assert!(ids[0].is_zero_block() && crate::is_zero_block(&ids[0]));
    assert_eq!(ids[1], ObjectId::of(&[0u8; 8192]));
    assert!(
        pack_files(tmp.path()).is_empty(),
        "no pack for zero objects"
    );
    assert_eq!(index_len(tmp.path()), header_only, "nothing written");
    assert_eq!(store.stats().objects, 0);

    // Answerable by any handle, without anything on disk.
    let other = Store::open(tmp.path()).unwrap();
    assert_eq!(other.get(&ObjectId::zero_block()).unwrap(), zero);
    assert_eq!(other.get(&ids[1]).unwrap(), vec![0u8; 8192]);
    assert_eq!(other.get(&ids[2]).unwrap(), Vec::<u8>::new());
    assert!(other.contains(&ids[3]));

    // An odd length is not well known: an index-only record, no pack bytes.
    let odd = vec![0u8; 5000];
    let id = store.put(&odd).unwrap();
    assert_eq!(id, ObjectId::zero(5000));
    assert!(pack_files(tmp.path()).is_empty());
    assert_eq!(other.get(&id).unwrap(), odd);
    assert_eq!(store.stats().objects, 0, "zero objects are not counted");
}

#[test]
fn same_data_twice_is_one_object() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let a = object(2, 1, BLOCK_SIZE);
    let b = object(2, 2, BLOCK_SIZE);
    let id1 = store.put(&a).unwrap();
    let len_after_first = index_len(tmp.path());
    let id2 = store.put(&a).unwrap();
    assert_eq!(id1, id2);
    assert_eq!(
        index_len(tmp.path()),
        len_after_first,
        "no record for a dup"
    );
    let ids = store.put_batch(&[&b, &a, &b, &b]).unwrap();
    assert_eq!(
        ids,
        vec![ObjectId::of(&b), id1, ObjectId::of(&b), ObjectId::of(&b)]
    );
    let recs = object_records(tmp.path());
    assert_eq!(recs.len(), 2);
    assert!(recs.values().all(|&n| n == 1), "{recs:?}");
    assert_eq!(store.stats().objects, 2);
}

#[test]
fn two_handles_overlapping_store_each_object_once() {
    let tmp = tempfile::tempdir().unwrap();
    let a = Store::open(tmp.path()).unwrap();
    let b = Store::open(tmp.path()).unwrap();
    let data: Vec<Vec<u8>> = (0..150).map(|n| object(3, n, BLOCK_SIZE)).collect();
    // b's view is stale when it writes: the lock-time refresh must dedup.
    a.put_batch(&data[..100]).unwrap();
    b.put_batch(&data[50..]).unwrap();
    a.put_batch(&data[90..120]).unwrap();
    let recs = object_records(tmp.path());
    assert_eq!(recs.len(), 150);
    assert!(
        recs.values().all(|&n| n == 1),
        "duplicates stored: {recs:?}"
    );
    for d in &data {
        let id = ObjectId::of(d);
        assert!(a.contains(&id) && b.contains(&id));
        assert_eq!(&a.get(&id).unwrap(), d);
        assert_eq!(&b.get(&id).unwrap(), d);
    }
    assert_eq!(a.stats(), b.stats());
    assert_eq!(a.stats().objects, 150);
    assert_eq!(a.stats().raw_bytes, 150 * 4096);
}

#[test]
fn object_id_text_forms() {
    assert_eq!(ObjectId::ZERO_BLOCK, ObjectId::of(&[0u8; BLOCK_SIZE]));
    assert_eq!(ObjectId::zero(4096), ObjectId::ZERO_BLOCK);
    assert_eq!(ObjectId::zero(5000), ObjectId::of(&[0u8; 5000]));
    assert_eq!(ObjectId::zero(1 << 20).zero_len(), Some(1 << 20));
    assert_eq!(ObjectId::zero(5000).zero_len(), None);
    let id = ObjectId::of(b"hello");
    let hex = id.to_string();
    assert_eq!(hex.len(), 64);
    assert_eq!(hex, blake3::hash(b"hello").to_hex().as_str());
    assert_eq!(hex.parse::<ObjectId>().unwrap(), id);
    assert_eq!(hex.to_uppercase().parse::<ObjectId>().unwrap(), id);
    assert!("abc".parse::<ObjectId>().is_err());
    assert!("g".repeat(64).parse::<ObjectId>().is_err());
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(json, format!("\"{hex}\""));
    assert_eq!(serde_json::from_str::<ObjectId>(&json).unwrap(), id);
    assert!(serde_json::from_str::<ObjectId>("\"xyz\"").is_err());
    assert!(crate::is_all_zero(&[0u8; 200]));
    assert!(!crate::is_all_zero(&[0, 0, 0, 1]));
    let mut late = vec![0u8; 4096];
    late[4000] = 1;
    assert!(!crate::is_all_zero(&late));
}

#[test]
fn packs_roll_over() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        pack_target_size: 64 << 10,
        ..StoreOptions::default()
    };
    let store = Store::open_with(tmp.path(), opts).unwrap();
    let data: Vec<Vec<u8>> = (0..60).map(|n| object(4, 2 * n + 1, BLOCK_SIZE)).collect();
    for chunk in data.chunks(7) {
        store.put_batch(chunk).unwrap();
    }
    let packs = pack_files(tmp.path());
    assert!(packs.len() >= 3, "{packs:?}");
    for p in &packs {
        let len = std::fs::metadata(p).unwrap().len();
        assert!(len <= (64 << 10) + 4096, "{p:?} is {len} bytes");
    }
    assert_eq!(store.stats().packs, packs.len() as u64);
    let reopened = Store::open(tmp.path()).unwrap();
    for d in &data {
        assert_eq!(&reopened.get(&ObjectId::of(d)).unwrap(), d);
    }
}

#[test]
fn missing_and_oversized_objects_are_typed_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let id = ObjectId::of(b"never put");
    let err = store.get(&id).unwrap_err();
    assert!(matches!(err, StoreError::NotFound { id: e, .. } if e == id));
    assert!(err.to_string().contains(&id.to_string()));
    assert!(!store.contains(&id));
    let huge = vec![1u8; MAX_OBJECT_LEN + 1];
    assert!(matches!(store.put(&huge), Err(StoreError::TooLarge { .. })));
}

#[test]
fn sync_records_once_and_reopens() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    store.sync().unwrap(); // nothing to do on an empty store
    let data: Vec<Vec<u8>> = (0..20).map(|n| object(5, n, BLOCK_SIZE)).collect();
    store.put_batch(&data).unwrap();
    let before = index_len(tmp.path());
    store.sync().unwrap();
    assert_eq!(index_len(tmp.path()), before + 64, "one SYNC record");
    store.sync().unwrap();
    assert_eq!(index_len(tmp.path()), before + 64, "second sync is a no-op");
    let reopened = Store::open(tmp.path()).unwrap();
    assert!(reopened.open_report().warnings.is_empty());
    for d in &data {
        assert_eq!(&reopened.get(&ObjectId::of(d)).unwrap(), d);
    }
}

#[test]
fn store_is_shared_between_threads() {
    fn assert_sync<T: Send + Sync>() {}
    assert_sync::<Store>();
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let store = &store;
            s.spawn(move || {
                let data: Vec<Vec<u8>> = (0..50).map(|n| object(6, n + t * 25, 1000)).collect();
                for d in data.chunks(5) {
                    let ids = store.put_batch(d).unwrap();
                    for (id, d) in ids.iter().zip(d) {
                        assert_eq!(&store.get(id).unwrap(), d);
                    }
                }
            });
        }
    });
    assert_eq!(store.stats().objects, 125);
    assert!(object_records(tmp.path()).values().all(|&n| n == 1));
}

#[test]
fn get_many_answers_as_get_does_in_order() {
    let tmp = tempfile::tempdir().unwrap();
    let opts = StoreOptions {
        pack_target_size: 256 << 10,
        ..StoreOptions::default()
    };
    let store = Store::open_with(tmp.path(), opts).unwrap();
    // Enough to span packs and be checked on two threads.
    let data: Vec<Vec<u8>> = (0..300).map(|n| object(9, n, BLOCK_SIZE)).collect();
    let mut ids = store.put_batch(&data).unwrap();
    let raw: Vec<Vec<u8>> = (300..340).map(|n| object(9, n, BLOCK_SIZE)).collect();
    let raw_ids: Vec<ObjectId> = raw.iter().map(|d| ObjectId::of(d)).collect();
    store.put_batch_hashed_raw_report(&raw, &raw_ids).unwrap();
    ids.extend(&raw_ids);
    let zero = ObjectId::zero(BLOCK_SIZE);
    // Out of pack order, with repeats and a zero object.
    let mut ask: Vec<ObjectId> = ids.iter().rev().copied().collect();
    ask.extend([ids[5], zero, ids[5]]);
    let got = store.get_many(&ask).unwrap();
    assert_eq!(got.len(), ask.len());
    for (id, v) in ask.iter().zip(&got) {
        assert_eq!(v, &store.get(id).unwrap());
    }
    assert_eq!(got[ask.len() - 2], vec![0u8; BLOCK_SIZE]);

    // A missing object: NotFound, as from get.
    let missing = ObjectId::of(b"not stored");
    assert!(matches!(
        store.get_many(&[ids[0], missing]),
        Err(StoreError::NotFound { id, .. }) if id == missing
    ));
    // A damaged one: the same error get gives, in a large batch too.
    let victim = raw_ids[10];
    let (pack, mut bytes, at) = pack_files(tmp.path())
        .into_iter()
        .find_map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            let at = bytes.windows(64).position(|w| w == &raw[10][..64])?;
            Some((p, bytes, at))
        })
        .expect("the raw object is in a pack");
    bytes[at + 100] ^= 1;
    std::fs::write(&pack, &bytes).unwrap();
    let want = store.get(&victim).unwrap_err().to_string();
    assert!(want.contains("hash to"), "{want}");
    let err = store.get_many(&ask).unwrap_err().to_string();
    assert_eq!(err, want);
}
