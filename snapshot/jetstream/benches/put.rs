//! Pipelined 4 KiB block puts to a 3-node loopback JetStream cluster vs
//! writing the same blocks to a local file with an fsync per 64 blocks;
//! prints MB/s of both and their ratio, measured in the same run.
//!
//! The cluster side is measured twice: waiting for the acks every 64
//! blocks (the same durability cadence as the file's fsync) and every 1024
//! blocks (a guest FLUSH covering more data). Size: `JS_BENCH_MB` (default 64).

use std::io::Write;
use std::time::{Duration, Instant};

use jetstream::cluster::TestCluster;
use jetstream::{Nats, ObjectId};

const BLOCK: usize = 4096;

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

fn cluster_put(nats: &Nats, bucket: &str, data: &[Vec<u8>], ack_every: usize) -> Duration {
    let objects = nats.object_bucket(bucket, 3).expect("object bucket");
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

fn main() {
    let mb: usize = std::env::var("JS_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(64);
    let n = mb * 1_000_000 / BLOCK;
    let Some(cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let nats = Nats::connect(&cluster.urls(), Duration::from_secs(10)).expect("connect");
    let bytes = n * BLOCK;

    let file = file_write(&blocks(n, 1));
    let js64 = cluster_put(&nats, "bench64", &blocks(n, 2), 64);
    let js1024 = cluster_put(&nats, "bench1024", &blocks(n, 3), 1024);

    let file_mbps = mbps(bytes, file);
    println!(
        "{n} blocks of 4 KiB ({:.1} MB), 3-node loopback cluster, replicas 3",
        bytes as f64 / 1e6
    );
    println!("local file, fsync per 64 blocks:  {file_mbps:8.1} MB/s");
    for (label, took) in [
        ("acks awaited per 64 blocks", js64),
        ("acks awaited per 1024 blocks", js1024),
    ] {
        let js_mbps = mbps(bytes, took);
        println!(
            "jetstream put_many, {label}: {js_mbps:8.1} MB/s  ratio vs file {:.2}x",
            js_mbps / file_mbps
        );
    }
}
