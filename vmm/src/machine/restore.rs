//! Restoring a machine from a snapshot: the same VM resumed, or a clone.
//!
//! Everything is checked before the VM runs: the manifest (magic, version,
//! CRC), every page object present in the store, every state blob decoded,
//! the disks (and, when the snapshot recorded a disk position, that the
//! disk image is at exactly that state; when it recorded the image's
//! BLAKE3, that the image still has it, unless forced; its size always).
//! A failure is one clear error and nothing is left running.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use changelog::disk_state::DiskState;
use snapshot::manifest::{fingerprint, resolve_disk_path};
use snapshot::{check, DiskRecord, Manifest, PathResolution, SnapshotDir};
use store::hex;

use super::snapshot::{
    hash_threads, restore_shared, unrecorded_disk_taps, SnapshotChain, SnapshotConfig,
};
use super::{
    attach_devices, map_shared, open_serial, DeviceLimits, DiskConfig, Machine, SerialOutput,
};
use crate::devices::persist::{SerialSnap, TransportSnap};
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::block::disk::DiskImage;
use crate::error::{Result, VmmError};
use crate::memory;
use crate::recording::{RecordConfig, Recorder};
use crate::shared::SharedMemConfig;
use crate::vstate::persist::{decode, vcpu_states, VmState, STATE_VERSION};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

mod ram;
pub use ram::MemoryMode;

#[derive(Debug, Clone)]
pub struct RestoreConfig {
    pub kvm_path: PathBuf,
    /// The record directory holding snapshots/ and store/.
    pub dir: PathBuf,
    pub id: String,
    /// Disks to attach instead of the snapshot's own paths (clones need
    /// their own copies).
    pub disks: Option<Vec<DiskConfig>>,
    pub serial: SerialOutput,
    pub timeout: Option<Duration>,
    pub record: Option<RecordConfig>,
    /// Where further snapshots of the restored VM go.
    pub snapshot: Option<SnapshotConfig>,
    /// Serve the control socket here.
    pub api_sock: Option<PathBuf>,
    /// Restore onto a disk whose content differs from the one recorded at
    /// the snapshot (a disk of another size is refused regardless).
    pub force: bool,
    /// Guest memory on demand (default) or all before the vCPU starts.
    pub memory: MemoryMode,
    /// Where the run counts what it costs (see `VmConfig::counters`).
    pub counters: Arc<crate::metrics::Counters>,
}

fn snap_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Snapshot(e.to_string())
}

/// A state blob and its layout version.
fn versioned_blob<'a>(m: &'a Manifest, name: &str) -> Result<(u32, &'a [u8])> {
    let b =
        m.state.iter().find(|b| b.name == name).ok_or_else(|| {
            VmmError::Snapshot(format!("snapshot {} has no '{name}' state", m.id))
        })?;
    Ok((b.version, &b.bytes))
}

fn blob<'a>(m: &'a Manifest, name: &str) -> Result<&'a [u8]> {
    let (version, bytes) = versioned_blob(m, name)?;
    if version != STATE_VERSION {
        return Err(VmmError::Snapshot(format!(
            "state '{name}' of snapshot {} has layout version {}; this vmm reads version {STATE_VERSION}",
            m.id, version
        )));
    }
    Ok(bytes)
}

fn annotation<'a>(m: &'a Manifest, key: &str) -> Result<&'a str> {
    m.annotations
        .get(key)
        .map(String::as_str)
        .ok_or_else(|| VmmError::Snapshot(format!("snapshot {} lacks '{key}'", m.id)))
}

impl Machine {
    pub fn restore(config: &RestoreConfig) -> Result<Self> {
        let started = Instant::now();
        let dir = SnapshotDir::open_existing(&config.dir).map_err(snap_err)?;
        let manifest = dir.read(&config.id).map_err(snap_err)?;
        if !dir.store_dir().is_dir() {
            return Err(VmmError::Snapshot(format!(
                "the content store {} is missing: snapshot {}'s memory pages are in it",
                dir.store_dir().display(),
                manifest.id
            )));
        }
        let store = Arc::new(dir.open_store().map_err(snap_err)?);
        tracing::debug!("restore: store opened after {:?}", started.elapsed());
        check(&store, &manifest).map_err(snap_err)?;
        tracing::debug!("restore: pages checked after {:?}", started.elapsed());

        // Decode every piece of state before touching KVM.
        let (vm_version, vm_blob) = versioned_blob(&manifest, "vm")?;
        let vm_state = VmState::decode(vm_version, vm_blob)
            .map_err(|e| VmmError::Snapshot(format!("snapshot {}: {e}", manifest.id)))?;
        let vcpu_states = vcpu_states(&manifest.id, &manifest.state)?;
        let serial_state: SerialSnap = decode("serial", blob(&manifest, "serial")?)?;
        let mem_mib: u64 = annotation(&manifest, "mem_mib")?
            .parse()
            .map_err(|_| VmmError::Snapshot("bad mem_mib annotation".into()))?;
        let saved = manifest.disks().map_err(snap_err)?;
        let disk_configs = match &config.disks {
            Some(d) => d.clone(),
            None => saved_disks(&manifest, &saved, &config.dir)?,
        };
        if disk_configs.len() != saved.len() {
            return Err(VmmError::Snapshot(format!(
                "snapshot {} had {} disks; {} given",
                manifest.id,
                saved.len(),
                disk_configs.len()
            )));
        }
        for (i, (given, rec)) in disk_configs.iter().zip(&saved).enumerate() {
            check_disk(&manifest, i, given, rec, config.force)?;
        }
        let hint_channel = manifest
            .annotations
            .get("hint_channel")
            .is_some_and(|v| v == "true");
        let mut transports = Vec::new();
        for i in 0..disk_configs.len() + usize::from(hint_channel) {
            let t: TransportSnap = decode(
                &format!("virtio{i}"),
                blob(&manifest, &format!("virtio{i}"))?,
            )?;
            transports.push(t);
        }
        let disks = disk_configs
            .iter()
            .map(|d| DiskImage::open(&d.path, d.read_only))
            .collect::<Result<Vec<_>>>()?;
        if let (Some(pos), Some(disk)) = (&manifest.disk, disks.first()) {
            let actual = DiskState::from_image(disk.path())
                .map_err(|e| VmmError::Disk {
                    path: disk.path().to_path_buf(),
                    reason: e.to_string(),
                })?
                .checksum();
            if actual != pos.checksum {
                return Err(VmmError::Snapshot(format!(
                    "disk {} is not the disk this snapshot expects (its checksum {} differs from {} at seq {} of {}'s log); rebuild it with `vmm replay --log {} --vm {} --until seq={} --out IMG`",
                    disk.path().display(),
                    &hex::encode(&actual)[..16],
                    &hex::encode(&pos.checksum)[..16],
                    pos.seq,
                    pos.log_vm_id,
                    config.dir.display(),
                    pos.log_vm_id,
                    pos.seq
                )));
            }
        }
        let recorder = match &config.record {
            Some(rec) if disks.len() == 1 => Some(Recorder::open(
                rec,
                disks[0].path(),
                config.counters.clone(),
            )?),
            Some(_) => return Err(VmmError::RecordDisks(disks.len())),
            None => None,
        };
        if let (Some(r), true) = (&recorder, hint_channel) {
            restore_guest_files(&manifest, r)?;
        }

        let mem = memory::create_guest_memory(mem_mib)?;
        // Lazy: the fault thread serves the memory from here on, before
        // anything (KVM, a device restoring its queues) can touch it.
        let (mut lists, lazy) = ram::restore_ram(config.memory, &store, &dir, &manifest, &mem)?;
        tracing::debug!("restore: memory restored after {:?}", started.elapsed());
        let mut vm = Vm::new(&config.kvm_path)?;
        // Dirty logging starts at the first snapshot (Machine::dirty_log).
        vm.register_memory(&mem, false)?;
        let shared = match shared_config(&manifest)? {
            Some(c) => {
                let shm = map_shared(&vm, &mem, &c, false)?;
                // A file region is live, shared with other VMs: it is used
                // as it is now. A memfd was this VM's alone: it comes back.
                if c.path.is_none() {
                    if let Some(saved) = manifest.shared.first() {
                        lists.push(restore_shared(&store, saved, &shm)?);
                    }
                }
                Some(shm)
            }
            None => None,
        };
        // A PIT exactly when the snapshotted VM had one (every snapshot of
        // layout version 1 did).
        vm.setup_irqchip(vm_state.pit.is_some())?;
        let serial = SerialDevice::restore(vm.fd(), open_serial(&config.serial)?, &serial_state)?;
        let written = unrecorded_disk_taps(config.snapshot.is_some(), recorder.is_some(), &disks);
        let mut virtio = attach_devices(
            &vm,
            &mem,
            disks,
            recorder.as_ref(),
            &written,
            hint_channel,
            DeviceLimits {
                counters: &config.counters,
                disk_iops: None,
            },
        )?;
        for (t, state) in virtio.iter_mut().zip(&transports) {
            t.restore_state(state)?;
        }
        let vcpus = vcpu_states
            .iter()
            .enumerate()
            .map(|(index, state)| {
                let vcpu = Vcpu::new(&vm, index as u8)?;
                vcpu.restore_state(state)?;
                Ok(vcpu)
            })
            .collect::<Result<Vec<_>>>()?;
        vm.restore_state(&vm_state)?;
        tracing::debug!("restore: state restored after {:?}", started.elapsed());

        let same_dir = |c: &SnapshotConfig| {
            std::fs::canonicalize(&c.dir).ok() == std::fs::canonicalize(&config.dir).ok()
        };
        let snapshots = config.snapshot.clone().map(|c| {
            // A restored VM's next incremental snapshot builds on this one,
            // when it goes to the same directory (a chain lives in one).
            let last = same_dir(&c).then(|| (manifest.id.clone(), lists));
            let mut chain = SnapshotChain::new(c, written);
            chain.last = last;
            chain
        });
        Ok(Self {
            vcpus,
            serial,
            virtio,
            recorder,
            snapshots,
            mem_mib,
            disk_configs,
            hint_channel,
            vm,
            shared,
            lazy,
            mem,
            dirty_log: false,
            api_sock: config.api_sock.clone(),
            timeout: config.timeout,
            built_at: Instant::now(),
            build_time: started.elapsed(),
            counters: config.counters.clone(),
        })
    }
}

/// Gives the restored VM's recorder the files the guest had hinted before
/// the snapshot: its guest will not hint them again, and without them
/// every later hint names an unknown file and nothing is decoded.
fn restore_guest_files(m: &Manifest, recorder: &Recorder) -> Result<()> {
    let Some(files) = &m.guest_files else {
        tracing::warn!(
            "snapshot {} was taken by an older vmm that did not save the guest's hinted files: the restored VM's application changes are not decoded until its guest hints its files again",
            m.id
        );
        return Ok(());
    };
    let unknown = recorder.restore_guest_files(files.clone()).map_err(|e| {
        VmmError::Snapshot(format!(
            "snapshot {}'s hinted files do not fit the restored disk: {e}",
            m.id
        ))
    })?;
    for (file, why) in unknown {
        tracing::warn!(
            "{file}: its state at snapshot {} is unknown ({why}); its changes are decoded from its next consistent state on",
            m.id
        );
    }
    Ok(())
}

/// The shared region recorded in a manifest's annotations.
fn shared_config(m: &Manifest) -> Result<Option<SharedMemConfig>> {
    let Some(name) = m.annotations.get("shared.name") else {
        return Ok(None);
    };
    let size_mib = annotation(m, "shared.size_mib")?
        .parse()
        .map_err(|_| VmmError::Snapshot("bad shared.size_mib annotation".into()))?;
    let path = m.annotations.get("shared.path").map(PathBuf::from);
    Ok(Some(SharedMemConfig {
        name: name.clone(),
        size_mib,
        path,
    }))
}

/// The disks recorded in a manifest, their paths resolved: absolute as
/// they are; relative ones (older manifests) under the record directory,
/// else the current directory, saying which.
fn saved_disks(
    m: &Manifest,
    saved: &[DiskRecord],
    dir: &std::path::Path,
) -> Result<Vec<DiskConfig>> {
    saved
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let (path, how) = resolve_disk_path(&d.path, dir).ok_or_else(|| {
                VmmError::Snapshot(format!(
                    "snapshot {} records disk{i} as the relative path {} (written by an older vmm) and it is neither at {} nor at {} under the current directory; pass the disk with --disk PATH",
                    m.id,
                    d.path.display(),
                    dir.join(&d.path).display(),
                    d.path.display()
                ))
            })?;
            match how {
                PathResolution::Absolute => {}
                PathResolution::SnapshotDir => tracing::warn!(
                    "snapshot {} records disk{i} as the relative path {} (older vmm): using {}, under the snapshot directory",
                    m.id, d.path.display(), path.display()
                ),
                PathResolution::CurrentDir => tracing::warn!(
                    "snapshot {} records disk{i} as the relative path {} (older vmm): not under the snapshot directory {}, using {} under the current directory",
                    m.id, d.path.display(), dir.display(), path.display()
                ),
            }
            Ok(DiskConfig {
                path,
                read_only: d.read_only,
            })
        })
        .collect()
}

/// Checks disk `i` given for the restore against what the snapshot
/// recorded: the same size (always), the same BLAKE3 (when recorded,
/// unless `force`).
fn check_disk(
    m: &Manifest,
    i: usize,
    given: &DiskConfig,
    rec: &DiskRecord,
    force: bool,
) -> Result<()> {
    let disk_err = |reason: String| VmmError::Disk {
        path: given.path.clone(),
        reason,
    };
    let len = std::fs::metadata(&given.path)
        .map_err(|e| disk_err(format!("cannot read it for the restore: {e}")))?
        .len();
    if let Some(want) = rec.bytes {
        if len != want {
            return Err(disk_err(format!(
                "it is {len} bytes but snapshot {} was taken with disk{i} ({}) of {want} bytes; the guest's memory expects that disk: restore onto a copy of it",
                m.id,
                rec.path.display()
            )));
        }
    }
    let Some(want) = rec.blake3 else {
        return Ok(());
    };
    let actual = fingerprint(&given.path, hash_threads())
        .map_err(|e| disk_err(format!("cannot hash it for the restore: {e}")))?;
    if actual == want {
        return Ok(());
    }
    let hex = |h: [u8; 32]| hex::encode(&h)[..16].to_string();
    let what = format!(
        "its content (BLAKE3 {}..) is not what disk{i} ({}) held when snapshot {} was taken (BLAKE3 {}..)",
        hex(actual),
        rec.path.display(),
        m.id,
        hex(want)
    );
    if force {
        tracing::warn!(
            "{}: {what}; restoring anyway (--force): the guest may read data it did not write",
            given.path.display()
        );
        return Ok(());
    }
    Err(disk_err(format!(
        "{what}: the guest's memory expects the old content and would read garbage; restore onto a copy of the disk taken with the snapshot, or pass --force to restore anyway"
    )))
}
