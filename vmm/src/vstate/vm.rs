//! The KVM VM: opening KVM, memory slots, in-kernel irqchip and (optional) PIT.
use std::ffi::CString;
use std::io;
use std::path::Path;

use crate::memory::GuestMemory;
use kvm_bindings::{
    kvm_pit_config, kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES, KVM_PIT_SPEAKER_DUMMY,
};
use kvm_ioctls::{Cap, Kvm, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion, MemoryRegionAddress};

use crate::error::{Result, VmmError};

/// Where the TSS of real-mode emulation lives (three pages below 4 GiB, in the MMIO gap).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Capabilities this VMM cannot run without.
const REQUIRED_CAPS: [(Cap, &str); 4] = [
    (Cap::Irqchip, "KVM_CAP_IRQCHIP"),
    (Cap::UserMemory, "KVM_CAP_USER_MEMORY"),
    (Cap::SetTssAddr, "KVM_CAP_SET_TSS_ADDR"),
    (Cap::Irqfd, "KVM_CAP_IRQFD"),
];

pub struct Vm {
    kvm: Kvm,
    fd: VmFd,
    /// Whether [`Vm::setup_irqchip`] created an in-kernel PIT (snapshots
    /// save its state only then).
    pit: bool,
}

impl Vm {
    /// Opens the KVM device at `kvm_path`, checks it, and creates a VM.
    pub fn new(kvm_path: &Path) -> Result<Self> {
        let kvm = open_kvm(kvm_path)?;
        let version = kvm.get_api_version();
        if version != 12 {
            return Err(VmmError::KvmApiVersion(version));
        }
        for (cap, name) in REQUIRED_CAPS {
            if !kvm.check_extension(cap) {
                return Err(VmmError::KvmCapability(name));
            }
        }
        let fd = kvm.create_vm().map_err(|source| VmmError::Kvm {
            step: "creating the VM",
            source,
        })?;
        Ok(Self {
            kvm,
            fd,
            pit: false,
        })
    }

    pub fn kvm(&self) -> &Kvm {
        &self.kvm
    }

    pub fn fd(&self) -> &VmFd {
        &self.fd
    }

    /// Registers every guest memory region as a KVM memory slot, with
    /// KVM's dirty-page log on when `dirty_log` (for incremental snapshots).
    pub fn register_memory(&self, mem: &GuestMemory, dirty_log: bool) -> Result<()> {
        for (slot, region) in mem.iter().enumerate() {
            let host = region
                .get_host_address(MemoryRegionAddress(0))
                .map_err(|e| VmmError::BootSetup(e.to_string()))?;
            let desc = kvm_userspace_memory_region {
                slot: slot as u32,
                flags: if dirty_log {
                    KVM_MEM_LOG_DIRTY_PAGES
                } else {
                    0
                },
                guest_phys_addr: region.start_addr().0,
                memory_size: region.len(),
                userspace_addr: host as u64,
            };
            // SAFETY: the region is a live mapping owned by `mem`, which the
            // machine keeps alive for as long as the VM exists.
            unsafe { self.fd.set_user_memory_region(desc) }.map_err(|source| VmmError::Kvm {
                step: "registering guest memory",
                source,
            })?;
        }
        Ok(())
    }

    /// Registers a host mapping as KVM slot `slot` at `guest_addr`.
    pub fn register_region(
        &self,
        slot: u32,
        guest_addr: u64,
        host: *mut u8,
        len: usize,
        dirty_log: bool,
    ) -> Result<()> {
        let desc = kvm_userspace_memory_region {
            slot,
            flags: if dirty_log {
                KVM_MEM_LOG_DIRTY_PAGES
            } else {
                0
            },
            guest_phys_addr: guest_addr,
            memory_size: len as u64,
            userspace_addr: host as u64,
        };
        // SAFETY: the caller keeps the mapping alive longer than the VM.
        unsafe { self.fd.set_user_memory_region(desc) }.map_err(|source| VmmError::Kvm {
            step: "registering shared memory",
            source,
        })
    }

    /// Whether this VM has an in-kernel PIT.
    pub fn has_pit(&self) -> bool {
        self.pit
    }

    /// In-kernel PIC + IOAPIC + LAPICs, and a PIT when `pit`.
    ///
    /// The PIT is optional because it is expensive here: KVM's PIT costs
    /// 15-20 ms of this host's time when it is created and again when the
    /// VM is closed (its timer thread and kvm_io_bus teardown), more than
    /// the whole run of a microguest, which polls and never programs it.
    /// A Linux guest may calibrate its clocks against it, so it keeps one.
    pub fn setup_irqchip(&mut self, pit: bool) -> Result<()> {
        let kvm = |step| move |source| VmmError::Kvm { step, source };
        self.fd
            .set_tss_address(KVM_TSS_ADDRESS)
            .map_err(kvm("setting the TSS address"))?;
        self.fd
            .create_irq_chip()
            .map_err(kvm("creating the in-kernel irqchip"))?;
        if pit {
            let config = kvm_pit_config {
                flags: KVM_PIT_SPEAKER_DUMMY,
                ..Default::default()
            };
            self.fd
                .create_pit2(config)
                .map_err(kvm("creating the in-kernel PIT"))?;
            self.pit = true;
        }
        Ok(())
    }
}

fn open_kvm(path: &Path) -> Result<Kvm> {
    let unavailable = |source: io::Error| {
        let hint = match source.kind() {
            io::ErrorKind::NotFound => {
                "this host has no KVM: load the kvm module (modprobe kvm_intel or kvm_amd) or run on a host with virtualization"
            }
            io::ErrorKind::PermissionDenied => {
                "add your user to the 'kvm' group (or run as root) and try again"
            }
            _ => "check that this path is the KVM device",
        };
        VmmError::KvmUnavailable {
            path: path.to_path_buf(),
            source,
            hint,
        }
    };
    let c_path = CString::new(path.as_os_str().as_encoded_bytes())
        .map_err(|_| unavailable(io::Error::from(io::ErrorKind::InvalidInput)))?;
    let kvm = Kvm::new_with_path(&c_path).map_err(|e| unavailable(e.into()))?;
    // A device that is not KVM (say /dev/null) opens fine but fails the first
    // KVM ioctl: report it as unavailable rather than as a bad version.
    if kvm.get_api_version() < 0 {
        return Err(unavailable(io::Error::new(
            io::ErrorKind::Unsupported,
            "not a KVM device (KVM_GET_API_VERSION failed)",
        )));
    }
    Ok(kvm)
}
