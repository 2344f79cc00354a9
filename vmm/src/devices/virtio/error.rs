//! Errors of the virtio devices and their transport, each naming the
//! device and what failed.
use std::fmt;

use thiserror::Error;

use crate::devices::persist::QueueSnap;
use crate::recording::RecorderError;

/// A virtio device, named by its device id for messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceKind(pub u32);

impl fmt::Display for DeviceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            2 => f.write_str("virtio-blk"),
            3 => f.write_str("virtio-console"),
            id => write!(f, "virtio device of type {id}"),
        }
    }
}

/// Where a saved queue says its rings are.
#[derive(Debug, Clone, Copy)]
pub struct QueuePlace {
    pub index: usize,
    pub size: u16,
    pub max_size: u16,
    pub desc_table: u64,
    pub avail_ring: u64,
    pub used_ring: u64,
}

impl QueuePlace {
    pub fn of(index: usize, q: &QueueSnap) -> Self {
        Self {
            index,
            size: q.size,
            max_size: q.max_size,
            desc_table: q.desc_table,
            avail_ring: q.avail_ring,
            used_ring: q.used_ring,
        }
    }
}

impl fmt::Display for QueuePlace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "queue {} (size {} of at most {}, descriptor table at {:#x}, available ring at {:#x}, used ring at {:#x})",
            self.index, self.size, self.max_size, self.desc_table, self.avail_ring, self.used_ring
        )
    }
}

#[derive(Debug, Error)]
pub enum DeviceError {
    /// The device could not hand off what it still held: its recorder
    /// refused (it failed, or is gone).
    #[error("{device}: handing off its last writes: {source}")]
    Stop {
        device: DeviceKind,
        source: RecorderError,
    },
    #[error("snapshot state: the snapshot has a {saved} where this VM has a {here}")]
    WrongDevice { saved: DeviceKind, here: DeviceKind },
    #[error("snapshot state: {device} has {saved} queues in the snapshot, the device has {here}")]
    QueueCount {
        device: DeviceKind,
        saved: usize,
        here: usize,
    },
    /// A saved queue the queue library refuses (a size that is not a power
    /// of two or above the maximum, misaligned rings).
    #[error("snapshot state: {device} {queue} is invalid: {reason}")]
    BadQueue {
        device: DeviceKind,
        queue: QueuePlace,
        reason: virtio_queue::Error,
    },
    /// A ready saved queue whose rings are not inside guest memory.
    #[error("snapshot state: {device} {queue} lies outside guest memory")]
    QueueOutsideMemory {
        device: DeviceKind,
        queue: QueuePlace,
    },
}
