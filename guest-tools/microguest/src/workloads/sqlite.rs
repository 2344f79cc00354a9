//! `workload=sqlite`: real SQLite on the virtio disk, and
//! `workload=sqlite-summary`: reopen what an earlier boot left.
//!
//! Command line of `sqlite`: `seed=S` (1), `rows=N` (1000: customers
//! loaded; the other phases scale with it, see `spec::SqliteScript`),
//! `txn=T` (50 statements per transaction), `snap_every=K` (0: after every
//! K-th committed transaction ask the VMM for a snapshot, the first full,
//! later ones incremental), `journal=delete|truncate|persist|wal`
//! (delete), `close=1|0` (1: close the database and shut the VFS down at the
//! end; 0: stop right after the summary, like a power cut: only what
//! committed transactions synced is on disk, and in WAL mode the WAL keeps
//! the frames not yet checkpointed).
//!
//! Output, after the `layout:` lines:
//! ```text
//! sqlite: journal=wal seed=7 rows=1000 txns=T customers=N orders=N kv=N tags=N audit=N checksum=0x... integrity=ok pages=P freelist=F version=3.54.1
//! sqlite-io: reads=R writes=W flushes=F bytes_written=B
//! ```
//! `sqlite-summary` prints the same `sqlite:` fields from `customers=` on,
//! computed from the database as it finds it.
use alloc::string::String;

use super::memtest::SNAPSHOT_PORT;
use super::spec::{sqlite_pragmas, Fnv, SqliteParams, SqliteScript, SqliteSummary, SQLITE_SUMMARY};
use crate::cmdline::Cmdline;
use crate::disk::Disk;
use crate::io::outb;
use crate::layout::{self, APP_DB, APP_DB_JOURNAL, APP_DB_WAL, VFS_DIR};
use crate::say;
use crate::sqlite::{vfs, Db, Error};

const FILES: [&layout::Extent; 4] = [&VFS_DIR, &APP_DB, &APP_DB_JOURNAL, &APP_DB_WAL];

fn start(cmdline: &Cmdline) -> Option<()> {
    let disk = Disk::open(cmdline)?;
    if !layout::announce(&FILES, disk.capacity()) {
        return None;
    }
    if let Err(e) = vfs::install(disk, cmdline.get_u64("seed", 1)) {
        say!("sqlite: cannot set up the VFS: {e:?}\n");
        return None;
    }
    Some(())
}

/// The summary of `db`: counts and checksum of `SQLITE_SUMMARY`, then
/// `integrity=... pages=N freelist=N version=3.x.y` (the SQLite library's).
fn summarize(db: &Db) -> Result<String, Error> {
    let mut summary = SqliteSummary::default();
    let mut h = Fnv::default();
    for (i, (_, sql)) in SQLITE_SUMMARY.iter().enumerate() {
        let rows = db.query(sql, &[])?;
        summary.add_rows(&mut h, i, &rows);
    }
    let check = db.query("PRAGMA integrity_check", &[])?;
    let integrity = match check.as_slice() {
        [row] => match row.first() {
            Some(super::spec::Value::Text(t)) => t.clone(),
            _ => String::from("?"),
        },
        _ => alloc::format!("{}-problems", check.len()),
    };
    let pages = db.query_i64("PRAGMA page_count")?;
    let freelist = db.query_i64("PRAGMA freelist_count")?;
    // SAFETY: sqlite3_libversion returns a static C string.
    let version = unsafe { core::ffi::CStr::from_ptr(libsqlite3_sys::sqlite3_libversion()) };
    Ok(alloc::format!(
        "{} integrity={integrity} pages={pages} freelist={freelist} version={}",
        summary.line(),
        version.to_str().unwrap_or("?")
    ))
}

fn print_io() {
    let s = vfs::disk_stats();
    say!(
        "sqlite-io: reads={} writes={} flushes={} bytes_written={}\n",
        s.reads,
        s.writes,
        s.flushes,
        s.bytes_written
    );
}

pub fn run(cmdline: &Cmdline) -> u32 {
    let journal = cmdline.get("journal").unwrap_or("delete");
    if !matches!(journal, "delete" | "truncate" | "persist" | "wal") {
        say!("sqlite: journal must be delete, truncate, persist or wal\n");
        return crate::EXIT_GUEST_ERROR;
    }
    let p = SqliteParams {
        seed: cmdline.get_u64("seed", 1),
        rows: cmdline.get_u64("rows", 1000),
        txn: cmdline.get_u64("txn", 50),
    };
    let close = cmdline.get_u64("close", 1) != 0;
    let snap_every = cmdline.get_u64("snap_every", 0);
    let mut snaps = 0u64;
    if start(cmdline).is_none() {
        return crate::EXIT_GUEST_ERROR;
    }
    let mut script = SqliteScript::new(p);
    let result = (|| -> Result<(Db, String), Error> {
        let db = Db::open(c"app.db")?;
        for pragma in sqlite_pragmas(journal) {
            db.query(&pragma, &[])?;
        }
        while let Some(txn) = script.next_txn() {
            db.run("BEGIN", &[])?;
            for st in &txn {
                db.run(&st.sql, &st.params).map_err(|e| Error {
                    msg: alloc::format!("txn {}: {}: {}", script.txns(), st.sql, e.msg),
                    ..e
                })?;
            }
            db.run("COMMIT", &[])?;
            if snap_every != 0 && script.txns() % snap_every == 0 {
                outb(SNAPSHOT_PORT, if snaps == 0 { 1 } else { 2 });
                snaps += 1;
            }
        }
        let line = summarize(&db)?;
        Ok((db, line))
    })();
    let (db, line) = match result {
        Ok(x) => x,
        Err(e) => {
            say!("sqlite: error: {e}\n");
            return 1;
        }
    };
    if close {
        if let Err(e) = db.close() {
            say!("sqlite: close: {e}\n");
            return 1;
        }
        if let Err(e) = vfs::shutdown() {
            say!("sqlite: shutdown: {e:?}\n");
            return 1;
        }
    } else {
        db.abandon();
    }
    say!(
        "sqlite: journal={journal} seed={} rows={} txns={} {line}\n",
        p.seed,
        p.rows,
        script.txns()
    );
    print_io();
    if vfs::failed() {
        return 1;
    }
    0
}

/// Opens the database an earlier boot left and prints its summary; exits 1
/// when it cannot be read or `PRAGMA integrity_check` finds damage (a
/// disaster-recovery drill's check of an SQLite disk).
pub fn summary(cmdline: &Cmdline) -> u32 {
    if start(cmdline).is_none() {
        return crate::EXIT_GUEST_ERROR;
    }
    let result = (|| -> Result<String, Error> {
        let db = Db::open(c"app.db")?;
        let line = summarize(&db)?;
        db.close()?;
        Ok(line)
    })();
    match result {
        Ok(line) => {
            if vfs::shutdown().is_err() {
                return 1;
            }
            say!("sqlite-summary: {line}\n");
            print_io();
            u32::from(!line.contains(" integrity=ok "))
        }
        Err(e) => {
            say!("sqlite-summary: error: {e}\n");
            1
        }
    }
}
