use super::*;
use store::Store;

fn state_with(blocks: &[(u64, u8)], num_blocks: u64) -> DiskState {
    let mut s = DiskState::zeroed(num_blocks);
    for &(b, fill) in blocks {
        let hash = crate::disk_state::hash_block(&[fill; BLOCK_SIZE]);
        s.apply_block_write(b * 8, &[hash]).unwrap();
    }
    s
}

#[test]
fn a_map_round_trips_through_the_store_and_unchanged_ranges_are_shared() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let far = RANGE_BLOCKS * 3 + 5;
    let a = state_with(&[(0, 1), (7, 2), (far, 3)], RANGE_BLOCKS * 4);
    let cp = save(&a, 10, 99, &store).unwrap();
    assert_eq!(cp.chunks.len(), 2, "two ranges hold blocks");
    assert_eq!(cp.chunks[1].0, 3);
    let back = load(&cp, &store).unwrap();
    assert_eq!(back.checksum(), a.checksum());
    assert_eq!(back.nonzero_blocks(), 3);

    // Only the first range changes: the far range's chunk is the same object.
    let b = state_with(&[(0, 9), (7, 2), (far, 3)], RANGE_BLOCKS * 4);
    let cp2 = save(&b, 20, 100, &store).unwrap();
    assert_ne!(cp2.chunks[0].1, cp.chunks[0].1);
    assert_eq!(cp2.chunks[1].1, cp.chunks[1].1);
    assert_eq!(load(&cp2, &store).unwrap().checksum(), b.checksum());

    // An empty disk has no chunks and loads as zeroes.
    let z = DiskState::zeroed(8);
    let cpz = save(&z, 1, 1, &store).unwrap();
    assert!(cpz.chunks.is_empty());
    assert_eq!(load(&cpz, &store).unwrap().checksum(), z.checksum());
}

#[test]
fn a_checkpoint_that_does_not_match_its_barrier_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path()).unwrap();
    let a = state_with(&[(1, 1)], 64);
    let mut cp = save(&a, 5, 5, &store).unwrap();
    cp.disk_checksum[0] ^= 1;
    let e = load(&cp, &store).unwrap_err();
    assert!(matches!(e, CheckpointError::Mismatch { seq: 5, .. }), "{e}");
    // A map chunk of another checkpoint's range is refused too.
    let b = state_with(&[(RANGE_BLOCKS + 1, 1)], RANGE_BLOCKS * 2);
    let other = save(&b, 6, 6, &store).unwrap();
    let mut wrong = save(&a, 5, 5, &store).unwrap();
    wrong.num_blocks = RANGE_BLOCKS * 2;
    wrong.chunks = vec![(0, other.chunks[0].1)];
    assert!(matches!(
        load(&wrong, &store).unwrap_err(),
        CheckpointError::BadChunk { .. }
    ));
}

#[test]
fn the_local_index_skips_torn_lines() {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    let dir = tmp.path().join("log");
    std::fs::create_dir_all(&dir).unwrap();
    let a = state_with(&[(1, 1)], 64);
    append_local(&dir, &save(&a, 5, 5, &store).unwrap()).unwrap();
    append_local(&dir, &save(&a, 9, 9, &store).unwrap()).unwrap();
    // A crash mid-append leaves half a line.
    let mut f = OpenOptions::new()
        .append(true)
        .open(dir.join(FILE))
        .unwrap();
    f.write_all(b"{\"seq\":12,\"ts_").unwrap();
    let read = read_local(&dir);
    assert_eq!(
        read.list.iter().map(|c| c.seq).collect::<Vec<_>>(),
        vec![5, 9]
    );
    assert_eq!(read.skipped_lines, vec![3]);
    assert_eq!(
        read_local(&tmp.path().join("none")),
        LocalCheckpoints::default()
    );
}
