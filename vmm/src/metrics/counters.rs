//! The live counters of one VMM process: what the run loop, the block
//! device and the recorder count as they go, read both by the per-step
//! metrics records (`super::probe`) and by the Prometheus endpoint
//! (`super::http`). Plain relaxed atomics: an increment costs a few ns
//! against an exit's ~35 us, and readers need no consistent cut.
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use store::clock::clock_ns;

/// Counters shared by the machine's threads.
#[derive(Debug, Default)]
pub struct Counters {
    /// VM exits the run loop handled: all of them, and port I/O and MMIO.
    pub exits: AtomicU64,
    pub pio_exits: AtomicU64,
    pub mmio_exits: AtomicU64,
    /// Bytes the guest read and wrote through virtio-blk.
    pub guest_read_bytes: AtomicU64,
    pub guest_written_bytes: AtomicU64,
    /// Time guest disk requests waited for the IOPS limit (`--disk-iops`).
    pub throttled_ns: AtomicU64,
    /// Barriers recorded, and what they added to the content store (after
    /// dedup): counted by the probe at each barrier.
    pub barriers: AtomicU64,
    pub new_objects: AtomicU64,
    pub stored_bytes: AtomicU64,
    pub logged_bytes: AtomicU64,
    /// CPU clocks of the vCPU thread(s) and of the recording thread.
    pub vcpu_cpu: Arc<ThreadClocks>,
    pub recorder_cpu: Arc<ThreadClocks>,
}

impl Counters {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }

    /// Exits that were neither port I/O nor MMIO.
    pub fn other_exits(&self) -> u64 {
        Self::get(&self.exits)
            .saturating_sub(Self::get(&self.pio_exits) + Self::get(&self.mmio_exits))
    }
}

/// The CPU time a set of threads spent while registered, readable from
/// any thread while they run (their POSIX CPU clocks) and kept once they
/// stop (each adds its final time when its [`ClockGuard`] drops).
#[derive(Debug, Default)]
pub struct ThreadClocks {
    /// Each running thread's clock and its reading when registered.
    live: Mutex<Vec<(libc::clockid_t, u64)>>,
    finished_ns: AtomicU64,
}

/// Keeps the calling thread counted in a [`ThreadClocks`] until dropped
/// (on that same thread).
pub struct ClockGuard {
    clocks: Arc<ThreadClocks>,
    clock: Option<libc::clockid_t>,
}

impl ThreadClocks {
    /// Counts the calling thread's CPU time from now on (not what it spent
    /// before: the machine's set-up is not the guest's) until the guard
    /// drops.
    pub fn register(self: &Arc<Self>) -> ClockGuard {
        let mut clock: libc::clockid_t = 0;
        // SAFETY: pthread_self is always valid; `clock` is a valid out-pointer.
        let ok = unsafe { libc::pthread_getcpuclockid(libc::pthread_self(), &mut clock) } == 0;
        let clock = ok.then_some(clock);
        if let Some(c) = clock {
            let start = clock_ns(c).unwrap_or(0);
            let mut live = self.live.lock().unwrap_or_else(|e| e.into_inner());
            live.push((c, start));
        }
        ClockGuard {
            clocks: self.clone(),
            clock,
        }
    }

    /// CPU time of every registered thread, in ns.
    pub fn total_ns(&self) -> u64 {
        let live = self.live.lock().unwrap_or_else(|e| e.into_inner());
        let running: u64 = live
            .iter()
            .filter_map(|&(c, start)| Some(clock_ns(c)?.saturating_sub(start)))
            .sum();
        running + self.finished_ns.load(Relaxed)
    }
}

impl Drop for ClockGuard {
    fn drop(&mut self) {
        let Some(clock) = self.clock else { return };
        let mut live = self.clocks.live.lock().unwrap_or_else(|e| e.into_inner());
        // Moved from live to finished under the lock: a reader never sees
        // the thread twice or not at all.
        if let Some(i) = live.iter().position(|&(c, _)| c == clock) {
            let (_, start) = live.swap_remove(i);
            let now = clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap_or(start);
            let spent = now.saturating_sub(start);
            self.clocks.finished_ns.fetch_add(spent, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Spends `ms` of this thread's CPU time (not wall time: on a loaded
    /// machine the two differ).
    fn burn(ms: u64) {
        let cpu = || clock_ns(libc::CLOCK_THREAD_CPUTIME_ID).unwrap();
        let start = cpu();
        let mut x = 0u64;
        while cpu() - start < ms * 1_000_000 {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
        }
    }

    #[test]
    fn thread_cpu_time_is_read_live_and_kept_after_the_thread_ends() {
        let counters = std::sync::Arc::new(Counters::default());
        let c = counters.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        let (go, wait) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            let _guard = c.vcpu_cpu.register();
            burn(30);
            tx.send(()).unwrap();
            wait.recv().unwrap();
            burn(20);
        });
        rx.recv().unwrap();
        let live = counters.vcpu_cpu.total_ns();
        assert!(live >= 20_000_000, "{live}");
        go.send(()).unwrap();
        t.join().unwrap();
        let done = counters.vcpu_cpu.total_ns();
        assert!(done >= live + 10_000_000, "{live} -> {done}");
    }
}
