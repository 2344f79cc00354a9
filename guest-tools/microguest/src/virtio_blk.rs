//! A small polled virtio-blk driver over virtio-mmio (version 2).
//!
//! Guest physical and virtual addresses are the same (identity mapping), so
//! buffers are passed to the device by their address. One queue of
//! `QUEUE_SIZE` descriptors lives in static memory; requests are submitted
//! in batches and completion is polled on the used ring (no interrupts).
use core::ptr::{addr_of, addr_of_mut, read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::cmdline::Cmdline;
use crate::virtio::{Mmio, SetupError};

pub const QUEUE_SIZE: usize = 64;
pub const BLOCK: usize = 4096;

pub const T_IN: u32 = 0;
pub const T_OUT: u32 = 1;
pub const T_FLUSH: u32 = 4;
pub const T_GET_ID: u32 = 8;
pub const T_DISCARD: u32 = 11;
pub const T_WRITE_ZEROES: u32 = 13;
pub const S_OK: u8 = 0;

pub const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

const F_RO: u32 = 1 << 5;
const F_BLK_SIZE: u32 = 1 << 6;
const F_FLUSH: u32 = 1 << 9;
const F_DISCARD: u32 = 1 << 13;
const F_WRITE_ZEROES: u32 = 1 << 14;

#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct Desc {
    pub addr: u64,
    pub len: u32,
    pub flags: u16,
    pub next: u16,
}

#[repr(C, align(4096))]
struct Ring {
    desc: [Desc; QUEUE_SIZE],
    avail_flags: u16,
    avail_idx: u16,
    avail_ring: [u16; QUEUE_SIZE],
    _pad: [u8; 4096 - 4 - 2 * QUEUE_SIZE],
    used_flags: u16,
    used_idx: u16,
    used_ring: [(u32, u32); QUEUE_SIZE],
}

/// Per-slot request header and status byte.
#[repr(C)]
#[derive(Clone, Copy)]
struct Slot {
    kind: u32,
    reserved: u32,
    sector: u64,
    status: u8,
}

static mut RING: Ring = Ring {
    desc: [Desc {
        addr: 0,
        len: 0,
        flags: 0,
        next: 0,
    }; QUEUE_SIZE],
    avail_flags: 1, // VIRTQ_AVAIL_F_NO_INTERRUPT: we poll
    avail_idx: 0,
    avail_ring: [0; QUEUE_SIZE],
    _pad: [0; 4096 - 4 - 2 * QUEUE_SIZE],
    used_flags: 0,
    used_idx: 0,
    used_ring: [(0, 0); QUEUE_SIZE],
};

const SLOTS: usize = QUEUE_SIZE / 3;
static mut SLOT: [Slot; SLOTS] = [Slot {
    kind: 0,
    reserved: 0,
    sector: 0,
    status: 0xff,
}; SLOTS];

/// One request of a batch.
#[derive(Clone, Copy)]
pub struct Req {
    pub kind: u32,
    pub sector: u64,
    pub buf: *mut u8,
    pub len: u32,
}

pub struct VirtioBlk {
    base: usize,
    pub capacity_sectors: u64,
    pub read_only: bool,
    last_used: u16,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Error {
    NoDevice,
    FeaturesRejected,
    QueueTooSmall(u32),
    Timeout,
}

impl VirtioBlk {
    fn reg(&self, off: usize) -> u32 {
        // SAFETY: the device window is identity-mapped MMIO.
        unsafe { read_volatile((self.base + off) as *const u32) }
    }

    fn set_reg(&self, off: usize, v: u32) {
        // SAFETY: as above.
        unsafe { write_volatile((self.base + off) as *mut u32, v) }
    }

    /// Finds the first virtio-mmio device on the command line and sets it up.
    pub fn init(cmdline: &Cmdline) -> Result<Self, Error> {
        let base = crate::virtio::find_device(cmdline, crate::virtio::DEVICE_BLOCK)
            .ok_or(Error::NoDevice)?;
        let mut dev = Self {
            base,
            capacity_sectors: 0,
            read_only: false,
            last_used: 0,
        };
        // SAFETY: only taking addresses of the static ring.
        let rings = unsafe {
            [
                addr_of!(RING.desc) as u64,
                addr_of!(RING.avail_flags) as u64,
                addr_of!(RING.used_flags) as u64,
            ]
        };
        let mmio = Mmio { base };
        let offered = mmio
            .setup(
                |offered| offered & (F_RO | F_BLK_SIZE | F_FLUSH | F_DISCARD | F_WRITE_ZEROES),
                0,
                QUEUE_SIZE,
                rings,
            )
            .map_err(|e| match e {
                SetupError::FeaturesRejected => Error::FeaturesRejected,
                SetupError::QueueTooSmall(n) => Error::QueueTooSmall(n),
            })?;
        dev.read_only = offered & F_RO != 0;
        dev.capacity_sectors = u64::from(dev.reg(0x100)) | (u64::from(dev.reg(0x104)) << 32);
        Ok(dev)
    }

    /// Places raw descriptors at table indices `0..descs.len()`, makes index
    /// `head` available, notifies and waits; returns the used length.
    /// Evil workloads use this to send malformed chains.
    pub fn submit_raw(&mut self, descs: &[Desc], head: u16) -> Result<u32, Error> {
        // SAFETY: single-threaded guest; the device only reads the ring
        // during the notify exit below.
        unsafe {
            let ring = &mut *addr_of_mut!(RING);
            ring.desc[..descs.len()].copy_from_slice(descs);
            let idx = read_volatile(&ring.avail_idx);
            ring.avail_ring[idx as usize % QUEUE_SIZE] = head;
            fence(Ordering::SeqCst);
            write_volatile(&mut ring.avail_idx, idx.wrapping_add(1));
        }
        self.notify_and_wait(1)?;
        // SAFETY: reading the used ring the device wrote.
        let len = unsafe {
            let ring = &*addr_of!(RING);
            read_volatile(&ring.used_ring[self.last_used.wrapping_sub(1) as usize % QUEUE_SIZE]).1
        };
        Ok(len)
    }

    fn notify_and_wait(&mut self, count: u16) -> Result<(), Error> {
        fence(Ordering::SeqCst);
        self.set_reg(0x050, 0);
        let target = self.last_used.wrapping_add(count);
        for _ in 0..100_000_000u64 {
            // SAFETY: the device writes used_idx; we only read it.
            let used = unsafe { read_volatile(addr_of!(RING.used_idx)) };
            if used == target {
                self.last_used = target;
                return Ok(());
            }
            core::hint::spin_loop();
        }
        Err(Error::Timeout)
    }

    /// Submits up to `SLOTS` requests at once (one notify) and returns their
    /// statuses in `status`.
    pub fn submit(&mut self, reqs: &[Req], status: &mut [u8]) -> Result<(), Error> {
        for (batch_no, batch) in reqs.chunks(SLOTS).enumerate() {
            // SAFETY: as in submit_raw.
            unsafe {
                let ring = &mut *addr_of_mut!(RING);
                let slots = &mut *addr_of_mut!(SLOT);
                let mut idx = read_volatile(&ring.avail_idx);
                for (i, r) in batch.iter().enumerate() {
                    let s = &mut slots[i];
                    s.kind = r.kind;
                    s.sector = r.sector;
                    s.status = 0xff;
                    let d = (i * 3) as u16;
                    let data_flags = if matches!(r.kind, T_OUT | T_DISCARD | T_WRITE_ZEROES) {
                        0
                    } else {
                        DESC_F_WRITE
                    };
                    let status_addr = addr_of!(s.status) as u64;
                    let header = Desc {
                        addr: s as *const Slot as u64,
                        len: 16,
                        flags: DESC_F_NEXT,
                        next: d + 1,
                    };
                    let st = Desc {
                        addr: status_addr,
                        len: 1,
                        flags: DESC_F_WRITE,
                        next: 0,
                    };
                    if r.len == 0 {
                        ring.desc[d as usize] = Desc {
                            next: d + 2,
                            ..header
                        };
                    } else {
                        ring.desc[d as usize] = header;
                        ring.desc[d as usize + 1] = Desc {
                            addr: r.buf as u64,
                            len: r.len,
                            flags: data_flags | DESC_F_NEXT,
                            next: d + 2,
                        };
                    }
                    ring.desc[d as usize + 2] = st;
                    ring.avail_ring[idx as usize % QUEUE_SIZE] = d;
                    idx = idx.wrapping_add(1);
                }
                fence(Ordering::SeqCst);
                write_volatile(&mut ring.avail_idx, idx);
            }
            self.notify_and_wait(batch.len() as u16)?;
            // SAFETY: reading back the status bytes the device wrote.
            unsafe {
                let slots = &*addr_of!(SLOT);
                for i in 0..batch.len() {
                    status[batch_no * SLOTS + i] = read_volatile(&slots[i].status);
                }
            }
        }
        Ok(())
    }

    pub fn one(&mut self, kind: u32, sector: u64, buf: *mut u8, len: u32) -> Result<u8, Error> {
        let mut status = [0xffu8];
        self.submit(
            &[Req {
                kind,
                sector,
                buf,
                len,
            }],
            &mut status,
        )?;
        Ok(status[0])
    }

    pub fn write(&mut self, sector: u64, data: &[u8]) -> Result<u8, Error> {
        self.one(T_OUT, sector, data.as_ptr() as *mut u8, data.len() as u32)
    }

    pub fn read(&mut self, sector: u64, data: &mut [u8]) -> Result<u8, Error> {
        self.one(T_IN, sector, data.as_mut_ptr(), data.len() as u32)
    }

    /// DISCARD or WRITE_ZEROES of `sectors` sectors from `sector`.
    pub fn zero(&mut self, kind: u32, sector: u64, sectors: u32) -> Result<u8, Error> {
        let mut seg = [0u8; 16];
        seg[..8].copy_from_slice(&sector.to_le_bytes());
        seg[8..12].copy_from_slice(&sectors.to_le_bytes());
        self.one(kind, 0, seg.as_mut_ptr(), 16)
    }

    pub fn flush(&mut self) -> Result<u8, Error> {
        self.one(T_FLUSH, 0, core::ptr::null_mut(), 0)
    }
}
