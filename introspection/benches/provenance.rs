//! What provenance costs a lift step, in one run: `cargo bench -p
//! introspection --bench provenance`.
//!
//! A step is a diff by the recorder's decoder (the baseline); with
//! provenance it also hashes the blocks read (their numbers and store
//! keys) and every change it found (`introspection::provenance`). Two
//! steps of a 2000-record JSON document held in 512 blocks (2 MiB): its
//! first decode (2000 inserts: the most changes per step) and one record
//! updated (one change: the blocks' hash dominates).
mod common;

use std::hint::black_box;
use std::time::Duration;

use common::best;

use introspection::decode::registry;
use introspection::decode::DecodeLimits;
use introspection::provenance::{reads_hash, BlockRead, StepInputs};

fn document(changed: Option<usize>) -> Vec<u8> {
    let records: Vec<String> = (0..2000)
        .map(|i| {
            let name = if Some(i) == changed {
                "changed".to_string()
            } else {
                format!("customer {i}")
            };
            format!(
                r#"{{"id":{i},"name":"{name}","balance":{},"tags":["a","b"]}}"#,
                i as f64 * 1.5
            )
        })
        .collect();
    let mut doc = format!(r#"{{"records":[{}]}}"#, records.join(",")).into_bytes();
    doc.resize(2 << 20, 0);
    doc
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let json = registry::lookup("json").unwrap();
    let hints = introspection::lift::parse_schema(json.format, "/records:id");
    let limits = DecodeLimits::default();
    let v1 = document(None);
    let v2 = document(Some(777));
    let reads: Vec<BlockRead> = (0..512u64)
        .map(|block| BlockRead {
            block: 4096 + block,
            hash: *blake3::hash(&block.to_le_bytes()).as_bytes(),
        })
        .collect();
    println!(
        "Provenance cost per lift step: JSON document of 2000 records in 512 blocks, best of 15, alternated"
    );
    println!(
        "{:<34} {:>8} {:>12} {:>8}",
        "step", "changes", "ms (bare)", "x bare"
    );
    for (name, old, new) in [
        ("first decode (all inserts)", &[][..], &v1),
        ("one record updated", &v1[..], &v2),
    ] {
        // Alternated, the best of each kept: load that comes and goes
        // hits both alike.
        let mut n = 0;
        let (mut bare, mut with) = (Duration::MAX, Duration::MAX);
        for _ in 0..15 {
            bare = bare.min(best(1, || {
                n = black_box(json.diff(old, new, &hints, &limits).unwrap()).len();
            }));
            with = with.min(best(1, || {
                let changes = json.diff(old, new, &hints, &limits).unwrap();
                let step = StepInputs {
                    decoder: json,
                    reads: reads_hash(&reads),
                    base: None,
                };
                black_box(step.provenance(&changes));
            }));
        }
        println!(
            "{name:<34} {n:>8} {:>12.3} {:>8.3}",
            bare.as_secs_f64() * 1e3,
            with.as_secs_f64() / bare.as_secs_f64()
        );
    }
}
