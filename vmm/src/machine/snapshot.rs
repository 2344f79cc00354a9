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
use std::sync::Arc;

use snapshot::{
    capture, restore as restore_pages, DiskPosition, Manifest, MemoryRegion, ObjectId, PageList,
    PagesRef, SharedRegion, SnapshotDir, SnapshotKind, SnapshotStats, StateBlob, PAGE_SIZE,
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
    /// An incremental snapshot still being written in the background.
    pub pending: Option<std::thread::JoinHandle<Result<(PagesList, SnapshotStats)>>>,
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
    ///
    /// A full snapshot hashes and stores memory while the VM is stopped. An
    /// incremental one only copies the dirty pages out while stopped; they
    /// are hashed, stored and the manifest written on a background thread
    /// while the guest runs on (the next snapshot, or the end of the run,
    /// waits for it). The returned pause is the time the VM was stopped.
    pub fn snapshot(&mut self, kind: SnapshotKind) -> Result<SnapshotInfo> {
        self.settle_snapshot()?;
        let started = std::time::Instant::now();
        let chain = self.snapshots.as_mut().ok_or_else(|| {
            VmmError::Snapshot("this VM was started without a snapshot directory".into())
        })?;
        let config = chain.config.clone();
        let parent = match kind {
            SnapshotKind::Incremental => chain.last.take(),
            SnapshotKind::Full => None,
        };
        let kind = if parent.is_some() {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        };
        let dir = SnapshotDir::open(&config.dir).map_err(snap_err)?;
        let store = Arc::new(dir.open_store().map_err(snap_err)?);
        // Keeps a concurrent `gc` from freeing pages between their capture
        // and the manifest that references them.
        let pin = store.pin().map_err(snap_err)?;

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

        let mut parents = parent.as_ref().map(|(_, l)| l.clone().into_iter());
        let mut captures = Vec::new();
        for (slot, (host, len)) in self.memory_slots().into_iter().enumerate() {
            // SAFETY: the mapping lives as long as the machine and is `len`
            // bytes long; the vCPU, its only writer here, is stopped (we are
            // on its thread). A shared file region may be written by other
            // VMs meanwhile: it is captured as it is at this instant.
            let bytes = unsafe { std::slice::from_raw_parts(host, len) };
            let dirty = self.dirty_pages(slot, len)?;
            let shared_file = slot >= self.mem.num_regions()
                && self
                    .shared
                    .as_ref()
                    .is_some_and(|s| s.config.path.is_some());
            let parent_region = parents.as_mut().and_then(|p| p.next());
            captures.push(match parent_region {
                // Other VMs' writes to a shared file are not in our dirty
                // log: it is re-hashed whole (it is small).
                Some(parent) if !shared_file => Capture::copy_dirty(bytes, &dirty, parent),
                _ => {
                    let (list, s) = capture(&store, bytes, None, None).map_err(snap_err)?;
                    Capture::Done(list, s)
                }
            });
        }
        let pause_us = started.elapsed().as_micros() as u64;
        tracing::debug!("snapshot: VM resumes after {:?}", started.elapsed());

        let manifest = Manifest {
            id: id.clone(),
            parent: parent.as_ref().map(|(p, _)| p.clone()),
            created_ns: now_ns(),
            vm_id: config.vm_id.clone(),
            kind,
            state,
            memory: Vec::new(),
            shared: Vec::new(),
            disk,
            stats: SnapshotStats::default(),
            annotations: self.annotations(),
        };
        let layout = self.region_layout();
        let hashed: u64 = captures.iter().map(Capture::hashed_pages).sum();
        let total_pages: u64 = self
            .memory_slots()
            .iter()
            .map(|(_, len)| (*len / PAGE_SIZE) as u64)
            .sum();
        let finish = move || {
            let _pin = pin;
            finish_snapshot(&dir, &store, manifest, captures, &layout)
        };
        if kind == SnapshotKind::Incremental {
            let worker = std::thread::Builder::new()
                .name("snapshot".into())
                .spawn(finish)
                .map_err(|e| VmmError::Snapshot(format!("starting the snapshot thread: {e}")))?;
            if let Some(chain) = self.snapshots.as_mut() {
                chain.pending = Some(worker);
            }
            // What is known now; the manifest gets the rest.
            let stats = SnapshotStats {
                pages: total_pages,
                hashed_pages: hashed,
                ..SnapshotStats::default()
            };
            return Ok(SnapshotInfo {
                id,
                kind,
                stats,
                pause_us,
            });
        }
        let (last, stats) = finish()?;
        if let Some(chain) = self.snapshots.as_mut() {
            chain.last = Some(last);
        }
        Ok(SnapshotInfo {
            id,
            kind,
            stats,
            pause_us,
        })
    }

    /// Waits for a snapshot still being written in the background.
    pub(super) fn settle_snapshot(&mut self) -> Result<()> {
        let Some(chain) = self.snapshots.as_mut() else {
            return Ok(());
        };
        let Some(worker) = chain.pending.take() else {
            return Ok(());
        };
        let (id, lists) = match worker.join() {
            Ok(Ok((lists, stats))) => {
                tracing::debug!("snapshot written: {} new objects", stats.new_objects);
                lists
            }
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(VmmError::Snapshot("the snapshot thread panicked".into())),
        };
        chain.last = Some((id, lists));
        Ok(())
    }

    /// Every memory slot's host mapping: guest RAM regions, then the shared
    /// region.
    fn memory_slots(&self) -> Vec<(*mut u8, usize)> {
        let mut slots: Vec<(*mut u8, usize)> = self.mem.iter().map(region_mapping).collect();
        if let Some(shm) = &self.shared {
            slots.push((shm.host(), shm.len()));
        }
        slots
    }

    /// Where each slot is, for the manifest: (guest address, size), and the
    /// shared region's name for the last slot when there is one.
    fn region_layout(&self) -> Layout {
        Layout {
            ram: self
                .mem
                .iter()
                .map(|r| (r.start_addr().0, r.len()))
                .collect(),
            shared: self.shared.as_ref().map(|s| s.config.name.clone()),
        }
    }

    /// Pages of `slot` dirtied since the last snapshot, by the guest (KVM's
    /// log) and by the VMM (guest memory's own bitmap); reading clears both.
    fn dirty_pages(&self, slot: usize, len: usize) -> Result<Vec<u64>> {
        let mut dirty = self
            .vm
            .fd()
            .get_dirty_log(slot as u32, len)
            .map_err(|source| VmmError::Kvm {
                step: "reading the dirty log",
                source,
            })?;
        if let Some(region) = self.mem.iter().nth(slot) {
            for (a, b) in dirty
                .iter_mut()
                .zip(region.deref().bitmap().get_and_reset())
            {
                *a |= b;
            }
        }
        Ok(dirty)
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

/// Where the memory slots of a snapshot live.
struct Layout {
    ram: Vec<(u64, u64)>,
    shared: Option<String>,
}

/// One memory slot's capture: done while the VM was stopped, or its dirty
/// pages copied out to be hashed and stored afterwards.
enum Capture {
    Done(PageList, snapshot::CaptureStats),
    Copied {
        parent: (PageList, PagesRef),
        pages: Vec<usize>,
        data: Vec<u8>,
    },
}

impl Capture {
    fn copy_dirty(mem: &[u8], dirty: &[u64], parent: (PageList, PagesRef)) -> Capture {
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
            parent,
            pages,
            data,
        }
    }

    fn hashed_pages(&self) -> u64 {
        match self {
            Capture::Done(_, s) => s.hashed_pages,
            Capture::Copied { pages, .. } => pages.len() as u64,
        }
    }
}

/// Stores what the captures still need, saves the page lists and writes the
/// manifest. Returns the lists (the next incremental's parent) and stats.
fn finish_snapshot(
    dir: &SnapshotDir,
    store: &snapshot::Store,
    mut manifest: Manifest,
    captures: Vec<Capture>,
    layout: &Layout,
) -> Result<(PagesList, SnapshotStats)> {
    let mut stats = SnapshotStats::default();
    let mut lists = Vec::new();
    for (slot, cap) in captures.into_iter().enumerate() {
        let (list, pages) = match cap {
            Capture::Done(list, s) => {
                add_stats(&mut stats, &s);
                let pages = list.save(store).map_err(snap_err)?;
                (list, pages)
            }
            Capture::Copied {
                parent,
                pages,
                data,
            } => {
                let mut ids = parent.0.ids().to_vec();
                let mut blocks = Vec::new();
                let mut block_ids = Vec::new();
                for (i, &p) in pages.iter().enumerate() {
                    let page = &data[i * PAGE_SIZE..(i + 1) * PAGE_SIZE];
                    let id = if snapshot::store::is_all_zero(page) {
                        ObjectId::ZERO_BLOCK
                    } else {
                        let id = ObjectId::of(page);
                        blocks.push(page);
                        block_ids.push(id);
                        id
                    };
                    if ids[p] != id {
                        stats.changed_pages += 1;
                    }
                    ids[p] = id;
                }
                let (_, report) = store
                    .put_batch_hashed_report(&blocks, &block_ids)
                    .map_err(snap_err)?;
                stats.new_objects += report.new_objects;
                stats.new_bytes += report.new_stored_bytes;
                stats.hashed_pages += pages.len() as u64;
                let list = PageList::from_ids(ids);
                stats.pages += list.len() as u64;
                stats.zero_pages += list.zero_pages() as u64;
                let saved = list
                    .save_over(store, &parent.0, &parent.1)
                    .map_err(snap_err)?;
                (list, saved)
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
type PagesList = (String, Vec<(PageList, PagesRef)>);

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
