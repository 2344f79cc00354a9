//! Filling a restored machine's fresh memory from a snapshot's page lists
//! (eagerly; lazy restore is `crate::memory::lazy`).
use snapshot::{restore as restore_pages, Manifest, PageList, PagesRef, SharedRegion};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use super::{region_mapping, snap_err};
use crate::error::{Result, VmmError};
use crate::memory::GuestMemory;

/// Restores every region's pages into fresh (all-zero) guest memory; zero
/// pages are not touched, so they cost the host nothing.
pub(in crate::machine) fn restore_memory(
    store: &store::Store,
    manifest: &Manifest,
    mem: &GuestMemory,
) -> Result<Vec<(PageList, PagesRef)>> {
    let mut lists = Vec::new();
    for (region, saved) in mem.iter().zip(&manifest.memory) {
        if region.start_addr().0 != saved.guest_addr || region.len() != saved.size {
            return Err(VmmError::Snapshot(format!(
                "memory region at {:#x} of {} bytes in the snapshot does not match this VM's layout",
                saved.guest_addr, saved.size
            )));
        }
        let list = PageList::load(store, &saved.pages).map_err(snap_err)?;
        let (host, len) = region_mapping(region);
        // SAFETY: fresh guest memory that no vCPU runs on yet; the mapping
        // lives as long as `mem` and is `len` bytes long.
        let bytes = unsafe { std::slice::from_raw_parts_mut(host, len) };
        restore_pages(store, &list, bytes).map_err(snap_err)?;
        lists.push((list, saved.pages.clone()));
    }
    Ok(lists)
}

/// Fills a fresh shared region (a memfd) from the snapshot.
pub(in crate::machine) fn restore_shared(
    store: &store::Store,
    saved: &SharedRegion,
    shm: &crate::shared::SharedMem,
) -> Result<(PageList, PagesRef)> {
    if saved.size != shm.len() as u64 {
        return Err(VmmError::Snapshot(format!(
            "shared region {} is {} bytes in the snapshot, {} here",
            saved.name,
            saved.size,
            shm.len()
        )));
    }
    let list = PageList::load(store, &saved.pages).map_err(snap_err)?;
    // SAFETY: a fresh mapping no vCPU runs on yet, `len` bytes long.
    let bytes = unsafe { std::slice::from_raw_parts_mut(shm.host(), shm.len()) };
    restore_pages(store, &list, bytes).map_err(snap_err)?;
    Ok((list, saved.pages.clone()))
}
