//! Tests of page-list capture, restore, persistence and their errors.

use super::*;
use crate::testutil::{mark, memory, mutate, Rng};

fn store() -> (tempfile::TempDir, Store) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().join("store")).unwrap();
    (tmp, store)
}

#[test]
fn full_capture_restores_64_mib_of_random_zero_and_duplicate_pages() {
    let (_tmp, store) = store();
    let pages = 16384; // 64 MiB
    let mem = memory(1, pages);
    let (list, st) = capture(&store, &mem, None, None).unwrap();
    assert_eq!(list.len(), pages);
    assert_eq!(st.pages, pages as u64);
    assert_eq!(st.hashed_pages, pages as u64);
    assert_eq!(st.zero_pages, pages as u64 / 4, "kinds 3 and 4 are zero");
    assert_eq!(st.changed_pages, pages as u64 - st.zero_pages);
    // Unique: kinds 0, 1, 2, 7; plus the 16 shared pages.
    assert_eq!(st.new_objects, pages as u64 / 2 + 16);
    assert_eq!(store.stats().objects, st.new_objects);
    assert!(st.threads >= 1);
    for (p, id) in list.ids().iter().enumerate() {
        assert_eq!(*id, ObjectId::of(&mem[p * PAGE_SIZE..][..PAGE_SIZE]));
    }

    let mut dst = vec![0u8; mem.len()];
    let rs = restore(&store, &list, &mut dst).unwrap();
    assert!(dst == mem, "restored memory differs");
    assert_eq!(rs.zero_pages, st.zero_pages);
    assert_eq!(
        rs.fetched_pages + rs.duplicate_pages,
        pages as u64 - st.zero_pages
    );
    assert!(rs.duplicate_pages >= pages as u64 / 4 - 32, "{rs:?}");

    // The list itself round-trips through the store.
    let root = list.save(&store).unwrap();
    assert_eq!(root.pages, pages as u64);
    assert_eq!(root.chunks.len(), 4);
    assert_eq!(PageList::load(&store, &root).unwrap(), list);
}

#[test]
fn incremental_capture_with_dirty_bitmap_equals_full_capture() {
    let (_tmp, store) = store();
    let pages = 3000; // not a multiple of 64: the last bitmap word is partial
    let mut mem = memory(2, pages);
    let (parent, _) = capture(&store, &mem, None, None).unwrap();
    let mut rng = Rng(42);
    let mut bitmap = vec![0u64; pages.div_ceil(64)];
    mutate(&mut mem, &mut bitmap, &mut rng, 300, 1);
    // Dirty but unchanged pages, and garbage bits past the end.
    mark(&mut bitmap, 0);
    mark(&mut bitmap, 1);
    *bitmap.last_mut().unwrap() |= 1 << 63;
    let dirty: u64 = bitmap.iter().map(|w| w.count_ones() as u64).sum::<u64>() - 1;

    let (inc, ist) = capture(&store, &mem, Some(&bitmap), Some(&parent)).unwrap();
    let (full, fst) = capture(&store, &mem, None, Some(&parent)).unwrap();
    assert_eq!(inc, full);
    assert_eq!(ist.hashed_pages, dirty);
    assert_eq!(fst.hashed_pages, pages as u64);
    assert_eq!(ist.changed_pages, fst.changed_pages);
    assert_eq!(ist.zero_pages, fst.zero_pages);
    assert_eq!(
        fst.new_objects, 0,
        "the incremental capture stored them all"
    );
    assert!(ist.changed_pages > 0 && ist.changed_pages <= 300);

    // Restoring the child over the restored parent gives the same memory.
    let mut dst = vec![0u8; mem.len()];
    restore(&store, &parent, &mut dst).unwrap();
    let rs = restore_over(&store, &inc, &parent, &mut dst).unwrap();
    assert!(dst == mem);
    assert_eq!(
        rs.fetched_pages + rs.duplicate_pages + rs.zeroed_pages,
        ist.changed_pages
    );
    assert_eq!(rs.skipped_pages, pages as u64 - ist.changed_pages);
}

#[test]
fn empty_bitmap_keeps_parent_and_save_over_reuses_chunks() {
    let (_tmp, store) = store();
    let pages = 3 * IDS_PER_CHUNK + 10;
    let mut mem = vec![0u8; pages * PAGE_SIZE];
    mem[5 * PAGE_SIZE] = 1;
    let (parent, _) = capture(&store, &mem, None, None).unwrap();
    let parent_ref = parent.save(&store).unwrap();
    let bitmap = vec![0u64; pages.div_ceil(64)];
    let (same, st) = capture(&store, &mem, Some(&bitmap), Some(&parent)).unwrap();
    assert_eq!(same, parent);
    assert_eq!(
        (st.hashed_pages, st.changed_pages, st.new_objects),
        (0, 0, 0)
    );

    // Change one page in chunk 2: only that chunk is new.
    let mut bitmap = bitmap;
    let p = 2 * IDS_PER_CHUNK + 7;
    mem[p * PAGE_SIZE] = 9;
    mark(&mut bitmap, p);
    let (child, _) = capture(&store, &mem, Some(&bitmap), Some(&parent)).unwrap();
    let before = store.stats().objects;
    let r = child.save_over(&store, &parent, &parent_ref).unwrap();
    assert_eq!(store.stats().objects, before + 1, "one new chunk");
    assert_eq!(r, child.save(&store).unwrap());
    let changed: Vec<usize> = (0..4)
        .filter(|&c| r.chunks[c] != parent_ref.chunks[c])
        .collect();
    assert_eq!(changed, vec![2]);
    assert_eq!(PageList::load(&store, &r).unwrap(), child);
}

#[test]
fn restore_filtered_and_restore_page() {
    let (_tmp, store) = store();
    let pages = 512;
    let mem = memory(3, pages);
    let (list, _) = capture(&store, &mem, None, None).unwrap();
    let mut dst = vec![0u8; mem.len()];
    let rs = restore_filtered(&store, &list, &mut dst, |p| p % 2 == 0).unwrap();
    assert_eq!(rs.skipped_pages, pages as u64 / 2);
    for p in 0..pages {
        let got = &dst[p * PAGE_SIZE..][..PAGE_SIZE];
        let want = &mem[p * PAGE_SIZE..][..PAGE_SIZE];
        if p % 2 == 0 {
            assert_eq!(got, want, "page {p}");
        } else {
            assert!(got.iter().all(|&b| b == 0), "page {p} must stay untouched");
        }
    }
    let mut one = vec![0xffu8; PAGE_SIZE];
    for p in [0, 3, 7, 511] {
        restore_page(&store, &list, p, &mut one).unwrap();
        assert_eq!(&one[..], &mem[p * PAGE_SIZE..][..PAGE_SIZE], "page {p}");
    }
    assert!(matches!(
        restore_page(&store, &list, pages, &mut one),
        Err(PagesError::PageOutOfRange {
            page: 512,
            pages: 512
        })
    ));
    assert!(matches!(
        restore_page(&store, &list, 0, &mut one[..100]),
        Err(PagesError::PageBuffer { len: 100 })
    ));
}

#[test]
fn sixteen_clones_of_the_same_memory_add_nothing() {
    let (_tmp, store) = store();
    let mem = memory(4, 4096);
    let (first, st) = capture(&store, &mem, None, None).unwrap();
    first.save(&store).unwrap();
    let one = store.stats();
    assert!(st.new_objects > 0);
    for _ in 1..16 {
        let (clone, st) = capture(&store, &mem, None, None).unwrap();
        assert_eq!((st.new_objects, st.new_objects_bytes), (0, 0));
        clone.save(&store).unwrap();
    }
    assert_eq!(store.stats(), one);
}

#[test]
fn bad_inputs_are_refused_with_typed_errors() {
    let (_tmp, store) = store();
    let mem = memory(5, 100);
    let e = capture(&store, &mem[..PAGE_SIZE + 1], None, None).unwrap_err();
    assert!(matches!(e, PagesError::NotPageAligned { len, .. } if len == PAGE_SIZE + 1));
    assert!(
        e.to_string().contains("multiple of the 4096-byte page"),
        "{e}"
    );
    let bitmap = vec![0u64; 2];
    assert!(matches!(
        capture(&store, &mem, Some(&bitmap), None),
        Err(PagesError::DirtyWithoutParent)
    ));
    let (list, _) = capture(&store, &mem, None, None).unwrap();
    assert!(matches!(
        capture(&store, &mem, Some(&bitmap[..1]), Some(&list)),
        Err(PagesError::BitmapTooShort {
            words: 1,
            pages: 100,
            needed: 2
        })
    ));
    let small = PageList::zeroed(99);
    assert!(matches!(
        capture(&store, &mem, Some(&bitmap), Some(&small)),
        Err(PagesError::PageCountMismatch {
            found: 99,
            expected: 100,
            ..
        })
    ));
    let mut dst = vec![0u8; 99 * PAGE_SIZE];
    assert!(matches!(
        restore(&store, &list, &mut dst),
        Err(PagesError::PageCountMismatch {
            found: 100,
            expected: 99,
            ..
        })
    ));

    // Roots and chunks that do not fit.
    let root = list.save(&store).unwrap();
    let mut bad = root.clone();
    bad.pages = 5000;
    let e = PageList::load(&store, &bad).unwrap_err();
    assert!(e.to_string().contains("need 2"), "{e}");
    let mut bad = root.clone();
    bad.chunks[0] = store.put(&[1u8; 64]).unwrap();
    let e = PageList::load(&store, &bad).unwrap_err();
    assert!(matches!(e, PagesError::BadChunk { chunk: 0, .. }), "{e}");

    // A list naming an object that is not a page, or that is missing.
    let mut ids = list.ids().to_vec();
    ids[1] = store.put(&[7u8; 100]).unwrap();
    let e = restore(
        &store,
        &PageList::from_ids(ids.clone()),
        &mut vec![0; mem.len()],
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            PagesError::NotAPage {
                page: 1,
                len: 100,
                ..
            }
        ),
        "{e}"
    );
    ids[1] = ObjectId([0x55; 32]);
    let e = restore(&store, &PageList::from_ids(ids), &mut vec![0; mem.len()]).unwrap_err();
    assert!(
        matches!(e, PagesError::Store(StoreError::NotFound { .. })),
        "{e}"
    );
}

#[test]
fn split_work_balances_and_aligns() {
    let w = |s: usize| if s < 10 { 100 } else { 1 };
    let cuts = split_work(64 * 100, 2, 64, &w);
    assert_eq!(cuts.first(), Some(&0));
    assert_eq!(cuts.last(), Some(&6400));
    assert_eq!(cuts.len(), 3);
    assert!(cuts[1] % 64 == 0 && cuts[1] <= 640, "{cuts:?}");
    assert_eq!(split_work(10, 4, 64, &|_| 1), vec![0, 10]);
    assert_eq!(split_work(0, 2, 64, &|_| 0), vec![0]);
}

/// `mem` as a live mapping (the test keeps `mem` alive and unmoved).
fn live(mem: &[u8]) -> LiveMemory {
    // SAFETY: `mem` outlives every use in the calling test.
    unsafe { LiveMemory::new(mem.as_ptr(), mem.len()) }.unwrap()
}

#[test]
fn live_capture_of_still_memory_equals_capture() {
    let (_tmp, store) = store();
    let pages = 3000;
    let mut mem = memory(5, pages);
    let (full, _) = capture(&store, &mem, None, None).unwrap();
    let mut ids = vec![ObjectId::ZERO_BLOCK; pages];
    let st = capture_live(&store, &live(&mem), None, &mut ids).unwrap();
    assert_eq!(ids, full.ids(), "full");
    assert_eq!(st.hashed_pages, pages as u64);
    assert_eq!(st.new_objects, 0, "capture stored them all already");

    let mut bitmap = vec![0u64; pages.div_ceil(64)];
    mutate(&mut mem, &mut bitmap, &mut Rng(9), 200, 1);
    *bitmap.last_mut().unwrap() |= 1 << 63; // past the end: ignored
    let dirty = count_set(&bitmap, pages);
    let st = capture_live(&store, &live(&mem), Some(&bitmap), &mut ids).unwrap();
    assert_eq!(st.hashed_pages, dirty);
    let (again, _) = capture(&store, &mem, None, None).unwrap();
    assert_eq!(ids, again.ids(), "dirty pages only");
    let err = capture_live(&store, &live(&mem), None, &mut ids[1..]).unwrap_err();
    assert!(matches!(err, PagesError::PageCountMismatch { .. }), "{err}");
}

/// Pre-copy as the VMM does it, against a writer thread that marks a page
/// dirty before writing it (as KVM's log does): rounds while it writes,
/// then one with it stopped. The result is the final memory, and every
/// object stored on the way holds the bytes its id names, torn reads or
/// not.
#[test]
fn live_capture_rounds_under_a_concurrent_writer_end_exact_and_store_only_sound_objects() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_tmp, store) = store();
    let pages = 2048;
    let words: Vec<AtomicU64> = (0..pages * PAGE_SIZE / 8)
        .map(|i| AtomicU64::new(i as u64 * 0x9e37_79b9))
        .collect();
    let bitmap: Vec<AtomicU64> = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    // SAFETY: `words` outlives the scope below; all accesses are atomic
    // or volatile word loads.
    let mem = unsafe { LiveMemory::new(words.as_ptr() as *const u8, pages * PAGE_SIZE) }.unwrap();
    let take =
        |b: &[AtomicU64]| -> Vec<u64> { b.iter().map(|w| w.swap(0, Ordering::SeqCst)).collect() };
    let mut ids = vec![ObjectId::ZERO_BLOCK; pages];
    let mut seen = std::collections::HashSet::new();
    let mut rounds = 0;
    let mut dirty: Option<Vec<u64>> = None;
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(77);
            while !stop.load(Ordering::SeqCst) {
                let p = rng.below(pages);
                let v = rng.below(usize::MAX) as u64;
                bitmap[p / 64].fetch_or(1 << (p % 64), Ordering::SeqCst);
                for w in &words[p * 512..(p + 1) * 512] {
                    w.fetch_add(v, Ordering::Relaxed);
                }
            }
        });
        while rounds < 4 {
            capture_live(&store, &mem, dirty.as_deref(), &mut ids).unwrap();
            seen.extend(ids.iter().copied());
            dirty = Some(take(&bitmap));
            rounds += 1;
        }
        stop.store(true, Ordering::SeqCst);
    });
    // The last round's writes, and those until the writer stopped.
    let last: Vec<u64> = take(&bitmap)
        .iter()
        .zip(dirty.unwrap())
        .map(|(a, b)| a | b)
        .collect();
    capture_live(&store, &mem, Some(&last), &mut ids).unwrap();
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.load(Ordering::SeqCst).to_ne_bytes())
        .collect();
    let (still, _) = capture(&store, &bytes, None, None).unwrap();
    assert_eq!(ids, still.ids(), "the rounds missed a write");
    // `get` checks each object against its id: a torn page stored under
    // the id of another read of it would fail here.
    seen.extend(ids.iter().copied());
    for id in &seen {
        let data = store.get(id).unwrap();
        assert_eq!(&ObjectId::of(&data), id);
    }
    assert!(
        seen.len() > pages,
        "the writer made the rounds store more pages: {}",
        seen.len()
    );
}

/// Pre-copy with copy rounds, as the VMM does it: one hashing round, then
/// rounds that only copy what the writer dirtied, then the last stop. The
/// hashed first round, the staged copies the stop did not replace and the
/// stop's copies together are exactly the final memory.
#[test]
fn staged_copy_rounds_under_a_concurrent_writer_end_exact() {
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    let (_tmp, store) = store();
    let pages = 2048;
    let words: Vec<AtomicU64> = (0..pages * PAGE_SIZE / 8)
        .map(|i| AtomicU64::new(i as u64 % 3))
        .collect();
    let bitmap: Vec<AtomicU64> = (0..pages.div_ceil(64)).map(|_| AtomicU64::new(0)).collect();
    let stop = AtomicBool::new(false);
    // SAFETY: `words` outlives every use; all accesses are atomic or
    // volatile word loads.
    let mem = unsafe { LiveMemory::new(words.as_ptr() as *const u8, pages * PAGE_SIZE) }.unwrap();
    let take =
        |b: &[AtomicU64]| -> Vec<u64> { b.iter().map(|w| w.swap(0, Ordering::SeqCst)).collect() };
    let mut ids = vec![ObjectId::ZERO_BLOCK; pages];
    let mut staged = StagedPages::new(pages).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut rng = Rng(5);
            while !stop.load(Ordering::SeqCst) {
                let p = rng.below(pages);
                let v = rng.next();
                bitmap[p / 64].fetch_or(1 << (p % 64), Ordering::SeqCst);
                for w in &words[p * 512..(p + 1) * 512] {
                    w.fetch_add(v, Ordering::Relaxed);
                }
            }
        });
        capture_live(&store, &mem, None, &mut ids).unwrap();
        for _ in 0..3 {
            staged.copy_in(&mem, &take(&bitmap));
        }
        stop.store(true, Ordering::SeqCst);
    });
    assert!(!staged.is_empty(), "the writer dirtied nothing");
    // SAFETY: the writer has stopped.
    unsafe { staged.copy_in_stopped(&mem, &take(&bitmap)) };
    let st = staged.capture(&store, &mut ids).unwrap();
    assert_eq!(st.hashed_pages, staged.len() as u64);
    assert_eq!(staged.pages().count(), staged.len());
    let bytes: Vec<u8> = words
        .iter()
        .flat_map(|w| w.load(Ordering::SeqCst).to_ne_bytes())
        .collect();
    let (still, _) = capture(&store, &bytes, None, None).unwrap();
    assert_eq!(ids, still.ids(), "a write was missed");
}
