//! virtio-mmio device discovery: the VMM announces each device on the
//! command line (`virtio_mmio.device=4K@0xd0000000:5`, one word per device,
//! as for Linux); a driver finds its device by probing each window's magic,
//! version and device id.
use core::ptr::read_volatile;

use crate::cmdline::{parse_u64, Cmdline};

pub const MAGIC: u32 = 0x7472_6976;
pub const DEVICE_BLOCK: u32 = 2;
pub const DEVICE_CONSOLE: u32 = 3;

/// The base address of the first announced device with `device_id`.
pub fn find_device(cmdline: &Cmdline, device_id: u32) -> Option<usize> {
    cmdline.get_all("virtio_mmio.device").find_map(|spec| {
        let addr = spec.split_once('@')?.1.split_once(':')?.0;
        let base = parse_u64(addr)? as usize;
        // SAFETY: announced device windows are identity-mapped MMIO; reads
        // of these registers have no side effects.
        let (magic, version, id) = unsafe {
            (
                read_volatile(base as *const u32),
                read_volatile((base + 4) as *const u32),
                read_volatile((base + 8) as *const u32),
            )
        };
        (magic == MAGIC && version == 2 && id == device_id).then_some(base)
    })
}

const STATUS_ACK: u32 = 1;
const STATUS_DRIVER: u32 = 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;

/// Why a device could not be set up.
#[derive(Debug, PartialEq, Eq)]
pub enum SetupError {
    FeaturesRejected,
    QueueTooSmall(u32),
}

/// A virtio-mmio register window.
pub struct Mmio {
    pub base: usize,
}

impl Mmio {
    pub fn reg(&self, off: usize) -> u32 {
        // SAFETY: the device window is identity-mapped MMIO.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    pub fn set_reg(&self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile((self.base + off) as *mut u32, v) }
    }

    /// Resets the device, negotiates features (`pick` chooses among the
    /// offered low 32 bits; VIRTIO_F_VERSION_1 is always taken), sets up
    /// queue `index` with `size` entries at `rings` (descriptor table,
    /// available ring, used ring) and sets DRIVER_OK. Returns the offered
    /// low feature bits.
    pub fn setup(
        &self,
        pick: impl FnOnce(u32) -> u32,
        index: u32,
        size: usize,
        rings: [u64; 3],
    ) -> Result<u32, SetupError> {
        self.set_reg(0x070, 0);
        self.set_reg(0x070, STATUS_ACK | STATUS_DRIVER);
        self.set_reg(0x014, 0);
        let offered = self.reg(0x010);
        self.set_reg(0x024, 0);
        self.set_reg(0x020, pick(offered));
        self.set_reg(0x024, 1);
        self.set_reg(0x020, 1); // VIRTIO_F_VERSION_1
        self.set_reg(0x070, STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK);
        if self.reg(0x070) & STATUS_FEATURES_OK == 0 {
            return Err(SetupError::FeaturesRejected);
        }
        self.set_reg(0x030, index);
        let max = self.reg(0x034);
        if (max as usize) < size {
            return Err(SetupError::QueueTooSmall(max));
        }
        self.set_reg(0x038, size as u32);
        for (off, addr) in [0x080, 0x090, 0x0a0].into_iter().zip(rings) {
            self.set_reg(off, addr as u32);
            self.set_reg(off + 4, (addr >> 32) as u32);
        }
        self.set_reg(0x044, 1);
        self.set_reg(
            0x070,
            STATUS_ACK | STATUS_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
        Ok(offered)
    }
}
