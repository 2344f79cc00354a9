//! The content-addressed object store, shared by many VMM processes.
//!
//! Owns: objects keyed by the BLAKE3 of their bytes ([`ObjectId`], in packs
//! under one directory), the units every other crate shares (the 4 KiB
//! [`BLOCK_SIZE`], the zero block's id [`ObjectId::ZERO_BLOCK`], the
//! record clock [`clock::now_ns`]), hex text of hashes ([`hex`]), and
//! the [`ObjectBackend`] trait through which logs and snapshots reach
//! objects. Does not own: what the objects mean (change logs are
//! `changelog`'s, snapshots are `snapshot`'s) or which objects are live
//! (the mark phase of collection is `snapshot::gc`).
//!
//! One directory holds append-only pack files and an append-only index log
//! (the on-disk format is documented beside its code, in `store/format.rs`).
//! Objects are keyed by the BLAKE3 of their bytes ([`ObjectId`]), stored
//! zstd-compressed when that is smaller, and deduplicated exactly, also
//! between processes writing at the same time.
//!
//! # Concurrency
//! Writers take `flock(LOCK_EX)` on `DIR/lock` once per batch; under it they
//! read the index records other processes appended since they last looked,
//! skip objects already present, append the new values to the current pack
//! and then their index records. Readers take no lock: a record is only
//! appended after the bytes it points at; readers skip a damaged record
//! in the middle (reported in [`OpenReport::damaged`]) and stop at a tail
//! that is incomplete or fails its CRC.
//!
//! # Opening
//! A handle starts from the index snapshot (`index.snap`, `snap.rs`) when
//! it belongs to the index as it is now, and replays only the records
//! after it; a handle that read or wrote enough records past it saves a
//! new one when dropped ([`Store::save_index_snapshot`]). The snapshot is
//! a cache: damaged or stale, it is ignored and the index replayed whole.
//!
//! # Trust
//! [`Store::check`] checks one object (in the index with its pack bytes
//! there, or read back and BLAKE3-checked); [`repair`] rebuilds the index
//! from the packs, which describe themselves (format version 2). One [`Store`] may be shared
//! by threads (`&self` methods, `Send + Sync`).
//!
//! # Compaction
//! [`Store::compact`] rewrites the store keeping only the objects a caller
//! marks live (the sweep of `snapshot::gc`): new packs and a new index,
//! renamed over the old one; every handle reloads when it sees the new
//! index. Protocol, pins and the crash-safety argument are in `gc.rs`.
//!
//! # Zero objects
//! All-zero data is never written to a pack. `put` returns
//! [`ObjectId::zero`]`(len)`. For the well-known lengths (0 and powers of
//! two up to 1 MiB, which includes the 4 KiB [`ObjectId::ZERO_BLOCK`]) it
//! writes nothing at all and `get` answers from a table; for other lengths
//! it appends a 64-byte index-only record so that `get` knows the length.
//!
//! # Durability
//! `put`/`put_batch` write into the page cache: the objects are visible to
//! every process at once, but a host crash may lose them. **After
//! [`Store::sync`] returns `Ok`, every object whose `put` returned before
//! `sync` was called (on any handle, in any process) is durable**: the
//! packs holding values indexed since the last sync, the directories and
//! the index are fsynced. (A process crash loses nothing that was put: the
//! data is in the page cache.) A crash during an append leaves a torn index tail; it is
//! ignored and reported on open ([`OpenReport`]) and truncated by the next
//! writer, never guessed at. After a reboot the first writer checks every
//! object recorded since the last sync and revokes those whose bytes did
//! not survive, so dedup never points a new put at lost data.

mod backend;
pub mod clock;
mod error;
mod format;
mod gc;
pub mod hex;
mod id;
mod index;
mod lock;
mod pack;
mod read;
mod recover;
mod repair;
mod snap;
mod write;

#[cfg(test)]
mod tests;

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

pub use backend::ObjectBackend;
pub use error::{Result, StoreError};
pub use id::{
    is_all_zero, is_zero_block, IdHashBuilder, IdHasher, ObjectId, ParseObjectIdError, BLOCK_SIZE,
    MAX_WELL_KNOWN_ZERO_LEN,
};

use error::io_err;
use format::{decode_header, encode_header, BootId, HEADER_LEN, INDEX_MAGIC, RECORD_LEN};
pub use gc::{GcLock, GcReport, Pin};
pub use index::DamagedRecords;
use index::IndexView;
use pack::PackFiles;
pub use repair::{repair, DamagedObject, RepairReport};
pub use write::PutReport;

/// Largest object `put` accepts (64 MiB).
pub const MAX_OBJECT_LEN: usize = 64 << 20;

/// Tuning for a [`Store`] handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// A new pack is started once the current one reaches this size.
    pub pack_target_size: u64,
    /// zstd level. Level 1 was measured on 4 KiB pages of ELF binaries,
    /// an SQLite file and text: it stores within 1-2% of level 3 and
    /// compresses 15-35% faster, so it is the default.
    pub zstd_level: i32,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            pack_target_size: 256 << 20,
            zstd_level: 1,
        }
    }
}

/// What [`Store::open`] found in the index.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OpenReport {
    /// Objects (with pack bytes) visible after open.
    pub objects: u64,
    /// Length of the valid part of `index.log`.
    pub index_bytes: u64,
    /// Set when the index ends with bytes that are not a whole valid
    /// record (a crash during an append, or an append in progress).
    pub torn_tail: Option<TornTail>,
    /// Damaged records in the middle of the index, skipped (the objects
    /// they indexed are invisible until `vmm store repair`).
    pub damaged: Vec<DamagedRecords>,
    /// Human-readable findings, torn tail included.
    pub warnings: Vec<String>,
}

/// The ignored end of `index.log`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TornTail {
    /// Byte offset where the valid records end.
    pub offset: u64,
    /// Bytes ignored from there to the end of the file.
    pub bytes: u64,
    /// Why.
    pub detail: String,
}

/// Size of the store's contents, from the index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StoreStats {
    /// Distinct objects with bytes in a pack (zero objects excluded).
    pub objects: u64,
    /// Bytes those objects take in packs (after compression).
    pub stored_bytes: u64,
    /// Sum of those objects' own lengths.
    pub raw_bytes: u64,
    /// Pack files holding live objects.
    pub packs: u64,
    /// Damaged index records skipped (see [`OpenReport::damaged`]).
    pub damaged_index_records: u64,
    /// Byte offset of the first of them in `index.log`.
    pub first_damaged_index_offset: Option<u64>,
}

/// What [`Store::check`] found for one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ObjectCheck {
    /// Present (and, for a deep check, its bytes hash to its id).
    Ok,
    /// Not in the index.
    Missing,
    /// In the index, but its bytes are gone or do not check.
    Damaged(String),
}

/// A handle on a store directory. Cheap to share between threads; open one
/// per process (several per process also work and are exact too).
pub struct Store {
    dir: PathBuf,
    index_path: PathBuf,
    lock_path: PathBuf,
    opts: StoreOptions,
    boot: BootId,
    report: OpenReport,
    inner: Mutex<Inner>,
}

/// Mutable state of a handle, behind the handle's mutex.
pub(crate) struct Inner {
    view: IndexView,
    index: File,
    /// (device, inode) of `index`: a compaction replaces `index.log` by
    /// rename, and every handle reloads when the name's inode changes.
    generation: (u64, u64),
    lock: File,
    packs: PackFiles,
    warnings: Vec<String>,
}

impl Store {
    /// Opens (creating if needed) the store in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<Store> {
        Store::open_with(dir, StoreOptions::default())
    }

    /// Opens (creating if needed) the store in `dir`.
    pub fn open_with(dir: impl AsRef<Path>, opts: StoreOptions) -> Result<Store> {
        Store::open_as(dir.as_ref(), opts, lock::current_boot_id())
    }

    /// [`Store::open_with`] as if the host's boot id were `boot` (tests
    /// simulate reboots with it).
    pub(crate) fn open_as(dir: &Path, opts: StoreOptions, boot: BootId) -> Result<Store> {
        let packs_dir = dir.join("packs");
        let new_store_dir = !dir.is_dir();
        let new_packs_dir = !packs_dir.is_dir();
        std::fs::create_dir_all(&packs_dir).map_err(io_err("create directory", &packs_dir))?;
        if new_store_dir {
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsync_dir(parent)?;
            }
        }
        if new_packs_dir {
            fsync_dir(dir)?;
        }
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(io_err("open", &lock_path))?;
        let index_path = dir.join("index.log");
        let index = open_index(dir, &index_path, &lock, &lock_path)?;
        let generation = file_identity(&index, &index_path)?;

        // From the index snapshot when it belongs to this index, then the
        // records appended after it (`snap.rs`).
        let mut view = snap::load_or_new(dir, &index, generation);
        view.tail(&index, &index_path)?;
        let mut report = OpenReport {
            objects: view.totals().0,
            index_bytes: view.pos,
            ..OpenReport::default()
        };
        for d in &view.damaged {
            report.warnings.push(damage_warning(&index_path, d));
        }
        report.damaged = view.damaged.clone();
        if let Some(stop) = &view.stop {
            let detail = stop.describe(&index_path);
            report.warnings.push(detail.clone());
            report.torn_tail = Some(TornTail {
                offset: stop.offset,
                bytes: stop.file_len - stop.offset,
                detail,
            });
        }
        if view.last_boot.is_some_and(|b| b != boot) && view.pos > view.vouched {
            report.warnings.push(format!(
                "{}: records from byte {} on were written before the last reboot and never \
                 synced; objects among them may have lost their bytes (get reports them as \
                 corrupt) until the next writer checks and revokes them",
                index_path.display(),
                view.vouched
            ));
        }
        let inner = Inner {
            view,
            generation,
            index,
            lock,
            packs: PackFiles::new(packs_dir),
            warnings: report.warnings.clone(),
        };
        Ok(Store {
            dir: dir.to_path_buf(),
            index_path,
            lock_path,
            opts,
            boot,
            report,
            inner: Mutex::new(inner),
        })
    }

    /// The store directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What open found.
    pub fn open_report(&self) -> &OpenReport {
        &self.report
    }

    /// Every warning of this handle so far: those of open, then repairs it
    /// made as a writer (torn tails truncated, lost objects revoked).
    pub fn warnings(&self) -> Vec<String> {
        self.inner().warnings.clone()
    }

    /// Stores one object; returns its id.
    pub fn put(&self, data: &[u8]) -> Result<ObjectId> {
        Ok(self.put_batch(&[data])?.remove(0))
    }

    /// Returns object `id`, checked against its BLAKE3.
    pub fn get(&self, id: &ObjectId) -> Result<Vec<u8>> {
        let mut attempt = 0;
        let (loc, file, path) = loop {
            let mut g = self.inner();
            let loc = match g.view.get(id) {
                Some(loc) => loc,
                None => {
                    if let Some(len) = id.zero_len() {
                        return Ok(vec![0; len]);
                    }
                    g.refresh(&self.index_path)?;
                    g.view.get(id).ok_or_else(|| StoreError::NotFound {
                        id: *id,
                        dir: self.dir.clone(),
                        index_damage: g.view.damaged.first().map(|d| d.offset),
                    })?
                }
            };
            if loc.is_zero() {
                return Ok(vec![0; loc.raw_len as usize]);
            }
            match g.packs.reader(loc.pack) {
                Ok(file) => break (loc, file, g.packs.path(loc.pack)),
                // A compaction by another handle removed the pack this
                // (older) view points into: reload the index and retry.
                Err(StoreError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound
                        && attempt < 3
                        && g.reload_if_replaced(&self.index_path)? =>
                {
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        };
        pack::read_object(&file, &path, id, loc)
    }

    /// Brings this handle's view up to date: reloads the index if a
    /// compaction replaced it, then reads records appended since. (`get`
    /// and `put` do this when they need to; `contains` answers from the
    /// view when it knows the id, so call this first when another process
    /// may have run [`Store::compact`].)
    pub fn refresh(&self) -> Result<()> {
        self.inner().refresh(&self.index_path)
    }

    /// Whether object `id` is in the store (zero objects always are). Reads
    /// new index records if it is not known yet; if that read fails the
    /// answer is `false` and the next `get` or `put` reports the error.
    pub fn contains(&self, id: &ObjectId) -> bool {
        let mut g = self.inner();
        if g.view.get(id).is_some() || id.zero_len().is_some() {
            return true;
        }
        g.refresh(&self.index_path).is_ok() && g.view.get(id).is_some()
    }

    /// Sizes from the index, after reading new records (if that read
    /// fails, from the records read before).
    pub fn stats(&self) -> StoreStats {
        let mut g = self.inner();
        let _ = g.refresh(&self.index_path);
        let (objects, stored_bytes, raw_bytes) = g.view.totals();
        StoreStats {
            objects,
            stored_bytes,
            raw_bytes,
            packs: g.view.packs_since(0).len() as u64,
            damaged_index_records: g.view.damaged.iter().map(|d| d.records).sum(),
            first_damaged_index_offset: g.view.damaged.first().map(|d| d.offset),
        }
    }

    /// Checks object `id`: `deep` reads it back and checks its BLAKE3
    /// (as [`Store::get`]); otherwise only that the index has it and its
    /// pack file holds its byte range. Errors are returned only for
    /// failures that say nothing about the object (the index unreadable).
    pub fn check(&self, id: &ObjectId, deep: bool) -> Result<ObjectCheck> {
        if deep {
            return match self.get(id) {
                Ok(_) => Ok(self.check_entry_header(id)),
                Err(StoreError::NotFound { .. }) => Ok(ObjectCheck::Missing),
                Err(e @ StoreError::IndexCorrupt { .. }) => Err(e),
                Err(e) => Ok(ObjectCheck::Damaged(object_problem(&e))),
            };
        }
        if !self.contains(id) {
            return Ok(ObjectCheck::Missing);
        }
        let mut g = self.inner();
        let Some(loc) = g.view.get(id).filter(|l| !l.is_zero()) else {
            return Ok(ObjectCheck::Ok);
        };
        let file = match g.packs.reader(loc.pack) {
            Ok(f) => f,
            Err(e) => return Ok(ObjectCheck::Damaged(object_problem(&e))),
        };
        let path = g.packs.path(loc.pack);
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        let end = loc.offset + u64::from(loc.stored_len);
        Ok(if len < end {
            ObjectCheck::Damaged(format!(
                "{} is {len} bytes, the object's bytes end at {end}",
                path.display()
            ))
        } else {
            ObjectCheck::Ok
        })
    }

    /// A readable object's entry header in a version 2 pack must still
    /// describe it: the object reads fine through the index, but `store
    /// repair` finds objects by their headers, so a damaged header is
    /// damage the deep check reports rather than an OK.
    fn check_entry_header(&self, id: &ObjectId) -> ObjectCheck {
        let mut g = self.inner();
        let Some(loc) = g.view.get(id).filter(|l| !l.is_zero()) else {
            return ObjectCheck::Ok;
        };
        let path = g.packs.path(loc.pack);
        let Ok(file) = g.packs.reader(loc.pack) else {
            return ObjectCheck::Ok; // the read just succeeded; a race with gc
        };
        match pack::check_header(&file, &path, loc.pack) {
            Ok(v) if v >= 2 => {}
            _ => return ObjectCheck::Ok, // version 1 packs have no entry headers
        }
        let Some(at) = loc.offset.checked_sub(format::ENTRY_LEN as u64) else {
            return ObjectCheck::Damaged(format!(
                "{}: the object at offset {} has no room for its entry header",
                path.display(),
                loc.offset
            ));
        };
        let mut b = [0u8; format::ENTRY_LEN];
        let problem = match file.read_exact_at(&mut b, at) {
            Err(e) => format!("cannot read its entry header: {e}"),
            Ok(()) => match format::EntryHeader::decode(&b) {
                Ok(h) if h.id == *id && h.stored_len == loc.stored_len => return ObjectCheck::Ok,
                Ok(_) => "its entry header names another object".to_string(),
                Err(why) => why,
            },
        };
        ObjectCheck::Damaged(format!(
            "{} offset {at}: {problem} (the object reads through the index, but `vmm store \
             repair` could not find it in the pack)",
            path.display()
        ))
    }

    fn inner(&self) -> MutexGuard<'_, Inner> {
        // A panic elsewhere cannot leave the view inconsistent with the
        // files in a harmful way: it is only ever extended from them.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    /// Reads index records appended since the last look (reloading the
    /// index first if a compaction replaced it).
    fn refresh(&mut self, index_path: &Path) -> Result<()> {
        self.reload_if_replaced(index_path)?;
        self.view.tail(&self.index, index_path)
    }

    /// If `index.log` is no longer the file this handle has open (a
    /// compaction renamed a new one over it), opens the new one and
    /// rebuilds the view from it. Returns whether it did.
    fn reload_if_replaced(&mut self, index_path: &Path) -> Result<bool> {
        let now = match std::fs::metadata(index_path) {
            Ok(m) => {
                use std::os::unix::fs::MetadataExt;
                (m.dev(), m.ino())
            }
            Err(e) => return Err(io_err("stat", index_path)(e)),
        };
        if now == self.generation {
            return Ok(false);
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(index_path)
            .map_err(io_err("open", index_path))?;
        let generation = file_identity(&file, index_path)?;
        let dir = index_path.parent().unwrap_or(Path::new("."));
        let mut view = snap::load_or_new(dir, &file, generation);
        view.tail(&file, index_path)?;
        self.generation = generation;
        self.index = file;
        self.view = view;
        Ok(true)
    }
}

/// The warning for a run of damaged index records.
fn damage_warning(index_path: &Path, d: &DamagedRecords) -> String {
    format!(
        "{}: {} damaged record(s) at byte {} ({}), valid records follow: skipped; objects \
         they indexed are invisible until `vmm store repair` rebuilds the index from the packs",
        index_path.display(),
        d.records,
        d.offset,
        d.detail
    )
}

/// What is wrong with one object, without the store's generic advice.
fn object_problem(e: &StoreError) -> String {
    match e {
        StoreError::Corrupt {
            path,
            offset,
            detail,
            ..
        } => {
            format!("{detail} ({} at byte {offset})", path.display())
        }
        StoreError::Io { op, path, source } => format!("cannot {op} {}: {source}", path.display()),
        StoreError::BadHeader { path, detail } => format!("{}: {detail}", path.display()),
        other => other.to_string(),
    }
}

/// (device, inode) of an open file.
fn file_identity(f: &File, path: &Path) -> Result<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = f.metadata().map_err(io_err("stat", path))?;
    Ok((m.dev(), m.ino()))
}

/// Opens `index.log`, creating it (header, fsync) under the writers' lock
/// when it is missing or shorter than its header.
fn open_index(dir: &Path, path: &Path, lock: &File, lock_path: &Path) -> Result<File> {
    let open = || OpenOptions::new().read(true).write(true).open(path);
    let file = match open() {
        Ok(f) if f.metadata().map_err(io_err("stat", path))?.len() >= HEADER_LEN => f,
        Ok(_) | Err(_) => {
            let _g = lock::lock_exclusive(lock, lock_path)?;
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(io_err("create", path))?;
            if f.metadata().map_err(io_err("stat", path))?.len() < HEADER_LEN {
                f.set_len(0).map_err(io_err("truncate", path))?;
                f.write_all_at(&encode_header(INDEX_MAGIC, RECORD_LEN as u32), 0)
                    .map_err(io_err("write", path))?;
                f.sync_all().map_err(io_err("fsync", path))?;
                fsync_dir(dir)?;
            }
            f
        }
    };
    let mut h = [0u8; HEADER_LEN as usize];
    let got = index::read_upto(&file, &mut h, 0).map_err(io_err("read", path))?;
    let bad = |detail: String| StoreError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    let rec_len = decode_header(&h[..got], INDEX_MAGIC).map_err(bad)?;
    if rec_len != RECORD_LEN as u32 {
        return Err(bad(format!(
            "record length {rec_len}, expected {RECORD_LEN}"
        )));
    }
    Ok(file)
}

/// fsyncs a directory so that entries created in it survive a crash.
fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
