//! Tests of manifests: format, directory, bad inputs, chains and merge.

use super::format::encode_version;
use super::*;
use crate::pages::{capture, restore, restore_over, PageList, PagesError, PAGE_SIZE};
use crate::testutil::{memory, mutate, Rng};
use store::{ObjectId, Store};

fn setup() -> (tempfile::TempDir, SnapshotDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SnapshotDir::open(tmp.path()).unwrap();
    let store = dir.open_store().unwrap();
    (tmp, dir, store)
}

/// A manifest for one memory region captured from `mem` (relative to
/// `parent` when given), with some state blobs.
fn snapshot_of(
    store: &Store,
    mem: &[u8],
    dirty: Option<&[u64]>,
    parent: Option<(&Manifest, &PageList)>,
) -> (Manifest, PageList) {
    let kind = if parent.is_some() {
        SnapshotKind::Incremental
    } else {
        SnapshotKind::Full
    };
    let mut m = Manifest::new("vm-1", kind, parent.map(|(p, _)| p.id.clone()));
    let (list, st) = capture(store, mem, dirty, parent.map(|(_, l)| l)).unwrap();
    let pages = match parent {
        Some((pm, pl)) => list.save_over(store, pl, &pm.memory[0].pages).unwrap(),
        None => list.save(store).unwrap(),
    };
    m.memory.push(MemoryRegion {
        guest_addr: 0x10_0000,
        size: mem.len() as u64,
        pages,
    });
    m.stats.add_capture(&st);
    m.state.push(StateBlob {
        name: "vcpu0.regs".into(),
        version: 1,
        bytes: m.id.as_bytes().to_vec(),
    });
    m.disk = Some(DiskPosition {
        log_vm_id: "vm-1".into(),
        seq: m.created_ns,
        checksum: [7; 32],
    });
    m.annotations.insert("who".into(), "test".into());
    (m, list)
}

fn restored(store: &Store, m: &Manifest) -> Vec<u8> {
    let r = &m.memory[0];
    let list = PageList::load(store, &r.pages).unwrap();
    let mut out = vec![0u8; r.size as usize];
    restore(store, &list, &mut out).unwrap();
    out
}

#[test]
fn write_read_list_roundtrip() {
    let (_tmp, dir, store) = setup();
    let mem = memory(1, 300);
    let (mut m, _) = snapshot_of(&store, &mem, None, None);
    m.shared.push(SharedRegion {
        name: "ring".into(),
        size: 0,
        pages: PageList::zeroed(0).save(&store).unwrap(),
    });
    let path = dir.write(&m).unwrap();
    assert_eq!(path, dir.snapshots_dir().join(format!("{}.snap", m.id)));
    assert_eq!(dir.read(&m.id).unwrap(), m);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(&bytes[..8], b"VMMSNAP\0");
    assert_eq!(decode(&bytes, &path).unwrap(), m);
    assert_eq!(check(&store, &m).unwrap().pages, 300);

    let (m2, _) = snapshot_of(&store, &mem, None, None);
    dir.write(&m2).unwrap();
    std::fs::write(dir.snapshots_dir().join(".tmp-junk"), b"x").unwrap();
    let list = dir.list().unwrap();
    let ids: Vec<String> = list
        .iter()
        .map(|s| s.as_ref().unwrap().id.clone())
        .collect();
    assert_eq!(ids, vec![m.id.clone(), m2.id.clone()], "sorted by creation");
    let s = list[0].as_ref().unwrap();
    assert_eq!((s.kind, s.memory_bytes), ("full", 300 * 4096));

    let e = dir.write(&m).unwrap_err();
    assert!(matches!(e, ManifestError::AlreadyExists { .. }), "{e}");
}

#[test]
fn ids_are_unique_sortable_and_validated() {
    let ids: Vec<String> = (0..200).map(|_| new_snapshot_id()).collect();
    let mut sorted = ids.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 200);
    for id in &ids {
        validate_id(id).unwrap();
        assert_eq!(id.len(), 35, "{id}");
        assert!(id.starts_with("20"), "{id}");
    }
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(20_454), (2026, 1, 1));
    for bad in ["", "../etc", "a/b", ".hidden", "x y", &"a".repeat(129)] {
        let e = validate_id(bad).unwrap_err();
        assert!(matches!(e, ManifestError::InvalidId { .. }), "{bad}: {e}");
    }
    let (_tmp, dir, _store) = setup();
    assert!(matches!(
        dir.read("../x"),
        Err(ManifestError::InvalidId { .. })
    ));
}

#[test]
fn unknown_id_and_invalid_manifests_are_refused() {
    let (_tmp, dir, store) = setup();
    let e = dir.read("20260101T000000.000000000Z-00000000").unwrap_err();
    assert!(matches!(e, ManifestError::UnknownId { .. }), "{e}");
    assert!(e.to_string().contains("no snapshot"), "{e}");

    let mem = memory(2, 64);
    let (mut m, _) = snapshot_of(&store, &mem, None, None);
    m.kind = SnapshotKind::Incremental;
    assert!(matches!(dir.write(&m), Err(ManifestError::Invalid { .. })));
    m.parent = Some("nope".into());
    let e = dir.write(&m).unwrap_err();
    assert!(matches!(e, ManifestError::MissingParent { .. }), "{e}");
    m.kind = SnapshotKind::Full;
    m.parent = None;
    m.memory[0].size += 1;
    let e = dir.write(&m).unwrap_err();
    assert!(
        e.to_string().contains("memory[0] (guest address 0x100000)"),
        "{e}"
    );
    m.memory[0].size -= 1;
    m.state.push(m.state[0].clone());
    assert!(matches!(dir.write(&m), Err(ManifestError::Invalid { .. })));
}

#[test]
fn damaged_files_give_typed_errors() {
    let (_tmp, dir, store) = setup();
    let mem = memory(3, 64);
    let (m, _) = snapshot_of(&store, &mem, None, None);
    let path = dir.write(&m).unwrap();
    let good = std::fs::read(&path).unwrap();
    let put = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        dir.read(&m.id).unwrap_err()
    };

    let e = put(b"SQLite format 3\0 and more bytes to be long enough");
    assert!(matches!(e, ManifestError::NotASnapshot { .. }), "{e}");
    assert!(e.to_string().contains("not a snapshot manifest"), "{e}");
    assert!(matches!(put(b""), ManifestError::NotASnapshot { .. }));

    for cut in [4, 20, HEADER_LEN, good.len() - 1] {
        let e = put(&good[..cut]);
        assert!(
            matches!(e, ManifestError::Truncated { .. }),
            "cut {cut}: {e}"
        );
        assert!(e.to_string().contains("truncated"), "{e}");
    }

    let mut bad = good.clone();
    bad[HEADER_LEN + 5] ^= 0x40;
    let e = put(&bad);
    assert!(e.to_string().contains("body CRC mismatch"), "{e}");
    let mut bad = good.clone();
    bad[13] ^= 1; // body length
    let e = put(&bad);
    assert!(e.to_string().contains("header CRC mismatch"), "{e}");
    let mut bad = good.clone();
    bad.push(0);
    assert!(matches!(put(&bad), ManifestError::Corrupt { .. }));

    for (v, word) in [(3, "newer than"), (0, "older than")] {
        let e = put(&encode_version(&m, v).unwrap());
        assert!(
            matches!(e, ManifestError::UnsupportedVersion { found, supported: 2, .. } if found == v),
            "{e}"
        );
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "version {v}, {word} the versions this build reads (1 to 2)"
            )),
            "{msg}"
        );
    }

    // Another snapshot's file under this name.
    let (other, _) = snapshot_of(&store, &mem, None, None);
    let e = put(&encode(&other).unwrap());
    assert!(e.to_string().contains("has id"), "{e}");

    std::fs::write(&path, &good).unwrap();
    assert_eq!(dir.read(&m.id).unwrap(), m);
}

#[test]
fn check_names_the_first_missing_object() {
    let (tmp, dir, store) = setup();
    let mem = memory(4, 128);
    let (m, list) = snapshot_of(&store, &mem, None, None);
    dir.write(&m).unwrap();
    check(&store, &m).unwrap();

    // The same manifest against a store that has only some of it.
    let other = Store::open(tmp.path().join("other")).unwrap();
    let e = check(&other, &m).unwrap_err();
    assert!(
        matches!(e, ManifestError::MissingChunk { chunk: 0, .. }),
        "{e}"
    );
    let chunk = store.get(&m.memory[0].pages.chunks[0]).unwrap();
    other.put(&chunk).unwrap();
    let e = check(&other, &m).unwrap_err();
    // Page 0 is the first non-zero page.
    match &e {
        ManifestError::MissingObject {
            page,
            region,
            object,
            ..
        } => {
            assert_eq!(*page, 0);
            assert_eq!(region.locate(0), "guest address 0x100000");
            assert_eq!(*object, list.ids()[0]);
        }
        _ => panic!("{e}"),
    }
    let msg = e.to_string();
    assert!(
        msg.contains("memory[0] (guest address 0x100000): page 0 (guest address 0x100000)"),
        "{msg}"
    );
    other.put(&mem[..PAGE_SIZE]).unwrap();
    let e = check(&other, &m).unwrap_err();
    assert!(
        matches!(e, ManifestError::MissingObject { page: 1, .. }),
        "{e}"
    );

    // A malformed page list.
    let mut bad = m.clone();
    bad.memory[0].pages.pages += 5000;
    bad.memory[0].size = bad.memory[0].pages.bytes();
    let e = check(&store, &bad).unwrap_err();
    assert!(
        matches!(&e, ManifestError::Pages { source, .. } if matches!(**source, PagesError::BadChunk { .. })),
        "{e}"
    );
}

#[test]
fn chain_of_five_incrementals_restores_and_merges() {
    let (_tmp, dir, store) = setup();
    let pages = 2048;
    let mut mem = memory(5, pages);
    let (base, base_list) = snapshot_of(&store, &mem, None, None);
    dir.write(&base).unwrap();
    let mut snaps = vec![(base, base_list, mem.clone())];
    let mut rng = Rng(7);
    for round in 1..=5u64 {
        let mut bitmap = vec![0u64; pages.div_ceil(64)];
        mutate(&mut mem, &mut bitmap, &mut rng, 60, round);
        let (pm, pl, _) = snaps.last().unwrap();
        let (m, list) = snapshot_of(&store, &mem, Some(&bitmap), Some((pm, pl)));
        assert!(m.stats.hashed_pages <= 60 && m.stats.changed_pages > 0);
        dir.write(&m).unwrap();
        snaps.push((m, list, mem.clone()));
    }

    // Each snapshot restores on its own; each child also over its parent.
    let mut over = vec![0u8; mem.len()];
    restore(&store, &snaps[0].1, &mut over).unwrap();
    for (i, (m, list, want)) in snaps.iter().enumerate() {
        let m = dir.read(&m.id).unwrap();
        assert!(restored(&store, &m) == *want, "snapshot {i}");
        if i > 0 {
            restore_over(&store, list, &snaps[i - 1].1, &mut over).unwrap();
            assert!(over == *want, "snapshot {i} over its parent");
        }
    }

    let leaf = &snaps[5].0;
    let chain = dir.chain(&leaf.id).unwrap();
    assert_eq!(chain.len(), 6);
    assert_eq!(chain[5].id, snaps[0].0.id);

    let merged = merge(&dir, &store, &leaf.id).unwrap();
    assert_eq!(
        (merged.kind, merged.parent.as_deref()),
        (SnapshotKind::Full, None)
    );
    assert_ne!(merged.id, leaf.id);
    assert_eq!(merged.memory, leaf.memory);
    assert_eq!(merged.state, leaf.state);
    assert_eq!(merged.disk, leaf.disk);
    assert_eq!(merged.annotations["merged_from"], leaf.id);
    assert_eq!(merged.annotations["merged_chain"].split(',').count(), 6);
    let back = dir.read(&merged.id).unwrap();
    assert_eq!(back, merged);
    assert!(restored(&store, &back) == mem);
    assert_eq!(dir.chain(&merged.id).unwrap().len(), 1);

    // A middle snapshot merges to its own memory.
    let mid = merge(&dir, &store, &snaps[3].0.id).unwrap();
    assert!(restored(&store, &mid) == snaps[3].2);
}

#[test]
fn broken_and_looping_chains_are_reported() {
    let (_tmp, dir, store) = setup();
    let mem = memory(6, 64);
    let (a, al) = snapshot_of(&store, &mem, None, None);
    dir.write(&a).unwrap();
    let bitmap = vec![0u64; 1];
    let (b, _) = snapshot_of(&store, &mem, Some(&bitmap), Some((&a, &al)));
    dir.write(&b).unwrap();
    std::fs::remove_file(dir.path(&a.id).unwrap()).unwrap();
    let e = merge(&dir, &store, &b.id).unwrap_err();
    assert!(
        matches!(&e, ManifestError::MissingParent { parent, .. } if *parent == a.id),
        "{e}"
    );

    // a <- b and a's parent is b: a loop.
    let mut a2 = a.clone();
    a2.parent = Some(b.id.clone());
    a2.kind = SnapshotKind::Incremental;
    std::fs::write(dir.path(&a.id).unwrap(), encode(&a2).unwrap()).unwrap();
    let e = dir.chain(&b.id).unwrap_err();
    assert!(matches!(e, ManifestError::ChainCycle { .. }), "{e}");
}

#[test]
fn json_form_uses_hex_ids() {
    let (_tmp, _dir, store) = setup();
    let (m, _) = snapshot_of(&store, &memory(7, 8), None, None);
    let json = serde_json::to_string(&m).unwrap();
    let hex = m.memory[0].pages.chunks[0].to_string();
    assert!(json.contains(&hex), "{json}");
    let back: Manifest = serde_json::from_str(&json).unwrap();
    assert_eq!(back, m);
    assert_ne!(m.memory[0].pages.chunks[0], ObjectId::ZERO_BLOCK);
}

#[test]
fn delete_refuses_to_orphan_children_and_removes_subtrees_leaves_first() {
    let (tmp, dir, store) = setup();
    let mem = memory(8, 64);
    let (a, al) = snapshot_of(&store, &mem, None, None);
    dir.write(&a).unwrap();
    let bitmap = vec![0u64; 1];
    let (b, bl) = snapshot_of(&store, &mem, Some(&bitmap), Some((&a, &al)));
    dir.write(&b).unwrap();
    let (c, _) = snapshot_of(&store, &mem, Some(&bitmap), Some((&b, &bl)));
    dir.write(&c).unwrap();
    let (d, _) = snapshot_of(&store, &mem, Some(&bitmap), Some((&a, &al)));
    dir.write(&d).unwrap();
    let (other, _) = snapshot_of(&store, &memory(9, 8), None, None);
    dir.write(&other).unwrap();

    let e = dir.delete(&a.id, false).unwrap_err();
    match &e {
        ManifestError::HasChildren { id, children } => {
            assert_eq!(id, &a.id);
            let mut want = vec![b.id.clone(), d.id.clone()];
            want.sort();
            assert_eq!(children, &want, "only direct children are named");
        }
        e => panic!("{e}"),
    }
    assert!(e.to_string().contains("--with-children"), "{e}");
    assert_eq!(
        dir.ids().unwrap().len(),
        5,
        "a refused delete removes nothing"
    );

    // A leaf goes alone.
    assert_eq!(dir.delete(&c.id, false).unwrap(), vec![c.id.clone()]);
    let deleted = dir.delete(&a.id, true).unwrap();
    assert_eq!(deleted.len(), 3);
    assert_eq!(deleted.last(), Some(&a.id), "the root goes last");
    assert_eq!(dir.ids().unwrap(), vec![other.id.clone()]);
    assert!(matches!(
        dir.delete(&a.id, true),
        Err(ManifestError::UnknownId { .. })
    ));

    // Opening for reading refuses what is not a snapshot directory.
    for bad in [tmp.path().join("missing"), tmp.path().join("store")] {
        let e = SnapshotDir::open_existing(&bad).unwrap_err();
        assert!(
            matches!(&e, ManifestError::NotASnapshotDir { path, .. } if *path == bad),
            "{e}"
        );
    }
    assert!(SnapshotDir::open_existing(tmp.path()).is_ok());
}

#[test]
fn guest_files_round_trip_and_version_1_manifests_still_load() {
    let (_tmp, dir, store) = setup();
    let mem = memory(8, 3);
    let (mut m, _) = snapshot_of(&store, &mem, None, None);
    let path = std::path::Path::new("x.snap");

    // Version 1 (written by older builds): everything but the hint table.
    let old = decode(&super::format::encode_v1(&m), path).unwrap();
    assert_eq!(old, m);
    assert_eq!(old.guest_files, None);

    m.guest_files = Some(vec![GuestFile {
        id: 1,
        main_id: 1,
        path: "app.db".into(),
        format: "sqlite".into(),
        role: "main".into(),
        extents: vec![GuestExtent {
            file_offset: 0,
            sector: 2048,
            len: 1 << 20,
        }],
        size: Some(8192),
        exists: true,
        schema: Some("t=a,b".into()),
    }]);
    let bytes = encode(&m).unwrap();
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 2);
    assert_eq!(decode(&bytes, path).unwrap(), m);
    dir.write(&m).unwrap();
    assert_eq!(dir.read(&m.id).unwrap().guest_files, m.guest_files);
}
