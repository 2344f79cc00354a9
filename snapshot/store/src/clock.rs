//! The one clock records, snapshots and reports are stamped with, and
//! the readings of what a process costs (CPU clocks, resident memory) that
//! recording, replay and the metrics share.

/// Host `CLOCK_REALTIME` in nanoseconds since the Unix epoch (0 if the
/// clock reads before the epoch).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Reads a CPU clock (`CLOCK_THREAD_CPUTIME_ID`, a thread's
/// `pthread_getcpuclockid`, `CLOCK_PROCESS_CPUTIME_ID`) in ns; `None` for
/// a clock that no longer exists.
pub fn clock_ns(clock: libc::clockid_t) -> Option<u64> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; a stale clock id fails with EINVAL.
    if unsafe { libc::clock_gettime(clock, &mut ts) } != 0 {
        return None;
    }
    Some(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
}

/// CPU time of this whole process (every thread), in ns.
pub fn process_cpu_ns() -> u64 {
    clock_ns(libc::CLOCK_PROCESS_CPUTIME_ID).unwrap_or(0)
}

/// Resident memory of this process, in KiB (/proc/self/statm: cheaper to
/// read at every barrier than /proc/self/status).
pub fn rss_kib() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    pages * page / 1024
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_process_has_memory_and_spends_cpu() {
        assert!(super::rss_kib() > 0);
        let before = super::process_cpu_ns();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        assert!(std::hint::black_box(x) != 1);
        assert!(super::process_cpu_ns() > before);
    }
}
