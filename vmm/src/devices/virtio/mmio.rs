//! The virtio-mmio transport, version 2 (virtio 1.x spec, section 4.2.2).
//!
//! One 4 KiB window per device. Linux finds it from the kernel command line
//! (`virtio_mmio.device=4K@0xd0000000:5`), and so does the microguest.
//! Every value the driver writes is untrusted: queue sizes are checked
//! against the maximum, queues are validated against guest memory before the
//! device is activated, and unknown registers are ignored.
use crate::memory::GuestMemory;
use virtio_bindings::bindings::virtio_config::{
    VIRTIO_CONFIG_S_ACKNOWLEDGE, VIRTIO_CONFIG_S_DRIVER, VIRTIO_CONFIG_S_DRIVER_OK,
    VIRTIO_CONFIG_S_FAILED, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueState, QueueT};

use super::{DeviceError, DeviceKind, IrqLine, QueuePlace, VirtioDevice};
use crate::devices::persist::{QueueSnap, TransportSnap};

const MAGIC: u32 = 0x7472_6976; // "virt"
const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x554d_4551; // same as QEMU's, which drivers know
pub const WINDOW_SIZE: u64 = 0x1000;
const CONFIG_SPACE: u64 = 0x100;

pub struct MmioTransport {
    device: Box<dyn VirtioDevice>,
    irq: IrqLine,
    mem: GuestMemory,
    queues: Vec<Queue>,
    queue_sel: u32,
    device_features_sel: u32,
    driver_features_sel: u32,
    driver_features: u64,
    status: u32,
    config_generation: u32,
    activated: bool,
}

impl MmioTransport {
    pub fn new(device: Box<dyn VirtioDevice>, irq: IrqLine, mem: GuestMemory) -> Self {
        let queues = Self::fresh_queues(device.as_ref());
        Self {
            device,
            irq,
            mem,
            queues,
            queue_sel: 0,
            device_features_sel: 0,
            driver_features_sel: 0,
            driver_features: 0,
            status: 0,
            config_generation: 0,
            activated: false,
        }
    }

    fn fresh_queues(device: &dyn VirtioDevice) -> Vec<Queue> {
        device
            .queue_max_sizes()
            .iter()
            .map(|&max| Queue::new(max).expect("queue max sizes are powers of two"))
            .collect()
    }

    /// The VM is ending: the device hands off whatever it still holds.
    pub fn stop(&mut self) -> Result<(), DeviceError> {
        self.device.stop()
    }

    pub fn gsi(&self) -> u32 {
        self.irq.gsi
    }

    fn offered_features(&self) -> u64 {
        self.device.features() | (1u64 << VIRTIO_F_VERSION_1)
    }

    fn selected_queue(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset >= CONFIG_SPACE {
            self.device.read_config(offset - CONFIG_SPACE, data);
            return;
        }
        if data.len() != 4 {
            data.fill(0);
            return;
        }
        let value = match offset {
            0x000 => MAGIC,
            0x004 => VERSION,
            0x008 => self.device.device_type(),
            0x00c => VENDOR_ID,
            0x010 => match self.device_features_sel {
                0 => self.offered_features() as u32,
                1 => (self.offered_features() >> 32) as u32,
                _ => 0,
            },
            0x034 => self.selected_queue().map_or(0, |q| u32::from(q.max_size())),
            0x044 => self.selected_queue().map_or(0, |q| u32::from(q.ready())),
            0x060 => self.irq.status(),
            0x070 => self.status,
            0x0fc => self.config_generation,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) {
        if offset >= CONFIG_SPACE {
            self.device.write_config(offset - CONFIG_SPACE, data);
            self.config_generation = self.config_generation.wrapping_add(1);
            return;
        }
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            return; // registers are 32-bit: other widths are ignored
        };
        let v = u32::from_le_bytes(bytes);
        let queue_setup_allowed = !self.activated;
        match offset {
            0x014 => self.device_features_sel = v,
            0x020 => {
                let offered = self.offered_features();
                match self.driver_features_sel {
                    0 => {
                        self.driver_features = (self.driver_features & !0xffff_ffff) | u64::from(v)
                    }
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | (u64::from(v) << 32)
                    }
                    _ => {}
                }
                // A driver cannot take what was not offered.
                self.driver_features &= offered;
            }
            0x024 => self.driver_features_sel = v,
            0x030 => self.queue_sel = v,
            0x038 if queue_setup_allowed => {
                if let Some(q) = self.selected_queue() {
                    q.set_size(v as u16);
                }
            }
            0x044 if queue_setup_allowed => {
                if let Some(q) = self.selected_queue() {
                    q.set_ready(v == 1);
                }
            }
            0x050 if self.activated && (v as usize) < self.queues.len() => {
                self.device.process_queue(v as u16, &self.irq);
            }
            0x064 => self.irq.ack(v),
            0x070 => self.set_status(v),
            0x080 | 0x084 | 0x090 | 0x094 | 0x0a0 | 0x0a4 if queue_setup_allowed => {
                let (low, high) = if offset & 4 == 0 {
                    (Some(v), None)
                } else {
                    (None, Some(v))
                };
                if let Some(q) = self.selected_queue() {
                    match offset & !4 {
                        0x080 => q.set_desc_table_address(low, high),
                        0x090 => q.set_avail_ring_address(low, high),
                        _ => q.set_used_ring_address(low, high),
                    }
                }
            }
            _ => {}
        }
    }

    pub fn save_state(&self) -> TransportSnap {
        let queues = if self.activated {
            self.device.active_queues()
        } else {
            self.queues.iter().map(|q| q.state()).collect()
        };
        TransportSnap {
            device_type: self.device.device_type(),
            device_features_sel: self.device_features_sel,
            driver_features_sel: self.driver_features_sel,
            driver_features: self.driver_features,
            queue_sel: self.queue_sel,
            status: self.status,
            config_generation: self.config_generation,
            activated: self.activated,
            interrupt_status: self.irq.status(),
            queues: queues.into_iter().map(QueueSnap::from).collect(),
        }
    }

    /// Puts a freshly built transport into a saved state; an activated
    /// device gets its queues back, checked against guest memory.
    pub fn restore_state(&mut self, s: &TransportSnap) -> Result<(), DeviceError> {
        let device = DeviceKind(self.device.device_type());
        if s.device_type != device.0 {
            return Err(DeviceError::WrongDevice {
                saved: DeviceKind(s.device_type),
                here: device,
            });
        }
        if s.queues.len() != self.device.queue_max_sizes().len() {
            return Err(DeviceError::QueueCount {
                device,
                saved: s.queues.len(),
                here: self.device.queue_max_sizes().len(),
            });
        }
        let queues = s
            .queues
            .iter()
            .enumerate()
            .map(|(index, q)| {
                Queue::try_from(QueueState::from(*q)).map_err(|reason| DeviceError::BadQueue {
                    device,
                    queue: QueuePlace::of(index, q),
                    reason,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        self.device_features_sel = s.device_features_sel;
        self.driver_features_sel = s.driver_features_sel;
        self.driver_features = s.driver_features & self.offered_features();
        self.queue_sel = s.queue_sel;
        self.status = s.status;
        self.config_generation = s.config_generation;
        self.irq.set_status(s.interrupt_status);
        if s.activated {
            if let Some(index) = queues
                .iter()
                .position(|q| q.ready() && !q.is_valid(&self.mem))
            {
                return Err(DeviceError::QueueOutsideMemory {
                    device,
                    queue: QueuePlace::of(index, &s.queues[index]),
                });
            }
            self.queues = Self::fresh_queues(self.device.as_ref());
            for (mine, theirs) in self.queues.iter_mut().zip(&queues) {
                mine.set_ready(theirs.ready());
            }
            self.device
                .activate(self.mem.clone(), queues, self.driver_features);
            self.activated = true;
        } else {
            self.queues = queues;
        }
        Ok(())
    }

    fn set_status(&mut self, status: u32) {
        if status == 0 {
            self.reset();
            return;
        }
        self.status = status;
        let driver_ok = VIRTIO_CONFIG_S_ACKNOWLEDGE
            | VIRTIO_CONFIG_S_DRIVER
            | VIRTIO_CONFIG_S_FEATURES_OK
            | VIRTIO_CONFIG_S_DRIVER_OK;
        if status & driver_ok == driver_ok && !self.activated {
            let all_valid = self
                .queues
                .iter()
                .all(|q| !q.ready() || q.is_valid(&self.mem));
            if !all_valid {
                tracing::warn!("virtio: driver set DRIVER_OK with an invalid queue; device failed");
                self.status |= VIRTIO_CONFIG_S_FAILED;
                return;
            }
            // The device takes the configured queues; ours stay behind only
            // to answer QueueReady reads.
            let active =
                std::mem::replace(&mut self.queues, Self::fresh_queues(self.device.as_ref()));
            for (mine, theirs) in self.queues.iter_mut().zip(&active) {
                mine.set_ready(theirs.ready());
            }
            self.device
                .activate(self.mem.clone(), active, self.driver_features);
            self.activated = true;
        }
    }

    fn reset(&mut self) {
        self.device.reset();
        self.queues = Self::fresh_queues(self.device.as_ref());
        self.status = 0;
        self.driver_features = 0;
        self.queue_sel = 0;
        self.activated = false;
        self.irq.ack(u32::MAX);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::virtio::console::Console;
    use crate::vstate::vm::Vm;

    /// A console's transport on a real VM (an irqfd needs one); None when
    /// this host has no usable /dev/kvm.
    fn transport() -> Option<(Vm, MmioTransport)> {
        let mut vm = match Vm::new(std::path::Path::new("/dev/kvm")) {
            Ok(vm) => vm,
            Err(e) => {
                eprintln!("skipped: {e}");
                return None;
            }
        };
        vm.setup_irqchip(false).unwrap();
        let irq = IrqLine::new(vm.fd(), 5).unwrap();
        let mem = crate::memory::create_guest_memory(crate::memory::MIN_MEM_MIB).unwrap();
        let t = MmioTransport::new(Box::new(Console::new(None)), irq, mem);
        Some((vm, t))
    }

    #[test]
    fn a_bad_saved_state_is_refused_naming_the_device_and_the_queue() {
        let Some((_vm, mut t)) = transport() else {
            return;
        };
        let good = t.save_state();

        let mut s = good.clone();
        s.device_type = 2;
        let e = t.restore_state(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot state: the snapshot has a virtio-blk where this VM has a virtio-console"
        );

        let mut s = good.clone();
        s.queues.pop();
        let e = t.restore_state(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot state: virtio-console has 1 queues in the snapshot, the device has 2"
        );

        let mut s = good.clone();
        s.queues[1].size = 3;
        let e = t.restore_state(&s).unwrap_err();
        assert!(matches!(e, DeviceError::BadQueue { .. }), "{e:?}");
        assert!(
            e.to_string()
                .starts_with("snapshot state: virtio-console queue 1 (size 3 of at most 64,"),
            "{e}"
        );

        let mut s = good.clone();
        s.activated = true;
        let q = &mut s.queues[1];
        (q.ready, q.desc_table, q.avail_ring, q.used_ring) =
            (true, 1 << 40, (1 << 40) + 0x1000, (1 << 40) + 0x2000);
        let e = t.restore_state(&s).unwrap_err();
        assert_eq!(
            e.to_string(),
            "snapshot state: virtio-console queue 1 (size 64 of at most 64, descriptor table at 0x10000000000, available ring at 0x10000001000, used ring at 0x10000002000) lies outside guest memory"
        );

        // The saved state as it was restores.
        t.restore_state(&good).unwrap();
    }
}
