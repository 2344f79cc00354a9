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
