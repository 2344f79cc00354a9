//! Real processes writing one store at the same time.
//!
//! The parent test re-executes this test binary, selecting
//! [`child_writer`] with `--exact`; the child finds its store directory
//! and number in [`CHILD_ENV`]. Without that variable `child_writer` does
//! nothing, so a normal test run passes it trivially.

use std::process::{Command, Stdio};

use super::{object, object_records};
use crate::{ObjectId, Store};

const CHILD_ENV: &str = "SNAPSHOT_STORE_TEST_CHILD";
const CHILDREN: u64 = 4;
/// Objects every child writes (seed 0).
const SHARED: u64 = 1000;
/// Objects only one child writes (seed = child + 1).
const UNIQUE: u64 = 2000;
const BATCH: u64 = 50;

/// Object `n` of the set with `seed`: mostly 4 KiB, some odd sizes.
fn item(seed: u64, n: u64) -> Vec<u8> {
    let len = if n % 13 == 0 { 8192 + 17 } else { 4096 };
    object(seed, n, len)
}

#[test]
fn child_writer() {
    let Ok(arg) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (dir, child) = arg.rsplit_once('|').expect("DIR|CHILD");
    let child: u64 = child.parse().unwrap();
    let store = Store::open(dir).unwrap();
    // Children 0 and 1 walk the shared set in the same order (racing for
    // the same objects batch by batch), 2 and 3 from its middle; each
    // interleaves it with its own objects.
    let rot = (child / 2) * SHARED / 2;
    let batches = SHARED.div_ceil(BATCH);
    for b in 0..batches {
        let shared: Vec<Vec<u8>> = (b * BATCH..((b + 1) * BATCH).min(SHARED))
            .map(|n| item(0, (n + rot) % SHARED))
            .collect();
        let ids = store.put_batch(&shared).unwrap();
        let per = UNIQUE / batches;
        let own: Vec<Vec<u8>> = (b * per..(b + 1) * per)
            .map(|n| item(child + 1, n))
            .collect();
        if b % 5 == 0 {
            for o in &own {
                store.put(o).unwrap();
            }
        } else {
            store.put_batch(&own).unwrap();
        }
        // Read back something another process may have written.
        assert_eq!(store.get(&ids[0]).unwrap(), shared[0]);
        if b % 7 == 3 {
            store.sync().unwrap();
        }
    }
    store.sync().unwrap();
}

#[test]
fn four_processes_share_one_store_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let children: Vec<_> = (0..CHILDREN)
        .map(|c| {
            Command::new(&exe)
                .args([
                    "--exact",
                    "tests::multiproc::child_writer",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(CHILD_ENV, format!("{}|{c}", tmp.path().display()))
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for (c, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "child {c} failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            stdout.contains("1 passed"),
            "child {c} ran no test: {stdout}"
        );
    }

    let store = Store::open(tmp.path()).unwrap();
    assert!(
        store.open_report().warnings.is_empty(),
        "{:?}",
        store.open_report()
    );
    let mut expected_raw = 0;
    let sets = std::iter::once((0, SHARED)).chain((1..=CHILDREN).map(|s| (s, UNIQUE)));
    for (seed, count) in sets {
        for n in 0..count {
            let d = item(seed, n);
            expected_raw += d.len() as u64;
            let id = ObjectId::of(&d);
            assert_eq!(store.get(&id).unwrap(), d, "seed {seed} object {n}");
        }
    }
    let total = SHARED + CHILDREN * UNIQUE;
    let stats = store.stats();
    assert_eq!(stats.objects, total);
    assert_eq!(stats.raw_bytes, expected_raw);
    let recs = object_records(tmp.path());
    assert_eq!(recs.len() as u64, total);
    let dups: Vec<_> = recs.iter().filter(|(_, &n)| n != 1).collect();
    assert!(dups.is_empty(), "stored more than once: {dups:?}");
    // Packs hold nothing but headers and the indexed entries.
    let pack_bytes: u64 = std::fs::read_dir(tmp.path().join("packs"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len() - 64)
        .sum();
    let entry_headers = total * crate::format::ENTRY_LEN as u64;
    assert_eq!(pack_bytes, stats.stored_bytes + entry_headers);
}
