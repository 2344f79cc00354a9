//! Oracle tests of the SQLite decoder: seeded random workloads run by real
//! SQLite (rusqlite, bundled); after every commit the decoder's changes
//! between the previous and the current file bytes must equal the changes
//! SQLite itself shows (every table `SELECT`ed before and after, diffed by
//! key).

mod decode_sqlite_oracle;

use std::collections::BTreeMap;
use std::path::Path;

use decode_sqlite_oracle::{expected, snapshot, Rng, Snap};
use introspection::decode::{self, sort_changes, sqlite, Format, Op, SchemaHints};
use rusqlite::types::Value as Sql;
use rusqlite::Connection;

#[derive(Clone, Copy, Debug)]
struct Cfg {
    page_size: u32,
    /// Bytes reserved at the end of each page (usable size < page size).
    reserve: i32,
    wal: bool,
    auto_vacuum: bool,
    seed: u64,
    steps: usize,
}

/// The committed database image, padded like a file in a larger extent,
/// and the number of WAL frames applied to it.
fn image(dir: &Path, cfg: &Cfg, rng: &mut Rng) -> (Vec<u8>, usize) {
    let mut db = std::fs::read(dir.join("t.db")).unwrap_or_default();
    let pad = |v: &mut Vec<u8>, rng: &mut Rng| match rng.below(3) {
        0 => {}
        1 => v.resize(v.len().div_ceil(65536) * 65536 + 65536, 0),
        _ => {
            let b = rng.blob(cfg.page_size as usize * 2);
            v.extend_from_slice(&b);
        }
    };
    if cfg.wal {
        let mut wal = std::fs::read(dir.join("t.db-wal")).unwrap_or_default();
        pad(&mut db, rng);
        pad(&mut wal, rng);
        let (img, info) = sqlite::apply_wal_info(&db, &wal).expect("apply_wal");
        (img, info.committed_frames)
    } else {
        pad(&mut db, rng);
        (db, 0)
    }
}

/// Changes seen, by (collection kind, op), to show what the run covered.
type Hist = BTreeMap<(String, Op), usize>;

fn check(old: &[u8], new: &[u8], sa: &Snap, sb: &Snap, what: &str, hist: &mut Hist) -> usize {
    let mut got = decode::diff(Format::Sqlite, old, new, &SchemaHints::default())
        .unwrap_or_else(|e| panic!("{what}: decode failed: {e}"));
    sort_changes(&mut got);
    let want = expected(sa, sb);
    if got != want {
        let n = got.len().max(want.len());
        for i in 0..n {
            if got.get(i) != want.get(i) {
                panic!(
                    "{what}: change {i} differs\n got: {:?}\nwant: {:?}\n({} vs {} changes)",
                    got.get(i),
                    want.get(i),
                    got.len(),
                    want.len()
                );
            }
        }
    }
    for c in &got {
        let coll = c
            .collection
            .trim_end_matches(|ch: char| ch.is_ascii_digit());
        *hist.entry((coll.to_string(), c.op)).or_default() += 1;
    }
    got.len()
}

fn random_txn(c: &Connection, rng: &mut Rng, step: usize, ps: usize) {
    let count = |t: &str| -> i64 {
        c.query_row(&format!("SELECT count(*) FROM {t}"), [], |r| r.get(0))
            .unwrap_or(0)
    };
    let pick = |t: &str, col: &str, rng: &mut Rng| -> Option<Sql> {
        let n = count(t);
        (n > 0).then(|| {
            c.query_row(
                &format!("SELECT {col} FROM {t} ORDER BY {col} LIMIT 1 OFFSET ?"),
                [rng.below(n as u64) as i64],
                |r| r.get(0),
            )
            .unwrap()
        })
    };
    for _ in 0..1 + rng.below(12) {
        match rng.below(16) {
            0..=2 => {
                let avatar = if rng.chance(50) {
                    Some(rng.blob_upto(64))
                } else {
                    None
                };
                c.execute(
                    "INSERT INTO customers(name, score, balance, avatar) VALUES (?,?,?,?)",
                    rusqlite::params![rng.text_upto(1, 20), rng.real(), rng.int(), avatar],
                )
                .unwrap();
            }
            3 => {
                if let Some(id) = pick("customers", "id", rng) {
                    c.execute(
                        "UPDATE customers SET name = ?, score = ? WHERE id = ?",
                        rusqlite::params![rng.text(5), rng.real(), id],
                    )
                    .unwrap();
                }
            }
            4 => {
                if let Some(id) = pick("customers", "id", rng) {
                    c.execute(
                        "DELETE FROM customers WHERE id >= ? AND id < ? + 3",
                        [&id, &id],
                    )
                    .unwrap();
                }
            }
            5 | 6 => {
                let body = rng.text_upto(10, ps * 3);
                let data = rng.blob_upto(ps * 2);
                c.execute(
                    "INSERT INTO docs(title, body, data) VALUES (?,?,?)",
                    rusqlite::params![rng.text(8), body, data],
                )
                .unwrap();
            }
            7 => {
                if let Some(r) = pick("docs", "rowid", rng) {
                    let body = rng.text_upto(0, ps * 4);
                    c.execute(
                        "UPDATE docs SET body = ? WHERE rowid = ?",
                        rusqlite::params![body, r],
                    )
                    .unwrap();
                }
            }
            8 => {
                // Deletes that free pages (overflow chains, leaves).
                if count("docs") > 6 {
                    c.execute(
                        "DELETE FROM docs WHERE rowid % 3 = ?",
                        [rng.below(3) as i64],
                    )
                    .unwrap();
                }
            }
            9 | 10 => {
                let vlen = if rng.chance(20) { ps * 2 } else { 16 };
                let v = rng.blob(vlen);
                c.execute(
                    "INSERT OR REPLACE INTO tags(k, n, v, note) VALUES (?,?,?,?)",
                    rusqlite::params![rng.text_upto(1, 6), rng.below(20) as i64, v, rng.text(4)],
                )
                .unwrap();
            }
            11 => {
                if let Some(k) = pick("tags", "k", rng) {
                    if rng.chance(50) {
                        c.execute("DELETE FROM tags WHERE k = ?", [k]).unwrap();
                    } else {
                        let vlen = if rng.chance(30) { ps * 3 } else { 8 };
                        let v = rng.blob(vlen);
                        c.execute(
                            "UPDATE tags SET v = ?, note = NULL WHERE k = ?",
                            rusqlite::params![v, k],
                        )
                        .unwrap();
                    }
                }
            }
            12 => {
                let code = match pick("stock", "code", rng) {
                    Some(Sql::Text(t)) if rng.chance(60) => t,
                    _ => rng.text(3),
                };
                if rng.chance(25) {
                    c.execute("DELETE FROM stock WHERE code = ?", [code])
                        .unwrap();
                } else {
                    c.execute(
                        "INSERT OR REPLACE INTO stock(code, qty) VALUES (?, ?)",
                        rusqlite::params![code, rng.int()],
                    )
                    .unwrap();
                }
            }
            13 => {
                let t = format!("extra{}", rng.below(3));
                if rng.chance(50) {
                    c.execute_batch(&format!(
                        "CREATE TABLE IF NOT EXISTS {t}(a INTEGER, b TEXT, c REAL); \
                         INSERT INTO {t}(a, b, c) VALUES ({}, 'x{step}', 2);",
                        rng.int()
                    ))
                    .unwrap();
                } else if rng.chance(50) {
                    c.execute_batch(&format!("DROP TABLE IF EXISTS {t}"))
                        .unwrap();
                } else {
                    let to = format!("extra{}", rng.below(3));
                    let exists = |n: &str| {
                        c.query_row(
                            "SELECT count(*) FROM sqlite_master WHERE name = ?",
                            [n],
                            |r| r.get::<_, i64>(0),
                        )
                        .unwrap()
                            > 0
                    };
                    if exists(&t) && !exists(&to) {
                        c.execute_batch(&format!("ALTER TABLE {t} RENAME TO {to}"))
                            .unwrap();
                    }
                }
            }
            14 => {
                let has = |col: &str| {
                    c.query_row(
                        "SELECT count(*) FROM pragma_table_info('customers') WHERE name = ?",
                        [col],
                        |r| r.get::<_, i64>(0),
                    )
                    .unwrap()
                        > 0
                };
                let col = format!("c{}", rng.below(4));
                if has(&col) && rng.chance(30) {
                    c.execute_batch(&format!("ALTER TABLE customers DROP COLUMN {col}"))
                        .unwrap();
                } else if !has(&col) {
                    let def = [
                        "INTEGER DEFAULT 7",
                        "TEXT DEFAULT 'dflt'",
                        "REAL DEFAULT 2",
                        "BLOB",
                    ][rng.below(4) as usize];
                    c.execute_batch(&format!("ALTER TABLE customers ADD COLUMN {col} {def}"))
                        .unwrap();
                }
                if has(&col) && rng.chance(50) {
                    if let Some(id) = pick("customers", "id", rng) {
                        c.execute(
                            &format!("UPDATE customers SET {col} = 5 WHERE id = ?"),
                            [id],
                        )
                        .unwrap();
                    }
                }
            }
            _ => {
                if rng.chance(50) {
                    c.execute_batch("CREATE INDEX IF NOT EXISTS cust_name ON customers(name)")
                        .unwrap();
                } else {
                    c.execute_batch("DROP INDEX IF EXISTS cust_name").unwrap();
                }
            }
        }
    }
}

fn run(cfg: Cfg) -> (usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let c = Connection::open(dir.path().join("t.db")).unwrap();
    c.execute_batch(&format!("PRAGMA page_size = {}", cfg.page_size))
        .unwrap();
    if cfg.reserve > 0 {
        let mut n = cfg.reserve;
        // SAFETY: a valid connection handle, schema name and int argument.
        let rc = unsafe {
            rusqlite::ffi::sqlite3_file_control(
                c.handle(),
                c"main".as_ptr(),
                rusqlite::ffi::SQLITE_FCNTL_RESERVE_BYTES,
                (&mut n as *mut i32).cast(),
            )
        };
        assert_eq!(rc, 0);
    }
    let mode = if cfg.wal { "WAL" } else { "DELETE" };
    let av = if cfg.auto_vacuum { "FULL" } else { "NONE" };
    c.execute_batch(&format!(
        "PRAGMA auto_vacuum = {av}; PRAGMA journal_mode = {mode}; \
         CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT, score REAL, balance INTEGER, \
           avatar BLOB); \
         CREATE TABLE docs(title TEXT, body TEXT, data BLOB); \
         CREATE TABLE tags(k TEXT, n INTEGER, v BLOB, note TEXT, PRIMARY KEY (k, n)) WITHOUT ROWID; \
         CREATE TABLE stock(code TEXT PRIMARY KEY, qty INTEGER) WITHOUT ROWID;"
    ))
    .unwrap();
    if !cfg.wal {
        let hdr = std::fs::read(dir.path().join("t.db")).unwrap();
        assert_eq!(hdr[20] as i32, cfg.reserve, "reserved bytes took effect");
    }
    let mut rng = Rng(cfg.seed);
    let mut prev_img: Vec<u8> = Vec::new();
    let mut prev_snap = Snap {
        schema: BTreeMap::new(),
        tables: BTreeMap::new(),
    };
    let mut total = 0;
    let mut hist = Hist::new();
    let (mut wal_frames, mut wal_steps) = (0, 0);
    for step in 0..cfg.steps {
        if rng.chance(4) {
            c.execute_batch("VACUUM").unwrap();
        } else {
            c.execute_batch("BEGIN").unwrap();
            // Row sizes scale with the page size (64 KiB pages: up to 120 KB).
            let ps = (cfg.page_size as usize).min(40_000);
            random_txn(&c, &mut rng, step, ps);
            c.execute_batch("COMMIT").unwrap();
        }
        if cfg.wal && rng.chance(10) {
            let how = ["PASSIVE", "FULL", "RESTART", "TRUNCATE"][rng.below(4) as usize];
            c.execute_batch(&format!("PRAGMA wal_checkpoint({how})"))
                .unwrap();
        }
        let (img, frames) = image(dir.path(), &cfg, &mut rng);
        wal_frames += frames;
        wal_steps += usize::from(frames > 0);
        let snap = snapshot(&c);
        let what = format!("{cfg:?} step {step}");
        total += check(&prev_img, &img, &prev_snap, &snap, &what, &mut hist);
        if step % 8 == 0 {
            // The whole state, decoded from nothing.
            let empty = Snap {
                schema: BTreeMap::new(),
                tables: BTreeMap::new(),
            };
            let mut h = Hist::new();
            check(&[], &img, &empty, &snap, &format!("{what} (full)"), &mut h);
        }
        prev_img = img;
        prev_snap = snap;
    }
    eprintln!("{cfg:?}: {hist:?}; {wal_frames} wal frames applied in {wal_steps} snapshots");
    if cfg.wal {
        assert!(
            wal_steps > cfg.steps / 2,
            "most WAL snapshots must need the WAL"
        );
    }
    for coll in ["customers", "docs", "tags", "stock", "sqlite_schema"] {
        for op in [Op::Insert, Op::Update, Op::Delete] {
            assert!(
                hist.contains_key(&(coll.to_string(), op)),
                "{cfg:?}: no {coll} {op}"
            );
        }
    }
    (cfg.steps, total)
}

#[test]
fn oracle_rollback_journal() {
    for (ps, seed, av) in [(1024, 1, false), (4096, 2, false), (1024, 3, true)] {
        let cfg = Cfg {
            page_size: ps,
            reserve: 0,
            wal: false,
            auto_vacuum: av,
            seed,
            steps: 120,
        };
        let (steps, changes) = run(cfg);
        eprintln!("{cfg:?}: {steps} commits, {changes} changes");
        assert!(changes > 100);
    }
}

#[test]
fn oracle_wal() {
    for (ps, seed) in [(1024, 11), (4096, 12)] {
        let cfg = Cfg {
            page_size: ps,
            reserve: 0,
            wal: true,
            auto_vacuum: false,
            seed,
            steps: 120,
        };
        let (steps, changes) = run(cfg);
        eprintln!("{cfg:?}: {steps} commits, {changes} changes");
        assert!(changes > 100);
    }
}

/// 64 KiB pages (stored as 1 in the header) and reserved bytes per page
/// (the overflow rules use the usable size, not the page size).
#[test]
fn oracle_page_size_64k_and_reserved_bytes() {
    for (ps, reserve, wal, seed) in [
        (65536, 0, false, 21),
        (1024, 33, false, 22),
        (4096, 64, true, 23),
    ] {
        let cfg = Cfg {
            page_size: ps,
            reserve,
            wal,
            auto_vacuum: false,
            seed,
            steps: 40,
        };
        let (steps, changes) = run(cfg);
        eprintln!("{cfg:?}: {steps} commits, {changes} changes");
        assert!(changes > 50);
    }
}
