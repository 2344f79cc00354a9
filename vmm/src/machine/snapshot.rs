//! Snapshots of a machine: capture (full or incremental) and restore.
//!
//! A snapshot is a manifest (`snapshot::manifest`) in `DIR/snapshots/`
//! whose state blobs hold the KVM state (`vm`, `vcpu0`..), the devices
//! (`serial`, `virtio0`..) and whose memory regions are page lists in the
//! content store `DIR/store` (zero pages free, identical pages stored once
//! across snapshots and VMs). An incremental snapshot re-hashes only the
//! pages dirtied since its parent: KVM's dirty log (guest writes) OR-ed with
//! guest memory's own bitmap (the VMM's writes: virtio DMA, used rings).
//!
//! When the disk is recorded, the snapshot first makes a barrier in the
//! change log and records its position, so a restore can check that the
//! disk image it is given is the disk the memory expects.
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;

use snapshot::{
    capture, restore as restore_pages, DiskPosition, Manifest, MemoryRegion, PageList, PagesRef,
    SharedRegion, SnapshotDir, SnapshotKind, SnapshotStats, StateBlob,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::Machine;
use crate::error::{Result, VmmError};
use crate::memory::GuestMemory;
use crate::vstate::persist::{encode, STATE_VERSION};

/// Where a machine writes its snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// The record directory (snapshots/ and store/ live in it).
    pub dir: PathBuf,
    pub vm_id: String,
}

/// What the last snapshot left behind for the next incremental one.
pub(super) struct SnapshotChain {
    pub config: SnapshotConfig,
    /// The last snapshot's id and, per memory region, its page list and
    /// where that list is stored (unchanged chunks are reused).
    pub last: Option<(String, Vec<(PageList, PagesRef)>)>,
}

/// What a snapshot did.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub id: String,
    pub kind: SnapshotKind,
    pub stats: SnapshotStats,
    /// The VM was stopped for this long.
    pub pause_us: u64,
}

fn snap_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Snapshot(e.to_string())
}

/// The host mapping of a memory region: its address and length.
fn region_mapping(region: &<GuestMemory as GuestMemoryBackend>::R) -> (*mut u8, usize) {
    let host = region
        .get_host_address(MemoryRegionAddress(0))
        .expect("regions map from offset 0");
    (host, region.len() as usize)
}

impl Machine {
    /// Captures the machine. `kind` Incremental falls back to a full
    /// snapshot when there is no parent yet.
    pub fn snapshot(&mut self, kind: SnapshotKind) -> Result<SnapshotInfo> {
        let started = std::time::Instant::now();
        let chain = self.snapshots.as_ref().ok_or_else(|| {
            VmmError::Snapshot("this VM was started without a snapshot directory".into())
        })?;
        let dir = SnapshotDir::open(&chain.config.dir).map_err(snap_err)?;
        let store = dir.open_store().map_err(snap_err)?;
        // Keeps a concurrent `gc` from freeing pages between their capture
        // and the manifest that references them.
        let _pin = store.pin().map_err(snap_err)?;
        let parent = match (kind, &chain.last) {
            (SnapshotKind::Incremental, Some(last)) => Some(last.clone()),
            _ => None,
        };
        let kind = if parent.is_some() {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        };

        let mut state = vec![blob("vm", encode(&self.vm.save_state()?))];
        let msrs = self.vm.msr_indices()?;
        for vcpu in &self.vcpus {
            state.push(blob(
                &format!("vcpu{}", vcpu.index),
                encode(&vcpu.save_state(&msrs)?),
            ));
        }
        state.push(blob("serial", encode(&self.serial.save_state())));
        for (i, t) in self.virtio.iter().enumerate() {
            state.push(blob(&format!("virtio{i}"), encode(&t.save_state())));
        }

        let id = snapshot::new_snapshot_id();
        for t in &mut self.virtio {
            t.stop().map_err(VmmError::Record)?; // writes the device still holds
        }
        let disk = match &self.recorder {
            Some(r) => {
                let (seq, checksum) = r.snapshot_point(&id).map_err(VmmError::Record)?;
                Some(DiskPosition {
                    log_vm_id: r.vm_id().to_string(),
                    seq,
                    checksum,
                })
            }
            None => None,
        };

        tracing::debug!("snapshot: state saved after {:?}", started.elapsed());
        let mut stats = SnapshotStats::default();
        let mut memory = Vec::new();
        let mut lists = Vec::new();
        for (slot, region) in self.mem.iter().enumerate() {
            let (host, len) = region_mapping(region);
            // SAFETY: the mapping is live for as long as `self.mem` and
            // exactly `len` bytes long; the vCPU, its only other writer, is
            // stopped (we are on its thread, between two KVM_RUNs).
            let bytes = unsafe { std::slice::from_raw_parts(host, len) };
            // Pages dirtied since the last snapshot, by the guest (KVM) and
            // by the VMM (the memory's bitmap); reading both clears them.
            let kvm_dirty = self
                .vm
                .fd()
                .get_dirty_log(slot as u32, bytes.len())
                .map_err(|source| VmmError::Kvm {
                    step: "reading the dirty log",
                    source,
                })?;
            let own_dirty = region.deref().bitmap().get_and_reset();
            tracing::debug!("snapshot: dirty logs read after {:?}", started.elapsed());
            let dirty: Vec<u64> = kvm_dirty
                .iter()
                .zip(own_dirty.iter().chain(std::iter::repeat(&0)))
                .map(|(a, b)| a | b)
                .collect();
            let (list, s) = capture(
                &store,
                bytes,
                parent.as_ref().map(|_| dirty.as_slice()),
                parent.as_ref().map(|(_, l)| &l[slot].0),
            )
            .map_err(snap_err)?;
            add_stats(&mut stats, &s);
            let pages = match &parent {
                Some((_, l)) => list.save_over(&store, &l[slot].0, &l[slot].1),
                None => list.save(&store),
            }
            .map_err(snap_err)?;
            memory.push(MemoryRegion {
                guest_addr: region.start_addr().0,
                size: region.len(),
                pages: pages.clone(),
            });
            lists.push((list, pages));
        }
        let mut shared = Vec::new();
        if let Some(shm) = &self.shared {
            let slot = lists.len();
            // SAFETY: the shared mapping lives as long as `self.shared`; the
            // vCPU is stopped. Other VMs may write it meanwhile: a shared
            // region is captured as it is at this instant.
            let bytes = unsafe { std::slice::from_raw_parts(shm.host(), shm.len()) };
            let dirty = self
                .vm
                .fd()
                .get_dirty_log(slot as u32, bytes.len())
                .map_err(|source| VmmError::Kvm {
                    step: "reading the dirty log",
                    source,
                })?;
            // Other VMs' writes are invisible to our dirty log: re-hash the
            // whole region each time (it is small) unless this is the only
            // user (a memfd).
            let own_only = shm.config.path.is_none();
            let parent_list = parent.as_ref().and_then(|(_, l)| l.get(slot));
            let (list, s) = capture(
                &store,
                bytes,
                parent_list.filter(|_| own_only).map(|_| dirty.as_slice()),
                parent_list.filter(|_| own_only).map(|(l, _)| l),
            )
            .map_err(snap_err)?;
            add_stats(&mut stats, &s);
            let pages = list.save(&store).map_err(snap_err)?;
            shared.push(SharedRegion {
                name: shm.config.name.clone(),
                size: shm.len() as u64,
                pages: pages.clone(),
            });
            lists.push((list, pages));
        }
        tracing::debug!("snapshot: memory captured after {:?}", started.elapsed());
        store.sync().map_err(snap_err)?;
        tracing::debug!("snapshot: store synced after {:?}", started.elapsed());
        let pause_us = started.elapsed().as_micros() as u64;

        let manifest = Manifest {
            id: id.clone(),
            parent: parent.as_ref().map(|(p, _)| p.clone()),
            created_ns: now_ns(),
            vm_id: chain.config.vm_id.clone(),
            kind,
            state,
            memory,
            shared,
            disk,
            stats,
            annotations: self.annotations(),
        };
        dir.write(&manifest).map_err(snap_err)?;
        if let Some(chain) = self.snapshots.as_mut() {
            chain.last = Some((id.clone(), lists));
        }
        Ok(SnapshotInfo {
            id,
            kind,
            stats,
            pause_us,
        })
    }

    /// What a restore needs to rebuild the machine around its state.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert("mem_mib".into(), self.mem_mib.to_string());
        a.insert("disks".into(), self.disk_configs.len().to_string());
        a.insert("hint_channel".into(), self.hint_channel.to_string());
        if let Some(shm) = &self.shared {
            a.insert("shared.name".into(), shm.config.name.clone());
            a.insert("shared.size_mib".into(), shm.config.size_mib.to_string());
            if let Some(path) = &shm.config.path {
                a.insert("shared.path".into(), path.display().to_string());
            }
        }
        for (i, d) in self.disk_configs.iter().enumerate() {
            a.insert(format!("disk{i}.path"), d.path.display().to_string());
            a.insert(format!("disk{i}.ro"), d.read_only.to_string());
        }
        a
    }
}

fn add_stats(total: &mut SnapshotStats, s: &snapshot::CaptureStats) {
    total.pages += s.pages;
    total.zero_pages += s.zero_pages;
    total.hashed_pages += s.hashed_pages;
    total.changed_pages += s.changed_pages;
    total.new_objects += s.new_objects;
    total.new_bytes += s.new_objects_bytes;
}

fn blob(name: &str, bytes: Vec<u8>) -> StateBlob {
    StateBlob {
        name: name.to_string(),
        version: STATE_VERSION,
        bytes,
    }
}

pub(super) fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Restores every region's pages into fresh (all-zero) guest memory; zero
/// pages are not touched, so they cost the host nothing.
pub(super) fn restore_memory(
    store: &snapshot::Store,
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
pub(super) fn restore_shared(
    store: &snapshot::Store,
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
