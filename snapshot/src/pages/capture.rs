//! Capture: memory -> page list, full or incremental.
//!
//! The dirty bitmap is KVM's layout (`KVM_GET_DIRTY_LOG`): bit `p % 64` of
//! word `p / 64` is page `p`, least significant bit first; bits past the
//! region's last page are ignored.

use serde::Serialize;

use super::{split_work, threads, whole_pages, PageList, PagesError, Result, PAGE_SIZE};
use store::{is_all_zero, ObjectId, Store};

/// Pages handed to the store per `put_batch_hashed` call (4 MiB).
const BATCH: usize = 1024;

/// Below this many pages to hash, capture stays on the calling thread:
/// starting a second one costs more than it saves (measured with
/// `benches/pages.rs`).
const PARALLEL_MIN_PAGES: u64 = 256;

/// What a [`capture`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CaptureStats {
    /// Pages in the region.
    pub pages: u64,
    /// Zero pages in the resulting list (inherited ones included).
    pub zero_pages: u64,
    /// Pages read and hashed: all of them for a full capture, the dirty
    /// ones for an incremental capture.
    pub hashed_pages: u64,
    /// Pages whose id differs from the parent's (without a parent: from
    /// all-zero memory, i.e. the non-zero pages).
    pub changed_pages: u64,
    /// Objects this capture added to the store (pages no one had stored).
    pub new_objects: u64,
    /// Bytes those objects take in the store's packs.
    pub new_objects_bytes: u64,
    /// Their raw length.
    pub new_raw_bytes: u64,
    /// Threads used.
    pub threads: u64,
}

impl CaptureStats {
    pub(super) fn add(&mut self, o: &CaptureStats) {
        self.hashed_pages += o.hashed_pages;
        self.changed_pages += o.changed_pages;
        self.new_objects += o.new_objects;
        self.new_objects_bytes += o.new_objects_bytes;
        self.new_raw_bytes += o.new_raw_bytes;
    }
}

/// Captures `mem` (a whole number of pages) into the store as a page list.
///
/// - Full (`dirty` is `None`): every page is read; zero pages are detected
///   with a word scan and never hashed or stored; the others are hashed
///   once (BLAKE3) and put in batches with `put_batch_hashed`, which skips
///   those already in the store. `parent`, if given, only feeds
///   [`CaptureStats::changed_pages`].
/// - Incremental (`dirty` is a bitmap, see the module doc): `parent` is
///   required and must have the same number of pages; only dirty pages are
///   read, the others keep the parent's id. The result equals a full
///   capture of the same memory as long as every page written since the
///   parent's capture is marked dirty.
///
/// The work is split across the machine's cores (by dirty-page count, at
/// 64-page boundaries) when there are at least a few hundred pages to hash.
/// The memory must not change during the call (the VM is paused).
pub fn capture(
    store: &Store,
    mem: &[u8],
    dirty: Option<&[u64]>,
    parent: Option<&PageList>,
) -> Result<(PageList, CaptureStats)> {
    let pages = whole_pages("memory to capture", mem.len())?;
    if let Some(p) = parent {
        if p.len() != pages {
            return Err(PagesError::PageCountMismatch {
                what: "the parent's page list",
                found: p.len() as u64,
                expected: pages as u64,
            });
        }
    }
    if let Some(d) = dirty {
        if parent.is_none() {
            return Err(PagesError::DirtyWithoutParent);
        }
        let needed = pages.div_ceil(64);
        if d.len() < needed {
            return Err(PagesError::BitmapTooShort {
                words: d.len(),
                pages: pages as u64,
                needed,
            });
        }
    }
    let parent_ids = parent.map(|p| p.ids());
    let mut ids = match (dirty, parent) {
        (Some(_), Some(p)) => p.ids().to_vec(),
        _ => vec![ObjectId::ZERO_BLOCK; pages],
    };

    // Work per 64-page step: its dirty pages (masked to the region).
    let weight = |step: usize| -> u64 {
        let in_region = (pages - step * 64).min(64);
        match dirty {
            Some(d) => (d[step] & low_bits(in_region)).count_ones() as u64,
            None => in_region as u64,
        }
    };
    let work: u64 = (0..pages.div_ceil(64)).map(weight).sum();
    let parts = if work >= PARALLEL_MIN_PAGES {
        threads()
    } else {
        1
    };
    let cuts = split_work(pages, parts, 64, &weight);

    // Cut the output into one slice per range.
    let mut slices = Vec::with_capacity(cuts.len());
    let mut rest: &mut [ObjectId] = &mut ids;
    for w in cuts.windows(2) {
        let (a, b) = rest.split_at_mut(w[1] - w[0]);
        slices.push((w[0], a));
        rest = b;
    }

    let run = |start: usize, out: &mut [ObjectId]| -> Result<CaptureStats> {
        let mut w = Worker {
            store,
            mem,
            parent: parent_ids,
            items: Vec::with_capacity(BATCH),
            ids: Vec::with_capacity(BATCH),
            stats: CaptureStats::default(),
        };
        let end = start + out.len();
        match dirty {
            None => {
                for (i, slot) in out.iter_mut().enumerate() {
                    w.page(start + i, slot)?;
                }
            }
            Some(d) => {
                for (wi, &word) in d[start / 64..end.div_ceil(64)].iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        let p = (start / 64 + wi) * 64 + bits.trailing_zeros() as usize;
                        bits &= bits - 1;
                        if p >= end {
                            break;
                        }
                        w.page(p, &mut out[p - start])?;
                    }
                }
            }
        }
        w.flush()?;
        Ok(w.stats)
    };

    let mut stats = CaptureStats {
        pages: pages as u64,
        threads: slices.len().max(1) as u64,
        ..CaptureStats::default()
    };
    let results = super::run_parts(slices, "capture", |(start, out)| run(start, out));
    for r in results {
        stats.add(&r?);
    }
    stats.zero_pages = ids.iter().filter(|id| id.is_zero_block()).count() as u64;
    Ok((PageList::from_ids(ids), stats))
}

/// A mask of the `n` low bits (`n <= 64`).
pub(super) fn low_bits(n: usize) -> u64 {
    if n >= 64 {
        u64::MAX
    } else {
        (1u64 << n) - 1
    }
}

/// One thread's share of a capture.
struct Worker<'a> {
    store: &'a Store,
    mem: &'a [u8],
    parent: Option<&'a [ObjectId]>,
    items: Vec<&'a [u8]>,
    ids: Vec<ObjectId>,
    stats: CaptureStats,
}

impl<'a> Worker<'a> {
    /// Hashes page `p` into `slot`, queueing it for the store if non-zero.
    fn page(&mut self, p: usize, slot: &mut ObjectId) -> Result<()> {
        let data: &'a [u8] = &self.mem[p * PAGE_SIZE..(p + 1) * PAGE_SIZE];
        self.stats.hashed_pages += 1;
        let id = if is_all_zero(data) {
            ObjectId::ZERO_BLOCK
        } else {
            let id = ObjectId::of(data);
            self.items.push(data);
            self.ids.push(id);
            if self.items.len() >= BATCH {
                self.flush()?;
            }
            id
        };
        let before = self.parent.map_or(ObjectId::ZERO_BLOCK, |ids| ids[p]);
        if id != before {
            self.stats.changed_pages += 1;
        }
        *slot = id;
        Ok(())
    }

    /// Puts the queued pages.
    fn flush(&mut self) -> Result<()> {
        if self.items.is_empty() {
            return Ok(());
        }
        let (_, r) = self.store.put_batch_hashed_report(&self.items, &self.ids)?;
        self.stats.new_objects += r.new_objects;
        self.stats.new_objects_bytes += r.new_stored_bytes;
        self.stats.new_raw_bytes += r.new_raw_bytes;
        self.items.clear();
        self.ids.clear();
        Ok(())
    }
}
