//! COM1: a 16550A UART (vm-superio) whose output goes to stdout or a file and
//! whose interrupt is raised through an irqfd on IRQ 4.
use std::io::Write;

use kvm_ioctls::VmFd;
use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use super::persist::SerialSnap;
use vmm_sys_util::eventfd::EventFd;

use crate::error::{Result, VmmError};

pub const COM1_BASE: u16 = 0x3f8;
pub const COM1_IRQ: u32 = 4;
/// The UART's eight registers.
pub const COM1_LEN: u16 = 8;

/// An eventfd registered as an irqfd: writing it raises the guest interrupt.
pub struct EventFdTrigger(EventFd);

impl Trigger for EventFdTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

pub type SerialOut = Box<dyn Write + Send>;

pub struct SerialDevice {
    uart: Serial<EventFdTrigger, NoEvents, SerialOut>,
    /// Bytes the guest has written, for run statistics.
    pub bytes_out: u64,
}

impl SerialDevice {
    /// A UART on COM1 wired to IRQ 4 of `vm`, writing to `out`.
    pub fn new(vm: &VmFd, out: SerialOut) -> Result<Self> {
        Self::with_state(vm, out, None)
    }

    /// The same, with the registers of a snapshot.
    pub fn restore(vm: &VmFd, out: SerialOut, state: &SerialSnap) -> Result<Self> {
        Self::with_state(vm, out, Some(state))
    }

    fn with_state(vm: &VmFd, out: SerialOut, state: Option<&SerialSnap>) -> Result<Self> {
        let kvm = |step| move |source| VmmError::Kvm { step, source };
        let evt = EventFd::new(libc::EFD_NONBLOCK).map_err(|e| VmmError::Kvm {
            step: "creating the serial eventfd",
            source: vmm_sys_util::errno::Error::new(e.raw_os_error().unwrap_or(libc::EIO)),
        })?;
        vm.register_irqfd(&evt, COM1_IRQ)
            .map_err(kvm("registering the serial irqfd"))?;
        let trigger = EventFdTrigger(evt);
        let uart = match state {
            None => Serial::new(trigger, out),
            Some(s) => Serial::from_state(&s.into(), trigger, NoEvents, out)
                .map_err(|e| VmmError::SnapshotState(format!("serial: {e:?}")))?,
        };
        Ok(Self { uart, bytes_out: 0 })
    }

    pub fn contains(port: u16) -> bool {
        (COM1_BASE..COM1_BASE + COM1_LEN).contains(&port)
    }

    pub fn pio_write(&mut self, port: u16, value: u8) {
        let offset = (port - COM1_BASE) as u8;
        if offset == 0 {
            self.bytes_out += 1;
        }
        // A failed write to the host's output (a closed pipe) must not stop
        // the guest: the byte is dropped, as a disconnected UART would.
        let _ = self.uart.write(offset, value);
    }

    pub fn pio_read(&mut self, port: u16) -> u8 {
        self.uart.read((port - COM1_BASE) as u8)
    }

    pub fn save_state(&self) -> SerialSnap {
        SerialSnap::from(&self.uart.state())
    }

    pub fn flush(&mut self) {
        let _ = self.uart.writer_mut().flush();
    }
}
