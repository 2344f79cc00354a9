//! Capture from memory that is written while it is read: a running guest's
//! RAM during a snapshot's pre-copy rounds.
//!
//! Each page is first copied into a private buffer, and only that copy is
//! checked for zero, hashed and stored. Hashing the live page and storing a
//! second read of it could put bytes in the store under the id of other
//! bytes, which deduplication would trust forever after. A page torn by a
//! concurrent write still yields a sound object here; its content is not
//! the snapshot's, which is why the caller captures again every page
//! written since the round began (the dirty log), the last time with the
//! guest stopped.

use super::capture::{low_bits, CaptureStats};
use super::{run_parts, split_work, threads, whole_pages, PagesError, Result, PAGE_SIZE};
use store::{is_all_zero, ObjectId, Store};

/// Pages copied out, hashed and put per store batch (4 MiB of buffer per
/// thread).
const BATCH: usize = 1024;

/// A mapping of guest memory that others (the guest's vCPUs, devices) may
/// write at any time while it is read.
#[derive(Debug, Clone, Copy)]
pub struct LiveMemory {
    host: *const u8,
    len: usize,
}

// SAFETY: a `LiveMemory` only reads its mapping, with volatile loads, and
// the creator promises the mapping outlives every copy (`LiveMemory::new`).
unsafe impl Send for LiveMemory {}
// SAFETY: as for Send: shared use only reads.
unsafe impl Sync for LiveMemory {}

impl LiveMemory {
    /// # Safety
    /// `host` must map `len` readable bytes for as long as this value or
    /// any copy of it is used.
    pub unsafe fn new(host: *const u8, len: usize) -> Result<LiveMemory> {
        whole_pages("live memory to capture", len)?;
        Ok(LiveMemory { host, len })
    }

    /// Pages in the mapping.
    pub fn pages(&self) -> usize {
        self.len / PAGE_SIZE
    }

    /// Copies page `p` into `out` (one page long) with volatile word loads:
    /// the compiler may not assume the memory holds still.
    fn copy_page(&self, p: usize, out: &mut [u8]) {
        debug_assert!(p < self.pages() && out.len() == PAGE_SIZE);
        // SAFETY: page `p` lies inside the mapping (callers iterate below
        // `pages()`), which `new`'s contract keeps mapped; pages are 8-byte
        // aligned as the mapping is page aligned.
        let src = unsafe { self.host.add(p * PAGE_SIZE) } as *const u64;
        for (i, w) in out.chunks_exact_mut(8).enumerate() {
            // SAFETY: `i < PAGE_SIZE / 8`, inside page `p`.
            let v = unsafe { std::ptr::read_volatile(src.add(i)) };
            w.copy_from_slice(&v.to_ne_bytes());
        }
    }

    /// Copies the pages set in `dirty` (KVM's bitmap layout) out of the
    /// mapping: their numbers, in order, and their bytes back to back.
    /// For the last stop of a pre-copy, when nothing writes the memory: a
    /// plain memcpy, split across threads when there is much to copy.
    ///
    /// # Safety
    /// Nothing may write the mapping during the call.
    pub unsafe fn copy_out(&self, dirty: &[u64]) -> (Vec<usize>, Vec<u8>) {
        let pages: Vec<usize> = set_pages(dirty, self.pages()).collect();
        let mut data: Vec<u8> = Vec::with_capacity(pages.len() * PAGE_SIZE);
        let parts = if pages.len() >= 4096 { threads() } else { 1 };
        let per = pages.len().div_ceil(parts.max(1)).max(1);
        let copy = |chunk: &[usize], dst: &mut [std::mem::MaybeUninit<u8>]| {
            for (&p, d) in chunk.iter().zip(dst.chunks_exact_mut(PAGE_SIZE)) {
                // SAFETY: page `p` is inside the mapping (below `pages()`),
                // which nothing writes now (the caller's promise); `d` is
                // one page long.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        self.host.add(p * PAGE_SIZE),
                        d.as_mut_ptr().cast::<u8>(),
                        PAGE_SIZE,
                    )
                };
            }
        };
        let out = data.spare_capacity_mut();
        if parts <= 1 {
            copy(&pages, out);
        } else {
            let copy = &copy;
            std::thread::scope(|s| {
                for (chunk, dst) in pages.chunks(per).zip(out.chunks_mut(per * PAGE_SIZE)) {
                    s.spawn(move || copy(chunk, dst));
                }
            });
        }
        // SAFETY: every page slot of the first `pages.len()` pages was
        // written above (the chunks cover them all).
        unsafe { data.set_len(pages.len() * PAGE_SIZE) };
        (pages, data)
    }
}

/// Copies of pages taken from live memory, the newest per page: rounds of
/// a pre-copy that copy the pages the guest keeps writing instead of
/// hashing them (a memcpy is several times faster, so the rounds shrink
/// the dirty set even against a guest that writes faster than pages are
/// hashed). Holds at most one copy of each page of the region.
#[derive(Debug)]
pub struct StagedPages {
    /// Per page of the region: its slot in `data`, or `NONE`.
    slot: Vec<u32>,
    /// Per slot: its page.
    pages: Vec<usize>,
    data: Vec<u8>,
}

const NONE: u32 = u32::MAX;

impl StagedPages {
    /// Nothing staged yet, for a region of `pages` pages.
    pub fn new(pages: usize) -> StagedPages {
        StagedPages {
            slot: vec![NONE; pages],
            pages: Vec::new(),
            data: Vec::new(),
        }
    }

    /// Pages staged.
    pub fn len(&self) -> usize {
        self.pages.len()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.pages.is_empty()
    }

    /// Copies the pages of `mem` set in `dirty` (volatile loads: the guest
    /// may be writing them), replacing older copies; returns how many.
    pub fn copy_in(&mut self, mem: &LiveMemory, dirty: &[u64]) -> u64 {
        let mut n = 0;
        for p in set_pages(dirty, mem.pages().min(self.slot.len())) {
            let s = match self.slot[p] {
                NONE => {
                    let s = self.pages.len();
                    self.slot[p] = s as u32;
                    self.pages.push(p);
                    self.data.resize((s + 1) * PAGE_SIZE, 0);
                    s
                }
                s => s as usize,
            };
            mem.copy_page(p, &mut self.data[s * PAGE_SIZE..(s + 1) * PAGE_SIZE]);
            n += 1;
        }
        n
    }

    /// Appends the staged pages that `newer` (sorted page numbers, copied
    /// later) does not replace to `pages` and `data`.
    pub fn drain_into(self, newer: &[usize], pages: &mut Vec<usize>, data: &mut Vec<u8>) {
        for (s, &p) in self.pages.iter().enumerate() {
            if newer.binary_search(&p).is_err() {
                pages.push(p);
                data.extend_from_slice(&self.data[s * PAGE_SIZE..(s + 1) * PAGE_SIZE]);
            }
        }
    }
}

/// The pages set in `dirty` below `pages`, in order.
pub fn set_pages(dirty: &[u64], pages: usize) -> impl Iterator<Item = usize> + '_ {
    dirty.iter().enumerate().flat_map(move |(w, &word)| {
        let mut bits = word;
        std::iter::from_fn(move || {
            if bits == 0 {
                return None;
            }
            let p = w * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            Some(p)
        })
        .filter(move |&p| p < pages)
    })
}

/// Pages set in `dirty` below `pages`.
pub fn count_set(dirty: &[u64], pages: usize) -> u64 {
    (0..pages.div_ceil(64))
        .map(|w| {
            (dirty.get(w).copied().unwrap_or(0) & low_bits(pages - w * 64)).count_ones() as u64
        })
        .sum()
}

/// Captures the pages of `mem` set in `dirty` (every page when None) into
/// `ids` (one per page of `mem`; the others keep theirs), storing the
/// non-zero ones. Each page is copied out before it is looked at (module
/// doc). The returned stats count pages hashed and objects the store
/// gained; `changed_pages` and `zero_pages` are left to the caller, who
/// knows the final list.
pub fn capture_live(
    store: &Store,
    mem: &LiveMemory,
    dirty: Option<&[u64]>,
    ids: &mut [ObjectId],
) -> Result<CaptureStats> {
    let pages = mem.pages();
    if ids.len() != pages {
        return Err(PagesError::PageCountMismatch {
            what: "the page list being captured",
            found: ids.len() as u64,
            expected: pages as u64,
        });
    }
    if let Some(d) = dirty {
        let needed = pages.div_ceil(64);
        if d.len() < needed {
            return Err(PagesError::BitmapTooShort {
                words: d.len(),
                pages: pages as u64,
                needed,
            });
        }
    }
    let weight = |step: usize| -> u64 {
        let in_region = (pages - step * 64).min(64);
        match dirty {
            Some(d) => (d[step] & low_bits(in_region)).count_ones() as u64,
            None => in_region as u64,
        }
    };
    let work: u64 = (0..pages.div_ceil(64)).map(weight).sum();
    let parts = if work >= 256 { threads() } else { 1 };
    let cuts = split_work(pages, parts, 64, &weight);
    let mut slices = Vec::with_capacity(cuts.len());
    let mut rest: &mut [ObjectId] = ids;
    for w in cuts.windows(2) {
        let (a, b) = rest.split_at_mut(w[1] - w[0]);
        slices.push((w[0], a));
        rest = b;
    }
    let run = |(start, out): (usize, &mut [ObjectId])| -> Result<CaptureStats> {
        let mut batch = Batch {
            store,
            data: vec![0u8; BATCH * PAGE_SIZE],
            pages: Vec::with_capacity(BATCH),
            stats: CaptureStats::default(),
        };
        let end = start + out.len();
        let mut take = |p: usize, out: &mut [ObjectId]| -> Result<()> {
            let i = batch.pages.len();
            mem.copy_page(p, &mut batch.data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE]);
            batch.pages.push(p);
            if batch.pages.len() == BATCH {
                batch.flush(out, start)?;
            }
            Ok(())
        };
        match dirty {
            None => {
                for p in start..end {
                    take(p, out)?;
                }
            }
            Some(d) => {
                // Ranges start at a multiple of 64 pages (`split_work`).
                for p in set_pages(&d[start / 64..end.div_ceil(64)], end - start) {
                    take(start + p, out)?;
                }
            }
        }
        batch.flush(out, start)?;
        Ok(batch.stats)
    };
    let mut stats = CaptureStats {
        pages: pages as u64,
        threads: slices.len().max(1) as u64,
        ..CaptureStats::default()
    };
    for r in run_parts(slices, "live capture", run) {
        stats.add(&r?);
    }
    Ok(stats)
}

/// Pages copied out and waiting to be hashed and stored.
struct Batch<'a> {
    store: &'a Store,
    data: Vec<u8>,
    pages: Vec<usize>,
    stats: CaptureStats,
}

impl Batch<'_> {
    /// Hashes the copied pages into `out` (whose first page is `start`)
    /// and puts the non-zero ones.
    fn flush(&mut self, out: &mut [ObjectId], start: usize) -> Result<()> {
        let mut items = Vec::with_capacity(self.pages.len());
        let mut item_ids = Vec::with_capacity(self.pages.len());
        for (i, &p) in self.pages.iter().enumerate() {
            let page = &self.data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
            let id = if is_all_zero(page) {
                ObjectId::ZERO_BLOCK
            } else {
                let id = ObjectId::of(page);
                items.push(page);
                item_ids.push(id);
                id
            };
            out[p - start] = id;
        }
        self.stats.hashed_pages += self.pages.len() as u64;
        if !items.is_empty() {
            let (_, r) = self.store.put_batch_hashed_report(&items, &item_ids)?;
            self.stats.new_objects += r.new_objects;
            self.stats.new_objects_bytes += r.new_stored_bytes;
            self.stats.new_raw_bytes += r.new_raw_bytes;
        }
        self.pages.clear();
        Ok(())
    }
}
