//! Virtio devices over the MMIO transport (virtio 1.x, "version 2" MMIO).
//!
//! `mmio` is the transport: registers, feature negotiation, queue setup. A
//! device (`block`) implements [`VirtioDevice`] and sees only activated
//! queues and its config space. Devices run their queues on the vCPU thread
//! when the driver writes QueueNotify: the microguest polls, and a request
//! costs one exit either way.
use std::sync::atomic::{AtomicU32, Ordering};

use crate::memory::GuestMemory;
use kvm_ioctls::VmFd;
use virtio_queue::Queue;
use vmm_sys_util::eventfd::EventFd;

use crate::error::VmmError;

pub mod block;
pub mod console;
mod error;
pub mod mmio;

pub use error::{DeviceError, DeviceKind, QueuePlace};

/// The interrupt status bit for "a used buffer was added".
pub const INT_VRING: u32 = 1;

/// One device's interrupt line: an irqfd plus the MMIO InterruptStatus bits.
pub struct IrqLine {
    evt: EventFd,
    status: AtomicU32,
    pub gsi: u32,
}

impl IrqLine {
    pub fn new(vm: &VmFd, gsi: u32) -> crate::error::Result<Self> {
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Kvm {
            step: "creating a virtio eventfd",
            source: vmm_sys_util::errno::Error::new(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        vm.register_irqfd(&evt, gsi)
            .map_err(|source| VmmError::Kvm {
                step: "registering a virtio irqfd",
                source,
            })?;
        Ok(Self {
            evt,
            status: AtomicU32::new(0),
            gsi,
        })
    }

    /// Sets `bits` in InterruptStatus and raises the interrupt.
    pub fn signal(&self, bits: u32) {
        self.status.fetch_or(bits, Ordering::SeqCst);
        // A full eventfd counter means an interrupt is already pending.
        let _ = self.evt.write(1);
    }

    pub fn status(&self) -> u32 {
        self.status.load(Ordering::SeqCst)
    }

    /// Restores InterruptStatus from a snapshot (without raising anything).
    pub fn set_status(&self, bits: u32) {
        self.status.store(bits, Ordering::SeqCst);
    }

    pub fn ack(&self, bits: u32) {
        self.status.fetch_and(!bits, Ordering::SeqCst);
    }
}

/// What a virtio device provides to the transport.
pub trait VirtioDevice: Send {
    /// Virtio device id (2 = block).
    fn device_type(&self) -> u32;
    /// Maximum size of each of the device's queues.
    fn queue_max_sizes(&self) -> &[u16];
    /// Feature bits the device offers.
    fn features(&self) -> u64;
    /// Reads config space at `offset` into `data` (out-of-range bytes read 0).
    fn read_config(&self, offset: u64, data: &mut [u8]);
    /// Driver writes to config space; most devices ignore them.
    fn write_config(&mut self, _offset: u64, _data: &[u8]) {}
    /// The driver finished setup: queues are valid, features acknowledged.
    fn activate(&mut self, mem: GuestMemory, queues: Vec<Queue>, acked_features: u64);
    /// The driver notified queue `index`.
    fn process_queue(&mut self, index: u16, irq: &IrqLine);
    /// The driver reset the device; queues are gone.
    fn reset(&mut self);
    /// The state of the queues the device runs (after `activate`).
    fn active_queues(&self) -> Vec<virtio_queue::QueueState>;
    /// The VM is ending: hand off anything still buffered.
    fn stop(&mut self) -> Result<(), DeviceError> {
        Ok(())
    }
}
