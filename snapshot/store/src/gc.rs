//! Compaction: the sweep of a mark-and-sweep garbage collection, and the
//! pins that keep it from racing writers.
//!
//! # Protocol
//! ```text
//! DIR/gc.lock    empty; pins hold flock(LOCK_SH), a collection LOCK_EX
//! ```
//! - A writer that puts objects and then records references to them (a
//!   snapshot manifest, a change-log batch) holds a [`Pin`] from before the
//!   first put until the references are written: between the two, nothing
//!   but the writer knows the objects are in use.
//! - A collection takes [`Store::gc_lock`] (waits for pins to go, blocks new
//!   ones), *then* computes the live set from every manifest and log, then
//!   calls [`Store::compact`]. Computing the set under the lock is what
//!   makes it complete.
//! - flock locks belong to open files: a thread that holds a pin must not
//!   take the collection lock (it would wait for itself).
//!
//! # What compact does (with the writers' lock held throughout)
//! 1. Reads the index (recovering it as any writer does).
//! 2. Copies the stored bytes of every live object, each after a fresh
//!    entry header: compressed objects verbatim (no recompression), objects
//!    stored uncompressed (the block tap's puts) compressed when that makes
//!    them smaller and their bytes still match their id (packs are always
//!    written in the current version, so compaction upgrades v1 stores), into new packs numbered above every pack file in
//!    the directory, and fsyncs them and `packs/`.
//! 3. Writes `index.log.compact`: the header, one OBJECT record per live
//!    object, a SYNC record covering them all; fsyncs it.
//! 4. Renames it over `index.log` and fsyncs the directory (the commit
//!    point).
//! 5. Deletes every pack file the new index does not use; fsyncs `packs/`.
//!
//! # Crash safety
//! Before step 4 completes, `index.log` is the old, untouched index and
//! every pack it points into is untouched: the new packs are unreferenced
//! files above every referenced number, dead bytes at worst (a writer may
//! later append after them; the next compaction deletes them). The rename
//! is atomic: after a crash the index is wholly old or wholly new. The new
//! index points only into packs fsynced before the rename, and its SYNC
//! record vouches for all of it, so no recovery check is needed after a
//! reboot. A crash during step 5 leaves unreferenced old packs, deleted by
//! the next compaction.
//!
//! # Concurrent handles (other processes)
//! Pack numbers are never reused: new packs are numbered above every file
//! in `packs/`, and an index with no pack records appends after the
//! highest file there. A handle whose view predates the compaction notices
//! that `index.log` is another inode (writers under the lock, always;
//! readers when an object is missing, a pack is gone, or on
//! [`Store::refresh`]) and reloads. Until then it reads old packs through
//! descriptors it already has (deleted files stay readable) or gets
//! "not found" opening a removed one, which makes it reload and retry.
//! Every object returned is checked against its BLAKE3 regardless. A
//! writer whose unlocked dedup check used the old view starts its batch
//! over once it holds the lock.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::{io_err, Result, StoreError};
use super::format::{
    encode_header, EntryHeader, Loc, Record, ENTRY_LEN, FLAG_ZSTD, HEADER_LEN, INDEX_MAGIC,
    PACK_MAGIC, RECORD_LEN,
};
use super::index::read_upto;
use super::lock::lock_exclusive;
use super::pack::{append_stored, PackFiles};
use super::{fsync_dir, ObjectId, Store};

/// Held by a writer between putting objects and recording references to
/// them; a collection waits for it (see the module doc).
pub struct Pin {
    _file: File,
}

/// The right to run [`Store::compact`]: no pin is held while it lives.
pub struct GcLock {
    _file: File,
}

/// What [`Store::compact`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct GcReport {
    /// Objects with pack bytes before.
    pub objects_before: u64,
    /// Of those, kept.
    pub objects_kept: u64,
    /// Bytes objects took in packs before.
    pub stored_bytes_before: u64,
    /// And after.
    pub stored_bytes_after: u64,
    /// Pack files before (referenced or not).
    pub pack_files_before: u64,
    /// Pack files after.
    pub pack_files_after: u64,
    /// Bytes of pack files and index removed from the disk.
    pub bytes_freed: u64,
}

impl Store {
    /// Takes a pin (shared lock on `DIR/gc.lock`); blocks while a
    /// collection runs.
    pub fn pin(&self) -> Result<Pin> {
        Ok(Pin {
            _file: self.gc_lock_file(libc::LOCK_SH)?,
        })
    }

    /// Takes the collection lock (exclusive lock on `DIR/gc.lock`); blocks
    /// until every pin is released.
    pub fn gc_lock(&self) -> Result<GcLock> {
        Ok(GcLock {
            _file: self.gc_lock_file(libc::LOCK_EX)?,
        })
    }

    /// Whether a collection could start now: false while any handle holds
    /// a pin (a recording or snapshotting VMM) or another collection runs.
    pub fn gc_possible(&self) -> Result<bool> {
        match self.gc_lock_file(libc::LOCK_EX | libc::LOCK_NB) {
            Ok(_file) => Ok(true),
            Err(StoreError::Io { source, .. })
                if source.raw_os_error() == Some(libc::EWOULDBLOCK) =>
            {
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    fn gc_lock_file(&self, op: libc::c_int) -> Result<File> {
        let path = self.dir.join("gc.lock");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            // SAFETY: flock on an open file descriptor; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), op) } == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err("lock (flock)", &path)(e));
            }
        }
    }

    /// Rewrites the store keeping only the objects for which `live` is
    /// true (see the module doc for the steps and why they are safe).
    /// Well-known zero objects need no entry and are always present.
    pub fn compact(&self, _lock: &GcLock, live: impl Fn(&ObjectId) -> bool) -> Result<GcReport> {
        let mut g = self.inner();
        let _locked = lock_exclusive(&g.lock, &self.lock_path)?;
        g.prepare_write(&self.index_path, self.boot)?;
        let (objects_before, stored_bytes_before, _) = g.view.totals();
        let mut keep: Vec<(ObjectId, Loc)> = g.view.entries().filter(|(id, _)| live(id)).collect();
        keep.sort_by_key(|(_, l)| (l.pack, l.offset));

        let packs_dir = self.dir.join("packs");
        let old_files = g.packs.on_disk()?;
        let old_bytes = files_len(&old_files, &g.packs) + file_len(&self.index_path);
        let first = old_files
            .last()
            .copied()
            .max(g.view.max_pack())
            .map_or(0, |n| n + 1);

        let mut out = NewPacks::create(&g.packs, first)?;
        let mut records = Vec::with_capacity(keep.len() + 1);
        let mut buf = Vec::new();
        let mut frame = Vec::new();
        let mut objects_kept = 0;
        let mut stored_bytes_after = 0;
        for (id, loc) in keep {
            if loc.is_zero() {
                records.push(Record::Object { id, loc });
                continue;
            }
            let path = g.packs.path(loc.pack);
            let file = g.packs.reader(loc.pack)?;
            buf.resize(loc.stored_len as usize, 0);
            let got = read_upto(&file, &mut buf, loc.offset).map_err(io_err("read", &path))?;
            if got < buf.len() {
                return Err(StoreError::Corrupt {
                    id,
                    path,
                    offset: loc.offset,
                    detail: format!(
                        "the pack ends {got} bytes into the {}-byte value",
                        buf.len()
                    ),
                });
            }
            if out.len >= self.opts.pack_target_size {
                out.roll(&g.packs)?;
            }
            // Compression behind the writers: an object stored as it is
            // (the block tap puts uncompressed, off the guest's path) is
            // compressed here when that makes it smaller. One whose bytes
            // no longer match its id is copied as it is: compressing would
            // not repair it, and `verify` must still find it.
            let raw = loc.flags & FLAG_ZSTD == 0 && loc.stored_len == loc.raw_len;
            let compressed = raw && ObjectId::of(&buf) == id && {
                frame.clear();
                append_stored(self.opts.zstd_level, &buf, &mut frame).1 & FLAG_ZSTD != 0
            };
            let (stored, stored_len, flags) = if compressed {
                (&frame[..], frame.len() as u32, FLAG_ZSTD)
            } else {
                (&buf[..], loc.stored_len, loc.flags)
            };
            let entry = EntryHeader {
                id,
                raw_len: loc.raw_len,
                stored_len,
                flags,
            };
            let (pack, offset) = out.append(&entry.encode(), stored)?;
            records.push(Record::Object {
                id,
                loc: Loc {
                    pack,
                    offset,
                    stored_len,
                    flags,
                    ..loc
                },
            });
            objects_kept += 1;
            stored_bytes_after += u64::from(stored_len);
        }
        let new_files = out.finish()?;
        fsync_dir(&packs_dir)?;

        let covers = HEADER_LEN + (records.len() * RECORD_LEN) as u64;
        records.push(Record::Sync {
            boot: self.boot,
            covers,
        });
        let tmp = self.dir.join("index.log.compact");
        let mut bytes = Vec::with_capacity(HEADER_LEN as usize + records.len() * RECORD_LEN);
        bytes.extend_from_slice(&encode_header(INDEX_MAGIC, RECORD_LEN as u32));
        for r in &records {
            bytes.extend_from_slice(&r.encode());
        }
        let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all_at(&bytes, 0).map_err(io_err("write", &tmp))?;
        f.sync_all().map_err(io_err("fsync", &tmp))?;
        std::fs::rename(&tmp, &self.index_path).map_err(io_err("rename over", &self.index_path))?;
        fsync_dir(&self.dir)?;

        // Committed. Take the new index, then remove what it does not use.
        g.reload_if_replaced(&self.index_path)?;
        g.packs = PackFiles::new(packs_dir.clone());
        for n in &old_files {
            let path = g.packs.path(*n);
            std::fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        fsync_dir(&packs_dir)?;
        let new_bytes = files_len(&new_files, &g.packs) + file_len(&self.index_path);
        Ok(GcReport {
            objects_before,
            objects_kept,
            stored_bytes_before,
            stored_bytes_after,
            pack_files_before: old_files.len() as u64,
            pack_files_after: new_files.len() as u64,
            bytes_freed: old_bytes.saturating_sub(new_bytes),
        })
    }
}

/// The packs a compaction writes.
struct NewPacks {
    n: u32,
    file: File,
    path: PathBuf,
    len: u64,
    done: Vec<u32>,
}

impl NewPacks {
    /// Creates pack `n` (which must not exist) with its header.
    fn create(packs: &PackFiles, n: u32) -> Result<NewPacks> {
        let path = packs.path(n);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("create pack", &path))?;
        file.write_all_at(&encode_header(PACK_MAGIC, n), 0)
            .map_err(io_err("write", &path))?;
        Ok(NewPacks {
            n,
            file,
            path,
            len: HEADER_LEN,
            done: Vec::new(),
        })
    }

    /// Appends one entry (header, stored bytes); returns where the
    /// stored bytes went.
    fn append(&mut self, header: &[u8; ENTRY_LEN], bytes: &[u8]) -> Result<(u32, u64)> {
        let at = self.len;
        let mut entry = Vec::with_capacity(ENTRY_LEN + bytes.len());
        entry.extend_from_slice(header);
        entry.extend_from_slice(bytes);
        self.file
            .write_all_at(&entry, at)
            .map_err(io_err("write", &self.path))?;
        self.len += entry.len() as u64;
        Ok((self.n, at + ENTRY_LEN as u64))
    }

    /// Syncs the current pack and starts the next.
    fn roll(&mut self, packs: &PackFiles) -> Result<()> {
        let next = NewPacks::create(packs, self.n + 1)?;
        let done = std::mem::replace(self, next);
        self.done = done.finish()?;
        Ok(())
    }

    /// Syncs the current pack; returns every pack written. The last one
    /// is kept even if empty, so that pack numbers go on above it.
    fn finish(mut self) -> Result<Vec<u32>> {
        self.file.sync_all().map_err(io_err("fsync", &self.path))?;
        self.done.push(self.n);
        Ok(self.done)
    }
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

fn files_len(packs: &[u32], files: &PackFiles) -> u64 {
    packs.iter().map(|&n| file_len(&files.path(n))).sum()
}
