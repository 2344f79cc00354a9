//! A transmit-only, polled virtio-console driver: the hint channel to the
//! host. Each message goes out as one descriptor on port 0's transmit
//! queue; the call returns once the host has consumed it.
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::cmdline::Cmdline;
use crate::virtio::{find_device, Mmio, DEVICE_CONSOLE};

const QUEUE_SIZE: usize = 8;
const TRANSMITQ: u32 = 1;
/// Largest message (hint-proto's limit plus framing).
pub const MAX_MESSAGE: usize = 64 << 10;

#[repr(C)]
#[derive(Clone, Copy)]
struct Desc {
    addr: u64,
    len: u32,
    flags: u16,
    next: u16,
}

#[repr(C, align(4096))]
struct Ring {
    desc: [Desc; QUEUE_SIZE],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; QUEUE_SIZE],
    _pad: [u8; 4096 - 16 * QUEUE_SIZE - 4 - 2 * QUEUE_SIZE],
    used_flags: u16,
    used_idx: u16,
    used_ring: [(u32, u32); QUEUE_SIZE],
}

static mut RING: Ring = Ring {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; QUEUE_SIZE],
    avail_flags: 1, // no interrupts: we poll
    avail_idx: 0,
    avail_ring: [0; QUEUE_SIZE],
    _pad: [0; 4096 - 16 * QUEUE_SIZE - 4 - 2 * QUEUE_SIZE],
    used_flags: 0,
    used_idx: 0,
    used_ring: [(0, 0); QUEUE_SIZE],
};

pub struct HintPort {
    base: usize,
    last_used: u16,
}

impl HintPort {
    fn set_reg(&self, off: usize, v: u32) {
        // SAFETY: the device window is identity-mapped MMIO.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }

    /// The hint channel, if the VMM offers one (it does when recording).
    pub fn open(cmdline: &Cmdline) -> Option<Self> {
        let base = find_device(cmdline, DEVICE_CONSOLE)?;
        let port = Self { base, last_used: 0 };
        // SAFETY: only addresses of the static ring are taken.
        let rings = unsafe {
            [
                addr_of!(RING.desc) as u64,
                addr_of!(RING.avail_flags) as u64,
                addr_of!(RING.used_flags) as u64,
            ]
        };
        Mmio { base }
            .setup(|_| 0, TRANSMITQ, QUEUE_SIZE, rings)
            .ok()?;
        Some(port)
    }

    /// Sends one message and waits until the host took it.
    pub fn send(&mut self, message: &[u8]) -> bool {
        if message.is_empty() || message.len() > MAX_MESSAGE {
            return false;
        }
        // SAFETY: single-threaded guest; the host reads the ring only during
        // the notify exit below.
        unsafe {
            let ring = &mut *addr_of_mut!(RING);
            ring.desc[0] = Desc {
                addr: message.as_ptr() as u64,
                len: message.len() as u32,
                flags: 0,
                next: 0,
            };
            let idx = read_volatile(&ring.avail_idx);
            ring.avail_ring[idx as usize % QUEUE_SIZE] = 0;
            fence(Ordering::SeqCst);
            write_volatile(&mut ring.avail_idx, idx.wrapping_add(1));
        }
        fence(Ordering::SeqCst);
        self.set_reg(0x050, TRANSMITQ);
        let target = self.last_used.wrapping_add(1);
        for _ in 0..10_000_000u32 {
            // SAFETY: the host writes used_idx; we only read it.
            if unsafe { read_volatile(addr_of!(RING.used_idx)) } == target {
                self.last_used = target;
                return true;
            }
            core::hint::spin_loop();
        }
        false
    }
}
