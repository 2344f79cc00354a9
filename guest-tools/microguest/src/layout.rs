//! The disk layout of every workload that keeps files on the virtio disk:
//! the one place that says which file lives where.
//!
//! Each file is one FIXED, contiguous extent: file byte `o` is disk byte
//! `sector * 512 + o`, for `o < len` (the extent's capacity). A file's
//! logical size is kept apart from its bytes (see each format), so the host
//! can read a file straight from the disk image or its block log.
//!
//! ```text
//! disk byte        sector    file            capacity  format
//! 0x0000_0000           0    (unused)           1 MiB
//! 0x0010_0000        2048    vfs.dir            4 KiB  sqlite VFS directory: the sizes
//!                                                      of the three files below
//!                                                      (sqlite/vfs/mod.rs documents it)
//! 0x0020_0000        4096    app.db            32 MiB  SQLite database
//! 0x0220_0000       69632    app.db-journal    12 MiB  SQLite rollback journal
//! 0x02e0_0000       94208    app.db-wal        12 MiB  SQLite write-ahead log
//! 0x03a0_0000      118784    doc.json           2 MiB  JSON document, zero-filled
//!                                                      after its end (workloads/json.rs)
//! 0x03c0_0000      122880    kv.log             2 MiB  KV log format v1 (workloads/kv.rs)
//! 0x03e0_0000      126976    leveldb/000001.log 2 MiB  LevelDB write-ahead log, zero-filled
//!                                                      after its end (workloads/leveldb.rs)
//! 0x0400_0000                end: a 64 MiB disk holds every file
//! ```
//! The SQLite WAL index (`app.db-shm`) is not on disk: the VFS keeps it in
//! guest memory (one process, no other reader).
//!
//! Each workload prints the extents it uses once at its start, one line per
//! file, for the host to take as hints:
//! `layout: file=app.db format=sqlite sector=4096 len=33554432`.
use crate::say;

pub struct Extent {
    pub name: &'static str,
    /// What the file holds: sqlite, sqlite-journal, sqlite-wal, vfs-dir,
    /// json, kv, leveldb.
    pub format: &'static str,
    /// First 512-byte sector (4 KiB aligned).
    pub sector: u64,
    /// Capacity in bytes (a multiple of 4 KiB).
    pub len: u64,
}

const MIB: u64 = 1 << 20;

const fn at(mib: u64) -> u64 {
    mib * MIB / 512
}

pub const VFS_DIR: Extent = Extent {
    name: "vfs.dir",
    format: "vfs-dir",
    sector: at(1),
    len: 4096,
};
pub const APP_DB: Extent = Extent {
    name: "app.db",
    format: "sqlite",
    sector: at(2),
    len: 32 * MIB,
};
pub const APP_DB_JOURNAL: Extent = Extent {
    name: "app.db-journal",
    format: "sqlite-journal",
    sector: at(34),
    len: 12 * MIB,
};
pub const APP_DB_WAL: Extent = Extent {
    name: "app.db-wal",
    format: "sqlite-wal",
    sector: at(46),
    len: 12 * MIB,
};
pub const DOC_JSON: Extent = Extent {
    name: "doc.json",
    format: "json",
    sector: at(58),
    len: 2 * MIB,
};
pub const KV_LOG: Extent = Extent {
    name: "kv.log",
    format: "kv",
    sector: at(60),
    len: 2 * MIB,
};
pub const LEVELDB_LOG: Extent = Extent {
    name: "leveldb/000001.log",
    format: "leveldb",
    sector: at(62),
    len: 2 * MIB,
};

/// Every extent, in disk order.
pub const ALL: [&Extent; 7] = [
    &VFS_DIR,
    &APP_DB,
    &APP_DB_JOURNAL,
    &APP_DB_WAL,
    &DOC_JSON,
    &KV_LOG,
    &LEVELDB_LOG,
];

/// The files of the SQLite VFS (the directory's entries, in order).
pub const SQLITE_FILES: [&Extent; 3] = [&APP_DB, &APP_DB_JOURNAL, &APP_DB_WAL];

impl Extent {
    pub const fn offset(&self) -> u64 {
        self.sector * 512
    }

    pub const fn end(&self) -> u64 {
        self.offset() + self.len
    }

    /// The hint identity of this file: (file id, main file id, format, role).
    pub fn hint_id(&self) -> Option<(u32, u32, hint_proto::Format, hint_proto::Role)> {
        use hint_proto::{Format, Role};
        Some(match self.format {
            "sqlite" => (1, 1, Format::Sqlite, Role::Main),
            "sqlite-journal" => (2, 1, Format::Sqlite, Role::Journal),
            "sqlite-wal" => (3, 1, Format::Sqlite, Role::Wal),
            "json" => (4, 4, Format::Json, Role::Main),
            "kv" => (5, 5, Format::Kv, Role::Main),
            // A lone log: the host reads a LevelDB database without CURRENT
            // as its logs (decode::leveldb), named by the directory.
            "leveldb" => (6, 6, Format::LevelDb, Role::Main),
            _ => return None,
        })
    }

    /// Prints this extent's `layout:` line and tells the host by a hint.
    pub fn announce(&self) {
        if let Some((id, main, format, role)) = self.hint_id() {
            crate::hints::file(id, main, format, role, self.name, self.sector, self.len);
            if role == hint_proto::Role::Main && format != hint_proto::Format::Sqlite {
                // JSON and KV files are zero-padded to their extent.
                crate::hints::size(id, self.len, true);
            }
            if format == hint_proto::Format::Json {
                crate::hints::schema(id, "/records:id");
            }
        }
        say!(
            "layout: file={} format={} sector={} len={}\n",
            self.name,
            self.format,
            self.sector,
            self.len
        );
    }
}

/// Prints the `layout:` lines of `extents` and checks that the disk of
/// `capacity` bytes holds them; false (and a message) when it does not.
pub fn announce(extents: &[&Extent], capacity: u64) -> bool {
    for e in extents {
        e.announce();
    }
    let need = extents.iter().map(|e| e.end()).max().unwrap_or(0);
    if capacity < need {
        say!("layout: disk too small: {capacity} bytes, need {need}\n");
        return false;
    }
    true
}

/// Checks at compile time that extents are 4 KiB aligned, in order and
/// disjoint.
const _: () = {
    let mut i = 0;
    while i < ALL.len() {
        assert!(ALL[i].sector.is_multiple_of(8) && ALL[i].len.is_multiple_of(4096));
        if i > 0 {
            assert!(ALL[i - 1].end() <= ALL[i].offset());
        }
        i += 1;
    }
};
