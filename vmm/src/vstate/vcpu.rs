//! A vCPU: its initial PVH register state and its register dump.
use std::fmt;

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::VcpuFd;
use serde::Serialize;
use vm_memory::GuestAddress;

use super::vm::Vm;
use crate::error::{Result, VmmError};

/// CPUID leaf 1: EBX[31:24] is the initial APIC id; ECX bit 31 says "hypervisor".
const CPUID_LEAF_FEATURES: u32 = 1;
const ECX_HYPERVISOR: u32 = 1 << 31;
/// LAPIC LVT registers (offsets into the LAPIC page) and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_EXTINT: u32 = 0x7;
const APIC_MODE_NMI: u32 = 0x4;

/// The most vCPUs a machine has (the microguest's `smp::MAX_CPUS` too:
/// its boot stub has a stack for each).
pub const MAX_VCPUS: u8 = 8;

pub struct Vcpu {
    pub index: u8,
    pub fd: VcpuFd,
}

impl Vcpu {
    pub fn new(vm: &Vm, index: u8) -> Result<Self> {
        let fd = vm
            .fd()
            .create_vcpu(index as u64)
            .map_err(|source| VmmError::Kvm {
                step: "creating a vCPU",
                source,
            })?;
        Ok(Self { index, fd })
    }

    /// The CPUID KVM supports, with this vCPU's APIC id and the hypervisor bit.
    /// Without it the guest sees no long mode and the EFER.LME write faults.
    pub fn set_cpuid(&self, vm: &Vm) -> Result<()> {
        let mut cpuid: CpuId = vm
            .kvm()
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(|source| VmmError::Kvm {
                step: "reading supported CPUID",
                source,
            })?;
        for entry in cpuid.as_mut_slice() {
            if entry.function == CPUID_LEAF_FEATURES {
                entry.ebx = (entry.ebx & 0x00ff_ffff) | (u32::from(self.index) << 24);
                entry.ecx |= ECX_HYPERVISOR;
            }
        }
        self.fd.set_cpuid2(&cpuid).map_err(|source| VmmError::Kvm {
            step: "setting CPUID",
            source,
        })
    }

    /// LINT0 = ExtINT (the PIC), LINT1 = NMI, as firmware leaves a PC.
    pub fn set_lint(&self) -> Result<()> {
        let kvm = |step| move |source| VmmError::Kvm { step, source };
        let mut lapic = self.fd.get_lapic().map_err(kvm("reading the LAPIC"))?;
        for (reg, mode) in [(APIC_LVT0, APIC_MODE_EXTINT), (APIC_LVT1, APIC_MODE_NMI)] {
            let bytes: &mut [u8] =
                // SAFETY: `regs` is a plain 1 KiB array of c_char; reading it as
                // bytes is always valid.
                unsafe { std::slice::from_raw_parts_mut(lapic.regs.as_mut_ptr().cast(), 1024) };
            let mut v = u32::from_le_bytes(bytes[reg..reg + 4].try_into().unwrap());
            v = (v & !0x700) | (mode << 8);
            bytes[reg..reg + 4].copy_from_slice(&v.to_le_bytes());
        }
        self.fd.set_lapic(&lapic).map_err(kvm("writing the LAPIC"))
    }

    /// The PVH entry state: 32-bit protected mode with flat segments, paging
    /// off, `rip` at the kernel's PVH entry and `rbx` at `hvm_start_info`.
    pub fn set_pvh_entry_state(&self, entry: GuestAddress, start_info: u64) -> Result<()> {
        let kvm = |step| move |source| VmmError::Kvm { step, source };
        let mut sregs = self.fd.get_sregs().map_err(kvm("reading sregs"))?;
        let flat = |selector: u16, type_: u8| kvm_segment {
            base: 0,
            limit: 0xffff_ffff,
            selector,
            type_,
            present: 1,
            dpl: 0,
            db: 1,
            s: 1,
            l: 0,
            g: 1,
            avl: 0,
            unusable: 0,
            padding: 0,
        };
        sregs.cs = flat(0x08, 0xb);
        let data = flat(0x10, 0x3);
        sregs.ds = data;
        sregs.es = data;
        sregs.fs = data;
        sregs.gs = data;
        sregs.ss = data;
        sregs.cr0 = 0x1 | 0x10; // PE, ET
        sregs.cr4 = 0;
        sregs.efer = 0;
        self.fd.set_sregs(&sregs).map_err(kvm("writing sregs"))?;

        let fpu = kvm_fpu {
            fcw: 0x37f,
            mxcsr: 0x1f80,
            ..Default::default()
        };
        self.fd.set_fpu(&fpu).map_err(kvm("writing FPU state"))?;

        let regs = kvm_regs {
            rip: entry.0,
            rbx: start_info,
            rflags: 0x2,
            ..Default::default()
        };
        self.fd.set_regs(&regs).map_err(kvm("writing registers"))
    }

    /// Makes an application processor runnable at once: KVM otherwise
    /// holds it until an INIT/SIPI from the boot CPU.
    pub fn set_runnable(&self) -> Result<()> {
        let state = kvm_bindings::kvm_mp_state {
            mp_state: kvm_bindings::KVM_MP_STATE_RUNNABLE,
        };
        self.fd.set_mp_state(state).map_err(|source| VmmError::Kvm {
            step: "making a vCPU runnable",
            source,
        })
    }

    /// The registers as they are now, for error reports.
    pub fn dump(&self) -> RegisterDump {
        let r = self.fd.get_regs().unwrap_or_default();
        let s = self.fd.get_sregs().unwrap_or_default();
        RegisterDump {
            vcpu: self.index,
            rip: r.rip,
            rsp: r.rsp,
            rflags: r.rflags,
            gpr: [
                r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.r8, r.r9, r.r10, r.r11, r.r12,
                r.r13, r.r14, r.r15,
            ],
            cr0: s.cr0,
            cr2: s.cr2,
            cr3: s.cr3,
            cr4: s.cr4,
            efer: s.efer,
            cs: s.cs.selector,
            ss: s.ss.selector,
            cpl: s.cs.dpl,
            long_mode: s.cs.l == 1,
        }
    }
}

/// A vCPU's registers at the moment something went wrong.
#[derive(Debug, Clone, Serialize)]
pub struct RegisterDump {
    pub vcpu: u8,
    pub rip: u64,
    pub rsp: u64,
    pub rflags: u64,
    /// rax rbx rcx rdx rsi rdi rbp r8..r15
    pub gpr: [u64; 15],
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub efer: u64,
    pub cs: u16,
    pub ss: u16,
    pub cpl: u8,
    pub long_mode: bool,
}

impl fmt::Display for RegisterDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMES: [&str; 15] = [
            "rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "r8", "r9", "r10", "r11", "r12",
            "r13", "r14", "r15",
        ];
        writeln!(
            f,
            "vcpu {}: rip={:#018x} rsp={:#018x} rflags={:#x} cs={:#x} ss={:#x} cpl={} {}",
            self.vcpu,
            self.rip,
            self.rsp,
            self.rflags,
            self.cs,
            self.ss,
            self.cpl,
            if self.long_mode {
                "64-bit"
            } else {
                "legacy/compat"
            }
        )?;
        for (chunk_names, chunk) in NAMES.chunks(4).zip(self.gpr.chunks(4)) {
            for (name, value) in chunk_names.iter().zip(chunk) {
                write!(f, "  {name:>3}={value:#018x}")?;
            }
            writeln!(f)?;
        }
        write!(
            f,
            "  cr0={:#x} cr2={:#x} cr3={:#x} cr4={:#x} efer={:#x}",
            self.cr0, self.cr2, self.cr3, self.cr4, self.efer
        )
    }
}
