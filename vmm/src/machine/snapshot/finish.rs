//! The part of a snapshot that may run after the guest resumed: hashing
//! and storing the dirty pages copied out while it was stopped, saving the
//! page lists, syncing the store and writing the manifest durably.
use snapshot::{
    Manifest, MemoryRegion, PageList, PagesRef, SharedRegion, SnapshotDir, SnapshotStats, PAGE_SIZE,
};
use store::ObjectId;

use super::snap_err;
use crate::error::Result;

/// Where the memory slots of a snapshot live.
pub(super) struct Layout {
    pub ram: Vec<(u64, u64)>,
    pub shared: Option<String>,
}

/// One memory slot's capture: done while the VM was stopped, or its dirty
/// pages copied out to be hashed and stored afterwards.
pub(super) enum Capture {
    Done(PageList, snapshot::CaptureStats),
    Copied {
        /// Every page's id before the copied pages are applied: the
        /// parent's, or what the pre-copy rounds captured.
        base: Vec<ObjectId>,
        /// The parent's list and root (changed pages are counted, and
        /// unchanged list chunks reused, against it).
        parent: Option<(PageList, PagesRef)>,
        pages: Vec<usize>,
        data: Vec<u8>,
        /// What building `base` already hashed and stored (pre-copy).
        before: snapshot::CaptureStats,
    },
    /// A pre-copy's region: `base` from its hashing round, then the
    /// copies its later rounds and last stop staged.
    Staged {
        base: Vec<ObjectId>,
        parent: Option<(PageList, PagesRef)>,
        staged: snapshot::pages::StagedPages,
        before: snapshot::CaptureStats,
    },
}

impl Capture {
    pub fn copy_dirty(mem: &[u8], dirty: &[u64], parent: (PageList, PagesRef)) -> Capture {
        let mut pages = Vec::new();
        for (w, word) in dirty.iter().enumerate() {
            let mut bits = *word;
            while bits != 0 {
                let p = w * 64 + bits.trailing_zeros() as usize;
                bits &= bits - 1;
                if (p + 1) * PAGE_SIZE <= mem.len() {
                    pages.push(p);
                }
            }
        }
        let mut data = Vec::with_capacity(pages.len() * PAGE_SIZE);
        for &p in &pages {
            data.extend_from_slice(&mem[p * PAGE_SIZE..(p + 1) * PAGE_SIZE]);
        }
        Capture::Copied {
            base: parent.0.ids().to_vec(),
            parent: Some(parent),
            pages,
            data,
            before: snapshot::CaptureStats::default(),
        }
    }
}

/// Stores what the captures still need, saves the page lists, syncs the
/// store and writes the manifest (durable when this returns). Returns the
/// lists (the next incremental's parent) and stats whose `new_objects`
/// counts every object this snapshot added: pages and page-list chunks.
pub(super) fn finish_snapshot(
    dir: &SnapshotDir,
    store: &store::Store,
    mut manifest: Manifest,
    captures: Vec<Capture>,
    layout: &Layout,
) -> Result<(PagesList, SnapshotStats)> {
    let mut stats = SnapshotStats::default();
    let mut lists = Vec::new();
    for (slot, cap) in captures.into_iter().enumerate() {
        let (list, pages) = match cap {
            Capture::Done(list, s) => {
                stats.add_capture(&s);
                let (pages, report) = list.save_counted(store).map_err(snap_err)?;
                stats.new_objects += report.new_objects;
                stats.new_bytes += report.new_stored_bytes;
                (list, pages)
            }
            Capture::Copied {
                base,
                parent,
                pages,
                data,
                before,
            } => {
                let copies = pages.iter().copied().zip(data.chunks_exact(PAGE_SIZE));
                apply(store, base, parent, copies, before, &mut stats)?
            }
            Capture::Staged {
                mut base,
                parent,
                staged,
                mut before,
            } => {
                // On all cores: the last stop may have left a whole
                // region's worth of copies.
                let s = staged.capture(store, &mut base).map_err(snap_err)?;
                before.hashed_pages += s.hashed_pages;
                before.new_objects += s.new_objects;
                before.new_objects_bytes += s.new_objects_bytes;
                apply(store, base, parent, std::iter::empty(), before, &mut stats)?
            }
        };
        match layout.ram.get(slot) {
            Some(&(guest_addr, size)) => manifest.memory.push(MemoryRegion {
                guest_addr,
                size,
                pages: pages.clone(),
            }),
            None => manifest.shared.push(SharedRegion {
                name: layout.shared.clone().unwrap_or_default(),
                size: list.bytes(),
                pages: pages.clone(),
            }),
        }
        lists.push((list, pages));
    }
    store.sync().map_err(snap_err)?;
    manifest.stats = stats;
    dir.write(&manifest).map_err(snap_err)?;
    Ok(((manifest.id.clone(), lists), stats))
}

/// A snapshot's id and, per memory slot, its page list and stored root.
pub(super) type PagesList = (String, Vec<(PageList, PagesRef)>);

/// Hashes and stores `copies` over `base` (page, bytes), counts them into
/// `stats` with `before` (what building `base` cost) and saves the list
/// (over the parent's, whose unchanged chunks it reuses).
fn apply<'a>(
    store: &store::Store,
    mut ids: Vec<ObjectId>,
    parent: Option<(PageList, PagesRef)>,
    copies: impl Iterator<Item = (usize, &'a [u8])>,
    before: snapshot::CaptureStats,
    stats: &mut SnapshotStats,
) -> Result<(PageList, PagesRef)> {
    let mut blocks = Vec::new();
    let mut block_ids = Vec::new();
    let mut hashed = 0u64;
    for (p, page) in copies {
        hashed += 1;
        ids[p] = if store::is_all_zero(page) {
            ObjectId::ZERO_BLOCK
        } else {
            let id = ObjectId::of(page);
            blocks.push(page);
            block_ids.push(id);
            id
        };
    }
    let (_, report) = store
        .put_batch_hashed_report(&blocks, &block_ids)
        .map_err(snap_err)?;
    stats.new_objects += report.new_objects + before.new_objects;
    stats.new_bytes += report.new_stored_bytes + before.new_objects_bytes;
    stats.hashed_pages += hashed + before.hashed_pages;
    stats.changed_pages += match &parent {
        Some((list, _)) => ids.iter().zip(list.ids()).filter(|(a, b)| a != b).count(),
        None => ids.iter().filter(|id| !id.is_zero_block()).count(),
    } as u64;
    let list = PageList::from_ids(ids);
    stats.pages += list.len() as u64;
    stats.zero_pages += list.zero_pages() as u64;
    let (saved, report) = match &parent {
        Some((plist, proot)) => list.save_over_counted(store, plist, proot),
        None => list.save_counted(store),
    }
    .map_err(snap_err)?;
    stats.new_objects += report.new_objects;
    stats.new_bytes += report.new_stored_bytes;
    Ok((list, saved))
}
