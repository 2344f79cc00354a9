//! Running the vCPUs: one thread per vCPU, like Firecracker. The thread
//! that calls `Machine::run` runs vCPU 0 (the boot CPU, which also answers
//! the control socket and the watchdog); each further vCPU gets a thread
//! of its own for a *run period*, and the devices are shared behind a lock
//! (an exit costs ~35 us here; an uncontended lock ~20 ns).
//!
//! A period ends when any vCPU has something for the machine: the guest
//! wrote the exit or snapshot port, a control request came, a snapshot's
//! pre-copy round ended, a stop signal, or an error. That vCPU records the outcome (the first one wins), sets
//! `stop` and kicks every other vCPU thread out of KVM_RUN (SIGRTMIN,
//! repeated until each has left its loop: a kick that lands just before
//! KVM_RUN is lost). Before a thread leaves, a KVM_RUN with
//! `immediate_exit` completes any port or MMIO access KVM still holds
//! (KVM documents this before saving state), without entering the guest.
//! Then every vCPU is stopped and owned by the machine again: a snapshot,
//! a pause or a request sees the whole VM still, and the next period
//! starts the threads afresh.
//!
//! Application processors are started in the same PVH state as the boot
//! CPU and runnable at once (no INIT/SIPI: their real-mode trampoline
//! would be emulated here); the guest tells them apart by the initial APIC
//! id, which is the vCPU's index.
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ::snapshot::SnapshotKind;
use kvm_ioctls::VcpuExit;

use super::watchdog::{self, Watchdog};
use super::{mmio_device, Exit, Machine, Stop};
use crate::api::Api;
use crate::devices::serial::SerialDevice;
use crate::devices::virtio::mmio::MmioTransport;
use crate::devices::{exit_status_from_guest, EXIT_PORT, SNAPSHOT_PORT};
use crate::error::{Result, VmmError};
use crate::memory::lazy::LazyMemory;
use crate::metrics::Counters;
use crate::vstate::vcpu::Vcpu;

pub use crate::vstate::vcpu::MAX_VCPUS;
/// How often a vCPU that ended a period re-kicks the others.
const KICK_INTERVAL: Duration = Duration::from_millis(1);

/// The devices every vCPU reaches by port I/O and MMIO.
struct Bus<'a> {
    serial: &'a mut SerialDevice,
    virtio: &'a mut [MmioTransport],
}

/// What only vCPU 0's thread looks after.
struct BootDuties<'a> {
    watchdog: Option<&'a Watchdog>,
    api: Option<&'a Api>,
    lazy: Option<&'a LazyMemory>,
    timeout: Option<Duration>,
    /// Set when a snapshot's pre-copy round is done (its thread then
    /// kicks this one).
    precopy: Option<Arc<AtomicBool>>,
}

/// A vCPU thread's place in a period: its pthread id (0 until it runs)
/// and whether it is still in its loop.
struct Slot {
    thread: AtomicUsize,
    active: AtomicBool,
}

/// What the vCPU threads of one run period share.
struct Period<'a> {
    bus: Mutex<Bus<'a>>,
    snapshots_on: bool,
    counters: &'a Counters,
    stop: AtomicBool,
    outcome: Mutex<Option<Result<Exit>>>,
    slots: Vec<Slot>,
}

impl Machine {
    /// Runs every vCPU until one of them ends the period (see the module
    /// doc); returns why.
    pub(super) fn run_period(
        &mut self,
        watchdog: Option<&Watchdog>,
        api: Option<&Api>,
    ) -> Result<Exit> {
        let period = Period {
            bus: Mutex::new(Bus {
                serial: &mut self.serial,
                virtio: &mut self.virtio,
            }),
            snapshots_on: self.snapshots.is_some(),
            counters: &self.counters,
            stop: AtomicBool::new(false),
            outcome: Mutex::new(None),
            slots: (0..self.vcpus.len())
                .map(|_| Slot {
                    thread: AtomicUsize::new(0),
                    active: AtomicBool::new(true),
                })
                .collect(),
        };
        let duties = BootDuties {
            watchdog,
            api,
            lazy: self.lazy.as_ref(),
            timeout: self.timeout,
            precopy: self.snapshots.as_ref().and_then(|c| c.precopy_ready()),
        };
        let (boot, aps) = self
            .vcpus
            .split_first_mut()
            .expect("a machine has at least one vCPU");
        if !aps.is_empty() {
            watchdog::install_kick_handler();
        }
        std::thread::scope(|scope| {
            for (i, ap) in aps.iter_mut().enumerate() {
                let period = &period;
                let spawned = std::thread::Builder::new()
                    .name(format!("vcpu{}", ap.index))
                    .spawn_scoped(scope, move || {
                        let _clock = period.counters.vcpu_cpu.register();
                        let ended = period.vcpu_loop(i + 1, ap, None);
                        period.finish(i + 1, ended);
                    });
                if let Err(e) = spawned {
                    period.slots[i + 1].active.store(false, SeqCst);
                    period.finish(
                        0,
                        Some(Err(VmmError::BootSetup(format!(
                            "starting the thread of vCPU {}: {e}",
                            i + 1
                        )))),
                    );
                    return;
                }
            }
            let ended = period.vcpu_loop(0, boot, Some(&duties));
            period.finish(0, ended);
        });
        period
            .outcome
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .expect("a period ends with an outcome")
    }
}

impl<'a> Period<'a> {
    /// Records `ended` (the first outcome wins), stops the period and kicks
    /// every other vCPU thread until each has left its loop.
    fn finish(&self, me: usize, ended: Option<Result<Exit>>) {
        if let Some(ended) = ended {
            let mut outcome = self.outcome.lock().unwrap_or_else(|e| e.into_inner());
            outcome.get_or_insert(ended);
        }
        self.stop.store(true, SeqCst);
        self.slots[me].active.store(false, SeqCst);
        loop {
            let mut waiting = false;
            for (i, slot) in self.slots.iter().enumerate() {
                if i == me || !slot.active.load(SeqCst) {
                    continue;
                }
                waiting = true;
                let thread = slot.thread.load(SeqCst);
                if thread != 0 {
                    // SAFETY: the thread is alive or exited but not yet
                    // joined (the period's scope joins them after this):
                    // its id is valid either way.
                    unsafe {
                        libc::pthread_kill(
                            thread as libc::pthread_t,
                            vmm_sys_util::signal::SIGRTMIN(),
                        )
                    };
                }
            }
            if !waiting {
                return;
            }
            std::thread::sleep(KICK_INTERVAL);
        }
    }

    /// Runs `vcpu` until it has an outcome for the machine (Some) or
    /// another vCPU stopped the period (None).
    fn vcpu_loop(
        &self,
        me: usize,
        vcpu: &mut Vcpu,
        duties: Option<&BootDuties>,
    ) -> Option<Result<Exit>> {
        // SAFETY: pthread_self has no preconditions.
        self.slots[me]
            .thread
            .store(unsafe { libc::pthread_self() } as usize, SeqCst);
        let ended = self.run_vcpu(vcpu, duties);
        complete_pending_io(vcpu);
        ended
    }

    fn run_vcpu(&self, vcpu: &mut Vcpu, duties: Option<&BootDuties>) -> Option<Result<Exit>> {
        let counters = self.counters;
        loop {
            if self.stop.load(SeqCst) {
                return None;
            }
            if let Some(d) = duties {
                // Before every entry: a stop signal ends the run here,
                // between two exits, where the machine is consistent.
                if let Some(signal) = crate::shutdown::requested() {
                    return Some(Ok(Exit::Signal(signal)));
                }
                // A page a lazy restore could not bring in: the guest must
                // not run on without it.
                if let Some(e) = d.lazy.and_then(|l| l.error()) {
                    return Some(Err(e.into()));
                }
            }
            let stop = match vcpu.fd.run() {
                Ok(exit) => {
                    Counters::add(&counters.exits, 1);
                    match exit {
                        VcpuExit::IoOut(port, data) => {
                            Counters::add(&counters.pio_exits, 1);
                            if port == EXIT_PORT {
                                let mut word = [0u8; 4];
                                let n = data.len().min(4);
                                word[..n].copy_from_slice(&data[..n]);
                                return Some(Ok(Exit::Guest(exit_status_from_guest(
                                    u32::from_le_bytes(word),
                                ))));
                            }
                            if port == SNAPSHOT_PORT && self.snapshots_on {
                                let kind = if data.first() == Some(&2) {
                                    SnapshotKind::Incremental
                                } else {
                                    SnapshotKind::Full
                                };
                                return Some(Ok(Exit::Snapshot(kind)));
                            }
                            if SerialDevice::contains(port) {
                                self.bus().serial.pio_write(port, data[0]);
                            }
                            None
                        }
                        VcpuExit::IoIn(port, data) => {
                            Counters::add(&counters.pio_exits, 1);
                            if SerialDevice::contains(port) {
                                data[0] = self.bus().serial.pio_read(port);
                            } else {
                                // No device: the bus floats high.
                                data.fill(0xff);
                            }
                            None
                        }
                        VcpuExit::MmioRead(addr, data) => {
                            Counters::add(&counters.mmio_exits, 1);
                            let mut bus = self.bus();
                            match mmio_device(bus.virtio, addr) {
                                Some((dev, offset)) => dev.read(offset, data),
                                None => data.fill(0),
                            }
                            None
                        }
                        VcpuExit::MmioWrite(addr, data) => {
                            Counters::add(&counters.mmio_exits, 1);
                            let mut bus = self.bus();
                            if let Some((dev, offset)) = mmio_device(bus.virtio, addr) {
                                dev.write(offset, data);
                            }
                            None
                        }
                        VcpuExit::Shutdown => Some(Stop::Shutdown),
                        VcpuExit::InternalError => Some(Stop::InternalError),
                        VcpuExit::FailEntry(reason, _) => Some(Stop::FailEntry(reason)),
                        VcpuExit::Hlt => Some(Stop::Other(
                            "HLT with no in-kernel interrupt to wake the vCPU".into(),
                        )),
                        other => Some(Stop::Other(format!("{other:?}"))),
                    }
                }
                Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                    if let Some(d) = duties {
                        if d.watchdog.is_some_and(Watchdog::fired) {
                            return Some(Err(VmmError::Timeout(
                                d.timeout.unwrap_or_default().as_secs(),
                            )));
                        }
                    }
                    None
                }
                Err(source) => {
                    return Some(Err(VmmError::Kvm {
                        step: "running the vCPU",
                        source,
                    }))
                }
            };
            if let Some(stop) = stop {
                return Some(Err(stop.into_error(vcpu)));
            }
            if duties
                .and_then(|d| d.precopy.as_ref())
                .is_some_and(|r| r.load(SeqCst))
            {
                return Some(Ok(Exit::Precopy));
            }
            if let Some(request) = duties
                .and_then(|d| d.api)
                .and_then(|a| a.requests.try_recv().ok())
            {
                return Some(Ok(Exit::Api(request)));
            }
        }
    }

    fn bus(&self) -> std::sync::MutexGuard<'_, Bus<'a>> {
        self.bus.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Lets KVM finish a port or MMIO access whose data the VMM just supplied
/// (KVM_RUN with `immediate_exit` completes it and returns EINTR without
/// entering the guest), so that the vCPU's saved state is whole.
fn complete_pending_io(vcpu: &mut Vcpu) {
    vcpu.fd.set_kvm_immediate_exit(1);
    let _ = vcpu.fd.run();
    vcpu.fd.set_kvm_immediate_exit(0);
}

/// The vCPU count a machine is given: 1..=[`MAX_VCPUS`].
pub fn check_vcpus(vcpus: u8) -> Result<()> {
    if vcpus == 0 || vcpus > MAX_VCPUS {
        return Err(VmmError::Vcpus(vcpus));
    }
    Ok(())
}
