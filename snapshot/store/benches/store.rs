//! Content-store throughput against a plain copy of the same data, in one
//! run: `cargo bench -p store --bench store`.
//!
//! For each kind of data (random = incompressible, text-like, mixed) it
//! times: a memcpy (the baseline), BLAKE3 alone, zstd alone, and
//! `Store::put_batch` into a fresh store (hash + compress + pack write).
use std::hint::black_box;
use std::time::{Duration, Instant};

use store::Store;

const BLOCK: usize = 4096;
const TOTAL: usize = 128 << 20;
const BATCH: usize = 4096;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn data(kind: &str) -> Vec<u8> {
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let words = [
        "customer",
        "order",
        "invoice",
        "alice",
        "bob",
        "payment",
        "status",
        "shipped",
        "pending",
        "2026-11-21",
        "total",
        "EUR",
        "{\"id\":",
        "\"name\":",
        "},",
    ];
    let mut out = Vec::with_capacity(TOTAL);
    let mut block_no = 0u64;
    while out.len() < TOTAL {
        let random = match kind {
            "random" => true,
            "text" => false,
            _ => block_no % 2 == 0,
        };
        let start = out.len();
        if random {
            while out.len() < start + BLOCK {
                out.extend_from_slice(&rng.next().to_le_bytes());
            }
        } else {
            while out.len() < start + BLOCK {
                out.extend_from_slice(words[(rng.next() % words.len() as u64) as usize].as_bytes());
                out.push(b' ');
            }
            out.truncate(start + BLOCK);
            // Unique per block, so dedup does not flatter the numbers.
            out[start..start + 8].copy_from_slice(&block_no.to_le_bytes());
        }
        block_no += 1;
    }
    out
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn mbps(d: Duration) -> f64 {
    TOTAL as f64 / d.as_secs_f64() / 1e6
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    println!(
        "store benchmark: {} MiB in 4 KiB blocks, best of 3",
        TOTAL >> 20
    );
    println!(
        "{:<8} {:<26} {:>10} {:>12}",
        "data", "operation", "MB/s", "x memcpy"
    );
    for kind in ["random", "text", "mixed"] {
        let input = data(kind);
        let mut dst = vec![0u8; TOTAL];
        let copy = best_of(3, || {
            let t = Instant::now();
            dst.copy_from_slice(&input);
            black_box(&dst);
            t.elapsed()
        });
        let hash = best_of(3, || {
            let t = Instant::now();
            for b in input.chunks_exact(BLOCK) {
                black_box(blake3::hash(b));
            }
            t.elapsed()
        });
        let mut z = zstd::bulk::Compressor::new(1).unwrap();
        let mut zbuf = vec![0u8; BLOCK * 2];
        let mut zbytes = 0usize;
        let zstd = best_of(3, || {
            zbytes = 0;
            let t = Instant::now();
            for b in input.chunks_exact(BLOCK) {
                zbytes += z.compress_to_buffer(b, &mut zbuf).unwrap().min(BLOCK);
            }
            t.elapsed()
        });
        let mut stored = 0;
        let put = best_of(3, || {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path().join("store")).unwrap();
            let blocks: Vec<&[u8]> = input.chunks_exact(BLOCK).collect();
            let t = Instant::now();
            for batch in blocks.chunks(BATCH) {
                store.put_batch(batch).unwrap();
            }
            let d = t.elapsed();
            stored = store.stats().stored_bytes;
            d
        });
        let row = |op: &str, d: Duration| {
            println!(
                "{kind:<8} {op:<26} {:>10.0} {:>12.2}",
                mbps(d),
                copy.as_secs_f64() / d.as_secs_f64()
            );
        };
        row("memcpy (baseline)", copy);
        row("blake3 per block", hash);
        row(
            &format!(
                "zstd-1 per block ({:.0}%)",
                100.0 * zbytes as f64 / TOTAL as f64
            ),
            zstd,
        );
        row(
            &format!(
                "store put_batch ({:.0}%)",
                100.0 * stored as f64 / TOTAL as f64
            ),
            put,
        );
    }
}
