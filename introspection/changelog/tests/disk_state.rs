//! DiskState: the O(1) disk checksum against recomputation from images.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use changelog::disk_state::{block_contribution, hash_block};
use changelog::{DiskState, DiskStateError, ZERO_BLOCK_HASH};

const B: usize = 4096;

fn block(fill: u8, salt: u64) -> Vec<u8> {
    let mut v = vec![fill; B];
    v[..8].copy_from_slice(&salt.to_le_bytes());
    v
}

#[test]
fn zero_block_hash_is_blake3_of_zeros() {
    assert_eq!(ZERO_BLOCK_HASH, *blake3::hash(&[0u8; B]).as_bytes());
    assert_eq!(hash_block(&[0u8; B]), ZERO_BLOCK_HASH);
}

/// Writes `blocks` (block number, content) into a fresh image of `n` blocks.
fn image(
    dir: &tempfile::TempDir,
    name: &str,
    n: u64,
    blocks: &[(u64, Vec<u8>)],
) -> std::path::PathBuf {
    let path = dir.path().join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(n * B as u64).unwrap();
    for (no, data) in blocks {
        f.write_all_at(data, no * B as u64).unwrap();
    }
    path
}

#[test]
fn zero_disk_has_zero_checksum_and_no_entries() {
    let d = tempfile::tempdir().unwrap();
    let st = DiskState::from_image(image(&d, "z.img", 64, &[])).unwrap();
    assert_eq!(st.num_blocks(), 64);
    assert_eq!(st.nonzero_blocks(), 0);
    assert_eq!(st.checksum(), [0; 32]);
    assert_eq!(st.block_hash(63), Some(ZERO_BLOCK_HASH));
    assert_eq!(st.block_hash(64), None);
}

#[test]
fn checksum_is_the_xor_of_block_terms() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (block(1, 0), block(2, 0));
    let st =
        DiskState::from_image(image(&d, "x.img", 8, &[(3, a.clone()), (5, b.clone())])).unwrap();
    let mut want = block_contribution(3, &hash_block(&a));
    for (w, t) in want.iter_mut().zip(block_contribution(5, &hash_block(&b))) {
        *w ^= t;
    }
    assert_eq!(st.checksum(), want);
    assert_eq!(st.block_hash(3), Some(hash_block(&a)));
    // Same content elsewhere gives a different checksum: the block number counts.
    let moved = DiskState::from_image(image(&d, "y.img", 8, &[(4, a), (5, b)])).unwrap();
    assert_ne!(moved.checksum(), st.checksum());
}

#[test]
fn applied_writes_match_a_rescan_of_the_written_image() {
    let d = tempfile::tempdir().unwrap();
    let n = 256;
    let initial: Vec<_> = (0..40).map(|i| (i * 5, block(7, i))).collect();
    let path = image(&d, "disk.img", n, &initial);
    let mut st = DiskState::from_image(&path).unwrap();
    assert_eq!(st.nonzero_blocks(), 40);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    for i in 0..300u64 {
        let no = (i * 37) % n;
        // Every seventh write zeroes its block.
        let data = if i % 7 == 0 { vec![0; B] } else { block(9, i) };
        f.write_all_at(&data, no * B as u64).unwrap();
        st.apply_write(no, hash_block(&data)).unwrap();
    }
    let rescanned = DiskState::from_image(&path).unwrap();
    assert_eq!(st.checksum(), rescanned.checksum());
    assert_eq!(st.checksum(), st.recompute_checksum());
    assert_eq!(st, rescanned);
}

#[test]
fn order_of_writes_to_distinct_blocks_does_not_matter() {
    let writes: Vec<(u64, [u8; 32])> = (0..50)
        .map(|i| (i * 3 % 64, hash_block(&block(3, i))))
        .collect();
    let mut fwd = DiskState::zeroed(64);
    let mut rev = DiskState::zeroed(64);
    for (no, h) in &writes {
        fwd.apply_write(*no, *h).unwrap();
    }
    for (no, h) in writes.iter().rev() {
        rev.apply_write(*no, *h).unwrap();
    }
    assert_ne!(fwd.checksum(), [0; 32]);
    assert_eq!(fwd.checksum(), rev.checksum());
    // Overwriting a block with new content, then back, restores the checksum.
    let before = fwd.checksum();
    fwd.apply_write(3, hash_block(&block(0xee, 1))).unwrap();
    assert_ne!(fwd.checksum(), before);
    fwd.apply_write(3, writes[1].1).unwrap();
    assert_eq!(fwd.checksum(), before);
}

#[test]
fn zero_blocks_cost_nothing_and_trailing_zeros_do_not_count() {
    let d = tempfile::tempdir().unwrap();
    let data = vec![(2, block(5, 5))];
    let small = DiskState::from_image(image(&d, "s.img", 4, &data)).unwrap();
    let big = DiskState::from_image(image(&d, "b.img", 1 << 18, &data)).unwrap(); // 1 GiB, sparse
    assert_eq!(big.nonzero_blocks(), 1);
    assert_eq!(small.checksum(), big.checksum());
    let mut st = small.clone();
    st.apply_write(2, ZERO_BLOCK_HASH).unwrap();
    assert_eq!((st.checksum(), st.nonzero_blocks()), ([0; 32], 0));
}

#[test]
fn reader_and_partial_last_block() {
    let mut bytes = vec![0u8; 2 * B + 100];
    bytes[B + 1] = 1;
    bytes[2 * B + 99] = 2;
    let st = DiskState::from_reader(&bytes[..], bytes.len() as u64).unwrap();
    assert_eq!(st.num_blocks(), 3);
    let mut last = vec![0u8; B];
    last[99] = 2;
    assert_eq!(st.block_hash(2), Some(hash_block(&last)));
    assert_eq!(st.block_hash(0), Some(ZERO_BLOCK_HASH));
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("p.img");
    std::fs::write(&path, &bytes).unwrap();
    assert_eq!(DiskState::from_image(&path).unwrap(), st);
    // A reader shorter than the length given is an error.
    assert!(DiskState::from_reader(&bytes[..10], 4096).is_err());
}

#[test]
fn block_writes_are_range_checked_all_or_nothing() {
    let mut st = DiskState::zeroed(4);
    let h = hash_block(&block(1, 1));
    assert!(matches!(
        st.apply_write(4, h),
        Err(DiskStateError::OutOfRange { block: 4, .. })
    ));
    assert!(matches!(
        st.apply_block_write(4, &[h]),
        Err(DiskStateError::Misaligned { .. })
    ));
    assert!(st.apply_block_write(24, &[h, h]).is_err());
    assert_eq!(st.nonzero_blocks(), 0, "a rejected write changes nothing");
    st.apply_block_write(16, &[h, ZERO_BLOCK_HASH]).unwrap();
    assert_eq!(st.block_hash(2), Some(h));
    assert_eq!(st.nonzero_blocks(), 1);
}
