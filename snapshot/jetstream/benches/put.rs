//! Pipelined 4 KiB block puts to a 3-node loopback JetStream cluster vs
//! writing the same blocks to a local file with an fsync per 64 blocks;
//! prints MB/s of both and their ratio, measured in the same run.
//!
//! The cluster side is measured twice: waiting for the acks every 64
//! blocks (the same durability cadence as the file's fsync) and every 1024
//! blocks (a guest FLUSH covering more data), and once more with replicas
//! 1 to show what replication costs. Size per run: `JS_BENCH_MB` (default 32).

use std::io::Write;
use std::time::{Duration, Instant};

use jetstream::cluster::TestCluster;
use jetstream::{Nats, ObjectId};

const BLOCK: usize = 4096;
const ROUNDS: usize = 3;

/// Distinct, incompressible-looking blocks: BLAKE3's output stream keyed by
/// the run and the block number, so every run stores new objects.
fn blocks(n: usize, run: u64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut h = blake3::Hasher::new();
            h.update(&run.to_le_bytes());
            h.update(&(i as u64).to_le_bytes());
            let mut b = vec![0u8; BLOCK];
            h.finalize_xof().fill(&mut b);
            b
        })
        .collect()
}

fn mbps(bytes: usize, took: Duration) -> f64 {
    bytes as f64 / 1e6 / took.as_secs_f64()
}

fn cluster_put(
    nats: &Nats,
    bucket: &str,
    replicas: usize,
    data: &[Vec<u8>],
    ack_every: usize,
) -> Duration {
    let objects = nats.object_bucket(bucket, replicas).expect("object bucket");
    let items: Vec<(ObjectId, &[u8])> = data
        .iter()
        .map(|b| (*blake3::hash(b).as_bytes(), &b[..]))
        .collect();
    let start = Instant::now();
    for chunk in items.chunks(ack_every) {
        let new = objects.put_many(chunk).expect("put_many");
        assert!(new.iter().all(|&n| n), "benchmark blocks must be new");
    }
    start.elapsed()
}

fn file_write(data: &[Vec<u8>]) -> Duration {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).expect("temp dir");
    let mut f = std::fs::File::create(dir.path().join("blocks")).expect("create");
    let start = Instant::now();
    for (i, b) in data.iter().enumerate() {
        f.write_all(b).expect("write");
        if (i + 1) % 64 == 0 {
            f.sync_data().expect("fsync");
        }
    }
    f.sync_data().expect("fsync");
    start.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let mb: usize = std::env::var("JS_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(32);
    let n = mb * 1_000_000 / BLOCK;
    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let nats = Nats::connect(&cluster.urls(), Duration::from_secs(10)).expect("connect");
    let bytes = n * BLOCK;

    // The machine is shared: the methods take turns, ROUNDS times, and each
    // is reported by its median, so a burst of someone else's I/O or CPU
    // does not land on one method only.
    let mut file = Vec::new();
    let mut js = [Vec::new(), Vec::new(), Vec::new()];
    let configs = [
        ("replicas 3, acks awaited per 64 blocks", 3, 64),
        ("replicas 3, acks awaited per 1024 blocks", 3, 1024),
        ("replicas 1, acks awaited per 1024 blocks", 1, 1024),
    ];
    let mut run = 0;
    for round in 0..ROUNDS {
        run += 1;
        file.push(mbps(bytes, file_write(&blocks(n, run))));
        for (k, (_, replicas, every)) in configs.iter().enumerate() {
            run += 1;
            let bucket = format!("bench-{k}-{round}");
            let took = cluster_put(&nats, &bucket, *replicas, &blocks(n, run), *every);
            js[k].push(mbps(bytes, took));
        }
    }
    let file_mbps = median(file);
    println!(
        "{n} blocks of 4 KiB ({:.1} MB) per run, 3-node loopback cluster, median of {ROUNDS} rounds",
        bytes as f64 / 1e6
    );
    println!("local file, fsync per 64 blocks: {file_mbps:8.1} MB/s");
    for ((label, _, _), runs) in configs.iter().zip(js) {
        let js_mbps = median(runs);
        println!(
            "jetstream put_many, {label}: {js_mbps:8.1} MB/s  ratio vs file {:.2}x",
            js_mbps / file_mbps
        );
    }
}
