//! Robustness of the decoders against hostile input: seeded random
//! mutations of valid SQLite (main file and WAL), JSON and KV files, plus
//! deliberately built page cycles, shared pages, over-deep trees and bogus
//! sizes. Every decode must return (Ok or a DecodeError) without panicking,
//! in bounded time and with allocation bounded relative to the input (a
//! counting global allocator measures the peak); an expansion bomb is
//! stopped by the decode budget, its allocation within about that budget.
//!
//! `DECODE_FUZZ_ITERS` (default 2500) sets the mutations per seed file;
//! the counts are printed.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::{Duration, Instant};

use introspection::decode::{self, kv, sqlite, DecodeError, Format, SchemaHints};
use rusqlite::Connection;

struct Counting;
static CUR: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator, only counting sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let c = CUR.fetch_add(l.size(), Relaxed) + l.size();
            PEAK.fetch_max(c, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        CUR.fetch_sub(l.size(), Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        let q = unsafe { System.realloc(p, l, new) };
        if !q.is_null() {
            if new > l.size() {
                let c = CUR.fetch_add(new - l.size(), Relaxed) + new - l.size();
                PEAK.fetch_max(c, Relaxed);
            } else {
                CUR.fetch_sub(l.size() - new, Relaxed);
            }
        }
        q
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// Worst cases seen over all executions.
#[derive(Default)]
struct Stats {
    runs: usize,
    errors: usize,
    max_time: Duration,
    /// Largest (peak extra bytes allocated) / (input bytes).
    max_alloc_ratio: f64,
}

impl Stats {
    fn run(&mut self, input_len: usize, f: impl FnOnce() -> Result<usize, DecodeError>) {
        let base = CUR.load(Relaxed);
        PEAK.store(base, Relaxed);
        let t = Instant::now();
        let r = f();
        let dt = t.elapsed();
        let extra = PEAK.load(Relaxed).saturating_sub(base);
        self.runs += 1;
        self.errors += usize::from(r.is_err());
        self.max_time = self.max_time.max(dt);
        let ratio = extra as f64 / input_len.max(1) as f64;
        self.max_alloc_ratio = self.max_alloc_ratio.max(ratio);
        assert!(dt < Duration::from_secs(5), "decode took {dt:?}");
        assert!(
            extra <= 256 * input_len + (16 << 20),
            "decode allocated {extra} bytes for {input_len} input bytes"
        );
    }
}

fn mutate(rng: &mut Rng, data: &mut Vec<u8>, page: usize) {
    if data.is_empty() {
        data.push(rng.next() as u8);
        return;
    }
    for _ in 0..1 + rng.below(4) {
        let n = data.len();
        // A quarter of the edits hit the first page (header, schema).
        let at = if rng.below(4) == 0 {
            rng.below(n.min(page.max(64)))
        } else {
            rng.below(n)
        };
        match rng.below(8) {
            0 => data[at] ^= 1 << rng.below(8),
            1 => data[at] = [0, 0xff, rng.next() as u8][rng.below(3)],
            2 => {
                // A small number at a page-relative header offset: page
                // numbers, cell counts, cell pointers.
                let p = rng.below(n / page.max(1) + 1) * page + rng.below(16);
                let v = (rng.below(n / page.max(1) + 3) as u32).to_be_bytes();
                if p + 4 <= n {
                    data[p..p + 4].copy_from_slice(&v);
                }
            }
            3 => data.truncate(at),
            4 => {
                // Copy a chunk (a page) over another place.
                let len = rng.below(page.max(16)).min(n - at);
                let to = rng.below(n - len + 1);
                let chunk = data[at..at + len].to_vec();
                data[to..to + len].copy_from_slice(&chunk);
            }
            5 => {
                let len = rng.below(9).min(n - at);
                data[at..at + len].fill(0xff);
            }
            6 => data.insert(at, rng.next() as u8),
            _ => {
                data.remove(at);
            }
        }
        if data.is_empty() {
            return;
        }
    }
}

fn iters() -> usize {
    std::env::var("DECODE_FUZZ_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2500)
}

fn sqlite_diff(old: &[u8], new: &[u8]) -> Result<usize, DecodeError> {
    decode::diff(Format::Sqlite, old, new, &SchemaHints::default()).map(|c| c.len())
}

/// Two versions of a database (and a WAL-mode copy with its WAL).
fn sqlite_seeds(page: u32) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let mk = |name: &str, mode: &str| {
        let c = Connection::open(dir.path().join(name)).unwrap();
        c.execute_batch(&format!(
            "PRAGMA page_size = {page}; PRAGMA journal_mode = {mode}; \
             PRAGMA wal_autocheckpoint = 0; \
             CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT, data BLOB, r REAL); \
             CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID;"
        ))
        .unwrap();
        for i in 0..120i64 {
            let body = "b".repeat((i as usize * 37) % (3 * page as usize));
            c.execute(
                "INSERT INTO docs(body, data, r) VALUES (?, ?, ?)",
                rusqlite::params![body, vec![i as u8; (i as usize * 11) % 700], i as f64 / 3.0],
            )
            .unwrap();
            c.execute(
                "INSERT INTO kv VALUES (?, ?)",
                rusqlite::params![format!("key{i}"), vec![7u8; (i as usize * 13) % 900]],
            )
            .unwrap();
        }
        c
    };
    let c = mk("a.db", "DELETE");
    let v1 = std::fs::read(dir.path().join("a.db")).unwrap();
    c.execute_batch("DELETE FROM docs WHERE id % 3 = 0; UPDATE kv SET v = x'00' WHERE k < 'key5';")
        .unwrap();
    let v2 = std::fs::read(dir.path().join("a.db")).unwrap();
    let w = mk("w.db", "WAL");
    w.execute_batch("UPDATE docs SET body = 'x' WHERE id % 2 = 0")
        .unwrap();
    let wdb = std::fs::read(dir.path().join("w.db")).unwrap();
    let wal = std::fs::read(dir.path().join("w.db-wal")).unwrap();
    (v1, v2, wdb, wal)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}

/// Deliberately built cycles and shared pages must be errors.
fn constructed(v: &[u8], page: usize, stats: &mut Stats) -> usize {
    let pages = v.len() / page;
    let hdr = |p: usize| if p == 1 { 100 } else { 0 };
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for p in 1..=pages {
        let base = (p - 1) * page + hdr(p);
        let kind = v[base];
        if kind == 5 || kind == 2 {
            // Interior page: right child -> itself, and -> page 1.
            for target in [p as u32, 1] {
                let mut m = v.to_vec();
                m[base + 8..base + 12].copy_from_slice(&target.to_be_bytes());
                cases.push((format!("right child of interior page {p} -> {target}"), m));
            }
            // First cell's left child -> this page.
            let cell = (p - 1) * page + u16::from_be_bytes([v[base + 12], v[base + 13]]) as usize;
            let mut m = v.to_vec();
            m[cell..cell + 4].copy_from_slice(&(p as u32).to_be_bytes());
            cases.push((format!("left child of interior page {p} -> itself"), m));
        }
        if kind == 13 {
            // Leaf: cell count beyond the page.
            let mut m = v.to_vec();
            m[base + 3..base + 5].copy_from_slice(&[0xff, 0xff]);
            cases.push((format!("cell count 0xffff on leaf {p}"), m));
            // Overflow chains: the first overflow page -> itself, -> page 1.
            let n = u16::from_be_bytes([v[base + 3], v[base + 4]]) as usize;
            for i in 0..n {
                let off = (p - 1) * page
                    + u16::from_be_bytes([v[base + 8 + 2 * i], v[base + 9 + 2 * i]]) as usize;
                let (psz, n1) = sqlite::btree::varint(v, off).unwrap();
                let (_, n2) = sqlite::btree::varint(v, off + n1).unwrap();
                let local = sqlite::btree::local_payload(psz, page, true);
                if psz as usize - local > page - 4 {
                    // Chains of two or more pages (a one-page chain never
                    // reads its next pointer).
                    let ptr_at = off + n1 + n2 + local;
                    let first = be32(v, ptr_at) as usize;
                    for target in [first as u32, 1] {
                        let mut m = v.to_vec();
                        m[(first - 1) * page..(first - 1) * page + 4]
                            .copy_from_slice(&target.to_be_bytes());
                        cases.push((format!("overflow page {first} of leaf {p} -> {target}"), m));
                    }
                    // Payload size varint at its maximum.
                    let mut m = v.to_vec();
                    m[off..off + n1].fill(0xff);
                    cases.push((format!("payload size 0xff.. on leaf {p}"), m));
                    break;
                }
            }
        }
    }
    // A chain of interior pages deeper than any real tree: every page from
    // 2 on becomes an empty interior page pointing at the next.
    let mut deep = v.to_vec();
    for p in 2..pages {
        let b = (p - 1) * page;
        deep[b..b + 12].copy_from_slice(&[5, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        deep[b + 8..b + 12].copy_from_slice(&(p as u32 + 1).to_be_bytes());
    }
    cases.push((format!("chain of {pages} interior pages"), deep));
    let n = cases.len();
    for (what, m) in cases {
        let mut err = None;
        stats.run(m.len() + v.len(), || {
            let r = sqlite_diff(v, &m);
            err = Some(r.is_err());
            r
        });
        assert_eq!(err, Some(true), "{what}: decoded without error");
    }
    n
}

/// Hostile `sqlite_schema` rows, written by SQLite itself with
/// `writable_schema`: each is (what, must the decode fail?).
fn hostile_schemas(stats: &mut Stats) -> usize {
    let wide: String = (0..60_000).map(|i| format!("c{i} INT, ")).collect();
    let cases = [
        (
            "root page 1",
            "UPDATE sqlite_master SET rootpage = 1 WHERE name = 'docs'",
            true,
        ),
        (
            "two tables share a root",
            "UPDATE sqlite_master SET rootpage = (SELECT rootpage FROM sqlite_master \
             WHERE name = 'docs') WHERE name = 'kv'",
            true,
        ),
        (
            "root page past the end",
            "UPDATE sqlite_master SET rootpage = 99999 WHERE name = 'docs'",
            true,
        ),
        (
            "sql not CREATE TABLE",
            "UPDATE sqlite_master SET sql = 'SELECT 1' WHERE name = 'docs'",
            true,
        ),
        (
            "60000 columns, PRIMARY KEY of all",
            &format!(
                "UPDATE sqlite_master SET sql = 'CREATE TABLE kv({wide} k, v, \
                 PRIMARY KEY({})) WITHOUT ROWID' WHERE name = 'kv'",
                (0..60_000)
                    .map(|i| format!("c{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            ),
            false,
        ),
    ];
    let n = cases.len();
    for (what, sql, must_fail) in cases {
        let dir = tempfile::tempdir().unwrap();
        let c = Connection::open(dir.path().join("h.db")).unwrap();
        c.execute_batch(
            "CREATE TABLE docs(id INTEGER PRIMARY KEY, body TEXT); \
             CREATE TABLE kv(k TEXT PRIMARY KEY, v BLOB) WITHOUT ROWID; \
             INSERT INTO docs(body) VALUES ('a'), ('b'); INSERT INTO kv VALUES ('k', x'00');",
        )
        .unwrap();
        let before = std::fs::read(dir.path().join("h.db")).unwrap();
        c.execute_batch("PRAGMA writable_schema = ON").unwrap();
        c.execute_batch(sql).unwrap();
        drop(c);
        let after = std::fs::read(dir.path().join("h.db")).unwrap();
        let mut failed = None;
        stats.run(before.len() + after.len(), || {
            let r = sqlite_diff(&before, &after);
            failed = Some(r.is_err());
            r
        });
        if must_fail {
            assert_eq!(failed, Some(true), "{what}: decoded without error");
        }
    }
    n
}

/// A small database whose short rows read long ADD COLUMN defaults (about
/// 80 MB decoded from ~100 KB): a 16 MiB budget stops it, and the memory
/// the attempt allocates stays within about that budget.
fn expansion_bomb(stats: &mut Stats) -> usize {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("b.db")).unwrap();
    c.execute_batch("PRAGMA synchronous = OFF; CREATE TABLE t(a); BEGIN;")
        .unwrap();
    for i in 0..1000 {
        c.execute(&format!("INSERT INTO t VALUES ({i})"), [])
            .unwrap();
    }
    c.execute_batch("COMMIT").unwrap();
    for k in 0..5 {
        let big = "x".repeat(16 << 10);
        c.execute_batch(&format!("ALTER TABLE t ADD COLUMN d{k} DEFAULT '{big}'"))
            .unwrap();
    }
    let img = std::fs::read(dir.path().join("b.db")).unwrap();
    let limits = decode::DecodeLimits { budget_mib: 16 };
    let base = CUR.load(Relaxed);
    let mut err = None;
    stats.run(img.len(), || {
        let r = decode::diff_with(Format::Sqlite, b"", &img, &SchemaHints::default(), &limits);
        err = r.as_ref().err().cloned();
        r.map(|c| c.len())
    });
    let e = err.expect("the bomb is refused");
    assert!(e.reason.contains("budget of 16 MiB"), "{e}");
    let peak = PEAK.load(Relaxed).saturating_sub(base);
    assert!(
        peak < 2 * (16 << 20) + 4 * img.len(),
        "bomb allocated {peak} bytes"
    );
    1
}

#[test]
fn hostile_inputs_do_not_panic_or_blow_up() {
    let n = iters();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut stats = Stats::default();
    let mut counts = Vec::new();

    // SQLite main files, two page sizes.
    let mut constructed_cases = hostile_schemas(&mut stats) + expansion_bomb(&mut stats);
    for page in [512u32, 1024] {
        let (v1, v2, wdb, wal) = sqlite_seeds(page);
        assert!(sqlite_diff(&v1, &v2).unwrap() > 50);
        constructed_cases += constructed(&v1, page as usize, &mut stats);
        let start = stats.runs;
        for i in 0..n {
            let mut m = if i % 2 == 0 { v1.clone() } else { v2.clone() };
            mutate(&mut rng, &mut m, page as usize);
            stats.run(m.len() + v1.len(), || sqlite_diff(&v1, &m));
            stats.run(m.len() + v2.len(), || sqlite_diff(&m, &v2));
        }
        counts.push((format!("sqlite page {page}"), stats.runs - start));
        // WAL: mutate the log (and sometimes the db under it).
        let applied = sqlite::apply_wal(&wdb, &wal).unwrap();
        assert!(sqlite_diff(&wdb, &applied).unwrap() > 10);
        let start = stats.runs;
        for i in 0..n / 2 {
            let mut w = wal.clone();
            mutate(&mut rng, &mut w, page as usize + 24);
            let mut d = wdb.clone();
            if i % 4 == 0 {
                mutate(&mut rng, &mut d, page as usize);
            }
            stats.run(d.len() + w.len(), || {
                let img = sqlite::apply_wal(&d, &w)?;
                sqlite_diff(&wdb, &img)
            });
        }
        counts.push((format!("sqlite wal page {page}"), stats.runs - start));
    }

    // JSON, with and without a record path.
    let doc = serde_json::json!({
        "customers": (0..40).map(|i| serde_json::json!({"id": i, "name": format!("n{i}"),
            "tags": [i, {"deep": [[[i]]]}], "x": null})).collect::<Vec<_>>(),
        "meta": {"v": 1, "s": "é\u{1F600}\\\"", "f": 1.5e300}
    });
    let j1 = serde_json::to_vec_pretty(&doc).unwrap();
    let mut j2 = serde_json::to_vec(&doc).unwrap();
    j2.resize(j2.len() + 300, 0);
    let start = stats.runs;
    for i in 0..n * 2 {
        let mut m = if i % 2 == 0 { j1.clone() } else { j2.clone() };
        mutate(&mut rng, &mut m, 64);
        let hints = SchemaHints {
            json_record_path: (i % 3 == 0).then(|| "/customers".into()),
            ..Default::default()
        };
        stats.run(m.len() + j1.len(), || {
            decode::diff(Format::Json, &j1, &m, &hints).map(|c| c.len())
        });
    }
    counts.push(("json".into(), stats.runs - start));

    // KV logs.
    let mut log = vec![0u8; 8192];
    log[..16].copy_from_slice(&kv::encode_header(4));
    let mut at = 16;
    for i in 0..60u32 {
        let key = format!("k{}", i % 17);
        at += if i % 5 == 4 {
            kv::encode_delete(&mut log[at..], key.as_bytes()).unwrap()
        } else {
            kv::encode_put(
                &mut log[at..],
                key.as_bytes(),
                &i.to_le_bytes().repeat(i as usize % 9),
            )
            .unwrap()
        };
    }
    let start = stats.runs;
    for _ in 0..n * 2 {
        let mut m = log.clone();
        mutate(&mut rng, &mut m, 32);
        stats.run(m.len() + log.len(), || {
            decode::diff(Format::Kv, &log, &m, &SchemaHints::default()).map(|c| c.len())
        });
    }
    counts.push(("kv".into(), stats.runs - start));

    eprintln!(
        "robustness: {} executions ({constructed_cases} constructed cases), \
         {} returned DecodeError; max {:?} per execution; peak allocation <= {:.1} x input",
        stats.runs, stats.errors, stats.max_time, stats.max_alloc_ratio
    );
    for (what, c) in counts {
        eprintln!("  {what}: {c} executions");
    }
    assert!(constructed_cases >= 10);
}
