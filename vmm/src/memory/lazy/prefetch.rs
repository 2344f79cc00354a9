//! The prefetch thread of a lazy restore: fills every non-zero page not yet
//! faulted in, hottest first, then hands the memory back to the kernel.
//!
//! Order: first the pages the caller names hot (the restore names the
//! pages the last snapshot interval changed: what the guest was working on
//! when it was snapshotted), then every other non-zero page in address
//! order. Pages go in runs of up to [`RUN`] neighbours per UFFDIO_COPY (one
//! ioctl and one page-table walk per run instead of per page). A page the
//! fault thread filled first stops a COPY with EEXIST; the run goes on
//! after it.
//!
//! Zero pages are never prefetched: once every non-zero page is in, the
//! memory is unregistered, and an untouched zero page then faults in as
//! any fresh anonymous memory does (no store, no fault thread).
use std::sync::atomic::Ordering;
use std::time::Instant;

use snapshot::PAGE_SIZE;

use super::{Region, Shared};
use crate::memory::uffd::Fill;

/// Pages per UFFDIO_COPY.
const RUN: usize = 32;

/// Computes, on the prefetch thread (it may read the store), the pages to
/// fill first: per region, page numbers in the order to fill them.
pub type HotPages = Box<dyn FnOnce() -> Vec<Vec<usize>> + Send>;

pub(super) fn run(s: &Shared, hot: HotPages, started: Instant) {
    let ok = fill_all(s, hot);
    if ok {
        let mut registered = s.registered.lock().expect("registered lock");
        for r in &s.regions {
            if let Err(e) = s.uffd.unregister(r.host, r.pages() * PAGE_SIZE) {
                // Still registered: the fault thread keeps serving (every
                // page is marked done, so only with zero pages).
                tracing::warn!("lazy restore: unregistering guest memory: {e}");
                s.set_complete();
                return;
            }
        }
        *registered = false;
        drop(registered);
        // Plain memory again: ranges the guest never touched now fault in
        // as huge pages, and khugepaged may fold the copied 4 KiB pages
        // into huge ones in the background. Not MADV_COLLAPSE: copying
        // every range here would compete with the guest for this host's
        // CPUs just when it starts to run at full speed (and on this host
        // it failed with EINVAL after 11 ms on a 288 MiB region).
        for r in &s.regions {
            crate::memory::advise_huge(r.host as *mut u8, r.pages() * PAGE_SIZE);
        }
        s.prefetch_us
            .store(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        tracing::debug!(
            "lazy restore: all pages in after {:?} ({} prefetched)",
            started.elapsed(),
            s.prefetched.load(Ordering::Relaxed)
        );
        // The fault thread's work is over: every fault from here on is
        // the kernel's.
        s.request_stop();
    }
    s.set_complete();
}

/// Fills every non-zero page; false when stopped or failed.
fn fill_all(s: &Shared, hot: HotPages) -> bool {
    let mut buf = vec![0u8; RUN * PAGE_SIZE];
    let hot = hot();
    for (ri, r) in s.regions.iter().enumerate() {
        let mut pages: Vec<usize> = hot.get(ri).cloned().unwrap_or_default();
        pages.retain(|&p| p < r.pages());
        if !fill_pages(s, ri, &pages, &mut buf) {
            return false;
        }
    }
    for (ri, r) in s.regions.iter().enumerate() {
        let ids = r.list.ids();
        let mut start = 0;
        while start < ids.len() {
            // The next run of up to RUN non-zero pages.
            let end = (start..ids.len().min(start + RUN))
                .find(|&p| ids[p].is_zero_block())
                .unwrap_or(ids.len().min(start + RUN));
            if end == start {
                start += 1;
                continue;
            }
            let run: Vec<usize> = (start..end).collect();
            if !fill_pages(s, ri, &run, &mut buf) {
                return false;
            }
            start = end;
        }
    }
    true
}

/// Fills `pages` of region `ri` (any order; neighbours share a COPY).
fn fill_pages(s: &Shared, ri: usize, pages: &[usize], buf: &mut [u8]) -> bool {
    let r = &s.regions[ri];
    let mut i = 0;
    while i < pages.len() {
        if s.stopping() || s.failed() {
            return false;
        }
        // The longest run of consecutive, not yet filled, non-zero pages
        // starting at pages[i].
        let first = pages[i];
        let mut n = 0;
        while i + n < pages.len()
            && n < RUN
            && pages[i + n] == first + n
            && !r.is_done(first + n)
            && !r.list.ids()[first + n].is_zero_block()
        {
            n += 1;
        }
        if n == 0 {
            i += 1;
            continue;
        }
        if !copy_run(s, ri, r, first, n, buf) {
            return false;
        }
        i += n;
    }
    true
}

/// Reads pages `first..first+n` and maps them; false on an error (already
/// reported).
fn copy_run(s: &Shared, ri: usize, r: &Region, first: usize, n: usize, buf: &mut [u8]) -> bool {
    for k in 0..n {
        let out = &mut buf[k * PAGE_SIZE..(k + 1) * PAGE_SIZE];
        if let Err(e) = snapshot::restore_page(&s.store, &r.list, first + k, out) {
            s.fail(s.fetch_error(ri, first + k, e));
            return false;
        }
    }
    let mut k = 0;
    while k < n {
        let at = r.addr(first + k);
        let len = (n - k) * PAGE_SIZE;
        // SAFETY: `buf` holds `n` pages read above; `at..at+len` lies in a
        // region still registered (only this thread unregisters, after
        // this loop).
        let filled = unsafe { s.uffd.copy(at, buf[k * PAGE_SIZE..].as_ptr(), len) };
        match filled {
            Ok(Fill::Done) => {
                r.mark_done(first + k..first + n);
                s.prefetched.fetch_add((n - k) as u64, Ordering::Relaxed);
                return true;
            }
            Ok(Fill::Exists(bytes)) => {
                // Pages before `bytes` are ours; the one at it was filled
                // by the fault thread.
                let got = bytes / PAGE_SIZE;
                r.mark_done(first + k..first + k + got + 1);
                s.prefetched.fetch_add(got as u64, Ordering::Relaxed);
                k += got + 1;
            }
            Err(e) => {
                s.fail(s.fill_error(ri, first + k, e));
                return false;
            }
        }
    }
    true
}
