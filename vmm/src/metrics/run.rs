//! What one whole run cost (a drill's check VM, each point `vmm tune`
//! tries): read from the run's [`Counters`] once it has ended.
use serde::Serialize;

use super::counters::Counters;

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct RunMetrics {
    /// Wall time from building the VM to the guest's exit, in ms.
    pub time_ms: f64,
    /// CPU time of the vCPU threads, in ms (on this PVM host it includes
    /// the guest's own execution).
    pub vcpu_ms: f64,
    /// VM exits: all, and by kind.
    pub exits: u64,
    pub pio_exits: u64,
    pub mmio_exits: u64,
    pub other_exits: u64,
    /// Bytes the guest read and wrote through virtio-blk.
    pub guest_read_bytes: u64,
    pub guest_written_bytes: u64,
    /// Time guest disk requests waited for the IOPS limit, in ms.
    pub throttled_ms: f64,
}

impl RunMetrics {
    /// The counters of a run that took `time` from build to exit.
    pub fn of(counters: &Counters, time: std::time::Duration) -> Self {
        let ms = |ns: u64| ns as f64 / 1e6;
        RunMetrics {
            time_ms: time.as_secs_f64() * 1e3,
            vcpu_ms: ms(counters.vcpu_cpu.total_ns()),
            exits: Counters::get(&counters.exits),
            pio_exits: Counters::get(&counters.pio_exits),
            mmio_exits: Counters::get(&counters.mmio_exits),
            other_exits: counters.other_exits(),
            guest_read_bytes: Counters::get(&counters.guest_read_bytes),
            guest_written_bytes: Counters::get(&counters.guest_written_bytes),
            throttled_ms: ms(Counters::get(&counters.throttled_ns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metrics_are_the_counters_in_their_units() {
        let c = Counters::default();
        Counters::add(&c.exits, 10);
        Counters::add(&c.pio_exits, 3);
        Counters::add(&c.mmio_exits, 5);
        Counters::add(&c.guest_read_bytes, 4096);
        Counters::add(&c.throttled_ns, 2_500_000);
        let m = RunMetrics::of(&c, std::time::Duration::from_millis(1500));
        assert_eq!(m.time_ms, 1500.0);
        assert_eq!(
            (m.exits, m.pio_exits, m.mmio_exits, m.other_exits),
            (10, 3, 5, 2)
        );
        assert_eq!(m.guest_read_bytes, 4096);
        assert_eq!(m.throttled_ms, 2.5);
    }
}
