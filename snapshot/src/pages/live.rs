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
}

/// Copies of pages taken from live memory, the newest per page: rounds of
/// a pre-copy that copy the pages the guest keeps writing instead of
/// hashing them (a memcpy is several times faster, so the rounds shrink
/// the dirty set even against a guest that writes faster than pages are
/// hashed), and the last stop's copies. Each page has its slot at its own
/// offset in an anonymous mapping the size of the region, on transparent
/// huge pages where the host allows: only slots written cost memory, and
/// they fault in 2 MiB at a time (4 KiB faults made copying 800 MiB take
/// seconds here).
#[derive(Debug)]
pub struct StagedPages {
    map: *mut u8,
    len: usize,
    /// Which slots hold a copy (KVM's bitmap layout).
    staged: Vec<u64>,
}

// SAFETY: the mapping is owned by this value alone; access goes through
// `&self`/`&mut self`.
unsafe impl Send for StagedPages {}

impl Drop for StagedPages {
    fn drop(&mut self) {
        // SAFETY: `map` is this value's own mapping of `len` bytes.
        unsafe { libc::munmap(self.map.cast(), self.len) };
    }
}

impl StagedPages {
    /// Nothing staged yet, for a region of `pages` pages.
    pub fn new(pages: usize) -> std::io::Result<StagedPages> {
        let len = pages.max(1) * PAGE_SIZE;
        // SAFETY: a fresh private anonymous mapping; nothing else refers
        // to it.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: only sets a flag on our own mapping (best effort).
        unsafe { libc::madvise(map, len, libc::MADV_HUGEPAGE) };
        Ok(StagedPages {
            map: map.cast(),
            len,
            staged: vec![0; pages.div_ceil(64)],
        })
    }

    /// Pages staged.
    pub fn len(&self) -> usize {
        self.staged.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// Whether nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.iter().all(|&w| w == 0)
    }

    fn slot(&mut self, p: usize) -> &mut [u8] {
        assert!((p + 1) * PAGE_SIZE <= self.len, "page {p} past the region");
        self.staged[p / 64] |= 1 << (p % 64);
        // SAFETY: inside our own mapping (checked above).
        unsafe { std::slice::from_raw_parts_mut(self.map.add(p * PAGE_SIZE), PAGE_SIZE) }
    }

    /// Copies the pages of `mem` set in `dirty` (volatile loads: the guest
    /// may be writing them), replacing older copies; returns how many.
    pub fn copy_in(&mut self, mem: &LiveMemory, dirty: &[u64]) -> u64 {
        let mut n = 0;
        for p in set_pages(dirty, mem.pages()) {
            mem.copy_page(p, self.slot(p));
            n += 1;
        }
        n
    }

    /// Copies the pages of `mem` set in `dirty` with a plain memcpy, for
    /// the last stop; returns how many.
    ///
    /// # Safety
    /// Nothing may write `mem` during the call.
    pub unsafe fn copy_in_stopped(&mut self, mem: &LiveMemory, dirty: &[u64]) -> u64 {
        let mut n = 0;
        for p in set_pages(dirty, mem.pages()) {
            let slot = self.slot(p);
            // SAFETY: page `p` is inside `mem` (below its `pages()`), which
            // nothing writes now (the caller's promise).
            unsafe {
                std::ptr::copy_nonoverlapping(
                    mem.host.add(p * PAGE_SIZE),
                    slot.as_mut_ptr(),
                    PAGE_SIZE,
                )
            };
            n += 1;
        }
        n
    }

    /// Hashes and stores the staged copies into `ids` (one per page of the
    /// region) on all cores, as [`capture_live`] does.
    pub fn capture(&self, store: &Store, ids: &mut [ObjectId]) -> Result<CaptureStats> {
        // SAFETY: our own mapping, `len` bytes, alive as long as `self`,
        // which outlives the call; nothing writes it meanwhile (`&self`).
        let mem = unsafe { LiveMemory::new(self.map, self.len) }?;
        capture_live(store, &mem, Some(&self.staged), ids)
    }

    /// The staged pages and their copies, in page order.
    pub fn pages(&self) -> impl Iterator<Item = (usize, &[u8])> + '_ {
        set_pages(&self.staged, self.len / PAGE_SIZE).map(move |p| {
            // SAFETY: inside our own mapping (staged pages are below its
            // length).
            (p, unsafe {
                std::slice::from_raw_parts(self.map.add(p * PAGE_SIZE), PAGE_SIZE)
            })
        })
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
