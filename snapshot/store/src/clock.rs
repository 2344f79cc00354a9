//! The one clock records, snapshots and reports are stamped with.

/// Host `CLOCK_REALTIME` in nanoseconds since the Unix epoch (0 if the
/// clock reads before the epoch).
pub fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
