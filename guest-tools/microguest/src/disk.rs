//! Byte-addressed, batched access to the first virtio-blk disk.
//!
//! Every virtio request costs a VM exit (~35 us on our hosts), so callers
//! hand over whole runs: each run becomes requests of at most `MAX_REQ`
//! bytes, and all requests of a call go to the device together (the driver
//! puts up to 21 of them behind one notify).
use alloc::vec;
use alloc::vec::Vec;

use crate::cmdline::Cmdline;
use crate::virtio_blk::{self, Req, VirtioBlk, S_OK, T_IN, T_OUT};

pub const SECTOR: u64 = 512;
/// Largest single request (the VMM accepts up to 4 MiB).
pub const MAX_REQ: usize = 1 << 20;

#[derive(Debug)]
#[allow(dead_code)] // the fields are for the Debug output
pub enum IoError {
    Device(virtio_blk::Error),
    /// The device answered a request with this status.
    Status(u8),
    /// Offset or length not sector-aligned, or beyond the disk.
    Bounds,
}

impl From<virtio_blk::Error> for IoError {
    fn from(e: virtio_blk::Error) -> Self {
        IoError::Device(e)
    }
}

/// Counters of what went to the device.
#[derive(Clone, Copy, Default, Debug)]
pub struct Stats {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

pub struct Disk {
    dev: VirtioBlk,
    pub stats: Stats,
}

impl Disk {
    /// The first virtio-blk device of the command line, or None (and a
    /// message on the console).
    pub fn open(cmdline: &Cmdline) -> Option<Self> {
        match VirtioBlk::init(cmdline) {
            Ok(dev) => Some(Self {
                dev,
                stats: Stats::default(),
            }),
            Err(e) => {
                crate::say!("microguest: no usable virtio-blk device: {e:?}\n");
                None
            }
        }
    }

    /// Capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.dev.capacity_sectors * SECTOR
    }

    fn check(&self, off: u64, len: usize) -> Result<(), IoError> {
        let end = off.checked_add(len as u64).ok_or(IoError::Bounds)?;
        if !off.is_multiple_of(SECTOR)
            || !(len as u64).is_multiple_of(SECTOR)
            || end > self.capacity()
        {
            return Err(IoError::Bounds);
        }
        Ok(())
    }

    fn push(reqs: &mut Vec<Req>, kind: u32, off: u64, ptr: *mut u8, len: usize) {
        let mut done = 0;
        while done < len {
            let n = (len - done).min(MAX_REQ);
            reqs.push(Req {
                kind,
                sector: (off + done as u64) / SECTOR,
                // SAFETY: in bounds of the caller's buffer.
                buf: unsafe { ptr.add(done) },
                len: n as u32,
            });
            done += n;
        }
    }

    fn run(&mut self, reqs: &[Req]) -> Result<(), IoError> {
        if reqs.is_empty() {
            return Ok(());
        }
        let mut status = vec![0xffu8; reqs.len()];
        self.dev.submit(reqs, &mut status)?;
        for r in reqs {
            if r.kind == T_OUT {
                self.stats.writes += 1;
                self.stats.bytes_written += u64::from(r.len);
            } else {
                self.stats.reads += 1;
                self.stats.bytes_read += u64::from(r.len);
            }
        }
        match status.iter().find(|s| **s != S_OK) {
            Some(s) => Err(IoError::Status(*s)),
            None => Ok(()),
        }
    }

    /// Writes each `(disk byte offset, bytes)` run; offsets and lengths are
    /// multiples of 512.
    pub fn write_runs(&mut self, runs: &[(u64, &[u8])]) -> Result<(), IoError> {
        let mut reqs = Vec::new();
        for (off, data) in runs {
            self.check(*off, data.len())?;
            Self::push(&mut reqs, T_OUT, *off, data.as_ptr() as *mut u8, data.len());
        }
        self.run(&reqs)
    }

    /// Reads each `(disk byte offset, buffer)` run.
    pub fn read_runs(&mut self, runs: &mut [(u64, &mut [u8])]) -> Result<(), IoError> {
        let mut reqs = Vec::new();
        for (off, data) in runs.iter_mut() {
            self.check(*off, data.len())?;
            Self::push(&mut reqs, T_IN, *off, data.as_mut_ptr(), data.len());
        }
        self.run(&reqs)
    }

    pub fn write_at(&mut self, off: u64, data: &[u8]) -> Result<(), IoError> {
        self.write_runs(&[(off, data)])
    }

    pub fn read_at(&mut self, off: u64, data: &mut [u8]) -> Result<(), IoError> {
        self.read_runs(&mut [(off, data)])
    }

    /// A virtio FLUSH: everything written before is durable after it. This
    /// is the host's consistency point.
    pub fn flush(&mut self) -> Result<(), IoError> {
        self.stats.flushes += 1;
        match self.dev.flush()? {
            S_OK => Ok(()),
            s => Err(IoError::Status(s)),
        }
    }
}
