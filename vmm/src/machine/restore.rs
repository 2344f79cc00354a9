//! Restoring a machine from a snapshot: the same VM resumed, or a clone.
//!
//! Everything is checked before the VM runs: the manifest (magic, version,
//! CRC), every page object present in the store, every state blob decoded,
//! the disks (and, when the snapshot recorded a disk position, that the
//! disk image is at exactly that state). A failure is one clear error and
//! nothing is left running.
use std::path::PathBuf;
use std::time::{Duration, Instant};

use introspection::disk_state::DiskState;
use introspection::hex;
use snapshot::{check, Manifest, SnapshotDir};

use super::snapshot::{restore_memory, restore_shared, SnapshotChain, SnapshotConfig};
use super::{attach_devices, map_shared, open_serial, DiskConfig, Machine, SerialOutput};
use crate::devices::persist::{SerialSnap, TransportSnap};
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::block::disk::DiskImage;
use crate::error::{Result, VmmError};
use crate::memory;
use crate::recording::{RecordConfig, Recorder};
use crate::shared::SharedMemConfig;
use crate::vstate::persist::{decode, VcpuState, VmState, STATE_VERSION};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

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
}

fn snap_err(e: impl std::fmt::Display) -> VmmError {
    VmmError::Snapshot(e.to_string())
}

fn blob<'a>(m: &'a Manifest, name: &str) -> Result<&'a [u8]> {
    let b =
        m.state.iter().find(|b| b.name == name).ok_or_else(|| {
            VmmError::Snapshot(format!("snapshot {} has no '{name}' state", m.id))
        })?;
    if b.version != STATE_VERSION {
        return Err(VmmError::Snapshot(format!(
            "state '{name}' of snapshot {} has layout version {}; this vmm reads version {STATE_VERSION}",
            m.id, b.version
        )));
    }
    Ok(&b.bytes)
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
        let dir = SnapshotDir::open(&config.dir).map_err(snap_err)?;
        let manifest = dir.read(&config.id).map_err(snap_err)?;
        if !dir.store_dir().is_dir() {
            return Err(VmmError::Snapshot(format!(
                "the content store {} is missing: snapshot {}'s memory pages are in it",
                dir.store_dir().display(),
                manifest.id
            )));
        }
        let store = dir.open_store().map_err(snap_err)?;
        check(&store, &manifest).map_err(snap_err)?;

        // Decode every piece of state before touching KVM.
        let vm_state: VmState = decode("vm", blob(&manifest, "vm")?)?;
        let vcpu_state: VcpuState = decode("vcpu0", blob(&manifest, "vcpu0")?)?;
        let serial_state: SerialSnap = decode("serial", blob(&manifest, "serial")?)?;
        let mem_mib: u64 = annotation(&manifest, "mem_mib")?
            .parse()
            .map_err(|_| VmmError::Snapshot("bad mem_mib annotation".into()))?;
        let disk_configs = match &config.disks {
            Some(d) => d.clone(),
            None => saved_disks(&manifest)?,
        };
        let saved_disk_count: usize = annotation(&manifest, "disks")?
            .parse()
            .unwrap_or(usize::MAX);
        if disk_configs.len() != saved_disk_count {
            return Err(VmmError::Snapshot(format!(
                "snapshot {} had {saved_disk_count} disks; {} given",
                manifest.id,
                disk_configs.len()
            )));
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
            Some(rec) if disks.len() == 1 => Some(Recorder::open(rec, disks[0].path())?),
            Some(_) => return Err(VmmError::RecordDisks(disks.len())),
            None => None,
        };

        let mem = memory::create_guest_memory(mem_mib)?;
        let mut lists = restore_memory(&store, &manifest, &mem)?;
        let vm = Vm::new(&config.kvm_path)?;
        vm.register_memory(&mem, config.snapshot.is_some())?;
        let shared = match shared_config(&manifest)? {
            Some(c) => {
                let shm = map_shared(&vm, &mem, &c, config.snapshot.is_some())?;
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
        vm.setup_irqchip()?;
        let serial = SerialDevice::restore(vm.fd(), open_serial(&config.serial)?, &serial_state)?;
        let mut virtio = attach_devices(&vm, &mem, disks, recorder.as_ref(), hint_channel)?;
        for (t, state) in virtio.iter_mut().zip(&transports) {
            t.restore_state(state).map_err(VmmError::SnapshotState)?;
        }
        let vcpu = Vcpu::new(&vm, 0)?;
        vcpu.restore_state(&vcpu_state)?;
        vm.restore_state(&vm_state)?;

        let same_dir = |c: &SnapshotConfig| {
            std::fs::canonicalize(&c.dir).ok() == std::fs::canonicalize(&config.dir).ok()
        };
        let snapshots = config.snapshot.clone().map(|c| SnapshotChain {
            // A restored VM's next incremental snapshot builds on this one,
            // when it goes to the same directory (a chain lives in one).
            last: same_dir(&c).then(|| (manifest.id.clone(), lists)),
            pending: None,
            config: c,
        });
        Ok(Self {
            vcpus: vec![vcpu],
            serial,
            virtio,
            recorder,
            snapshots,
            mem_mib,
            disk_configs,
            hint_channel,
            vm,
            shared,
            mem,
            api_sock: config.api_sock.clone(),
            timeout: config.timeout,
            built_at: Instant::now(),
            build_time: started.elapsed(),
        })
    }
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

/// The disks recorded in a manifest's annotations.
fn saved_disks(m: &Manifest) -> Result<Vec<DiskConfig>> {
    let n: usize = annotation(m, "disks")?
        .parse()
        .map_err(|_| VmmError::Snapshot("bad disks annotation".into()))?;
    (0..n)
        .map(|i| {
            Ok(DiskConfig {
                path: PathBuf::from(annotation(m, &format!("disk{i}.path"))?),
                read_only: annotation(m, &format!("disk{i}.ro"))? == "true",
            })
        })
        .collect()
}
