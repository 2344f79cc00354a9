//! Self-describing packs, repair from them, and version 1 stores.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::object;
use crate::format::{
    encode_header, encode_header_version, Loc, Record, ENTRY_LEN, HEADER_LEN, INDEX_MAGIC,
    PACK_MAGIC, RECORD_LEN,
};
use crate::repair::{scan_entries, Scanned};
use crate::{repair, ObjectCheck, ObjectId, Store, BLOCK_SIZE};

fn pack0(dir: &Path) -> std::path::PathBuf {
    dir.join("packs/00000000.pack")
}

fn xor_byte(path: &Path, at: u64) {
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8];
    f.read_exact_at(&mut b, at).unwrap();
    f.write_all_at(&[b[0] ^ 0x5a], at).unwrap();
}

fn store_with(dir: &Path, seed: u64, n: u64) -> Vec<Vec<u8>> {
    let data: Vec<Vec<u8>> = (0..n).map(|i| object(seed, i, BLOCK_SIZE)).collect();
    let store = Store::open(dir).unwrap();
    store.put_batch(&data[..n as usize / 2]).unwrap();
    store.put_batch(&data[n as usize / 2..]).unwrap();
    store.sync().unwrap();
    data
}

#[test]
fn v2_pack_scan_finds_every_object_and_resyncs_after_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let data = store_with(tmp.path(), 30, 8);
    let mut pack = std::fs::read(pack0(tmp.path())).unwrap();
    let good: Vec<ObjectId> = scan_entries(&pack)
        .into_iter()
        .map(|s| match s {
            Scanned::Good { id, .. } => id,
            bad => panic!("{bad:?}"),
        })
        .collect();
    let ids: Vec<ObjectId> = data.iter().map(|d| ObjectId::of(d)).collect();
    assert_eq!(good, ids);

    // Damage the 3rd entry's header and the 6th entry's value.
    let store = Store::open(tmp.path()).unwrap();
    let loc = |id| store.inner().view.get(id).unwrap();
    let (l2, l5) = (loc(&ids[2]), loc(&ids[5]));
    pack[l2.offset as usize - ENTRY_LEN + 20] ^= 1;
    pack[l5.offset as usize + 7] ^= 1;
    let scanned = scan_entries(&pack);
    let good: Vec<ObjectId> = scanned
        .iter()
        .filter_map(|s| match s {
            Scanned::Good { id, .. } => Some(*id),
            _ => None,
        })
        .collect();
    let expect: Vec<ObjectId> = [0, 1, 3, 4, 6, 7].iter().map(|&i| ids[i]).collect();
    assert_eq!(good, expect);
    let bad: Vec<(Option<ObjectId>, u64)> = scanned
        .iter()
        .filter_map(|s| match s {
            Scanned::Bad { id, offset, .. } => Some((*id, *offset)),
            _ => None,
        })
        .collect();
    assert_eq!(
        bad,
        vec![
            (None, l2.offset - ENTRY_LEN as u64),
            (Some(ids[5]), l5.offset)
        ]
    );
}

#[test]
fn repair_rebuilds_a_deleted_index_from_the_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let data = store_with(tmp.path(), 31, 20);
    let zero_odd = vec![0u8; 5000];
    let zid = Store::open(tmp.path()).unwrap().put(&zero_odd).unwrap();
    std::fs::remove_file(tmp.path().join("index.log")).unwrap();

    let r = repair(tmp.path()).unwrap();
    assert_eq!((r.objects, r.from_scan, r.from_old_index), (20, 20, 0));
    assert!(r.damaged.is_empty() && r.lost.is_empty(), "{r:?}");
    assert!(r.warnings[0].contains("missing"), "{r:?}");
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.open_report().warnings.is_empty());
    for d in &data {
        let id = ObjectId::of(d);
        assert_eq!(&store.get(&id).unwrap(), d);
        assert_eq!(store.check(&id, true).unwrap(), ObjectCheck::Ok);
    }
    // An odd-length zero object lived only in the deleted index.
    assert!(!store.contains(&zid));
    // Writing goes on after the repaired index.
    let more = object(31, 99, BLOCK_SIZE);
    store.put(&more).unwrap();
    assert_eq!(
        Store::open(tmp.path())
            .unwrap()
            .get(&ObjectId::of(&more))
            .unwrap(),
        more
    );
}

#[test]
fn repair_keeps_a_flipped_byte_object_out_and_resyncs_a_damaged_index() {
    let tmp = tempfile::tempdir().unwrap();
    let data = store_with(tmp.path(), 32, 10);
    let ids: Vec<ObjectId> = data.iter().map(|d| ObjectId::of(d)).collect();
    let bad_loc = Store::open(tmp.path())
        .unwrap()
        .inner()
        .view
        .get(&ids[4])
        .unwrap();
    xor_byte(
        &pack0(tmp.path()),
        bad_loc.offset + u64::from(bad_loc.stored_len) / 2,
    );
    // And damage the index record of ids[7] (header, BOOT, then objects).
    xor_byte(&tmp.path().join("index.log"), 64 + 64 * 8 + 3);

    let before = Store::open(tmp.path()).unwrap();
    assert_eq!(before.open_report().damaged.len(), 1);
    assert_eq!(before.check(&ids[7], false).unwrap(), ObjectCheck::Missing);
    assert!(matches!(
        before.check(&ids[4], true).unwrap(),
        ObjectCheck::Damaged(_)
    ));
    assert_eq!(before.check(&ids[4], false).unwrap(), ObjectCheck::Ok);

    let r = repair(tmp.path()).unwrap();
    assert_eq!(r.objects, 9, "{r:?}");
    assert_eq!(r.old_index_damaged_records, 1);
    assert_eq!(r.lost, vec![ids[4]]);
    assert_eq!(r.damaged.len(), 1, "{r:?}");
    assert_eq!(
        (r.damaged[0].id, r.damaged[0].offset),
        (Some(ids[4]), bad_loc.offset)
    );
    let store = Store::open(tmp.path()).unwrap();
    assert!(store.open_report().damaged.is_empty());
    for (i, d) in data.iter().enumerate() {
        if i == 4 {
            assert!(!store.contains(&ids[i]));
        } else {
            assert_eq!(&store.get(&ids[i]).unwrap(), d, "object {i}");
        }
    }
    // The old index is kept, untouched, beside the new one.
    let saved = r.old_index_saved.clone().unwrap();
    assert_eq!(std::fs::read(&saved).unwrap().len() as u64, 64 * 13);
    // The handle opened before repair reloads the new index.
    assert_eq!(before.get(&ids[7]).unwrap(), data[7]);
    // Putting the damaged object again heals the store.
    store.put(&data[4]).unwrap();
    assert_eq!(before.get(&ids[4]).unwrap(), data[4]);
}

/// Writes a version 1 store by hand: one pack of raw values back to back.
fn v1_store(dir: &Path, data: &[Vec<u8>]) {
    std::fs::create_dir_all(dir.join("packs")).unwrap();
    let mut pack = encode_header_version(PACK_MAGIC, 1, 0).to_vec();
    let mut index = encode_header(INDEX_MAGIC, RECORD_LEN as u32).to_vec();
    for d in data {
        let loc = Loc {
            pack: 0,
            offset: pack.len() as u64,
            stored_len: d.len() as u32,
            raw_len: d.len() as u32,
            flags: 0,
        };
        pack.extend_from_slice(d);
        index.extend_from_slice(
            &Record::Object {
                id: ObjectId::of(d),
                loc,
            }
            .encode(),
        );
    }
    std::fs::write(pack0(dir), pack).unwrap();
    std::fs::write(dir.join("index.log"), index).unwrap();
}

#[test]
fn version_1_stores_read_grow_in_v2_packs_and_repair_from_their_index() {
    let tmp = tempfile::tempdir().unwrap();
    let old: Vec<Vec<u8>> = (0..4).map(|i| object(33, i * 2 + 1, BLOCK_SIZE)).collect();
    v1_store(tmp.path(), &old);
    let store = Store::open(tmp.path()).unwrap();
    for d in &old {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d);
    }
    // New objects go to a new, version 2 pack: the v1 pack never grows.
    let v1_len = std::fs::metadata(pack0(tmp.path())).unwrap().len();
    let new = object(33, 100, BLOCK_SIZE);
    store.put(&new).unwrap();
    assert_eq!(std::fs::metadata(pack0(tmp.path())).unwrap().len(), v1_len);
    let pack1 = std::fs::read(tmp.path().join("packs/00000001.pack")).unwrap();
    assert_eq!(&pack1[8..12], &2u32.to_le_bytes());
    assert_eq!(scan_entries(&pack1).len(), 1);

    // Damage one v1 value: repair keeps the rest (through the index).
    xor_byte(&pack0(tmp.path()), HEADER_LEN + 4096 + 10);
    let r = repair(tmp.path()).unwrap();
    assert_eq!(r.v1_packs, vec![0]);
    assert_eq!((r.from_scan, r.from_old_index), (1, 3), "{r:?}");
    assert_eq!(r.lost, vec![ObjectId::of(&old[1])]);
    let store = Store::open(tmp.path()).unwrap();
    for d in old
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, d)| d)
        .chain([&new])
    {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d);
    }
}

#[test]
fn compaction_rewrites_a_v1_store_as_scannable_v2_packs() {
    let tmp = tempfile::tempdir().unwrap();
    let old: Vec<Vec<u8>> = (0..6).map(|i| object(34, i, BLOCK_SIZE)).collect();
    v1_store(tmp.path(), &old);
    let store = Store::open(tmp.path()).unwrap();
    let dead = ObjectId::of(&old[5]);
    let lock = store.gc_lock().unwrap();
    let r = store.compact(&lock, |id| *id != dead).unwrap();
    assert_eq!(r.objects_kept, 5);
    drop(lock);
    assert!(!pack0(tmp.path()).exists());
    // Without the index, a scan of the new packs finds every kept object.
    std::fs::remove_file(tmp.path().join("index.log")).unwrap();
    let r = repair(tmp.path()).unwrap();
    assert!(r.v1_packs.is_empty(), "{r:?}");
    assert_eq!((r.objects, r.from_scan), (5, 5), "{r:?}");
    let store = Store::open(tmp.path()).unwrap();
    for d in &old[..5] {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d);
    }
    assert!(!store.contains(&dead));
}

#[test]
fn repair_rebuilds_an_index_whose_header_is_garbage() {
    let tmp = tempfile::tempdir().unwrap();
    let data = store_with(tmp.path(), 35, 6);
    let index = tmp.path().join("index.log");
    let f = OpenOptions::new().write(true).open(&index).unwrap();
    f.write_all_at(b"garbage!", 0).unwrap();
    assert!(Store::open(tmp.path()).is_err());
    let r = repair(tmp.path()).unwrap();
    assert!(r.warnings[0].contains("unreadable header"), "{r:?}");
    assert_eq!(r.objects, 6);
    let store = Store::open(tmp.path()).unwrap();
    for d in &data {
        assert_eq!(&store.get(&ObjectId::of(d)).unwrap(), d);
    }
}

#[test]
fn deep_check_reports_a_damaged_entry_header_of_a_readable_object() {
    let tmp = tempfile::tempdir().unwrap();
    let data = store_with(tmp.path(), 31, 4);
    let ids: Vec<ObjectId> = data.iter().map(|d| ObjectId::of(d)).collect();
    let loc = Store::open(tmp.path())
        .unwrap()
        .inner()
        .view
        .get(&ids[1])
        .unwrap();
    // One byte of the id inside the header: the value is untouched.
    xor_byte(&pack0(tmp.path()), loc.offset - ENTRY_LEN as u64 + 20);
    let store = Store::open(tmp.path()).unwrap();
    assert_eq!(
        store.get(&ids[1]).unwrap(),
        data[1],
        "the value still reads"
    );
    match store.check(&ids[1], true).unwrap() {
        ObjectCheck::Damaged(why) => assert!(why.contains("entry header"), "{why}"),
        other => panic!("a damaged header passed the deep check: {other:?}"),
    }
    assert_eq!(store.check(&ids[1], false).unwrap(), ObjectCheck::Ok);
    for id in [&ids[0], &ids[2], &ids[3]] {
        assert_eq!(store.check(id, true).unwrap(), ObjectCheck::Ok);
    }
}
