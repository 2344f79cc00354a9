//! What each replayed interval cost: from one barrier to the next, the
//! records and writes applied, the bytes written to the image, the wall
//! time, the CPU time of the replay (its reading-ahead and applying
//! threads: the process's CPU clock) and the resident memory at the
//! barrier. The same questions the recorder's metrics records answer for
//! a run (`changelog::metrics`), asked of a replay.
use serde::Serialize;
use std::time::Instant;

/// One replayed interval, ending at the barrier `barrier`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ReplayStep {
    pub barrier: u64,
    pub records: u64,
    pub writes: u64,
    pub bytes_written: u64,
    pub interval_ns: u64,
    pub cpu_ns: u64,
    pub rss_kib: u64,
}

/// Totals and extremes over a replay's intervals.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepTotals {
    pub intervals: u64,
    pub interval_ns: u64,
    pub cpu_ns: u64,
    pub bytes_written: u64,
    pub max_interval_ns: u64,
    pub max_cpu_ns: u64,
    pub peak_rss_kib: u64,
}

impl StepTotals {
    pub fn add(&mut self, s: &ReplayStep) {
        self.intervals += 1;
        self.interval_ns += s.interval_ns;
        self.cpu_ns += s.cpu_ns;
        self.bytes_written += s.bytes_written;
        self.max_interval_ns = self.max_interval_ns.max(s.interval_ns);
        self.max_cpu_ns = self.max_cpu_ns.max(s.cpu_ns);
        self.peak_rss_kib = self.peak_rss_kib.max(s.rss_kib);
    }
}

/// Counts the interval in progress.
pub(crate) struct Meter {
    started: Instant,
    cpu_at_start: u64,
    step: ReplayStep,
}

impl Meter {
    pub(crate) fn start() -> Self {
        Self {
            started: Instant::now(),
            cpu_at_start: store::clock::process_cpu_ns(),
            step: ReplayStep::default(),
        }
    }

    pub(crate) fn record(&mut self) {
        self.step.records += 1;
    }

    pub(crate) fn write(&mut self, bytes: u64) {
        self.step.writes += 1;
        self.step.bytes_written += bytes;
    }

    /// Ends the interval at barrier `seq` and starts the next.
    pub(crate) fn barrier(&mut self, seq: u64) -> ReplayStep {
        let cpu = store::clock::process_cpu_ns();
        let step = ReplayStep {
            barrier: seq,
            interval_ns: self.started.elapsed().as_nanos() as u64,
            cpu_ns: cpu.saturating_sub(self.cpu_at_start),
            rss_kib: store::clock::rss_kib(),
            ..self.step
        };
        *self = Self {
            started: Instant::now(),
            cpu_at_start: cpu,
            step: ReplayStep::default(),
        };
        step
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_interval_counts_what_was_applied_and_the_next_starts_afresh() {
        let mut m = Meter::start();
        m.record();
        m.write(8192);
        m.record();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let s = m.barrier(7);
        assert_eq!(
            (s.barrier, s.records, s.writes, s.bytes_written),
            (7, 2, 1, 8192)
        );
        assert!(s.interval_ns >= 2_000_000 && s.rss_kib > 0);
        let next = m.barrier(9);
        assert_eq!((next.records, next.writes), (0, 0));
        let mut t = StepTotals::default();
        t.add(&s);
        t.add(&next);
        assert_eq!((t.intervals, t.bytes_written), (2, 8192));
        assert_eq!(t.max_interval_ns, s.interval_ns.max(next.interval_ns));
    }
}
