//! Opening a store of ~200k objects (the index of 1 GiB of 4 KiB pages):
//! from the index snapshot (`index.snap`, then the records after it) vs
//! replaying the whole `index.log`, with one read of `index.log` as the
//! baseline, in one run: `cargo bench -p store --bench open`.
use std::time::Instant;

use store::Store;

const OBJECTS: usize = 224 << 10;
const BATCH: usize = 4096;
const RUNS: usize = 9;
/// The goal for opening the store behind a lazy restore.
const GOAL_MS: f64 = 10.0;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    {
        // Small distinct objects: the index is what is measured, and it is
        // one 64-byte record per object whatever the object's size.
        let store = Store::open(dir).unwrap();
        let mut n = 0u64;
        while (n as usize) < OBJECTS {
            let batch: Vec<[u8; 16]> = (0..BATCH as u64)
                .map(|i| {
                    let mut b = [0u8; 16];
                    b[..8].copy_from_slice(&(n + i).to_le_bytes());
                    b[8] = 1;
                    b
                })
                .collect();
            store.put_batch(&batch).unwrap();
            n += BATCH as u64;
        }
        store.sync().unwrap();
    } // dropped: leaves the index snapshot
    let snap = dir.join("index.snap");
    let saved = std::fs::read(&snap).expect("the drop saved a snapshot");
    let index_len = std::fs::metadata(dir.join("index.log")).unwrap().len();
    let (mut read, mut with, mut without) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..RUNS {
        let t = Instant::now();
        let bytes = std::fs::read(dir.join("index.log")).unwrap();
        read.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(bytes.len() as u64, index_len);

        std::fs::write(&snap, &saved).unwrap();
        let t = Instant::now();
        let store = Store::open(dir).unwrap();
        with.push(t.elapsed().as_secs_f64() * 1e3);
        assert_eq!(store.open_report().objects as usize, OBJECTS);
        drop(store);

        std::fs::remove_file(&snap).unwrap();
        let t = Instant::now();
        let store = Store::open(dir).unwrap();
        without.push(t.elapsed().as_secs_f64() * 1e3);
        // Not dropped normally: the drop would save a new snapshot, which
        // is not what is measured here.
        std::mem::forget(store);
    }
    let (read, with, without) = (median(read), median(with), median(without));
    println!(
        "store open, {OBJECTS} objects ({:.1} MiB index, {:.1} MiB snapshot), median of {RUNS}:",
        index_len as f64 / (1 << 20) as f64,
        saved.len() as f64 / (1 << 20) as f64
    );
    println!("  read index.log once (baseline): {read:>7.2} ms");
    println!(
        "  open, full index replay:        {without:>7.2} ms  ({:.1}x the read)",
        without / read
    );
    println!(
        "  open from the index snapshot:   {with:>7.2} ms  ({:.1}x the read, {:.2} of the replay; goal {GOAL_MS:.0} ms: {})",
        with / read,
        with / without,
        if with <= GOAL_MS { "met" } else { "not met" }
    );
}
