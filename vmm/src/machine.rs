//! A machine: the VM, its memory, vCPUs and devices, built from a `VmConfig`
//! and run until the guest ends.
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::memory::GuestMemory;
use ::snapshot::SnapshotKind;
use introspection::TapStats;

use crate::api::{self, Api};
use crate::boot;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::block::disk::DiskImage;
use crate::devices::virtio::block::{Block, WriteTap};
use crate::devices::virtio::console::{Console, HintSink};
use crate::devices::virtio::mmio::{MmioTransport, WINDOW_SIZE};
use crate::devices::virtio::{IrqLine, VirtioDevice};
use crate::devices::{MAX_VIRTIO_DEVICES, VIRTIO_FIRST_IRQ, VIRTIO_MMIO_BASE};
use crate::error::{Result, VmmError};
use crate::memory::{self, START_INFO_ADDR};
use crate::metrics::Counters;
use crate::recording::{RecordConfig, Recorder};
use crate::shared::{SharedMem, SharedMemConfig, SHARED_MEM_BASE};
use crate::stats::{self, RunStats};
use crate::vstate::vcpu::Vcpu;
use crate::vstate::vm::Vm;

mod control;
mod outputs;
mod release;
mod restore;
mod snapshot;
mod taps;
mod vcpus;
mod watchdog;
use outputs::{open_serial, read_kernel};
pub use restore::{MemoryMode, RestoreConfig};
use snapshot::SnapshotChain;
pub use snapshot::{SnapshotConfig, SnapshotInfo};
use taps::{DeviceTap, RecorderHints};
pub use vcpus::MAX_VCPUS;
use watchdog::Watchdog;

/// The kernel to boot.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// The microguest embedded in this binary.
    Microguest,
    /// A PVH-bootable ELF file (the microguest or a Linux vmlinux).
    File(PathBuf),
}

/// Where the guest's COM1 output goes.
#[derive(Debug, Clone)]
pub enum SerialOutput {
    Stdout,
    File(PathBuf),
    /// Kept in memory (for the demo and for tests).
    Capture(Arc<Mutex<Vec<u8>>>),
}

/// A virtio-blk disk.
#[derive(Debug, Clone)]
pub struct DiskConfig {
    pub path: PathBuf,
    pub read_only: bool,
}

#[derive(Debug, Clone)]
pub struct VmConfig {
    pub kvm_path: PathBuf,
    pub kernel: KernelSource,
    pub cmdline: String,
    pub mem_mib: u64,
    /// vCPUs, 1..=[`MAX_VCPUS`]; with more than one, the command line gets
    /// `cpus=N` (how the microguest learns how many to wait for).
    pub vcpus: u8,
    /// Guest requests a second each disk serves at most (`--disk-iops`);
    /// None: as fast as the host goes.
    pub disk_iops: Option<u64>,
    pub serial: SerialOutput,
    /// Stop the guest after this long.
    pub timeout: Option<Duration>,
    pub disks: Vec<DiskConfig>,
    /// Record every write of the (single) disk.
    pub record: Option<RecordConfig>,
    /// Where snapshots go (turns on dirty-page tracking).
    pub snapshot: Option<SnapshotConfig>,
    /// Serve the control socket here while the VM runs.
    pub api_sock: Option<PathBuf>,
    /// A memory region shared with other VMs.
    pub shared_mem: Option<SharedMemConfig>,
    /// An in-kernel PIT (i8254) or not; None: only for a kernel from a
    /// file (a Linux guest may calibrate its clocks against it), never for
    /// the built-in microguest, which never programs it (see
    /// [`Vm::setup_irqchip`] for what it costs).
    pub pit: Option<bool>,
    /// Where the run counts what it costs (exits, guest I/O, CPU): read by
    /// the log's metrics records and by `--metrics`.
    pub counters: Arc<Counters>,
}

impl VmConfig {
    /// Whether this VM gets an in-kernel PIT.
    pub fn wants_pit(&self) -> bool {
        self.pit
            .unwrap_or(matches!(self.kernel, KernelSource::File(_)))
    }
}

impl Default for VmConfig {
    fn default() -> Self {
        Self {
            kvm_path: PathBuf::from("/dev/kvm"),
            kernel: KernelSource::Microguest,
            cmdline: String::new(),
            mem_mib: 128,
            vcpus: 1,
            disk_iops: None,
            serial: SerialOutput::Stdout,
            timeout: None,
            disks: Vec::new(),
            record: None,
            snapshot: None,
            api_sock: None,
            shared_mem: None,
            pit: None,
            counters: Arc::default(),
        }
    }
}

/// How a run ended when the guest ended it.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// What the guest wrote to the exit port (capped at 255).
    pub status: u8,
    pub stats: RunStats,
    /// What the recorder wrote, when recording.
    pub recording: Option<TapStats>,
    /// Snapshots taken during the run (all durable).
    pub snapshots: Vec<SnapshotInfo>,
    /// The run was stopped cleanly on this signal (SIGINT, SIGTERM) before
    /// the guest ended; `status` is then 0 and means nothing.
    pub signal: Option<i32>,
}

pub struct Machine {
    // Field order is drop order: vCPUs and devices go before the VM, and
    // guest memory last, after KVM no longer maps it.
    vcpus: Vec<Vcpu>,
    serial: SerialDevice,
    virtio: Vec<MmioTransport>,
    recorder: Option<Arc<Recorder>>,
    snapshots: Option<SnapshotChain>,
    mem_mib: u64,
    disk_configs: Vec<DiskConfig>,
    hint_channel: bool,
    vm: Vm,
    shared: Option<SharedMem>,
    /// A lazy restore still filling `mem` (stopped after the VM is gone,
    /// before `mem` is unmapped).
    lazy: Option<crate::memory::lazy::LazyMemory>,
    mem: GuestMemory,
    /// Whether KVM logs the guest's writes (KVM_MEM_LOG_DIRTY_PAGES). Off
    /// until the first snapshot: a logged slot is mapped at 4 KiB and
    /// write-protected, so every first write to a page after a log read
    /// faults into the host (~15 us each on this PVM host: a restored
    /// memtest over 256 MiB ran 1.3-1.7x slower than booted). The first
    /// snapshot takes every page as dirty (a full one does anyway) and
    /// turns the log on, while the VM is stopped, for the next ones.
    dirty_log: bool,
    api_sock: Option<PathBuf>,
    timeout: Option<Duration>,
    built_at: Instant,
    build_time: Duration,
    counters: Arc<Counters>,
}

impl Machine {
    /// Creates the VM, loads the kernel and sets up every vCPU. Inputs are
    /// checked before any KVM object is created, where that is possible.
    pub fn build(config: &VmConfig) -> Result<Self> {
        let started = Instant::now();
        if config.disks.len() > MAX_VIRTIO_DEVICES {
            return Err(VmmError::TooManyDisks(config.disks.len()));
        }
        vcpus::check_vcpus(config.vcpus)?;
        // A recorded disk gets a hint channel (virtio-console) beside it.
        let hint_channel = config.record.as_ref().is_some_and(|r| r.decode);
        let devices = config.disks.len() + usize::from(hint_channel);
        let mut line = with_device_args(&config.cmdline, devices);
        if config.vcpus > 1 {
            line.push_str(&format!(" cpus={}", config.vcpus));
        }
        if let Some(shm) = &config.shared_mem {
            line.push(' ');
            line.push_str(&SharedMem::cmdline_arg(shm));
        }
        let cmdline = boot::build_cmdline(&line)?;
        let disks = config
            .disks
            .iter()
            .map(|d| DiskImage::open(&d.path, d.read_only))
            .collect::<Result<Vec<_>>>()?;
        let recorder = match &config.record {
            Some(rec) if disks.len() == 1 => Some(Recorder::open(
                rec,
                disks[0].path(),
                config.counters.clone(),
            )?),
            Some(_) => return Err(VmmError::RecordDisks(disks.len())),
            None => None,
        };
        let (image, name) = read_kernel(&config.kernel)?;
        let mem = memory::create_guest_memory(config.mem_mib)?;
        // Before anything touches it, so that even the kernel's pages
        // come in huge.
        memory::advise_huge_all(&mem);
        let kernel = boot::load_kernel(&mem, &image, &name)?;
        boot::write_boot_data(&mem, &cmdline)?;
        let serial_out = open_serial(&config.serial)?;

        let mut vm = Vm::new(&config.kvm_path)?;
        // Dirty logging starts at the first snapshot (see `dirty_log`).
        vm.register_memory(&mem, false)?;
        let shared = match &config.shared_mem {
            Some(c) => Some(map_shared(&vm, &mem, c, false)?),
            None => None,
        };
        vm.setup_irqchip(config.wants_pit())?;
        let serial = SerialDevice::new(vm.fd(), serial_out)?;
        let written =
            snapshot::unrecorded_disk_taps(config.snapshot.is_some(), recorder.is_some(), &disks);
        let virtio = attach_devices(
            &vm,
            &mem,
            disks,
            recorder.as_ref(),
            &written,
            hint_channel,
            DeviceLimits {
                counters: &config.counters,
                disk_iops: config.disk_iops,
            },
        )?;
        // Every vCPU starts at the PVH entry (see `vcpus` for why the APs
        // need no INIT/SIPI).
        let vcpus = (0..config.vcpus)
            .map(|index| {
                let vcpu = Vcpu::new(&vm, index)?;
                vcpu.set_cpuid(&vm)?;
                vcpu.set_lint()?;
                vcpu.set_pvh_entry_state(kernel.entry, START_INFO_ADDR)?;
                if index > 0 {
                    vcpu.set_runnable()?;
                }
                Ok(vcpu)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            vcpus,
            serial,
            virtio,
            recorder,
            snapshots: config
                .snapshot
                .clone()
                .map(|c| SnapshotChain::new(c, written)),
            mem_mib: config.mem_mib,
            disk_configs: config.disks.clone(),
            hint_channel,
            vm,
            shared,
            lazy: None,
            mem,
            dirty_log: false,
            api_sock: config.api_sock.clone(),
            timeout: config.timeout,
            built_at: Instant::now(),
            build_time: started.elapsed(),
            counters: config.counters.clone(),
        })
    }

    pub fn memory(&self) -> &GuestMemory {
        &self.mem
    }

    pub fn vm(&self) -> &Vm {
        &self.vm
    }

    pub fn recorder(&self) -> Option<&Arc<Recorder>> {
        self.recorder.as_ref()
    }

    /// Runs every vCPU (this thread runs vCPU 0, `vcpus` the others) until
    /// the guest writes the exit port, or fails, or a stop signal arrives
    /// (`crate::shutdown`). However it ends, the
    /// devices finish, the recording is closed with a final barrier and
    /// the control socket is removed.
    pub fn run(&mut self) -> Result<RunOutcome> {
        let mut stats = RunStats {
            build_us: self.build_time.as_micros() as u64,
            record_open: self.recorder.as_ref().map(|r| r.open_report.open.clone()),
            ..Default::default()
        };
        let api = match &self.api_sock {
            Some(path) => Some(Api::start(path)?),
            None => None,
        };
        let watchdog = Watchdog::arm(self.timeout);
        // This thread runs vCPU 0: its CPU time is the vCPU's, until the
        // recording's final barrier (below) has measured it. A lazy
        // restore kicks it on an error; it then stops the other vCPUs.
        let _vcpu_clock = self.counters.vcpu_cpu.register();
        if let Some(lazy) = &self.lazy {
            watchdog::install_kick_handler();
            // SAFETY: pthread_self has no preconditions.
            lazy.set_vcpu_thread(Some(unsafe { libc::pthread_self() }));
        }
        stats.vcpu_start_unix_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let result = loop {
            match self.run_period(watchdog.as_ref(), api.as_ref()) {
                Ok(Exit::Guest(status)) => break Ok((status, None)),
                Ok(Exit::Signal(signal)) => break Ok((0, Some(signal))),
                Ok(Exit::Snapshot(kind)) => {
                    if let Err(e) = self.snapshot_then(kind, None) {
                        break Err(e);
                    }
                }
                Ok(Exit::Api(request)) => self.serve(request, api.as_ref()),
                Ok(Exit::Precopy) => self.precopy_step(),
                Err(e) => break Err(e),
            }
        };
        // A pre-copy cannot end in a snapshot of a VM that has stopped.
        self.abort_precopy(match &result {
            Ok((_, None)) => "the guest ended during the snapshot's pre-copy",
            Ok((_, Some(_))) => "the VMM was stopped during the snapshot's pre-copy",
            Err(_) => "the VM failed during the snapshot's pre-copy",
        });
        drop(api);
        if let Some(lazy) = &self.lazy {
            lazy.set_vcpu_thread(None);
        }
        // A snapshot still being written must land before the VM is gone.
        let settled = self.settle_snapshot();
        let snapshots = self.take_snapshots();
        if let Some(w) = watchdog {
            w.disarm();
        }
        self.serial.flush();
        stats.run_us = self.built_at.elapsed().as_micros() as u64;
        stats.serial_bytes = self.serial.bytes_out;
        stats::fill_memory(&mut stats, &self.mem);
        stats.lazy_restore = self.lazy.as_ref().map(|l| l.stats());
        stats.vcpu_exits = Counters::get(&self.counters.exits);
        stats.pio_exits = Counters::get(&self.counters.pio_exits);
        stats.mmio_exits = Counters::get(&self.counters.mmio_exits);
        // The recording ends with the guest, however it ended: what it wrote
        // is on the image, so the log gets a final barrier for it.
        for device in &mut self.virtio {
            device.stop()?;
        }
        let recording = match &self.recorder {
            Some(r) => r.close()?,
            None => None,
        };
        let result = result.and_then(|ended| settled.map(|()| ended));
        result.map(|(status, signal)| {
            stats.exit_status = match signal {
                Some(s) => u8::try_from(crate::shutdown::exit_status(s)).unwrap_or(u8::MAX),
                None => status,
            };
            RunOutcome {
                status,
                stats,
                recording,
                snapshots,
                signal,
            }
        })
    }
}

/// Maps a shared region and registers it as the KVM slot after guest RAM.
fn map_shared(
    vm: &Vm,
    mem: &GuestMemory,
    config: &SharedMemConfig,
    dirty_log: bool,
) -> Result<SharedMem> {
    use vm_memory::GuestMemoryBackend;
    let shared = SharedMem::open(config)?;
    vm.register_region(
        mem.num_regions() as u32,
        SHARED_MEM_BASE,
        shared.host(),
        shared.len(),
        dirty_log,
    )?;
    Ok(shared)
}

/// Why the run loop handed control back.
enum Exit {
    /// The guest wrote its exit status.
    Guest(u8),
    /// The guest asked to be snapshotted here.
    Snapshot(SnapshotKind),
    /// The control socket asked for something.
    Api(api::Request),
    /// A snapshot's pre-copy round is done: the vCPU thread decides what next.
    Precopy,
    /// SIGINT or SIGTERM asked the VMM to stop.
    Signal(i32),
}

/// Builds a virtio-blk device on virtio-mmio for each disk, then the hint
/// channel (virtio-console) when asked, wiring the recorder into them (or,
/// unrecorded, the snapshots' note of where each disk was written).
fn attach_devices(
    vm: &Vm,
    mem: &GuestMemory,
    disks: Vec<DiskImage>,
    recorder: Option<&Arc<Recorder>>,
    written: &[Arc<snapshot::WrittenLeaves>],
    hint_channel: bool,
    limits: DeviceLimits,
) -> Result<Vec<MmioTransport>> {
    let mut devices: Vec<Box<dyn VirtioDevice>> = Vec::with_capacity(disks.len() + 1);
    for (i, disk) in disks.into_iter().enumerate() {
        let tap = match recorder {
            Some(r) => Some(Box::new(DeviceTap(r.clone())) as Box<dyn WriteTap>),
            None => written
                .get(i)
                .map(|w| Box::new(snapshot::LeafTap(w.clone())) as Box<dyn WriteTap>),
        };
        let block = Block::new(disk, &format!("vmm-disk{i}"), tap)
            .counting_into(limits.counters.clone())
            .limited_to(limits.disk_iops);
        devices.push(Box::new(block));
    }
    if hint_channel {
        let sink = recorder.map(|r| Box::new(RecorderHints(r.clone())) as Box<dyn HintSink>);
        devices.push(Box::new(Console::new(sink)));
    }
    devices
        .into_iter()
        .enumerate()
        .map(|(i, device)| {
            let irq = IrqLine::new(vm.fd(), VIRTIO_FIRST_IRQ + i as u32)?;
            Ok(MmioTransport::new(device, irq, mem.clone()))
        })
        .collect()
}

/// What the devices count into, and how fast the disks may go.
struct DeviceLimits<'a> {
    counters: &'a Arc<Counters>,
    /// Guest requests a second per disk (`--disk-iops`); None: no limit.
    disk_iops: Option<u64>,
}

/// Why the vCPU cannot go on; turned into an error once the exit's borrow of
/// the vCPU has ended, so that the registers can be read.
enum Stop {
    Shutdown,
    InternalError,
    FailEntry(u64),
    Other(String),
}

impl Stop {
    fn into_error(self, vcpu: &mut Vcpu) -> VmmError {
        let regs = Box::new(vcpu.dump());
        match self {
            Stop::Shutdown => VmmError::GuestShutdown(regs),
            Stop::InternalError => {
                // SAFETY: after KVM_EXIT_INTERNAL_ERROR the `internal` member
                // of the kvm_run union is the one KVM filled in.
                let suberror = unsafe { vcpu.fd.get_kvm_run().__bindgen_anon_1.internal.suberror };
                VmmError::GuestInternalError { suberror, regs }
            }
            Stop::FailEntry(reason) => VmmError::GuestFailEntry { reason, regs },
            Stop::Other(exit) => VmmError::GuestUnexpectedExit { exit, regs },
        }
    }
}

/// The virtio-mmio window holding `addr`, and the offset into it.
fn mmio_device(devices: &mut [MmioTransport], addr: u64) -> Option<(&mut MmioTransport, u64)> {
    let rel = addr.checked_sub(VIRTIO_MMIO_BASE)?;
    let index = usize::try_from(rel / WINDOW_SIZE).ok()?;
    devices.get_mut(index).map(|d| (d, rel % WINDOW_SIZE))
}

/// Appends the Linux-style announcement of each virtio-mmio device
/// (`virtio_mmio.device=4K@ADDR:IRQ`), which the microguest reads too.
fn with_device_args(cmdline: &str, devices: usize) -> String {
    let mut line = cmdline.to_string();
    for i in 0..devices {
        let addr = VIRTIO_MMIO_BASE + i as u64 * WINDOW_SIZE;
        let irq = VIRTIO_FIRST_IRQ + i as u32;
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&format!("virtio_mmio.device=4K@{addr:#x}:{irq}"));
    }
    line
}
