//! Errors of the machine. Each message names the bad input or the failing
//! step and, where the user can act, what to do.
use std::path::PathBuf;

use thiserror::Error;

use crate::vstate::vcpu::RegisterDump;

#[derive(Debug, Error)]
pub enum VmmError {
    #[error("cannot use KVM device {}: {source}; {hint}", .path.display())]
    KvmUnavailable {
        path: PathBuf,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("KVM API version {0} is not supported (need 12)")]
    KvmApiVersion(i32),
    #[error("KVM lacks capability {0}; this VMM needs it")]
    KvmCapability(&'static str),
    #[error("KVM call failed while {step}: {source}")]
    Kvm {
        step: &'static str,
        source: vmm_sys_util::errno::Error,
    },

    #[error("kernel {path}: {source}")]
    KernelRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("kernel {0} is not an ELF file (bad magic) and not a bzImage; pass an uncompressed vmlinux built with CONFIG_PVH=y (images/build.sh makes one) or the microguest ELF")]
    KernelNotElf(String),
    #[error("kernel {0} has no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY), and vmm has no bzImage loader; build Linux with CONFIG_PVH=y and pass its vmlinux (images/build.sh makes one)")]
    KernelNoPvh(String),
    #[error("kernel {name} is a bzImage (Linux boot protocol {protocol}); vmm boots an ELF vmlinux by PVH and has no bzImage loader: pass the vmlinux of a CONFIG_PVH=y build (images/build.sh makes one)")]
    KernelBzImage { name: String, protocol: String },
    #[error("kernel {name}: {reason}")]
    KernelBad { name: String, reason: String },
    #[error("--mem-mib {mem_mib} is too small for kernel {name}: it ends at {end:#x}; use --mem-mib {need_mib} or more")]
    MemoryTooSmall {
        name: String,
        mem_mib: u64,
        end: u64,
        need_mib: u64,
    },
    #[error("--mem-mib {mem_mib} is larger than this host's memory ({host_mib} MiB); use a smaller value")]
    MemoryTooLarge { mem_mib: u64, host_mib: u64 },
    #[error("--mem-mib {0} is out of range: use between {min} and {max}", min = crate::memory::MIN_MEM_MIB, max = crate::memory::MAX_MEM_MIB)]
    MemoryOutOfRange(u64),
    #[error("cannot allocate {mem_mib} MiB of guest memory: {reason}")]
    MemoryAlloc { mem_mib: u64, reason: String },
    #[error("command line is {len} bytes, longer than the limit of {max}; shorten --cmdline")]
    CmdlineTooLong { len: usize, max: usize },
    #[error("command line is invalid: {0}")]
    CmdlineInvalid(String),
    #[error("writing boot data into guest memory failed: {0}")]
    BootSetup(String),

    #[error("disk {}: {reason}", .path.display())]
    Disk { path: PathBuf, reason: String },
    #[error("disk image {0}")]
    Lock(#[from] crate::lock::LockError),
    #[error("{0}")]
    Snapshot(String),
    /// A lazy restore could not serve the guest's memory.
    #[error(transparent)]
    LazyMemory(Box<crate::memory::lazy::LazyError>),
    #[error("shared memory {0}")]
    SharedMem(String),
    #[error("control socket {0}")]
    Api(String),
    /// `--metrics ADDR` could not be served (an address in use).
    #[error(transparent)]
    Metrics(#[from] crate::metrics::MetricsError),
    #[error("snapshot state: {0}")]
    SnapshotState(String),
    #[error("recording: {0}")]
    Record(#[from] crate::recording::RecorderError),
    #[error("{0}")]
    Device(#[from] crate::devices::virtio::DeviceError),
    /// Recording failed while the guest ran (the guest got I/O errors from
    /// then on); the message is the recorder's one line about it.
    #[error("{0}")]
    RecordingFailed(String),
    #[error("--record records one disk; this VM has {0} (pass a single --disk)")]
    RecordDisks(usize),
    #[error("too many disks ({0}); at most {max} are supported", max = crate::devices::MAX_VIRTIO_DEVICES)]
    TooManyDisks(usize),
    #[error("{0} vCPUs: a VM has 1 to {max} (--vcpus)", max = crate::machine::MAX_VCPUS)]
    Vcpus(u8),

    #[error("serial output {path}: {source}")]
    SerialOutput {
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("guest triple-faulted (KVM_EXIT_SHUTDOWN) at rip={:#x}", .0.rip)]
    GuestShutdown(Box<RegisterDump>),
    #[error("KVM internal error (suberror {suberror}) at rip={:#x}: the instruction could not be emulated", .regs.rip)]
    GuestInternalError {
        suberror: u32,
        regs: Box<RegisterDump>,
    },
    #[error("KVM could not enter the guest (hardware reason {reason:#x}) at rip={:#x}", .regs.rip)]
    GuestFailEntry {
        reason: u64,
        regs: Box<RegisterDump>,
    },
    #[error("guest stopped with unexpected exit {exit} at rip={:#x}", .regs.rip)]
    GuestUnexpectedExit {
        exit: String,
        regs: Box<RegisterDump>,
    },
    #[error("guest did not finish within {0} s (--timeout); it was stopped")]
    Timeout(u64),
}

impl VmmError {
    /// The vCPU registers, when the error is a guest failure.
    pub fn registers(&self) -> Option<&RegisterDump> {
        match self {
            VmmError::GuestShutdown(regs)
            | VmmError::GuestInternalError { regs, .. }
            | VmmError::GuestFailEntry { regs, .. }
            | VmmError::GuestUnexpectedExit { regs, .. } => Some(regs),
            _ => None,
        }
    }

    /// Process exit status for this error: 122 when recording failed at run
    /// time, 124 when the guest timed out, 126 when the guest crashed, 125
    /// when the VMM itself could not go on.
    pub fn exit_status(&self) -> i32 {
        match self {
            VmmError::Timeout(_) => exit::TIMEOUT,
            VmmError::RecordingFailed(_) => exit::RECORDING_FAILED,
            _ if self.registers().is_some() => exit::GUEST_CRASHED,
            _ => exit::CANNOT_RUN,
        }
    }
}

/// The `vmm` command's exit statuses, one table for every subcommand (the
/// README and `vmm --help` list them too). `vmm run` and `vmm restore`
/// otherwise exit with the guest's own status (0-255, written to port
/// 0xf4), which these overlap: a guest that wants its status told apart
/// from the VMM's avoids them.
pub mod exit {
    /// A check found damage or failed (verify, drill, store verify).
    pub const CHECK_FAILED: i32 = 1;
    /// The command line is wrong (clap's usage errors, sysexits EX_USAGE).
    pub const USAGE: i32 = 64;
    /// Recording failed at run time: the guest got I/O errors and the log
    /// ends at its last good barrier.
    pub const RECORDING_FAILED: i32 = 122;
    /// The guest did not finish within `--timeout`.
    pub const TIMEOUT: i32 = 124;
    /// The VMM or tool could not do the job: bad input, an unreadable
    /// file, a disk image locked by another process.
    pub const CANNOT_RUN: i32 = 125;
    /// The guest crashed (its registers are printed).
    pub const GUEST_CRASHED: i32 = 126;
    /// Stopped cleanly on SIGINT (128 + 2).
    pub const SIGINT: i32 = 130;
    /// Stopped cleanly on SIGTERM (128 + 15).
    pub const SIGTERM: i32 = 143;
}

pub type Result<T> = std::result::Result<T, VmmError>;

impl From<crate::memory::lazy::LazyError> for VmmError {
    fn from(e: crate::memory::lazy::LazyError) -> Self {
        // Boxed: its page and store details would make every Result large.
        VmmError::LazyMemory(Box::new(e))
    }
}
