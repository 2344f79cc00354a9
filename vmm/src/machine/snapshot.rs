//! Snapshots of a machine: capture (full or incremental) and restore.
//!
//! A snapshot is a manifest (`snapshot::manifest`) in `DIR/snapshots/`
//! whose state blobs hold the KVM state (`vm`, `vcpu0`..), the devices
//! (`serial`, `virtio0`..) and whose memory regions are page lists in the
//! content store `DIR/store` (zero pages free, identical pages stored once
//! across snapshots and VMs). An incremental snapshot re-hashes only the
//! pages dirtied since its parent: KVM's dirty log (guest writes) OR-ed with
//! guest memory's own bitmap (the VMM's writes: virtio DMA, used rings).
//! KVM's log is off until a run's first snapshot, which takes every page
//! as dirty and turns it on (`Machine::dirty_log` says why).
//!
//! When the disk is recorded, the snapshot first makes a barrier in the
//! change log and records its position, so a restore can check that the
//! disk image it is given is the disk the memory expects. Disks nothing
//! records get their size and BLAKE3 recorded instead (`disks`).
//!
//! Durability: a snapshot is reported (to the control socket's client, in
//! the run's outcome) only once its pages, page lists and manifest are
//! fsynced. An incremental snapshot's guest resumes as soon as the dirty
//! pages are copied out; they are stored by a background thread
//! (`finish`), and the report waits for it.
use std::collections::BTreeMap;
use std::ops::Deref;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use snapshot::{
    capture, DiskPosition, Manifest, SnapshotDir, SnapshotKind, SnapshotStats, StateBlob,
};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use super::Machine;
use crate::error::{Result, VmmError};
use crate::memory::GuestMemory;
use crate::vstate::persist::{encode, STATE_VERSION, VM_STATE_VERSION};

mod disks;
mod finish;
mod precopy;
mod refill;

pub(super) use disks::{hash_threads, LeafTap, WrittenLeaves};
use finish::{finish_snapshot, Capture, Layout, PagesList};
pub(super) use refill::{restore_memory, restore_shared};

/// Where a machine writes its snapshots.
#[derive(Debug, Clone)]
pub struct SnapshotConfig {
    /// The record directory (snapshots/ and store/ live in it).
    pub dir: PathBuf,
    pub vm_id: String,
}

/// Called once with a snapshot's outcome when it is durable (or failed).
pub type OnDurable = Box<dyn FnOnce(std::result::Result<&SnapshotInfo, &VmmError>) + Send>;

/// What the last snapshot left behind for the next incremental one.
pub(super) struct SnapshotChain {
    pub config: SnapshotConfig,
    /// An incremental snapshot still being written in the background.
    pending: Option<Pending>,
    /// A snapshot capturing memory while the guest runs (`precopy`).
    precopy: Option<precopy::Precopy>,
    /// The last snapshot's id and, per memory region, its page list and
    /// where that list is stored (unchanged chunks are reused).
    pub last: Option<PagesList>,
    /// Snapshots that became durable, in order.
    taken: Vec<SnapshotInfo>,
    /// Per disk no change log records: where it was written since the
    /// last fingerprint (empty when the disk is recorded).
    prints: Vec<disks::DiskPrint>,
}

impl SnapshotChain {
    /// `written`: the leaf taps of the disks no change log records (see
    /// [`unrecorded_disk_taps`]).
    pub fn new(config: SnapshotConfig, written: Vec<Arc<WrittenLeaves>>) -> SnapshotChain {
        SnapshotChain {
            config,
            pending: None,
            precopy: None,
            last: None,
            taken: Vec::new(),
            prints: written.into_iter().map(disks::DiskPrint::new).collect(),
        }
    }

    /// The flag a running pre-copy raises when the vCPU thread must look
    /// ([`Machine::precopy_step`]).
    pub fn precopy_ready(&self) -> Option<Arc<std::sync::atomic::AtomicBool>> {
        self.precopy.as_ref().map(|p| p.ready_flag())
    }
}

/// What a machine needs to fingerprint its disks at snapshots: one
/// written-leaves set per disk when snapshots are taken and no change log
/// records the disks (a recorded disk is pinned by its log barrier).
pub(super) fn unrecorded_disk_taps(
    snapshots: bool,
    recorded: bool,
    disks: &[crate::devices::virtio::block::disk::DiskImage],
) -> Vec<Arc<WrittenLeaves>> {
    if !snapshots || recorded {
        return Vec::new();
    }
    disks.iter().map(|d| WrittenLeaves::new(d.len())).collect()
}

/// A snapshot not yet recorded in the chain.
struct Pending {
    outcome: Outcome,
    /// Its outcome went to an `OnDurable` (a failure is not the run's).
    reported: bool,
}

type Finished = Result<(PagesList, SnapshotInfo)>;

enum Outcome {
    /// Being finished by a background thread.
    Running(std::thread::JoinHandle<Finished>),
    /// Finished on the vCPU thread.
    Ready(Finished),
}

/// A snapshot begun: where it goes, what it builds on.
struct Begun {
    config: SnapshotConfig,
    dir: SnapshotDir,
    store: Arc<store::Store>,
    /// Held until the manifest is written.
    pin: store::Pin,
    parent: Option<PagesList>,
    kind: SnapshotKind,
    id: String,
}

/// Everything but memory, saved at the snapshot's instant.
struct Frozen {
    state: Vec<StateBlob>,
    disk: Option<DiskPosition>,
    guest_files: Option<Vec<snapshot::GuestFile>>,
    disk_records: Vec<snapshot::DiskRecord>,
    disk_hash_us: u64,
}

/// When a snapshot started and how long the VM was stopped for it.
struct Timing {
    started: Instant,
    pause_us: u64,
    disk_hash_us: u64,
    rounds: u32,
}

impl Timing {
    /// The snapshot's report once it is durable.
    fn info(
        self,
        dir: &SnapshotDir,
        id: String,
        kind: SnapshotKind,
        stats: SnapshotStats,
        lists: PagesList,
    ) -> Finished {
        let info = SnapshotInfo {
            path: dir.path(&id).map_err(snap_err)?,
            id,
            kind,
            stats,
            pause_us: self.pause_us,
            disk_hash_us: self.disk_hash_us,
            durable_us: self.started.elapsed().as_micros() as u64,
            rounds: self.rounds,
        };
        Ok((lists, info))
    }
}

/// What a snapshot did.
#[derive(Debug, Clone)]
pub struct SnapshotInfo {
    pub id: String,
    /// Its manifest file.
    pub path: PathBuf,
    pub kind: SnapshotKind,
    /// Final counts: `new_objects` is what the store gained.
    pub stats: SnapshotStats,
    /// The VM was stopped for this long.
    pub pause_us: u64,
    /// Of the pause, hashing unrecorded disks' images.
    pub disk_hash_us: u64,
    /// From the start of the snapshot until it was durable.
    pub durable_us: u64,
    /// Pre-copy rounds run while the guest ran (0: stop-the-world).
    pub rounds: u32,
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
    /// Captures the machine and returns once the snapshot is durable.
    /// `kind` Incremental falls back to a full snapshot when there is no
    /// parent yet.
    pub fn snapshot(&mut self, kind: SnapshotKind) -> Result<SnapshotInfo> {
        self.snapshot_then(kind, None)?;
        self.settle_snapshot()?;
        self.snapshots
            .as_ref()
            .and_then(|c| c.taken.last().cloned())
            .ok_or_else(|| VmmError::Snapshot("the snapshot was not recorded".into()))
    }

    /// Captures the machine; `on_durable` hears when the snapshot is
    /// durable (or failed). Errors before anything was captured are
    /// returned instead, and `on_durable` is not called.
    ///
    /// A full snapshot hashes and stores memory while the VM is stopped. An
    /// incremental one only copies the dirty pages out while stopped; they
    /// are hashed, stored and the manifest written on a background thread
    /// while the guest runs on (the next snapshot, or the end of the run,
    /// waits for it). Without `on_durable`, a background failure is the
    /// run's, returned by the next snapshot or the end of the run.
    pub(super) fn snapshot_then(
        &mut self,
        kind: SnapshotKind,
        on_durable: Option<OnDurable>,
    ) -> Result<()> {
        let started = Instant::now();
        let Begun {
            config,
            dir,
            store,
            pin,
            parent,
            kind,
            id,
        } = self.begin_snapshot(kind)?;
        let frozen = self.freeze(&id)?;
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
            let parent_region = parents.as_mut().and_then(|p| p.next());
            captures.push(match parent_region {
                // Other VMs' writes to a shared file are not in our dirty
                // log: it is re-hashed whole (it is small).
                Some(parent) if !self.is_shared_file(slot) => {
                    Capture::copy_dirty(bytes, &dirty, parent)
                }
                _ => {
                    let (list, s) = capture(&store, bytes, None, None).map_err(snap_err)?;
                    Capture::Done(list, s)
                }
            });
        }
        if !self.dirty_log {
            // Still stopped: the log then holds exactly what the guest
            // writes after this snapshot.
            self.start_dirty_log()?;
        }
        let pause_us = started.elapsed().as_micros() as u64;
        tracing::debug!("snapshot: VM resumes after {:?}", started.elapsed());

        let timing = Timing {
            started,
            pause_us,
            disk_hash_us: frozen.disk_hash_us,
            rounds: 0,
        };
        let parent_id = parent.as_ref().map(|(p, _)| p.clone());
        let manifest = self.manifest(&config, &id, parent_id, kind, frozen);
        let layout = self.region_layout();
        let reported = on_durable.is_some();
        let finish = move || {
            let _pin = pin;
            let done = finish_snapshot(&dir, &store, manifest, captures, &layout)
                .and_then(|(lists, stats)| timing.info(&dir, id, kind, stats, lists));
            if let Some(tell) = on_durable {
                tell(done.as_ref().map(|(_, info)| info));
            }
            done
        };
        let outcome = if kind == SnapshotKind::Incremental {
            Outcome::Running(
                std::thread::Builder::new()
                    .name("snapshot".into())
                    .spawn(finish)
                    .map_err(|e| {
                        VmmError::Snapshot(format!("starting the snapshot thread: {e}"))
                    })?,
            )
        } else {
            // Memory is already stored: what is left is a sync and the
            // manifest write.
            Outcome::Ready(finish())
        };
        if let Some(chain) = self.snapshots.as_mut() {
            chain.pending = Some(Pending { outcome, reported });
        }
        Ok(())
    }

    /// What every snapshot does first, with the VM stopped: waits for the
    /// previous one, opens the store (pinned against `gc`) and picks the
    /// parent; `kind` Incremental becomes Full without one.
    fn begin_snapshot(&mut self, kind: SnapshotKind) -> Result<Begun> {
        self.settle_snapshot()?;
        // A lazily restored VM is captured once every page is in: capture
        // then reads memory at full speed instead of faulting each page
        // through the fault thread (the wait is part of the pause).
        if let Some(lazy) = &self.lazy {
            lazy.finish()?;
        }
        let chain = self.snapshots.as_mut().ok_or_else(|| {
            VmmError::Snapshot("this VM was started without a snapshot directory".into())
        })?;
        let config = chain.config.clone();
        let dir = SnapshotDir::open(&config.dir).map_err(snap_err)?;
        let store = Arc::new(dir.open_store().map_err(snap_err)?);
        // Keeps a concurrent `gc` from freeing pages between their capture
        // and the manifest that references them.
        let pin = store.pin().map_err(snap_err)?;
        // A parent deleted since (`vmm snapshot delete`) may have had its
        // pages collected: the chain starts over with a full snapshot.
        let parent = match kind {
            SnapshotKind::Incremental => chain.last.take().filter(|(id, _)| dir.exists(id)),
            SnapshotKind::Full => None,
        };
        let kind = if parent.is_some() {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        };
        Ok(Begun {
            config,
            dir,
            store,
            pin,
            parent,
            kind,
            id: snapshot::new_snapshot_id(),
        })
    }

    /// Saves everything but memory, at this instant (the VM is stopped):
    /// KVM and device state, the disk's log barrier or fingerprint. The
    /// devices are stopped first (writes they still hold land).
    fn freeze(&mut self, id: &str) -> Result<Frozen> {
        let mut state = vec![StateBlob {
            version: VM_STATE_VERSION,
            ..blob("vm", encode(&self.vm.save_state()?))
        }];
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
        for t in &mut self.virtio {
            t.stop()?; // writes the device still holds
        }
        let mut guest_files = None;
        let disk = match &self.recorder {
            Some(r) => {
                let point = r.snapshot_point(id)?;
                // Only a VM that offered the hint channel has a file table
                // (empty is a table too: the guest hinted nothing yet).
                guest_files = self.hint_channel.then_some(point.guest_files);
                Some(DiskPosition {
                    log_vm_id: r.vm_id().to_string(),
                    seq: point.seq,
                    checksum: point.checksum,
                })
            }
            None => None,
        };
        let disk_hash = Instant::now();
        let prints = self
            .snapshots
            .as_mut()
            .map_or(&mut [][..], |c| &mut c.prints[..]);
        let disk_records = disks::records(&self.disk_configs, prints)?;
        Ok(Frozen {
            state,
            disk,
            guest_files,
            disk_records,
            disk_hash_us: disk_hash.elapsed().as_micros() as u64,
        })
    }

    /// The manifest of a snapshot, without its memory (`finish` adds it).
    fn manifest(
        &self,
        config: &SnapshotConfig,
        id: &str,
        parent: Option<String>,
        kind: SnapshotKind,
        frozen: Frozen,
    ) -> Manifest {
        let mut manifest = Manifest {
            id: id.to_string(),
            parent,
            created_ns: store::clock::now_ns(),
            vm_id: config.vm_id.clone(),
            kind,
            state: frozen.state,
            memory: Vec::new(),
            shared: Vec::new(),
            disk: frozen.disk,
            stats: SnapshotStats::default(),
            annotations: self.annotations(),
            guest_files: frozen.guest_files,
        };
        manifest.set_disks(&frozen.disk_records);
        manifest
    }

    /// Whether memory slot `slot` is a shared region backed by a file,
    /// which other VMs write without our dirty log seeing it.
    fn is_shared_file(&self, slot: usize) -> bool {
        slot >= self.mem.num_regions()
            && self
                .shared
                .as_ref()
                .is_some_and(|s| s.config.path.is_some())
    }

    /// Ends a pre-copy still running with its last stop (now), then waits
    /// for a snapshot still being written in the background and records it. Its failure is returned unless it was already reported
    /// to an `OnDurable`; either way the next incremental snapshot starts
    /// a new chain.
    pub(super) fn settle_snapshot(&mut self) -> Result<()> {
        // A pre-copy still running ends here, with its last stop.
        self.precopy_now();
        let Some(chain) = self.snapshots.as_mut() else {
            return Ok(());
        };
        let Some(Pending { outcome, reported }) = chain.pending.take() else {
            return Ok(());
        };
        let outcome = match outcome {
            Outcome::Ready(done) => done,
            Outcome::Running(worker) => worker
                .join()
                .unwrap_or_else(|_| Err(VmmError::Snapshot("the snapshot thread panicked".into()))),
        };
        match outcome {
            Ok((lists, info)) => {
                tracing::debug!(
                    "snapshot {} durable: {} new objects",
                    info.id,
                    info.stats.new_objects
                );
                chain.last = Some(lists);
                chain.taken.push(info);
                Ok(())
            }
            Err(e) if reported => {
                tracing::warn!("snapshot failed (reported to the client): {e}");
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The snapshots taken so far that are durable (call after the last
    /// [`Machine::settle_snapshot`]).
    pub(super) fn take_snapshots(&mut self) -> Vec<SnapshotInfo> {
        self.snapshots
            .as_mut()
            .map(|c| std::mem::take(&mut c.taken))
            .unwrap_or_default()
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
    /// Before the first snapshot KVM logs nothing (`Machine::dirty_log`):
    /// every page counts as dirty.
    fn dirty_pages(&self, slot: usize, len: usize) -> Result<Vec<u64>> {
        let mut dirty = if self.dirty_log {
            self.vm
                .fd()
                .get_dirty_log(slot as u32, len)
                .map_err(|source| VmmError::Kvm {
                    step: "reading the dirty log",
                    source,
                })?
        } else {
            vec![u64::MAX; (len / snapshot::PAGE_SIZE).div_ceil(64)]
        };
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

    /// Turns KVM's dirty log on for guest RAM and the shared region (a
    /// flags-only change of each memory slot).
    fn start_dirty_log(&mut self) -> Result<()> {
        self.vm.register_memory(&self.mem, true)?;
        if let Some(shm) = &self.shared {
            self.vm.register_region(
                self.mem.num_regions() as u32,
                crate::shared::SHARED_MEM_BASE,
                shm.host(),
                shm.len(),
                true,
            )?;
        }
        self.dirty_log = true;
        Ok(())
    }

    /// What a restore needs to rebuild the machine around its state.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut a = BTreeMap::new();
        a.insert("mem_mib".into(), self.mem_mib.to_string());
        a.insert("hint_channel".into(), self.hint_channel.to_string());
        if let Some(shm) = &self.shared {
            a.insert("shared.name".into(), shm.config.name.clone());
            a.insert("shared.size_mib".into(), shm.config.size_mib.to_string());
            if let Some(path) = &shm.config.path {
                a.insert("shared.path".into(), path.display().to_string());
            }
        }
        a
    }
}

fn blob(name: &str, bytes: Vec<u8>) -> StateBlob {
    StateBlob {
        name: name.to_string(),
        version: STATE_VERSION,
        bytes,
    }
}
