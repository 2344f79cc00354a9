//! The microguest's SQLite VFS ("microguest"): every file SQLite keeps is a
//! FIXED extent of the virtio disk, and the file sizes live in one
//! directory block.
//!
//! # Disk layout (format "MGVFSDIR" version 1)
//!
//! The extents come from `layout.rs`: `vfs.dir` (4 KiB at sector 2048),
//! `app.db` (sector 4096), `app.db-journal` (sector 69632) and `app.db-wal`
//! (sector 94208). A file's bytes are contiguous on disk: file offset `o` is
//! disk byte `start_sector * 512 + o`, so the host reads `app.db` straight
//! from the image. Bytes of an extent at or beyond the file's size mean
//! nothing (stale data of earlier, longer versions of the file).
//!
//! The directory block (4096 bytes, all integers little-endian):
//!
//! ```text
//! offset  size  field
//!      0     8  magic "MGVFSDIR"
//!      8     4  version = 1
//!     12     4  entry count N (= 3)
//!     16     8  sequence: +1 at every directory write
//!     24     4  entry size = 64
//!     28     4  reserved (0)
//!     32  N*64  entries, in this order: app.db, app.db-journal, app.db-wal
//!                  +0  32  file name, UTF-8, NUL-padded
//!                 +32   8  start sector (512-byte sectors)
//!                 +40   8  capacity in bytes
//!                 +48   8  size in bytes (the file's logical size)
//!                 +56   4  flags: bit 0 = the file exists
//!                 +60   4  reserved (0)
//!   4092     4  CRC-32 (IEEE) of bytes 0..4092
//! ```
//!
//! # When the disk changes
//!
//! Writes go to a write-back cache of 4 KiB blocks. `xSync` of a file writes
//! its dirty blocks (sorted, contiguous runs batched into large requests),
//! then the directory block if that file's size or existence changed since
//! the directory was last written, then a virtio FLUSH. `xDelete` (the
//! commit point of `journal_mode=DELETE`) drops the file's cached blocks,
//! writes the directory with the file marked absent, and FLUSHes. So at
//! every FLUSH the directory gives, for each file, the size it had at its
//! last sync or delete, and the extent holds at least those bytes: the
//! state SQLite itself would find after a power cut there. The directory is
//! written only by a sync or a delete, by `shutdown` (the workload's orderly
//! end: all dirty blocks, the directory, a FLUSH), and once at the start on
//! a disk without a valid directory (all files absent) - never for a size
//! change alone. Sequence numbers grow by one per directory write.
//!
//! The WAL index (`-shm`) is NOT on disk: `xShmMap` hands out zeroed guest
//! memory (single process, the usual locking mode; the locks are no-ops
//! since there is no other connection). After a reboot SQLite rebuilds the
//! index from the WAL file, as it does after a crash.
//!
//! Files SQLite opens without a name (temporary files; with
//! SQLITE_TEMP_STORE=3 it should open none) live in guest memory.
//!
//! Randomness, time and sleep are deterministic: the generator is seeded
//! from the workload's seed, the clock starts at 2024-01-01T00:00:00Z and
//! advances 1 ms per reading, and sleeping returns at once.
use alloc::boxed::Box;
use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int, CStr};
use core::ptr::addr_of_mut;

use libsqlite3_sys as ffi;

use crate::disk::{Disk, IoError};
use crate::layout::{Extent, SQLITE_FILES, VFS_DIR};
use crate::workloads::spec::Rng;

pub const VFS_NAME: &CStr = c"microguest";
const BLOCK: usize = 4096;
const DIR_MAGIC: &[u8; 8] = b"MGVFSDIR";
const DIR_VERSION: u32 = 1;
const DIR_ENTRY: usize = 64;
/// Cached blocks (clean and dirty, all files) above which a sync or read
/// drops the clean ones: 32 MiB, a database of a few thousand rows and its
/// WAL stay cached in a 128 MiB guest.
const CACHE_BLOCKS: usize = 8192;
/// Dirty blocks of one file above which they are written back without a
/// flush (only reached without syncs, e.g. synchronous=OFF): 32 MiB.
const DIRTY_BLOCKS: usize = 8192;

struct DiskFile {
    extent: &'static Extent,
    size: u64,
    exists: bool,
    /// What the directory on disk says.
    dir_size: u64,
    dir_exists: bool,
    /// Cached blocks; bytes at or beyond `size` are always zero here.
    blocks: BTreeMap<u64, Block>,
    dirty: usize,
    /// WAL-index regions (main db only).
    shm: Vec<(*mut u8, usize)>,
}

struct Block {
    data: Box<[u8]>,
    dirty: bool,
}

impl Block {
    fn zero() -> Self {
        Self {
            data: vec![0u8; BLOCK].into_boxed_slice(),
            dirty: false,
        }
    }
}

struct State {
    disk: Disk,
    files: Vec<DiskFile>,
    dir_seq: u64,
    rng: Rng,
    clock_ms: i64,
    /// Whether an I/O error happened (the first one is printed).
    failed: bool,
}

static mut STATE: Option<State> = None;

fn state() -> Option<&'static mut State> {
    // SAFETY: single-threaded guest; SQLite calls the VFS from this thread
    // only, and no VFS method re-enters another.
    unsafe { (*addr_of_mut!(STATE)).as_mut() }
}

/// Why `install` failed.
#[derive(Debug)]
#[allow(dead_code)] // the field is for the Debug output
pub enum InstallError {
    Io(IoError),
    /// The disk is smaller than the layout.
    DiskTooSmall,
}

/// Takes the disk for SQLite: reads the directory block (or writes an
/// empty one if there is none) and registers the VFS as the default.
pub fn install(disk: Disk, seed: u64) -> Result<(), InstallError> {
    let need = SQLITE_FILES.iter().map(|e| e.end()).max().unwrap_or(0);
    if disk.capacity() < need.max(VFS_DIR.end()) {
        return Err(InstallError::DiskTooSmall);
    }
    let files = SQLITE_FILES
        .iter()
        .map(|&extent| DiskFile {
            extent,
            size: 0,
            exists: false,
            dir_size: 0,
            dir_exists: false,
            blocks: BTreeMap::new(),
            dirty: 0,
            shm: Vec::new(),
        })
        .collect();
    let mut st = State {
        disk,
        files,
        dir_seq: 0,
        rng: Rng::new(seed ^ 0x0005_f500),
        clock_ms: 212_570_827_200_000, // 2024-01-01T00:00:00Z as Julian-day ms
        failed: false,
    };
    let mut dir = vec![0u8; BLOCK];
    st.disk
        .read_at(VFS_DIR.offset(), &mut dir)
        .map_err(InstallError::Io)?;
    if !st.load_dir(&dir) {
        st.write_dir().map_err(InstallError::Io)?;
        st.disk.flush().map_err(InstallError::Io)?;
    }
    // SAFETY: single-threaded; nothing else holds the state.
    unsafe { *addr_of_mut!(STATE) = Some(st) };
    // SAFETY: plain FFI call; it calls sqlite3_os_init, which registers
    // the VFS as the default.
    unsafe { ffi::sqlite3_initialize() };
    Ok(())
}

/// Writes every dirty block and the directory, then flushes: what an
/// orderly shutdown does (a workload that "crashes" skips it).
pub fn shutdown() -> Result<(), IoError> {
    let Some(st) = state() else { return Ok(()) };
    for i in 0..st.files.len() {
        st.write_back(i)?;
    }
    let changed = st
        .files
        .iter()
        .any(|f| f.size != f.dir_size || f.exists != f.dir_exists);
    if changed {
        for f in st.files.iter_mut() {
            f.dir_size = f.size;
            f.dir_exists = f.exists;
        }
        st.write_dir()?;
    }
    st.disk.flush()
}

/// Device counters so far.
pub fn disk_stats() -> crate::disk::Stats {
    state().map(|s| s.disk.stats).unwrap_or_default()
}

/// Whether the VFS hit an I/O error.
pub fn failed() -> bool {
    state().is_some_and(|s| s.failed)
}

impl State {
    fn load_dir(&mut self, dir: &[u8]) -> bool {
        let u32_at = |o: usize| u32::from_le_bytes(dir[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(dir[o..o + 8].try_into().unwrap());
        if &dir[..8] != DIR_MAGIC
            || u32_at(8) != DIR_VERSION
            || u32_at(12) as usize != self.files.len()
            || u32_at(24) as usize != DIR_ENTRY
            || u32_at(BLOCK - 4) != crc32fast::hash(&dir[..BLOCK - 4])
        {
            return false;
        }
        for (i, f) in self.files.iter().enumerate() {
            let e = 32 + i * DIR_ENTRY;
            let name = f.extent.name.as_bytes();
            if &dir[e..e + name.len()] != name
                || dir[e + name.len()] != 0
                || u64_at(e + 32) != f.extent.sector
                || u64_at(e + 40) != f.extent.len
                || u64_at(e + 48) > f.extent.len
            {
                return false;
            }
        }
        self.dir_seq = u64_at(16);
        for (i, f) in self.files.iter_mut().enumerate() {
            let e = 32 + i * DIR_ENTRY;
            f.exists = u32_at(e + 56) & 1 != 0;
            f.size = if f.exists { u64_at(e + 48) } else { 0 };
            f.dir_exists = f.exists;
            f.dir_size = f.size;
        }
        true
    }

    fn write_dir(&mut self) -> Result<(), IoError> {
        self.dir_seq += 1;
        let mut dir = vec![0u8; BLOCK];
        dir[..8].copy_from_slice(DIR_MAGIC);
        dir[8..12].copy_from_slice(&DIR_VERSION.to_le_bytes());
        dir[12..16].copy_from_slice(&(self.files.len() as u32).to_le_bytes());
        dir[16..24].copy_from_slice(&self.dir_seq.to_le_bytes());
        dir[24..28].copy_from_slice(&(DIR_ENTRY as u32).to_le_bytes());
        for (i, f) in self.files.iter().enumerate() {
            let e = 32 + i * DIR_ENTRY;
            let name = f.extent.name.as_bytes();
            dir[e..e + name.len()].copy_from_slice(name);
            dir[e + 32..e + 40].copy_from_slice(&f.extent.sector.to_le_bytes());
            dir[e + 40..e + 48].copy_from_slice(&f.extent.len.to_le_bytes());
            dir[e + 48..e + 56].copy_from_slice(&f.dir_size.to_le_bytes());
            dir[e + 56..e + 60].copy_from_slice(&u32::from(f.dir_exists).to_le_bytes());
        }
        let crc = crc32fast::hash(&dir[..BLOCK - 4]);
        dir[BLOCK - 4..].copy_from_slice(&crc.to_le_bytes());
        self.disk.write_at(VFS_DIR.offset(), &dir)?;
        // The host learns sizes and existence from hints, in order with
        // the writes, before the flush that follows makes them consistent.
        for f in &self.files {
            if let Some((id, ..)) = f.extent.hint_id() {
                crate::hints::size(id, f.dir_size, f.dir_exists);
            }
        }
        Ok(())
    }

    /// Records (and prints, the first time) an I/O error.
    fn note(&mut self, e: IoError) {
        if !self.failed {
            self.failed = true;
            crate::say!("sqlite vfs: I/O error: {e:?}\n");
        }
    }

    /// Reads the uncached blocks among `first..end` that hold file bytes
    /// into the cache (one batch of requests); blocks beyond the size
    /// become zero blocks.
    fn load(&mut self, i: usize, first: u64, end: u64) -> Result<(), IoError> {
        let f = &mut self.files[i];
        let size = f.size;
        let mut missing: Vec<u64> = Vec::new();
        for b in first..end {
            if let alloc::collections::btree_map::Entry::Vacant(slot) = f.blocks.entry(b) {
                if b * BLOCK as u64 >= size {
                    slot.insert(Block::zero());
                } else {
                    missing.push(b);
                }
            }
        }
        if missing.is_empty() {
            return Ok(());
        }
        // Runs of consecutive blocks, each read into one buffer.
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for &b in &missing {
            match runs.last_mut() {
                Some((start, buf)) if *start + (buf.len() / BLOCK) as u64 == b => {
                    buf.resize(buf.len() + BLOCK, 0)
                }
                _ => runs.push((b, vec![0u8; BLOCK])),
            }
        }
        let base = f.extent.offset();
        let mut reqs: Vec<(u64, &mut [u8])> = runs
            .iter_mut()
            .map(|(b, buf)| (base + *b * BLOCK as u64, buf.as_mut_slice()))
            .collect();
        self.disk.read_runs(&mut reqs)?;
        let f = &mut self.files[i];
        for (start, buf) in runs {
            for (k, chunk) in buf.chunks_exact(BLOCK).enumerate() {
                let b = start + k as u64;
                let mut block = Block::zero();
                block.data.copy_from_slice(chunk);
                // Bytes beyond the size are stale: zero them.
                let valid = size.saturating_sub(b * BLOCK as u64).min(BLOCK as u64) as usize;
                block.data[valid..].fill(0);
                f.blocks.insert(b, block);
            }
        }
        Ok(())
    }

    /// Grows file `i` to `new_size`: the new bytes read as zero.
    fn extend(&mut self, i: usize, new_size: u64) -> Result<(), IoError> {
        let size = self.files[i].size;
        if new_size <= size {
            return Ok(());
        }
        let first = size / BLOCK as u64;
        let end = new_size.div_ceil(BLOCK as u64);
        if !size.is_multiple_of(BLOCK as u64) {
            // The partial last block: loaded with its tail zeroed, then
            // written back with it.
            self.load(i, first, first + 1)?;
        }
        let f = &mut self.files[i];
        for b in first..end {
            let block = f.blocks.entry(b).or_insert_with(Block::zero);
            if !block.dirty {
                block.dirty = true;
                f.dirty += 1;
            }
        }
        f.size = new_size;
        Ok(())
    }

    fn read(&mut self, i: usize, buf: &mut [u8], off: u64) -> c_int {
        let size = self.files[i].size;
        let avail = size.saturating_sub(off).min(buf.len() as u64) as usize;
        if avail > 0 {
            self.trim();
            let first = off / BLOCK as u64;
            let end = (off + avail as u64).div_ceil(BLOCK as u64);
            if let Err(e) = self.load(i, first, end) {
                self.note(e);
                return ffi::SQLITE_IOERR_READ;
            }
            let f = &self.files[i];
            let mut done = 0;
            while done < avail {
                let pos = off + done as u64;
                let (b, o) = (pos / BLOCK as u64, (pos % BLOCK as u64) as usize);
                let n = (BLOCK - o).min(avail - done);
                buf[done..done + n].copy_from_slice(&f.blocks[&b].data[o..o + n]);
                done += n;
            }
        }
        buf[avail..].fill(0);
        if avail < buf.len() {
            ffi::SQLITE_IOERR_SHORT_READ
        } else {
            ffi::SQLITE_OK
        }
    }

    fn write(&mut self, i: usize, data: &[u8], off: u64) -> c_int {
        let end = off + data.len() as u64;
        if end > self.files[i].extent.len {
            return ffi::SQLITE_FULL;
        }
        let result = (|| {
            self.extend(i, end)?;
            // Partly written blocks must hold their other bytes: load them.
            let first = off / BLOCK as u64;
            let last = (end - 1) / BLOCK as u64;
            if !off.is_multiple_of(BLOCK as u64) {
                self.load(i, first, first + 1)?;
            }
            if !end.is_multiple_of(BLOCK as u64) {
                self.load(i, last, last + 1)?;
            }
            let f = &mut self.files[i];
            let mut done = 0;
            while done < data.len() {
                let pos = off + done as u64;
                let (b, o) = (pos / BLOCK as u64, (pos % BLOCK as u64) as usize);
                let n = (BLOCK - o).min(data.len() - done);
                let block = f.blocks.entry(b).or_insert_with(Block::zero);
                block.data[o..o + n].copy_from_slice(&data[done..done + n]);
                if !block.dirty {
                    block.dirty = true;
                    f.dirty += 1;
                }
                done += n;
            }
            if self.files[i].dirty > DIRTY_BLOCKS {
                self.write_back(i)?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                self.note(e);
                ffi::SQLITE_IOERR_WRITE
            }
        }
    }

    fn truncate(&mut self, i: usize, new_size: u64) -> c_int {
        if new_size > self.files[i].extent.len {
            return ffi::SQLITE_FULL;
        }
        if new_size > self.files[i].size {
            if let Err(e) = self.extend(i, new_size) {
                self.note(e);
                return ffi::SQLITE_IOERR_TRUNCATE;
            }
            return ffi::SQLITE_OK;
        }
        let f = &mut self.files[i];
        let keep = new_size.div_ceil(BLOCK as u64);
        let dropped = f.blocks.split_off(&keep);
        f.dirty -= dropped.values().filter(|b| b.dirty).count();
        if !new_size.is_multiple_of(BLOCK as u64) {
            if let Some(block) = f.blocks.get_mut(&(keep - 1)) {
                block.data[(new_size % BLOCK as u64) as usize..].fill(0);
            }
        }
        f.size = new_size;
        ffi::SQLITE_OK
    }

    /// Writes the dirty blocks of file `i` (no flush).
    fn write_back(&mut self, i: usize) -> Result<(), IoError> {
        let f = &mut self.files[i];
        if f.dirty == 0 {
            return Ok(());
        }
        let mut runs: Vec<(u64, Vec<u8>)> = Vec::new();
        for (&b, block) in f.blocks.iter_mut().filter(|(_, blk)| blk.dirty) {
            block.dirty = false;
            match runs.last_mut() {
                Some((start, buf)) if *start + (buf.len() / BLOCK) as u64 == b => {
                    buf.extend_from_slice(&block.data)
                }
                _ => runs.push((b, block.data.to_vec())),
            }
        }
        f.dirty = 0;
        let base = f.extent.offset();
        let reqs: Vec<(u64, &[u8])> = runs
            .iter()
            .map(|(b, buf)| (base + *b * BLOCK as u64, buf.as_slice()))
            .collect();
        self.disk.write_runs(&reqs)
    }

    fn sync(&mut self, i: usize) -> Result<(), IoError> {
        self.write_back(i)?;
        let f = &mut self.files[i];
        if f.size != f.dir_size || f.exists != f.dir_exists {
            f.dir_size = f.size;
            f.dir_exists = f.exists;
            self.write_dir()?;
        }
        self.disk.flush()?;
        self.trim();
        Ok(())
    }

    /// Drops clean blocks when the cache is over budget.
    fn trim(&mut self) {
        let total: usize = self.files.iter().map(|f| f.blocks.len()).sum();
        if total > CACHE_BLOCKS {
            for f in self.files.iter_mut() {
                f.blocks.retain(|_, b| b.dirty);
            }
        }
    }

    fn delete(&mut self, i: usize) -> Result<(), IoError> {
        let f = &mut self.files[i];
        f.blocks.clear();
        f.dirty = 0;
        f.size = 0;
        f.exists = false;
        if f.dir_exists || f.dir_size != 0 {
            f.dir_exists = false;
            f.dir_size = 0;
            self.write_dir()?;
            self.disk.flush()?;
        }
        Ok(())
    }
}

/// Index of the VFS file called `name`, if any.
fn slot(name: *const c_char) -> Option<usize> {
    if name.is_null() {
        return None;
    }
    // SAFETY: SQLite passes NUL-terminated names.
    let name = unsafe { CStr::from_ptr(name) }.to_bytes();
    SQLITE_FILES.iter().position(|e| e.name.as_bytes() == name)
}

mod callbacks;
