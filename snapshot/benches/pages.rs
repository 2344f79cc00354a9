//! Guest-memory capture and restore against a memcpy of the same memory,
//! in one run: `cargo bench -p snapshot --bench pages`.
//!
//! The region is 256 MiB shaped like a guest that has run a while: by
//! `page % 8`, three unique random pages, two zero pages, two copies of
//! one of 16 shared pages (code, page-cache duplicates) and one unique
//! text-like page. Times are best of 3; ratios are time / memcpy time.
use std::hint::black_box;
use std::time::{Duration, Instant};

use snapshot::{capture, restore, restore_over, set_max_threads, PageList, PAGE_SIZE};

use store::Store;

const REGION: usize = 256 << 20;
const PAGES: usize = REGION / PAGE_SIZE;

fn random(page: &mut [u8], seed: u64, n: u64) {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&n.to_le_bytes());
    h.finalize_xof().fill(page);
}

fn fill(page: &mut [u8], seed: u64, n: u64, kind: u64) {
    match kind {
        0..=2 => random(page, seed, n),
        3 | 4 => page.fill(0),
        5 | 6 => random(page, 0xd0d0, (n / 8) % 16),
        _ => {
            let line = format!("seed {seed} page {n}: counter=1234 state=ok; ");
            for (d, s) in page.iter_mut().zip(line.bytes().cycle()) {
                *d = s;
            }
        }
    }
}

fn memory() -> Vec<u8> {
    let mut mem = vec![0u8; REGION];
    for (p, page) in mem.chunks_exact_mut(PAGE_SIZE).enumerate() {
        fill(page, 1, p as u64, p as u64 % 8);
    }
    mem
}

fn best_of(runs: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..runs).map(|_| f()).min().unwrap()
}

fn fresh_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("store")).unwrap();
    (dir, store)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mem = memory();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "pages benchmark: {} MiB region ({} pages, 25% zero, 25% duplicates), {cores} cores, \
         load average {}, best of 3",
        REGION >> 20,
        PAGES,
        load.split_whitespace().next().unwrap_or("?")
    );
    println!("{:<46} {:>10} {:>10}", "operation", "ms", "x memcpy");

    let mut dst = vec![1u8; REGION];
    let copy = best_of(3, || {
        let t = Instant::now();
        dst.copy_from_slice(&mem);
        black_box(&dst);
        t.elapsed()
    });
    drop(dst);
    let row = |op: &str, d: Duration| {
        println!(
            "{op:<46} {:>10.2} {:>10.2}",
            d.as_secs_f64() * 1e3,
            d.as_secs_f64() / copy.as_secs_f64()
        );
    };
    row("memcpy of the region (baseline)", copy);

    for threads in [1, 0] {
        set_max_threads(threads);
        let label = if threads == 1 {
            "1 thread".to_string()
        } else {
            format!("{} threads", cores.min(8))
        };
        let full_new = best_of(3, || {
            let (_d, store) = fresh_store();
            let t = Instant::now();
            black_box(capture(&store, &mem, None, None).unwrap());
            t.elapsed()
        });
        row(&format!("full capture, empty store ({label})"), full_new);
    }
    set_max_threads(0);

    let (_dir, store) = fresh_store();
    let (base, _) = capture(&store, &mem, None, None).unwrap();
    let base_ref = base.save(&store).unwrap();
    let one_vm = store.stats();
    let full_again = best_of(3, || {
        let t = Instant::now();
        let (list, _) = capture(&store, &mem, None, None).unwrap();
        black_box(list.save(&store).unwrap());
        t.elapsed()
    });
    row("full capture + save, pages already stored", full_again);

    // 1% dirty: new content in 1% of the pages, at random places.
    let mut child_mem = mem.clone();
    let mut bitmap = vec![0u64; PAGES.div_ceil(64)];
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let dirty = PAGES / 100;
    for i in 0..dirty {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let p = (x % PAGES as u64) as usize;
        random(&mut child_mem[p * PAGE_SIZE..][..PAGE_SIZE], 77, i as u64);
        bitmap[p / 64] |= 1 << (p % 64);
    }
    let mut child = PageList::default();
    let mut pause = Duration::MAX;
    let inc = best_of(3, || {
        let (_d, s) = fresh_store();
        let (parent, _) = capture(&s, &mem, None, None).unwrap();
        let parent_ref = parent.save(&s).unwrap();
        let t = Instant::now();
        let (list, _) = capture(&s, &child_mem, Some(&bitmap), Some(&parent)).unwrap();
        pause = pause.min(t.elapsed());
        black_box(list.save_over(&s, &parent, &parent_ref).unwrap());
        let d = t.elapsed();
        child = list;
        d
    });
    // The same 1%-changed memory captured in full, into a store holding
    // the parent (what a full snapshot at that point would cost).
    let full_child = best_of(3, || {
        let (_d, s) = fresh_store();
        capture(&s, &mem, None, None).unwrap();
        let t = Instant::now();
        black_box(capture(&s, &child_mem, None, None).unwrap());
        t.elapsed()
    });
    row("full capture of the same state (parent stored)", full_child);
    row("incremental capture (VM paused), 1% dirty", pause);
    row("incremental capture + save_over, 1% dirty", inc);
    println!(
        "{:<46} {:>10} {:>9.1}%",
        "  incremental / full capture",
        "",
        100.0 * pause.as_secs_f64() / full_child.as_secs_f64()
    );
    let _ = base_ref;

    for threads in [1, 0] {
        set_max_threads(threads);
        let rest = best_of(3, || {
            let mut out = vec![0u8; REGION]; // fresh, untouched (calloc'd) memory
            let t = Instant::now();
            restore(&store, &base, &mut out).unwrap();
            let d = t.elapsed();
            assert!(out == mem);
            d
        });
        let label = if threads == 1 {
            "1 thread".to_string()
        } else {
            format!("{} threads", cores.min(8))
        };
        row(&format!("restore into fresh memory ({label})"), rest);
    }
    set_max_threads(0);

    capture(&store, &child_mem, Some(&bitmap), Some(&base)).unwrap();
    let mut out = vec![0u8; REGION];
    restore(&store, &base, &mut out).unwrap();
    let over = best_of(3, || {
        out.copy_from_slice(&mem);
        let t = Instant::now();
        restore_over(&store, &child, &base, &mut out).unwrap();
        t.elapsed()
    });
    assert!(out == child_mem);
    row("restore 1%-dirty child over its parent", over);

    let (_dir16, store16) = fresh_store();
    let mut after_one = None;
    for _ in 0..16 {
        let (l, _) = capture(&store16, &mem, None, None).unwrap();
        l.save(&store16).unwrap();
        after_one.get_or_insert(store16.stats());
    }
    let one = after_one.unwrap();
    let sixteen = store16.stats();
    println!(
        "store bytes: 1 VM {:.1} MiB ({} objects; {:.1} MiB of memory), 16 clones {:.1} MiB ({:.3}x)",
        one.stored_bytes as f64 / (1 << 20) as f64,
        one.objects,
        REGION as f64 / (1 << 20) as f64,
        sixteen.stored_bytes as f64 / (1 << 20) as f64,
        sixteen.stored_bytes as f64 / one.stored_bytes as f64
    );
    assert_eq!(one_vm.stored_bytes, one.stored_bytes);
}
