//! Replay to the last barrier of a 10,000-barrier log from the nearest
//! temporal checkpoint vs from the log's beginning, in one run:
//! `cargo bench -p replay --bench checkpoint`.
//!
//! The log: a 64 MiB disk, 4 one-block writes of fresh data at
//! xorshift-chosen blocks per barrier (40,000 writes), a checkpoint every
//! 1,000 barriers (the recorder's default), recorded by the block tap
//! itself. Both replays are verified (every barrier passed is checked) and
//! must give the same checksum. Wall time, best of ROUNDS, alternating.
use std::time::{Duration, Instant};

use changelog::log::BarrierKind;
use changelog::recording::RecordDir;
use introspection::tap::CheckpointPolicy;
use introspection::BlockTap;
use replay::{replay_to_file, Base, Options, Point};

const BARRIERS: u64 = 10_000;
const WRITES_PER_BARRIER: u64 = 4;
const DISK_BLOCKS: u64 = 16384;
const ROUNDS: usize = 5;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let image = tmp.path().join("disk.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(DISK_BLOCKS * 4096)
        .unwrap();
    let dir = RecordDir::new(tmp.path().join("rec"));
    let (mut tap, _) = BlockTap::open(&dir, "vm0", &image).unwrap();
    tap.set_checkpoint_policy(CheckpointPolicy {
        every_barriers: 1000,
        every_bytes: 0,
    });
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut block = vec![0u8; 4096];
    let started = Instant::now();
    for b in 0..BARRIERS {
        for w in 0..WRITES_PER_BARRIER {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            block[..8].copy_from_slice(&x.to_le_bytes());
            block[8..16].copy_from_slice(&(b * WRITES_PER_BARRIER + w).to_le_bytes());
            tap.record_write((x % DISK_BLOCKS) * 4096, block.as_slice())
                .unwrap();
        }
        tap.barrier(BarrierKind::Flush).unwrap();
    }
    let stats = tap.stats();
    tap.close().unwrap();
    println!(
        "recorded {} barriers, {} writes, {} checkpoints in {:.1} s",
        stats.barriers,
        stats.writes,
        stats.checkpoints,
        started.elapsed().as_secs_f64()
    );

    let out = tmp.path().join("out.img");
    let run = |checkpoints: bool| -> (Duration, String, u64) {
        let opts = Options {
            checkpoints,
            ..Options::default()
        };
        let t = Instant::now();
        let r = replay_to_file(&dir, "vm0", &Base::Empty, &Point::End, &out, opts).unwrap();
        let took = t.elapsed();
        std::fs::remove_file(&out).unwrap();
        assert!(r.verified);
        (took, r.checksum, r.records_read)
    };
    let (mut best_cp, mut best_all) = (Duration::MAX, Duration::MAX);
    let (mut read_cp, mut read_all) = (0, 0);
    for _ in 0..ROUNDS {
        let (t, sum_all, n) = run(false);
        best_all = best_all.min(t);
        read_all = n;
        let (t, sum_cp, n) = run(true);
        best_cp = best_cp.min(t);
        read_cp = n;
        assert_eq!(sum_all, sum_cp, "the same disk either way");
    }
    println!(
        "replay to the last barrier: from empty {:.0} ms ({read_all} records), from the nearest checkpoint {:.0} ms ({read_cp} records): {:.1}x faster",
        best_all.as_secs_f64() * 1e3,
        best_cp.as_secs_f64() * 1e3,
        best_all.as_secs_f64() / best_cp.as_secs_f64()
    );
}
