//! Restore: page list -> memory.
//!
//! Every page written is read through [`Store::get`], which checks the
//! object's BLAKE3, so memory never receives bytes that are not the page
//! captured. A page whose id already appeared earlier in the same call is
//! copied from where it was written instead of being read again.

use std::collections::HashMap;

use serde::Serialize;

use super::{split_work, threads, whole_pages, PageList, PagesError, Result, PAGE_SIZE};
use store::{IdHashBuilder, ObjectId, Store};

/// Below this many pages to write, restore stays on the calling thread.
const PARALLEL_MIN_PAGES: u64 = 256;

/// What a restore did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// Pages in the region.
    pub pages: u64,
    /// Zero pages left untouched (the destination is fresh, zero memory).
    pub zero_pages: u64,
    /// Pages left untouched because the destination already held them
    /// ([`restore_over`]) or the filter did not select them
    /// ([`restore_filtered`]).
    pub skipped_pages: u64,
    /// Pages set to zero over different content ([`restore_over`]).
    pub zeroed_pages: u64,
    /// Pages written with content read from the store.
    pub fetched_pages: u64,
    /// Pages written by copying an identical page written earlier.
    pub duplicate_pages: u64,
    /// Threads used.
    pub threads: u64,
}

impl RestoreStats {
    fn add(&mut self, o: &RestoreStats) {
        self.zero_pages += o.zero_pages;
        self.skipped_pages += o.skipped_pages;
        self.zeroed_pages += o.zeroed_pages;
        self.fetched_pages += o.fetched_pages;
        self.duplicate_pages += o.duplicate_pages;
    }
}

/// What to do with one page.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Action {
    /// Zero page over fresh memory: nothing to do.
    LeaveZero,
    /// Not selected, or already there.
    Skip,
    /// Different content over a page that must become zero.
    Zero,
    /// Read (or copy) the page's object into place.
    Write,
}

/// Writes every non-zero page of `list` into `dst`, which must be fresh,
/// zero-filled memory of exactly the list's size (an anonymous mapping):
/// zero pages are not touched at all, so they stay unbacked.
pub fn restore(store: &Store, list: &PageList, dst: &mut [u8]) -> Result<RestoreStats> {
    restore_with(store, list, dst, &|_, id| {
        if id.is_zero_block() {
            Action::LeaveZero
        } else {
            Action::Write
        }
    })
}

/// Like [`restore`] for only the pages for which `want(page)` is true
/// (e.g. the pages a lazy restore prefetches); the others are left as they
/// are.
pub fn restore_filtered(
    store: &Store,
    list: &PageList,
    dst: &mut [u8],
    want: impl Fn(usize) -> bool + Sync,
) -> Result<RestoreStats> {
    restore_with(store, list, dst, &|p, id| {
        if !want(p) {
            Action::Skip
        } else if id.is_zero_block() {
            Action::LeaveZero
        } else {
            Action::Write
        }
    })
}

/// Restores `list` over memory that already holds `base` (e.g. a child
/// snapshot over its restored parent): only pages whose id differs are
/// written; pages that became zero are zeroed.
pub fn restore_over(
    store: &Store,
    list: &PageList,
    base: &PageList,
    dst: &mut [u8],
) -> Result<RestoreStats> {
    if base.len() != list.len() {
        return Err(PagesError::PageCountMismatch {
            what: "the base page list",
            found: base.len() as u64,
            expected: list.len() as u64,
        });
    }
    let base = base.ids();
    restore_with(store, list, dst, &|p, id| {
        if base[p] == id {
            Action::Skip
        } else if id.is_zero_block() {
            Action::Zero
        } else {
            Action::Write
        }
    })
}

/// Writes page `page` of `list` into `dst` (one page): for a lazy restore
/// that fills pages on first touch. A zero page is written as zeros.
pub fn restore_page(store: &Store, list: &PageList, page: usize, dst: &mut [u8]) -> Result<()> {
    let id = list.get(page).ok_or(PagesError::PageOutOfRange {
        page: page as u64,
        pages: list.len() as u64,
    })?;
    if dst.len() != PAGE_SIZE {
        return Err(PagesError::PageBuffer { len: dst.len() });
    }
    if id.is_zero_block() {
        dst.fill(0);
        return Ok(());
    }
    fetch(store, page, &id, dst)
}

fn fetch(store: &Store, page: usize, id: &ObjectId, out: &mut [u8]) -> Result<()> {
    let data = store.get(id)?;
    if data.len() != PAGE_SIZE {
        return Err(PagesError::NotAPage {
            page: page as u64,
            id: *id,
            len: data.len(),
        });
    }
    out.copy_from_slice(&data);
    Ok(())
}

fn restore_with(
    store: &Store,
    list: &PageList,
    dst: &mut [u8],
    action: &(dyn Fn(usize, ObjectId) -> Action + Sync),
) -> Result<RestoreStats> {
    let pages = whole_pages("the restore destination", dst.len())?;
    if list.len() != pages {
        return Err(PagesError::PageCountMismatch {
            what: "the page list",
            found: list.len() as u64,
            expected: pages as u64,
        });
    }
    let ids = list.ids();
    let weight = |step: usize| -> u64 {
        let end = (step * 64 + 64).min(pages);
        ids[step * 64..end]
            .iter()
            .filter(|id| !id.is_zero_block())
            .count() as u64
    };
    let work: u64 = (0..pages.div_ceil(64)).map(weight).sum();
    let parts = if work >= PARALLEL_MIN_PAGES {
        threads()
    } else {
        1
    };
    let cuts = split_work(pages, parts, 64, &weight);
    let mut slices = Vec::with_capacity(cuts.len());
    let mut rest: &mut [u8] = dst;
    for w in cuts.windows(2) {
        let (a, b) = rest.split_at_mut((w[1] - w[0]) * PAGE_SIZE);
        slices.push((w[0], a));
        rest = b;
    }

    let run = |start: usize, out: &mut [u8]| -> Result<RestoreStats> {
        let mut st = RestoreStats::default();
        // First page (relative) written with each id in this call.
        let mut seen: HashMap<ObjectId, usize, IdHashBuilder> = HashMap::default();
        for i in 0..out.len() / PAGE_SIZE {
            let p = start + i;
            let id = ids[p];
            let range = i * PAGE_SIZE..(i + 1) * PAGE_SIZE;
            match action(p, id) {
                Action::LeaveZero => st.zero_pages += 1,
                Action::Skip => st.skipped_pages += 1,
                Action::Zero => {
                    out[range].fill(0);
                    st.zeroed_pages += 1;
                }
                Action::Write => match seen.get(&id) {
                    Some(&q) => {
                        out.copy_within(q * PAGE_SIZE..(q + 1) * PAGE_SIZE, range.start);
                        st.duplicate_pages += 1;
                    }
                    None => {
                        fetch(store, p, &id, &mut out[range])?;
                        seen.insert(id, i);
                        st.fetched_pages += 1;
                    }
                },
            }
        }
        Ok(st)
    };

    let mut stats = RestoreStats {
        pages: pages as u64,
        threads: slices.len().max(1) as u64,
        ..RestoreStats::default()
    };
    let results = super::run_parts(slices, "restore", |(start, out)| run(start, out));
    for r in results {
        stats.add(&r?);
    }
    Ok(stats)
}
