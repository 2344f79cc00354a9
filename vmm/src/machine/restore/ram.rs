//! Guest memory of a restore: eager (every page copied in before the vCPU
//! starts) or lazy (`crate::memory::lazy`: pages come in on first touch
//! and in the background, the vCPU starts at once).
//!
//! Transparent huge pages: eager memory asks for them before the copy.
//! Lazy memory asks only when the prefetcher hands it back to the kernel
//! (`crate::memory::lazy::prefetch`): while userfaultfd serves it, every
//! page comes in at 4 KiB (UFFDIO_COPY and UFFDIO_ZEROPAGE map single
//! pages, and khugepaged leaves registered ranges with holes alone), so
//! asking earlier would buy nothing.
use std::sync::Arc;

use snapshot::{Manifest, PageList, PagesRef, SnapshotDir};
use store::Store;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::super::snapshot::restore_memory;
use crate::error::{Result, VmmError};
use crate::memory::lazy::{HotPages, LazyError, LazyMemory, LazyRegion};
use crate::memory::GuestMemory;

/// How a restore brings guest memory back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MemoryMode {
    /// On demand (userfaultfd) plus a background prefetch; falls back to
    /// eager, with a warning, where userfaultfd is unavailable.
    #[default]
    Lazy,
    /// Every page before the vCPU starts.
    Eager,
}

impl std::str::FromStr for MemoryMode {
    type Err = String;

    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lazy" => Ok(MemoryMode::Lazy),
            "eager" => Ok(MemoryMode::Eager),
            other => Err(format!("'{other}' is not a memory mode: use lazy or eager")),
        }
    }
}

/// Per region: its page list and where the list is stored.
type RegionLists = Vec<(PageList, PagesRef)>;

/// Restores guest RAM: returns each region's page list (and where it is
/// stored) for the next incremental snapshot, and the lazy restore still
/// running, if lazy.
pub(in crate::machine) fn restore_ram(
    mode: MemoryMode,
    store: &Arc<Store>,
    dir: &SnapshotDir,
    manifest: &Manifest,
    mem: &GuestMemory,
) -> Result<(RegionLists, Option<LazyMemory>)> {
    if mode == MemoryMode::Eager {
        return Ok((eager(store, manifest, mem)?, None));
    }
    let mut lists = Vec::new();
    let mut regions = Vec::new();
    for (region, saved) in mem.iter().zip(&manifest.memory) {
        if region.start_addr().0 != saved.guest_addr || region.len() != saved.size {
            return Err(VmmError::Snapshot(format!(
                "memory region at {:#x} of {} bytes in the snapshot does not match this VM's layout",
                saved.guest_addr, saved.size
            )));
        }
        let list = PageList::load(store, &saved.pages).map_err(snap_err)?;
        let host = region
            .get_host_address(MemoryRegionAddress(0))
            .expect("regions map from offset 0");
        regions.push(LazyRegion {
            host: host as usize,
            guest_addr: saved.guest_addr,
            list: list.clone(),
        });
        lists.push((list, saved.pages.clone()));
    }
    let hot = hot_pages(store.clone(), dir.clone(), manifest, &lists);
    match LazyMemory::start(store.clone(), &manifest.id, regions, hot) {
        Ok(lazy) => Ok((lists, Some(lazy))),
        Err(e @ (LazyError::Unavailable(_) | LazyError::Register { .. })) => {
            // Nothing touched the memory yet: it is still fresh and zero.
            tracing::warn!("{e}: restoring memory eagerly instead");
            Ok((eager(store, manifest, mem)?, None))
        }
        Err(e) => Err(e.into()),
    }
}

/// Every page before the vCPU starts, into memory on transparent huge
/// pages (the copy then faults in 2 MiB at a time, and the guest runs on
/// them as a booted one does).
fn eager(store: &Arc<Store>, manifest: &Manifest, mem: &GuestMemory) -> Result<RegionLists> {
    crate::memory::advise_huge_all(mem);
    restore_memory(store, manifest, mem)
}

/// The pages to prefetch first: those that differ from the parent
/// snapshot's (what the guest wrote in its last interval before the
/// snapshot, so likely what it touches next). A full snapshot with no
/// parent, or a parent that is gone, has none: address order then.
fn hot_pages(
    store: Arc<Store>,
    dir: SnapshotDir,
    manifest: &Manifest,
    lists: &[(PageList, PagesRef)],
) -> HotPages {
    let parent = manifest.parent.clone();
    let current: Vec<PageList> = lists.iter().map(|(l, _)| l.clone()).collect();
    Box::new(move || {
        let Some(parent) = parent.and_then(|p| dir.read(&p).ok()) else {
            return Vec::new();
        };
        current
            .iter()
            .zip(&parent.memory)
            .map(|(now, before)| {
                let Ok(before) = PageList::load(&store, &before.pages) else {
                    return Vec::new();
                };
                if before.len() != now.len() {
                    return Vec::new();
                }
                now.ids()
                    .iter()
                    .zip(before.ids())
                    .enumerate()
                    .filter(|(_, (a, b))| a != b && !a.is_zero_block())
                    .map(|(p, _)| p)
                    .collect()
            })
            .collect()
    })
}

fn snap_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Snapshot(e.to_string())
}
