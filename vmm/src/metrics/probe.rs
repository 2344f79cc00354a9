//! The VMM's side of the per-step metrics records: at each barrier (on the
//! recording thread) the differences of the live counters since the
//! previous barrier, plus the VMM's RSS; and the barrier's store and log
//! figures added to the live counters for the Prometheus endpoint.
use std::sync::Arc;
use std::time::Instant;

use changelog::metrics::{ExitCounts, StepMetrics};
use introspection::tap::StepProbe;

use super::counters::Counters;
use store::clock::rss_kib;

/// Counter readings at one barrier.
#[derive(Debug, Clone, Copy, Default)]
struct Reading {
    vcpu_ns: u64,
    recorder_ns: u64,
    pio: u64,
    mmio: u64,
    other: u64,
    read: u64,
    written: u64,
}

impl Reading {
    fn take(c: &Counters) -> Self {
        Reading {
            vcpu_ns: c.vcpu_cpu.total_ns(),
            recorder_ns: c.recorder_cpu.total_ns(),
            pio: Counters::get(&c.pio_exits),
            mmio: Counters::get(&c.mmio_exits),
            other: c.other_exits(),
            read: Counters::get(&c.guest_read_bytes),
            written: Counters::get(&c.guest_written_bytes),
        }
    }
}

/// Plugged into the block tap ([`introspection::BlockTap::set_step_probe`]).
pub struct VmProbe {
    counters: Arc<Counters>,
    /// This run's id in the records: its start, Unix ns.
    run: u64,
    last: Reading,
    last_at: Instant,
}

impl VmProbe {
    /// A probe whose first interval starts now.
    pub fn new(counters: Arc<Counters>) -> Self {
        let run = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let last = Reading::take(&counters);
        VmProbe {
            counters,
            run,
            last,
            last_at: Instant::now(),
        }
    }
}

impl StepProbe for VmProbe {
    fn fill(&mut self, m: &mut StepMetrics) {
        let now = Reading::take(&self.counters);
        let at = Instant::now();
        let last = std::mem::replace(&mut self.last, now);
        let d = |a: u64, b: u64| a.saturating_sub(b);
        m.run = self.run;
        m.interval_ns = at.duration_since(self.last_at).as_nanos() as u64;
        self.last_at = at;
        m.vcpu_ns = d(now.vcpu_ns, last.vcpu_ns);
        m.recorder_ns = d(now.recorder_ns, last.recorder_ns);
        m.exits = ExitCounts {
            pio: d(now.pio, last.pio),
            mmio: d(now.mmio, last.mmio),
            other: d(now.other, last.other),
        };
        m.guest_read_bytes = d(now.read, last.read);
        m.guest_written_bytes = d(now.written, last.written);
        m.rss_kib = rss_kib();
        m.vmm_version = crate::BUILD_VERSION.to_string();
        let c = &self.counters;
        Counters::add(&c.barriers, 1);
        Counters::add(&c.new_objects, m.new_objects);
        Counters::add(&c.stored_bytes, m.stored_bytes);
        Counters::add(&c.logged_bytes, m.logged_bytes);
    }
}
