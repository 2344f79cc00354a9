//! Guest memory as page lists in the content store.
//!
//! A region of guest memory is a [`PageList`]: one [`ObjectId`] per 4 KiB
//! page, in page order. Pages are store objects (BLAKE3 of the page, zstd
//! in packs); the all-zero page is [`ObjectId::ZERO_BLOCK`] and is never
//! stored, so untouched memory costs nothing. [`capture`] builds a list
//! from memory (full, or incremental from a dirty bitmap and the parent's
//! list), [`restore`] and its variants write a list back into memory.
//!
//! # Page-list chunks (on-disk format)
//! A page list is itself kept in the store, cut into *chunk objects* of
//! [`IDS_PER_CHUNK`] ids each (4096 ids = 128 KiB of ids for 16 MiB of
//! memory), so that the chunks of memory that did not change between two
//! snapshots, or between clones, are the same objects and stored once:
//!
//! ```text
//! chunk object = id[0] | id[1] | ... | id[n-1]     n * 32 bytes, no header
//!   id[i]      = the 32-byte BLAKE3 id of page (chunk_no * 4096 + i)
//!   n          = 4096 for every chunk but the last, which holds the rest
//! ```
//!
//! A list is then referred to by a small root, [`PagesRef`]: the number of
//! pages and the ids of its chunks in order (what a snapshot manifest
//! holds). A chunk's length must be exactly `32 * n` for its position, or
//! [`PageList::load`] refuses it ([`PagesError::BadChunk`]). The store
//! checks each chunk's BLAKE3 on read.
//!
//! # Using it from the VMM
//! Take a [`Store::pin`] (see [`crate::gc`]) and hold it until the
//! manifest is written. While the VM is paused: [`capture`] each region
//! (incremental: with the KVM dirty log OR-ed with the VMM's own bitmap of
//! device writes). After resuming (they only read the lists, not guest
//! memory): [`PageList::save`] or [`PageList::save_over`] the lists and
//! write the manifest. Restore: [`PageList::load`] the lists, [`restore`]
//! into fresh anonymous memory.
//!
//! Lazy restore (userfaultfd, pages faulted in on first touch and
//! prefetched behind) lives in the VMM (`vmm/src/memory/lazy.rs`), which
//! owns the memory mapping; it reads each page with [`restore_page`].

mod capture;
mod live;
mod restore;
mod serde_ids;

#[cfg(test)]
mod tests;

use std::sync::atomic::{AtomicUsize, Ordering};

use serde::{Deserialize, Serialize};

use store::{ObjectId, PutReport, Store, StoreError, BLOCK_SIZE};

pub use capture::{capture, CaptureStats};
pub use live::{capture_live, count_set, set_pages, LiveMemory, StagedPages};
pub use restore::{restore, restore_filtered, restore_over, restore_page, RestoreStats};
pub(crate) use serde_ids::{id_bytes, ids_bytes};

/// Size of a guest page.
pub const PAGE_SIZE: usize = BLOCK_SIZE;

/// Page ids per chunk object (4096 ids = 128 KiB, for 16 MiB of memory).
pub const IDS_PER_CHUNK: usize = 4096;

/// Everything that can go wrong with page lists. Each message names the
/// region, page or object concerned and what to do.
#[derive(Debug, thiserror::Error)]
pub enum PagesError {
    /// The content store failed (a missing or corrupt object included).
    #[error(transparent)]
    Store(#[from] StoreError),

    /// Memory whose length is not a whole number of pages.
    #[error("page list: {what} is {len} bytes, not a multiple of the {PAGE_SIZE}-byte page; pass whole pages")]
    NotPageAligned {
        /// Which buffer ("memory to capture", "restore destination").
        what: &'static str,
        /// Its length.
        len: usize,
    },

    /// Two things that must describe the same number of pages do not.
    #[error("page list: {what} has {found} pages but the memory has {expected}; use the list captured from this region")]
    PageCountMismatch {
        /// Which list or buffer.
        what: &'static str,
        /// Pages it has.
        found: u64,
        /// Pages expected.
        expected: u64,
    },

    /// An incremental capture without the parent's list.
    #[error("page list: a dirty bitmap was given without the parent's page list; pass the parent (pages not dirty are taken from it) or capture in full")]
    DirtyWithoutParent,

    /// The dirty bitmap has fewer bits than the region has pages.
    #[error("page list: the dirty bitmap has {words} 64-bit words but {pages} pages need {needed}; pass the whole bitmap of the region")]
    BitmapTooShort {
        /// Words given.
        words: usize,
        /// Pages in the region.
        pages: u64,
        /// Words needed.
        needed: usize,
    },

    /// A page-list root or chunk that does not fit the format.
    #[error("page list: chunk {chunk} ({id}) of a {pages}-page list is invalid: {detail}; the snapshot referring to it is damaged")]
    BadChunk {
        /// Chunk number in the list.
        chunk: usize,
        /// The chunk object.
        id: ObjectId,
        /// Pages of the list.
        pages: u64,
        /// What was wrong.
        detail: String,
    },

    /// A page's object has a length other than a page.
    #[error("page list: page {page} ({id}) is {len} bytes in the store, not {PAGE_SIZE}; the page list refers to an object that is not a page")]
    NotAPage {
        /// Page number.
        page: u64,
        /// Its object.
        id: ObjectId,
        /// The object's length.
        len: usize,
    },

    /// A page number past the end of the list.
    #[error("page list: page {page} is past the end of the {pages}-page list")]
    PageOutOfRange {
        /// The page asked for.
        page: u64,
        /// Pages in the list.
        pages: u64,
    },

    /// A one-page buffer of the wrong size.
    #[error("page list: the buffer for one page is {len} bytes; pass exactly {PAGE_SIZE}")]
    PageBuffer {
        /// Its length.
        len: usize,
    },

    /// A worker thread panicked.
    #[error("page list: a worker thread panicked during {0}")]
    WorkerPanicked(&'static str),
}

/// Result with a [`PagesError`].
pub type Result<T, E = PagesError> = std::result::Result<T, E>;

/// A region's pages: one id per 4 KiB page, zero pages as
/// [`ObjectId::ZERO_BLOCK`].
#[derive(Clone, PartialEq, Eq, Default)]
pub struct PageList {
    ids: Vec<ObjectId>,
}

/// The small root of a page list kept in the store (see the module doc):
/// what a snapshot manifest holds for a region.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PagesRef {
    /// Pages in the list.
    pub pages: u64,
    /// Its chunk objects, in order.
    #[serde(with = "ids_bytes")]
    pub chunks: Vec<ObjectId>,
}

impl std::fmt::Debug for PageList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "PageList({} pages, {} zero)",
            self.len(),
            self.zero_pages()
        )
    }
}

impl PageList {
    /// A list of the given ids.
    pub fn from_ids(ids: Vec<ObjectId>) -> PageList {
        PageList { ids }
    }

    /// A list of `pages` zero pages.
    pub fn zeroed(pages: usize) -> PageList {
        PageList {
            ids: vec![ObjectId::ZERO_BLOCK; pages],
        }
    }

    /// Number of pages.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the list has no pages.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Bytes of memory the list describes.
    pub fn bytes(&self) -> u64 {
        self.ids.len() as u64 * PAGE_SIZE as u64
    }

    /// The ids, one per page.
    pub fn ids(&self) -> &[ObjectId] {
        &self.ids
    }

    /// The id of page `page`.
    pub fn get(&self, page: usize) -> Option<ObjectId> {
        self.ids.get(page).copied()
    }

    /// Number of zero pages.
    pub fn zero_pages(&self) -> usize {
        self.ids.iter().filter(|id| id.is_zero_block()).count()
    }

    /// Ids of the non-zero pages (the objects restore reads), in page
    /// order, duplicates included.
    pub fn page_objects(&self) -> impl Iterator<Item = (usize, ObjectId)> + '_ {
        self.ids
            .iter()
            .enumerate()
            .filter(|(_, id)| !id.is_zero_block())
            .map(|(i, id)| (i, *id))
    }

    /// Stores the list as chunk objects and returns its root.
    pub fn save(&self, store: &Store) -> Result<PagesRef> {
        Ok(self.save_inner(store, None)?.0)
    }

    /// [`PageList::save`] that also says what it added to the store (the
    /// chunk objects no one had stored), for a snapshot's true count.
    pub fn save_counted(&self, store: &Store) -> Result<(PagesRef, PutReport)> {
        self.save_inner(store, None)
    }

    /// Like [`PageList::save`] for a list derived from `parent` (saved as
    /// `parent_ref`): chunks whose ids are unchanged reuse the parent's
    /// chunk id instead of being hashed again. Falls back to a plain save
    /// when `parent` and `parent_ref` do not match this list's shape.
    pub fn save_over(
        &self,
        store: &Store,
        parent: &PageList,
        parent_ref: &PagesRef,
    ) -> Result<PagesRef> {
        Ok(self.save_over_counted(store, parent, parent_ref)?.0)
    }

    /// [`PageList::save_over`] that also says what it added to the store.
    pub fn save_over_counted(
        &self,
        store: &Store,
        parent: &PageList,
        parent_ref: &PagesRef,
    ) -> Result<(PagesRef, PutReport)> {
        let fits = parent.len() == self.len()
            && parent_ref.pages == self.len() as u64
            && parent_ref.chunks.len() == chunk_count(self.len());
        self.save_inner(store, fits.then_some((parent, parent_ref)))
    }

    fn save_inner(
        &self,
        store: &Store,
        parent: Option<(&PageList, &PagesRef)>,
    ) -> Result<(PagesRef, PutReport)> {
        let mut chunks = Vec::with_capacity(chunk_count(self.len()));
        let mut items = Vec::new();
        let mut ids = Vec::new();
        for (n, chunk) in self.ids.chunks(IDS_PER_CHUNK).enumerate() {
            if let Some((pl, pr)) = parent {
                let start = n * IDS_PER_CHUNK;
                if pl.ids[start..start + chunk.len()] == *chunk {
                    chunks.push(pr.chunks[n]);
                    continue;
                }
            }
            let bytes: Vec<u8> = chunk.iter().flat_map(|id| id.0).collect();
            let id = ObjectId::of(&bytes);
            chunks.push(id);
            items.push(bytes);
            ids.push(id);
        }
        let report = if items.is_empty() {
            PutReport::default()
        } else {
            store.put_batch_hashed_report(&items, &ids)?.1
        };
        let root = PagesRef {
            pages: self.len() as u64,
            chunks,
        };
        Ok((root, report))
    }

    /// Reads a list back from its root, checking every chunk's length.
    pub fn load(store: &Store, root: &PagesRef) -> Result<PageList> {
        let pages = root.pages;
        let expected = chunk_count(pages as usize);
        if root.chunks.len() != expected {
            return Err(PagesError::BadChunk {
                chunk: root.chunks.len().min(expected),
                id: root.chunks.last().copied().unwrap_or(ObjectId::ZERO_BLOCK),
                pages,
                detail: format!(
                    "the root lists {} chunks, {pages} pages need {expected}",
                    root.chunks.len()
                ),
            });
        }
        let mut ids = Vec::with_capacity(pages as usize);
        for (n, cid) in root.chunks.iter().enumerate() {
            let want = (pages as usize - n * IDS_PER_CHUNK).min(IDS_PER_CHUNK);
            let bytes = store.get(cid)?;
            if bytes.len() != want * 32 {
                return Err(PagesError::BadChunk {
                    chunk: n,
                    id: *cid,
                    pages,
                    detail: format!("{} bytes, expected {} ({want} ids)", bytes.len(), want * 32),
                });
            }
            ids.extend(
                bytes
                    .chunks_exact(32)
                    .map(|b| ObjectId(b.try_into().expect("32 bytes"))),
            );
        }
        Ok(PageList { ids })
    }
}

impl PagesRef {
    /// Bytes of memory the list describes.
    pub fn bytes(&self) -> u64 {
        self.pages * PAGE_SIZE as u64
    }
}

/// Chunks needed for `pages` pages.
pub fn chunk_count(pages: usize) -> usize {
    pages.div_ceil(IDS_PER_CHUNK)
}

/// Checks that `len` bytes are whole pages; returns the page count.
fn whole_pages(what: &'static str, len: usize) -> Result<usize> {
    if len % PAGE_SIZE != 0 {
        return Err(PagesError::NotPageAligned { what, len });
    }
    Ok(len / PAGE_SIZE)
}

/// Splits `0..total` into at most `parts` ranges of roughly equal work,
/// cutting only at multiples of `align`; returns the cut points, `0` and
/// `total` included. `weight(s)` is the work in step `s`, the items
/// `s * align .. (s + 1) * align`.
fn split_work(
    total: usize,
    parts: usize,
    align: usize,
    weight: &dyn Fn(usize) -> u64,
) -> Vec<usize> {
    let steps = total.div_ceil(align);
    let sum: u64 = (0..steps).map(weight).sum();
    let mut cuts = vec![0];
    let mut acc = 0u64;
    let mut next = 1;
    for s in 0..steps {
        if next >= parts {
            break;
        }
        acc += weight(s);
        if acc * parts as u64 >= sum * next as u64 && acc > 0 {
            cuts.push(((s + 1) * align).min(total));
            next += 1;
        }
    }
    if *cuts.last().expect("non-empty") != total {
        cuts.push(total);
    }
    cuts.dedup();
    cuts
}

static MAX_THREADS: AtomicUsize = AtomicUsize::new(0);

/// Caps the threads one capture or restore uses, for the whole process
/// (0 = the default: the machine's cores, at most 8). A VMM that keeps
/// vCPUs running during a capture can leave them a core this way.
/// Runs `work` on every part: the first on this thread, the others on
/// scoped threads. A worker that panics yields `WorkerPanicked(what)`.
pub(crate) fn run_parts<I: Send, T: Send>(
    parts: Vec<I>,
    what: &'static str,
    work: impl Fn(I) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    let work = &work;
    std::thread::scope(|s| {
        let mut parts = parts.into_iter();
        let first = parts.next();
        let handles: Vec<_> = parts.map(|p| s.spawn(move || work(p))).collect();
        let mut results = Vec::with_capacity(handles.len() + 1);
        if let Some(p) = first {
            results.push(work(p));
        }
        for h in handles {
            results.push(h.join().unwrap_or(Err(PagesError::WorkerPanicked(what))));
        }
        results
    })
}

pub fn set_max_threads(n: usize) {
    MAX_THREADS.store(n, Ordering::Relaxed);
}

/// Worker threads to use.
fn threads() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 8);
    match MAX_THREADS.load(Ordering::Relaxed) {
        0 => cores,
        n => n.min(cores),
    }
}
