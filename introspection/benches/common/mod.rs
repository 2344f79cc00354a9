//! Helpers shared by the decoder benchmarks.
use std::time::{Duration, Instant};

/// The fastest of `n` runs of `f` (the least disturbed by other load).
pub fn best(n: usize, mut f: impl FnMut()) -> Duration {
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap()
}
