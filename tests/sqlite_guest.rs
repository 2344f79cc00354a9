//! Real SQLite, a JSON document and a KV log written inside the microguest,
//! read back on the host from the raw disk image through the layout the
//! guest announces, and compared with the same seeded workloads run on the
//! host (SQLite via rusqlite; JSON and KV via models written here from the
//! format descriptions in guest-tools/microguest/src/{sqlite/vfs/mod.rs,
//! workloads/json.rs, workloads/kv.rs}).
//!
//! The workloads themselves (which statements, which records, which keys)
//! come from the guest's `spec/`, included here as source, so both sides
//! run exactly the same steps.
extern crate alloc;

mod common;

#[path = "../guest-tools/microguest/src/workloads/spec/mod.rs"]
mod spec;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use common::*;
use rusqlite::types::ValueRef;
use spec::{
    Fnv, JsonOp, JsonParams, JsonRecord, JsonScript, KvOp, KvParams, KvScript, SqliteParams,
    SqliteScript, SqliteSummary, Value, SQLITE_SUMMARY,
};

const DISK_MIB: u64 = 64;

/// Boots the microguest on a fresh 64 MiB disk with `cmdline`; returns its
/// stdout and the disk image.
fn boot(dir: &Path, cmdline: &str) -> (String, Vec<u8>) {
    let disk = blank_disk(dir, "disk.img", DISK_MIB);
    let started = std::time::Instant::now();
    let out = vmm(&[
        "run",
        "--timeout",
        "60",
        "--disk",
        disk.to_str().unwrap(),
        "--cmdline",
        cmdline,
    ]);
    let text = stdout(&out);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{cmdline}\nstdout:\n{text}\nstderr:\n{}",
        stderr(&out)
    );
    eprintln!("{cmdline}: {:?}", started.elapsed());
    (text, std::fs::read(&disk).unwrap())
}

/// The `layout: file=NAME format=F sector=S len=L` lines: name -> (byte
/// offset, capacity).
fn layout(stdout: &str) -> HashMap<String, (usize, usize)> {
    let mut map = HashMap::new();
    for line in stdout.lines() {
        let Some(rest) = line.strip_prefix("layout: ") else {
            continue;
        };
        let fields: HashMap<&str, &str> = rest
            .split_whitespace()
            .filter_map(|w| w.split_once('='))
            .collect();
        let sector: usize = fields["sector"].parse().unwrap();
        let len: usize = fields["len"].parse().unwrap();
        map.insert(fields["file"].to_string(), (sector * 512, len));
    }
    map
}

/// The line of `stdout` that starts with `prefix`, without it.
fn line<'a>(stdout: &'a str, prefix: &str) -> &'a str {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' line in:\n{stdout}"))
}

fn field<'a>(line: &'a str, name: &str) -> &'a str {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(name).and_then(|v| v.strip_prefix('=')))
        .unwrap_or_else(|| panic!("no {name}= in {line}"))
}

// ------------------------------------------------------------------ SQLite

#[derive(Debug)]
struct DirEntry {
    name: String,
    sector: u64,
    capacity: u64,
    size: u64,
    exists: bool,
}

/// Parses the VFS directory block (format "MGVFSDIR" v1, vfs/mod.rs).
fn vfs_dir(image: &[u8], layout: &HashMap<String, (usize, usize)>) -> Vec<DirEntry> {
    let (off, len) = layout["vfs.dir"];
    let d = &image[off..off + len];
    let u32_at = |o: usize| u32::from_le_bytes(d[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(d[o..o + 8].try_into().unwrap());
    assert_eq!(&d[..8], b"MGVFSDIR");
    assert_eq!(u32_at(8), 1, "version");
    assert_eq!(u32_at(24), 64, "entry size");
    assert_eq!(u32_at(4092), crc32(&d[..4092]), "directory CRC");
    (0..u32_at(12) as usize)
        .map(|i| {
            let e = 32 + i * 64;
            let name = &d[e..e + 32];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap()];
            DirEntry {
                name: String::from_utf8(name.to_vec()).unwrap(),
                sector: u64_at(e + 32),
                capacity: u64_at(e + 40),
                size: u64_at(e + 48),
                exists: u32_at(e + 56) & 1 != 0,
            }
        })
        .collect()
}

/// Writes the files the directory says exist into `dir`; returns the path
/// of app.db.
fn extract_sqlite(image: &[u8], stdout: &str, dir: &Path) -> (PathBuf, Vec<DirEntry>) {
    let layout = layout(stdout);
    let entries = vfs_dir(image, &layout);
    for e in &entries {
        let (off, cap) = layout[&e.name];
        assert_eq!((e.sector as usize * 512, e.capacity as usize), (off, cap));
        assert!(e.size <= e.capacity);
        if e.exists {
            let bytes = &image[off..off + e.size as usize];
            std::fs::write(dir.join(&e.name), bytes).unwrap();
        }
    }
    (dir.join("app.db"), entries)
}

fn to_spec(v: ValueRef<'_>) -> Value {
    match v {
        ValueRef::Null => Value::Null,
        ValueRef::Integer(i) => Value::Int(i),
        ValueRef::Real(r) => Value::Real(r),
        ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
        ValueRef::Blob(b) => Value::Blob(b.to_vec()),
    }
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as V;
    match v {
        Value::Null => V::Null,
        Value::Int(i) => V::Integer(*i),
        Value::Real(r) => V::Real(*r),
        Value::Text(t) => V::Text(t.clone()),
        Value::Blob(b) => V::Blob(b.clone()),
    }
}

/// The rows of each `SQLITE_SUMMARY` query.
fn dump(conn: &rusqlite::Connection) -> Vec<Vec<Vec<Value>>> {
    SQLITE_SUMMARY
        .iter()
        .map(|(_, sql)| {
            let mut st = conn.prepare(sql).unwrap();
            let n = st.column_count();
            st.query_map([], |row| {
                Ok((0..n)
                    .map(|i| to_spec(row.get_ref(i).unwrap()))
                    .collect::<Vec<_>>())
            })
            .unwrap()
            .map(Result::unwrap)
            .collect()
        })
        .collect()
}

/// The summary the guest prints from `customers=` on.
fn summary_line(conn: &rusqlite::Connection) -> String {
    let mut summary = SqliteSummary::default();
    let mut h = Fnv::default();
    for (i, rows) in dump(conn).iter().enumerate() {
        summary.add_rows(&mut h, i, rows);
    }
    let integrity: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    let pages: i64 = conn
        .query_row("PRAGMA page_count", [], |r| r.get(0))
        .unwrap();
    let freelist: i64 = conn
        .query_row("PRAGMA freelist_count", [], |r| r.get(0))
        .unwrap();
    format!(
        "{} integrity={integrity} pages={pages} freelist={freelist}",
        summary.line()
    )
}

/// Runs the seeded SQLite workload with rusqlite into `path`.
fn host_sqlite(p: SqliteParams, journal: &str, path: &Path) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(path).unwrap();
    for pragma in spec::sqlite_pragmas(journal) {
        let mut st = conn.prepare(&pragma).unwrap();
        let mut rows = st.query([]).unwrap();
        while rows.next().unwrap().is_some() {}
    }
    let mut script = SqliteScript::new(p);
    while let Some(txn) = script.next_txn() {
        let tx = conn.unchecked_transaction().unwrap();
        for st in &txn {
            let params: Vec<_> = st.params.iter().map(to_sql).collect();
            tx.execute(&st.sql, rusqlite::params_from_iter(params))
                .unwrap_or_else(|e| panic!("{}: {e}", st.sql));
        }
        tx.commit().unwrap();
    }
    conn
}

/// Boots `workload=sqlite`, extracts the database from the image and
/// compares it with the host's run of the same workload.
fn sqlite_matches_host(journal: &str, close: bool) -> Vec<DirEntry> {
    let p = SqliteParams {
        seed: 7,
        rows: 1200,
        txn: 40,
    };
    let dir = tempfile::tempdir().unwrap();
    let cmdline = format!(
        "workload=sqlite seed={} rows={} txn={} journal={journal} close={}",
        p.seed,
        p.rows,
        p.txn,
        u8::from(close)
    );
    let (out, image) = boot(dir.path(), &cmdline);
    let guest_line = line(&out, "sqlite: ");
    assert_eq!(field(guest_line, "integrity"), "ok");

    let files = dir.path().join("guest");
    std::fs::create_dir(&files).unwrap();
    let (db_path, entries) = extract_sqlite(&image, &out, &files);
    let guest = rusqlite::Connection::open(&db_path).unwrap();
    let integrity: String = guest
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let mode: String = guest
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, journal);

    let host = host_sqlite(p, journal, &dir.path().join("host.db"));
    let (guest_rows, host_rows) = (dump(&guest), dump(&host));
    for (i, (g, h)) in guest_rows.iter().zip(&host_rows).enumerate() {
        assert_eq!(g.len(), h.len(), "row count of {}", SQLITE_SUMMARY[i].0);
        for (gr, hr) in g.iter().zip(h) {
            assert!(
                gr == hr,
                "{}: guest row differs from host row",
                SQLITE_SUMMARY[i].0
            );
        }
    }
    // Same rows, same checksum; with the same SQLite version also the same
    // page and freelist counts.
    let host_line = summary_line(&host);
    let guest_summary = &guest_line[guest_line.find("customers=").unwrap()..];
    assert_eq!(
        guest_summary.split(" pages=").next(),
        host_line.split(" pages=").next()
    );
    let same_version = field(guest_line, "version") == rusqlite::version();
    if same_version {
        assert_eq!(
            guest_summary.split(" version=").next().unwrap(),
            host_line,
            "page counts differ from the host's"
        );
    } else {
        eprintln!(
            "guest SQLite {} != host {}: page counts not compared",
            field(guest_line, "version"),
            rusqlite::version()
        );
    }
    assert_eq!(summary_line(&guest), host_line);
    if same_version && close {
        // SQLite is deterministic: after a clean close (WAL checkpointed)
        // the guest's database file is the host's, byte for byte.
        drop((guest, host));
        let guest_bytes = std::fs::read(&db_path).unwrap();
        let host_bytes = std::fs::read(dir.path().join("host.db")).unwrap();
        assert!(guest_bytes == host_bytes, "database files differ");
    }
    entries
}

#[test]
fn sqlite_rollback_journal_in_guest_equals_host() {
    let entries = sqlite_matches_host("delete", true);
    let journal = entries.iter().find(|e| e.name == "app.db-journal").unwrap();
    assert!(!journal.exists, "the journal is deleted at commit");
}

#[test]
fn sqlite_wal_in_guest_equals_host() {
    let entries = sqlite_matches_host("wal", true);
    let wal = entries.iter().find(|e| e.name == "app.db-wal").unwrap();
    assert!(!wal.exists, "closing checkpoints and deletes the WAL");
}

#[test]
fn sqlite_wal_left_open_is_recovered_from_the_disk() {
    // No close: the last commits are only in the WAL on disk.
    let entries = sqlite_matches_host("wal", false);
    let wal = entries.iter().find(|e| e.name == "app.db-wal").unwrap();
    assert!(wal.exists && wal.size > 32, "{wal:?}");
}

#[test]
fn sqlite_state_survives_a_reboot() {
    let dir = tempfile::tempdir().unwrap();
    let (out, _) = boot(
        dir.path(),
        "workload=sqlite seed=3 rows=400 journal=wal close=0",
    );
    let first = line(&out, "sqlite: ");
    let disk = dir.path().join("disk.img");
    let again = vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--cmdline",
        "workload=sqlite-summary",
    ]);
    assert_eq!(again.status.code(), Some(0), "{}", stdout(&again));
    let text = stdout(&again);
    let second = line(&text, "sqlite-summary: ");
    assert_eq!(
        first.split_once(" customers=").unwrap().1,
        second.split_once("customers=").unwrap().1
    );
}

// -------------------------------------------------------------------- JSON

fn json_record(r: &JsonRecord) -> serde_json::Value {
    serde_json::json!({
        "id": r.id, "name": r.name, "qty": r.qty, "price": r.price,
        "active": r.active, "tags": r.tags, "note": r.note,
    })
}

fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        // Floats compare to within rounding: serde_json's default parser is
        // not always correctly rounded.
        (J::Number(x), J::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(1.0)
        }
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn json_document_in_guest_equals_host_model() {
    let p = JsonParams {
        seed: 5,
        records: 150,
        rewrites: 6,
        ops: 80,
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, image) = boot(
        dir.path(),
        &format!(
            "workload=json seed={} records={} rewrites={} ops={}",
            p.seed, p.records, p.rewrites, p.ops
        ),
    );
    let (off, cap) = layout(&out)["doc.json"];
    let extent = &image[off..off + cap];
    let end = extent
        .iter()
        .position(|b| *b == 0)
        .expect("a NUL ends the document");
    assert!(
        extent[end..].iter().all(|b| *b == 0),
        "zero-filled after the end"
    );
    let doc: serde_json::Value = serde_json::from_slice(&extent[..end]).unwrap();

    let mut model: BTreeMap<u64, JsonRecord> = BTreeMap::new();
    let mut script = JsonScript::new(p);
    let mut writes = 0;
    while let Some(ops) = script.next_round() {
        writes += 1;
        for op in ops {
            match op {
                JsonOp::Put(r) => {
                    model.insert(r.id, r);
                }
                JsonOp::Patch { id, qty, price } => {
                    let r = model.get_mut(&id).unwrap();
                    r.qty = qty;
                    r.price = price;
                }
                JsonOp::Delete(id) => {
                    model.remove(&id).unwrap();
                }
            }
        }
    }
    let expected = serde_json::json!({
        "version": writes,
        "records": model.values().map(json_record).collect::<Vec<_>>(),
    });
    assert!(
        same_json(&doc, &expected),
        "guest document differs from the model"
    );

    let mut h = Fnv::default();
    h.write(&extent[..end]);
    assert_eq!(
        line(&out, "json: "),
        format!(
            "writes={writes} records={} bytes={end} fnv={:#018x}",
            model.len(),
            h.0
        )
    );
}

// ---------------------------------------------------------------------- KV

/// IEEE CRC-32, bitwise (independent of the guest's crc32fast).
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xedb8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// One record of KV log format v1.
fn kv_record(op: u8, key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut body = vec![op];
    body.extend_from_slice(&(key.len() as u32).to_le_bytes());
    body.extend_from_slice(&(value.len() as u32).to_le_bytes());
    body.extend_from_slice(key);
    body.extend_from_slice(value);
    let mut rec = (body.len() as u32).to_le_bytes().to_vec();
    rec.extend_from_slice(&body);
    rec.extend_from_slice(&crc32(&body).to_le_bytes());
    rec
}

fn kv_header(generation: u64) -> Vec<u8> {
    let mut h = b"VMMKV001".to_vec();
    h.extend_from_slice(&generation.to_le_bytes());
    h
}

#[test]
fn kv_log_in_guest_equals_host_model() {
    let p = KvParams {
        seed: 9,
        ops: 2500,
        batch: 25,
        keys: 300,
        compact_at: 64 << 10,
    };
    let dir = tempfile::tempdir().unwrap();
    let (out, image) = boot(
        dir.path(),
        &format!(
            "workload=kv seed={} ops={} batch={} keys={} compact_at={}",
            p.seed, p.ops, p.batch, p.keys, p.compact_at
        ),
    );
    let (off, cap) = layout(&out)["kv.log"];
    let extent = &image[off..off + cap];

    // The model: the log exactly as the format says it must be.
    let mut live: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    let mut generation = 1;
    let mut log = kv_header(generation);
    let (mut batches, mut compactions) = (0, 0);
    let mut script = KvScript::new(p);
    while let Some(batch) = script.next_batch() {
        batches += 1;
        for op in batch {
            match op {
                KvOp::Put(k, v) => {
                    log.extend(kv_record(1, &k, &v));
                    live.insert(k, v);
                }
                KvOp::Delete(k) => {
                    log.extend(kv_record(2, &k, &[]));
                    live.remove(&k);
                }
            }
        }
        if log.len() as u64 > p.compact_at {
            generation += 1;
            compactions += 1;
            log = kv_header(generation);
            for (k, v) in &live {
                log.extend(kv_record(1, k, v));
            }
        }
    }
    assert!(compactions >= 2, "the workload compacts ({compactions})");
    assert!(
        extent[..log.len()] == log[..],
        "log bytes differ from the model"
    );
    assert!(
        extent[log.len()..].iter().all(|b| *b == 0),
        "zeros after the log"
    );

    let mut h = Fnv::default();
    for (k, v) in &live {
        h.write(&(k.len() as u32).to_le_bytes());
        h.write(k);
        h.write(&(v.len() as u32).to_le_bytes());
        h.write(v);
    }
    assert_eq!(
        line(&out, "kv: "),
        format!(
            "ops={} batches={batches} compactions={compactions} generation={generation} live={} log_bytes={} fnv={:#018x}",
            p.ops,
            live.len(),
            log.len(),
            h.0
        )
    );
}
