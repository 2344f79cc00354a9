//! The disk image behind a virtio-blk device: a raw file, read with
//! positional I/O so that no file offset is shared between requests, and
//! locked (`crate::lock`) while it is attached: shared when read-only,
//! exclusive when the guest may write it.
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::error::{Result, VmmError};
use crate::lock::{self, LockMode};

pub const SECTOR_SIZE: u64 = 512;

pub struct DiskImage {
    file: File,
    path: PathBuf,
    len: u64,
    read_only: bool,
}

impl DiskImage {
    pub fn open(path: &Path, read_only: bool) -> Result<Self> {
        let bad = |reason: String| VmmError::Disk {
            path: path.to_path_buf(),
            reason,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(!read_only)
            .open(path)
            .map_err(|e| bad(e.to_string()))?;
        let meta = file.metadata().map_err(|e| bad(e.to_string()))?;
        if !meta.is_file() {
            return Err(bad("not a regular file (raw images only)".into()));
        }
        let mode = if read_only {
            LockMode::Shared
        } else {
            LockMode::Exclusive
        };
        lock::lock(&file, path, mode)?;
        let len = meta.len();
        // Writes are recorded in whole blocks of the store, so images are
        // whole blocks too.
        let block = store::BLOCK_SIZE as u64;
        if len == 0 || len % block != 0 {
            return Err(bad(format!(
                "size {len} is not a positive multiple of {block} bytes; resize it (e.g. truncate -s 64M {})",
                path.display()
            )));
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            len,
            read_only,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn read_only(&self) -> bool {
        self.read_only
    }

    pub fn sectors(&self) -> u64 {
        self.len / SECTOR_SIZE
    }

    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    pub fn write_at(&self, buf: &[u8], offset: u64) -> std::io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    /// Makes every completed write durable (fdatasync).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()
    }
}
