//! Saving and restoring KVM state: every vCPU's registers and the VM's
//! interrupt controllers, PIT and clock.
//!
//! The lists follow Firecracker's (src/vmm/src/vstate, arch/x86_64/vcpu.rs):
//! CPUID, MSRs, regs, sregs, FPU/XSAVE, XCRs, LAPIC, vCPU events and MP
//! state per vCPU; PIC master/slave, IOAPIC, PIT and kvmclock per VM. Parts
//! a KVM may lack (XSAVE, XCRs on PVM) are optional: saved as `None` and
//! skipped on restore. Restore order matters and is the one KVM documents:
//! CPUID before MSRs, LAPIC before vCPU events.
use kvm_bindings::{
    kvm_clock_data, kvm_cpuid_entry2, kvm_fpu, kvm_irqchip, kvm_lapic_state, kvm_mp_state,
    kvm_msr_entry, kvm_pit_state2, kvm_regs, kvm_sregs, kvm_vcpu_events, kvm_xcrs, kvm_xsave,
    CpuId, Msrs, KVM_IRQCHIP_IOAPIC, KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE,
    KVM_MAX_CPUID_ENTRIES,
};
use serde::{Deserialize, Serialize};

use super::vcpu::{Vcpu, MAX_VCPUS};
use super::vm::Vm;
use crate::error::{Result, VmmError};
use snapshot::StateBlob;

/// Version of the layout of [`VcpuState`] blobs (and of the device blobs).
pub const STATE_VERSION: u32 = 1;
/// Version of the layout of [`VmState`] blobs: 2 made the PIT optional
/// (a VM without one saves `None`); version 1 blobs, which always carry a
/// PIT, are still read ([`VmState::decode`]).
pub const VM_STATE_VERSION: u32 = 2;
/// MSRs read per KVM_GET_MSRS call.
const MSR_BATCH: usize = 64;

fn kvm(step: &'static str) -> impl FnOnce(vmm_sys_util::errno::Error) -> VmmError {
    move |source| VmmError::Kvm { step, source }
}

#[derive(Serialize, Deserialize)]
pub struct VcpuState {
    pub cpuid: Vec<kvm_cpuid_entry2>,
    pub msrs: Vec<kvm_msr_entry>,
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    /// Legacy FPU state, as raw bytes (kvm_fpu has no serde form); used
    /// when XSAVE is not available.
    pub fpu: Vec<u8>,
    pub xsave: Option<kvm_xsave>,
    pub xcrs: Option<kvm_xcrs>,
    pub lapic: kvm_lapic_state,
    pub events: kvm_vcpu_events,
    pub mp_state: kvm_mp_state,
}

fn fpu_bytes(fpu: &kvm_fpu) -> Vec<u8> {
    // SAFETY: kvm_fpu is a plain C struct of integers and arrays; every
    // byte of it is initialized and may be read.
    unsafe {
        std::slice::from_raw_parts(
            (fpu as *const kvm_fpu).cast::<u8>(),
            std::mem::size_of::<kvm_fpu>(),
        )
    }
    .to_vec()
}

fn fpu_from_bytes(bytes: &[u8]) -> Option<kvm_fpu> {
    if bytes.len() != std::mem::size_of::<kvm_fpu>() {
        return None;
    }
    let mut fpu = kvm_fpu::default();
    // SAFETY: the length matches and any byte pattern is a valid kvm_fpu.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (&mut fpu as *mut kvm_fpu).cast::<u8>(),
            bytes.len(),
        )
    };
    Some(fpu)
}

impl Vcpu {
    /// Every MSR in `indices` that KVM will read back (KVM_GET_MSRS stops
    /// at the first MSR it cannot read; those are skipped).
    fn read_msrs(&self, indices: &[u32]) -> Result<Vec<kvm_msr_entry>> {
        let mut out = Vec::with_capacity(indices.len());
        let mut rest = indices;
        while !rest.is_empty() {
            let batch = &rest[..rest.len().min(MSR_BATCH)];
            let entries: Vec<kvm_msr_entry> = batch
                .iter()
                .map(|&index| kvm_msr_entry {
                    index,
                    ..Default::default()
                })
                .collect();
            let mut msrs = Msrs::from_entries(&entries).expect("batch within the FAM limit");
            let n = self.fd.get_msrs(&mut msrs).map_err(kvm("reading MSRs"))?;
            out.extend_from_slice(&msrs.as_slice()[..n]);
            // Skip the MSR that stopped the read, if any.
            rest = &rest[(n + usize::from(n < batch.len())).min(rest.len())..];
        }
        Ok(out)
    }

    pub fn save_state(&self, msr_indices: &[u32]) -> Result<VcpuState> {
        let cpuid = self
            .fd
            .get_cpuid2(KVM_MAX_CPUID_ENTRIES)
            .map_err(kvm("reading CPUID"))?;
        Ok(VcpuState {
            cpuid: cpuid.as_slice().to_vec(),
            msrs: self.read_msrs(msr_indices)?,
            regs: self.fd.get_regs().map_err(kvm("reading registers"))?,
            sregs: self.fd.get_sregs().map_err(kvm("reading sregs"))?,
            fpu: fpu_bytes(&self.fd.get_fpu().map_err(kvm("reading FPU state"))?),
            xsave: self.fd.get_xsave().ok(),
            xcrs: self.fd.get_xcrs().ok(),
            lapic: self.fd.get_lapic().map_err(kvm("reading the LAPIC"))?,
            events: self
                .fd
                .get_vcpu_events()
                .map_err(kvm("reading vCPU events"))?,
            mp_state: self
                .fd
                .get_mp_state()
                .map_err(kvm("reading the MP state"))?,
        })
    }

    pub fn restore_state(&self, s: &VcpuState) -> Result<()> {
        let cpuid = CpuId::from_entries(&s.cpuid).map_err(|_| {
            VmmError::SnapshotState(format!(
                "{} CPUID entries is more than KVM takes",
                s.cpuid.len()
            ))
        })?;
        self.fd.set_cpuid2(&cpuid).map_err(kvm("restoring CPUID"))?;
        self.fd
            .set_mp_state(s.mp_state)
            .map_err(kvm("restoring the MP state"))?;
        self.fd
            .set_regs(&s.regs)
            .map_err(kvm("restoring registers"))?;
        self.fd
            .set_sregs(&s.sregs)
            .map_err(kvm("restoring sregs"))?;
        match &s.xsave {
            // SAFETY: the xsave area was produced by KVM_GET_XSAVE on a vCPU
            // with the same CPUID, which KVM checks it against.
            Some(xsave) => {
                unsafe { self.fd.set_xsave(xsave) }.map_err(kvm("restoring XSAVE state"))?
            }
            None => {
                let fpu = fpu_from_bytes(&s.fpu).ok_or_else(|| {
                    VmmError::SnapshotState("FPU state has the wrong size".into())
                })?;
                self.fd.set_fpu(&fpu).map_err(kvm("restoring FPU state"))?
            }
        }
        if let Some(xcrs) = &s.xcrs {
            self.fd.set_xcrs(xcrs).map_err(kvm("restoring XCRs"))?;
        }
        self.fd
            .set_lapic(&s.lapic)
            .map_err(kvm("restoring the LAPIC"))?;
        for chunk in s.msrs.chunks(MSR_BATCH) {
            let msrs = Msrs::from_entries(chunk).expect("batch within the FAM limit");
            let n = self.fd.set_msrs(&msrs).map_err(kvm("restoring MSRs"))?;
            if n != chunk.len() {
                return Err(VmmError::SnapshotState(format!(
                    "KVM refused MSR {:#x} on restore",
                    chunk[n].index
                )));
            }
        }
        self.fd
            .set_vcpu_events(&s.events)
            .map_err(kvm("restoring vCPU events"))
    }
}

#[derive(Clone, Serialize, Deserialize)]
pub struct VmState {
    pub pic_master: kvm_irqchip,
    pub pic_slave: kvm_irqchip,
    pub ioapic: kvm_irqchip,
    /// None: the VM had no in-kernel PIT, and the restored one gets none.
    pub pit: Option<kvm_pit_state2>,
    pub clock: kvm_clock_data,
}

/// The version 1 layout (every VM had a PIT), kept to read older snapshots.
#[derive(Serialize, Deserialize)]
struct VmStateV1 {
    pic_master: kvm_irqchip,
    pic_slave: kvm_irqchip,
    ioapic: kvm_irqchip,
    pit: kvm_pit_state2,
    clock: kvm_clock_data,
}

impl VmState {
    /// Decodes a "vm" blob of layout `version` (1 or 2).
    pub fn decode(version: u32, bytes: &[u8]) -> Result<VmState> {
        match version {
            1 => {
                let v1: VmStateV1 = decode("vm", bytes)?;
                Ok(VmState {
                    pic_master: v1.pic_master,
                    pic_slave: v1.pic_slave,
                    ioapic: v1.ioapic,
                    pit: Some(v1.pit),
                    clock: v1.clock,
                })
            }
            VM_STATE_VERSION => decode("vm", bytes),
            other => Err(VmmError::SnapshotState(format!(
                "state 'vm' has layout version {other}; this vmm reads versions 1 and {VM_STATE_VERSION}"
            ))),
        }
    }
}

fn irqchip(id: u32) -> kvm_irqchip {
    kvm_irqchip {
        chip_id: id,
        ..Default::default()
    }
}

impl Vm {
    /// The MSRs this KVM can save (KVM_GET_MSR_INDEX_LIST).
    pub fn msr_indices(&self) -> Result<Vec<u32>> {
        Ok(self
            .kvm()
            .get_msr_index_list()
            .map_err(kvm("listing MSRs"))?
            .as_slice()
            .to_vec())
    }

    pub fn save_state(&self) -> Result<VmState> {
        let fd = self.fd();
        let mut chips = [
            irqchip(KVM_IRQCHIP_PIC_MASTER),
            irqchip(KVM_IRQCHIP_PIC_SLAVE),
            irqchip(KVM_IRQCHIP_IOAPIC),
        ];
        for chip in &mut chips {
            fd.get_irqchip(chip).map_err(kvm("reading the irqchip"))?;
        }
        let [pic_master, pic_slave, ioapic] = chips;
        Ok(VmState {
            pic_master,
            pic_slave,
            ioapic,
            pit: if self.has_pit() {
                Some(fd.get_pit2().map_err(kvm("reading the PIT"))?)
            } else {
                None
            },
            clock: fd.get_clock().map_err(kvm("reading the KVM clock"))?,
        })
    }

    pub fn restore_state(&self, s: &VmState) -> Result<()> {
        let fd = self.fd();
        for chip in [&s.pic_master, &s.pic_slave, &s.ioapic] {
            fd.set_irqchip(chip).map_err(kvm("restoring the irqchip"))?;
        }
        // The caller created the PIT exactly when the state has one.
        if let Some(pit) = &s.pit {
            fd.set_pit2(pit).map_err(kvm("restoring the PIT"))?;
        }
        let clock = kvm_clock_data {
            clock: s.clock.clock,
            ..Default::default()
        };
        fd.set_clock(&clock).map_err(kvm("restoring the KVM clock"))
    }
}

/// Every vCPU's state in snapshot `id`'s blobs: `vcpu0`, `vcpu1`.., one
/// per vCPU. The names must be exactly `vcpu0` to `vcpuN-1`, with
/// 1 <= N <= [`MAX_VCPUS`], each of layout [`STATE_VERSION`]: a gap or a
/// stray index is a damaged or forged manifest, not a smaller VM.
pub fn vcpu_states(id: &str, blobs: &[StateBlob]) -> Result<Vec<VcpuState>> {
    let bad = |why: String| VmmError::Snapshot(format!("snapshot {id}: {why}"));
    let mut found: Vec<(usize, &StateBlob)> = Vec::new();
    for b in blobs {
        let Some(index) = b.name.strip_prefix("vcpu") else {
            continue;
        };
        let index = index
            .parse::<usize>()
            .ok()
            .filter(|i| i.to_string() == index)
            .ok_or_else(|| bad(format!("a state blob is named '{}'", b.name)))?;
        found.push((index, b));
    }
    found.sort_by_key(|(i, _)| *i);
    if found.is_empty() {
        return Err(bad("it has no 'vcpu0' state".into()));
    }
    if found.len() > usize::from(MAX_VCPUS) {
        return Err(bad(format!(
            "it has {} vCPUs; this vmm runs at most {MAX_VCPUS}",
            found.len()
        )));
    }
    found
        .iter()
        .enumerate()
        .map(|(want, (index, b))| {
            if *index != want {
                return Err(bad(format!(
                    "its vCPU states are not vcpu0 to vcpu{} (vcpu{want} is missing or doubled)",
                    found.len() - 1
                )));
            }
            if b.version != STATE_VERSION {
                return Err(bad(format!(
                    "state '{}' has layout version {}; this vmm reads version {STATE_VERSION}",
                    b.name, b.version
                )));
            }
            decode(&b.name, &b.bytes)
        })
        .collect()
}

/// Encodes a state blob (postcard, the manifest body's format too).
pub fn encode<T: Serialize>(state: &T) -> Vec<u8> {
    postcard::to_allocvec(state).expect("state structs serialize")
}

pub fn decode<T: for<'de> Deserialize<'de>>(name: &str, bytes: &[u8]) -> Result<T> {
    postcard::from_bytes(bytes)
        .map_err(|e| VmmError::SnapshotState(format!("state blob '{name}' does not decode: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v1_state() -> VmStateV1 {
        let mut pit = kvm_pit_state2::default();
        pit.channels[0].count = 0x1234;
        VmStateV1 {
            pic_master: irqchip(KVM_IRQCHIP_PIC_MASTER),
            pic_slave: irqchip(KVM_IRQCHIP_PIC_SLAVE),
            ioapic: irqchip(KVM_IRQCHIP_IOAPIC),
            pit,
            clock: kvm_clock_data {
                clock: 42,
                ..Default::default()
            },
        }
    }

    #[test]
    fn a_version_1_blob_still_decodes_with_its_pit() {
        let s = VmState::decode(1, &encode(&v1_state())).unwrap();
        assert_eq!(s.pit.unwrap().channels[0].count, 0x1234);
        assert_eq!(s.clock.clock, 42);
    }

    #[test]
    fn version_2_round_trips_with_and_without_a_pit() {
        let v1 = v1_state();
        let mut s = VmState {
            pic_master: v1.pic_master,
            pic_slave: v1.pic_slave,
            ioapic: v1.ioapic,
            pit: None,
            clock: v1.clock,
        };
        let back = VmState::decode(VM_STATE_VERSION, &encode(&s)).unwrap();
        assert!(back.pit.is_none());
        s.pit = Some(v1.pit);
        let back = VmState::decode(VM_STATE_VERSION, &encode(&s)).unwrap();
        assert_eq!(back.pit.unwrap().channels[0].count, 0x1234);
    }

    fn vcpu_blob(name: &str) -> StateBlob {
        let state = VcpuState {
            cpuid: Vec::new(),
            msrs: Vec::new(),
            regs: kvm_regs {
                rip: name.len() as u64,
                ..Default::default()
            },
            sregs: Default::default(),
            fpu: Vec::new(),
            xsave: None,
            xcrs: None,
            lapic: Default::default(),
            events: Default::default(),
            mp_state: Default::default(),
        };
        StateBlob {
            name: name.into(),
            version: STATE_VERSION,
            bytes: encode(&state),
        }
    }

    #[test]
    fn every_vcpu_state_is_read_in_index_order() {
        let blobs: Vec<StateBlob> = ["serial", "vcpu1", "vm", "vcpu0", "vcpu2"]
            .iter()
            .map(|n| vcpu_blob(n))
            .collect();
        let states = vcpu_states("s", &blobs).unwrap();
        assert_eq!(states.len(), 3);
        assert!(states.iter().all(|s| s.regs.rip == 5));
    }

    #[test]
    fn gaps_strays_and_too_many_vcpus_are_refused() {
        let names = |ns: &[&str]| ns.iter().map(|n| vcpu_blob(n)).collect::<Vec<_>>();
        let err = |ns: &[&str]| vcpu_states("s", &names(ns)).err().unwrap().to_string();
        assert!(err(&["vm"]).contains("no 'vcpu0'"));
        assert!(err(&["vcpu0", "vcpu2"]).contains("vcpu1 is missing"));
        assert!(err(&["vcpu1"]).contains("vcpu0 is missing"));
        assert!(err(&["vcpu0", "vcpu0"]).contains("doubled"));
        assert!(err(&["vcpu0", "vcpu01"]).contains("named 'vcpu01'"));
        assert!(err(&["vcpu0", "vcpux"]).contains("named 'vcpux'"));
        let nine: Vec<String> = (0..9).map(|i| format!("vcpu{i}")).collect();
        let nine: Vec<&str> = nine.iter().map(String::as_str).collect();
        assert!(err(&nine).contains("at most 8"));
        let mut old = names(&["vcpu0"]);
        old[0].version = 9;
        let e = vcpu_states("s", &old).err().unwrap().to_string();
        assert!(e.contains("layout version 9"), "{e}");
    }

    #[test]
    fn an_unknown_version_is_refused_by_name() {
        let e = VmState::decode(9, &[]).err().unwrap().to_string();
        assert!(e.contains("layout version 9"), "{e}");
    }
}
