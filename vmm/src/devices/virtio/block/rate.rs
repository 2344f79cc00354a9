//! An IOPS limit for the guest's requests (`--disk-iops`): a token bucket
//! that refills at `iops` tokens a second and holds at most a tenth of a
//! second's worth (at least one), so a burst is short and a sustained
//! stream runs at the limit. Every guest request (read, write, zeroing,
//! flush) takes one token; a request that finds none waits for it, on the
//! thread that processes the queue: the device is synchronous, so the
//! guest sees a slower disk, as it would on throttled storage.
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct TokenBucket {
    iops: u64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket for `iops` operations a second (`iops` > 0).
    pub fn new(iops: u64, now: Instant) -> Self {
        let capacity = (iops as f64 / 10.0).max(1.0);
        Self {
            iops: iops.max(1),
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    pub fn iops(&self) -> u64 {
        self.iops
    }

    /// Takes a token for one operation at `now`; how long the operation
    /// must wait for it (zero when the bucket had one).
    pub fn take(&mut self, now: Instant) -> Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.iops as f64).min(self.capacity);
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            return Duration::ZERO;
        }
        // The debt is paid by the refill: the wait is how long that takes.
        Duration::from_secs_f64(-self.tokens / self.iops as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_passes_then_operations_are_paced_at_the_limit() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(100, t0);
        // A tenth of a second's worth goes at once...
        for _ in 0..10 {
            assert_eq!(bucket.take(t0), Duration::ZERO);
        }
        // ...then each operation waits 10 ms more than the one before.
        let waits: Vec<Duration> = (0..3).map(|_| bucket.take(t0)).collect();
        for (i, w) in waits.iter().enumerate() {
            let want = 0.01 * (i + 1) as f64;
            assert!((w.as_secs_f64() - want).abs() < 1e-9, "{waits:?}");
        }
    }

    #[test]
    fn a_steady_stream_at_the_limit_never_waits_and_idle_time_does_not_pile_up() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(1000, t0);
        for i in 1..=5000u64 {
            let now = t0 + Duration::from_micros(i * 1000);
            assert_eq!(bucket.take(now), Duration::ZERO, "op {i}");
        }
        // A long idle spell fills the bucket only to its capacity (100).
        let later = t0 + Duration::from_secs(60);
        let waited = (0..101).filter(|_| !bucket.take(later).is_zero()).count();
        assert_eq!(waited, 1);
    }

    #[test]
    fn a_low_limit_still_allows_one_operation_at_once() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2, t0);
        assert_eq!(bucket.take(t0), Duration::ZERO);
        assert_eq!(bucket.take(t0), Duration::from_millis(500));
    }
}
