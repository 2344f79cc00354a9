//! `vmm disk serve`: a disk image served to the host as a file through FUSE,
//! every write and flush recorded by the same recorder a VM's virtio-blk
//! device feeds.
//!
//! The mount point holds two files:
//! - `disk`: the image, read-write, its size fixed. `losetup` it and mount
//!   the filesystem inside: the host kernel then plays the guest's part,
//!   and its writes arrive here with the offsets and the ordering that the
//!   filesystem's journal and the page cache produce. A write is applied
//!   to the image, then the whole 4 KiB blocks it touches are read back
//!   from the image and recorded (the recorder takes whole blocks; a
//!   virtio-blk guest never sends less, a loop device may). An `fsync` or
//!   a `flush` (each `close()`) of it is a barrier: the image is synced
//!   and the recorder makes everything before it durable before the call
//!   returns.
//! - `hints`: write-only, a byte stream in the hint protocol, exactly what
//!   a guest writes to its virtio-console port: point `vmm-agent --port` at
//!   it. Its `fsync` and `flush` are barriers too, so the files it names
//!   are lifted when the agent closes it.
//!
//! Requests are served on one thread, in the order the kernel sends them.
use std::ffi::OsStr;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fuser::{
    Config, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo,
    LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyWrite, Request, WriteFlags,
};
use hint_proto::{StreamParser, MAX_MESSAGE};
use thiserror::Error;

use crate::recording::Recorder;

const BLOCK: u64 = store::BLOCK_SIZE as u64;
const DISK_INO: INodeNo = INodeNo(2);
const HINTS_INO: INodeNo = INodeNo(3);
/// The served files' names in the mount point.
pub const DISK_FILE: &str = "disk";
pub const HINTS_FILE: &str = "hints";
/// Attribute cache time: the files never change shape behind the kernel.
const TTL: Duration = Duration::from_secs(1);
/// Bad hint-stream chunks reported before going quiet (all are counted).
const MAX_WARNINGS: u64 = 10;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("disk image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("disk image {} is {size} bytes, not a multiple of 4 KiB", .path.display())]
    ImageSize { path: PathBuf, size: u64 },
    #[error("cannot mount at {}: {source} (needs /dev/fuse and root, and an existing empty directory)", .path.display())]
    Mount {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("unmounting {}: {source}", .path.display())]
    Unmount {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What the served files saw.
#[derive(Debug, Default)]
pub struct ServeCounters {
    pub writes: AtomicU64,
    pub bytes: AtomicU64,
    /// Writes that did not cover whole 4 KiB blocks (read-modify-write).
    pub partial_writes: AtomicU64,
    pub barriers: AtomicU64,
    pub hint_messages: AtomicU64,
    pub hint_errors: AtomicU64,
    /// Requests answered with EIO because recording failed.
    pub failed: AtomicU64,
}

/// The FUSE filesystem: one image and one hint stream.
pub struct DiskFs {
    image: File,
    size: u64,
    recorder: Arc<Recorder>,
    parser: Mutex<Box<StreamParser<MAX_MESSAGE>>>,
    counters: Arc<ServeCounters>,
    uid: u32,
    gid: u32,
    started: SystemTime,
}

impl DiskFs {
    /// Opens `image` read-write for serving; `recorder` records its writes.
    pub fn new(
        image: &Path,
        recorder: Arc<Recorder>,
        counters: Arc<ServeCounters>,
    ) -> Result<Self, ServeError> {
        let err = |source| ServeError::Image {
            path: image.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(image)
            .map_err(err)?;
        let size = file.metadata().map_err(err)?.len();
        if size % BLOCK != 0 || size == 0 {
            return Err(ServeError::ImageSize {
                path: image.to_path_buf(),
                size,
            });
        }
        // SAFETY: getuid/getgid cannot fail.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        Ok(Self {
            image: file,
            size,
            recorder,
            parser: Mutex::new(Box::new(StreamParser::new())),
            counters,
            uid,
            gid,
            started: SystemTime::now(),
        })
    }

    fn attr(&self, ino: INodeNo) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            INodeNo::ROOT => (FileType::Directory, 0o755, 0, 2),
            DISK_INO => (FileType::RegularFile, 0o600, self.size, 1),
            HINTS_INO => (FileType::RegularFile, 0o200, 0, 1),
            _ => return None,
        };
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: self.started,
            mtime: self.started,
            ctime: self.started,
            crtime: self.started,
            kind,
            perm,
            nlink,
            uid: self.uid,
            gid: self.gid,
            rdev: 0,
            blksize: BLOCK as u32,
            flags: 0,
        })
    }

    /// Applies a write to the image and records the whole blocks it
    /// touches, read back from the image.
    fn write_disk(&self, offset: u64, data: &[u8]) -> Result<(), Errno> {
        let end = offset
            .checked_add(data.len() as u64)
            .filter(|&end| end <= self.size)
            .ok_or(Errno::ENOSPC)?;
        self.image
            .write_all_at(data, offset)
            .map_err(|_| Errno::EIO)?;
        let first = offset / BLOCK * BLOCK;
        let last = end.div_ceil(BLOCK) * BLOCK;
        let whole = if first == offset && last == end {
            data.to_vec()
        } else {
            self.counters.partial_writes.fetch_add(1, Relaxed);
            let mut blocks = vec![0u8; (last - first) as usize];
            self.image
                .read_exact_at(&mut blocks, first)
                .map_err(|_| Errno::EIO)?;
            blocks
        };
        self.counters.writes.fetch_add(1, Relaxed);
        self.counters.bytes.fetch_add(data.len() as u64, Relaxed);
        self.recorder.write(first, whole).map_err(|e| self.fail(e))
    }

    fn write_hints(&self, data: &[u8]) {
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        let mut parser = self.parser.lock().unwrap_or_else(|e| e.into_inner());
        parser.feed(data, |m| match m.map(|h| h.to_vec()) {
            Ok(Ok(wire)) => messages.push(wire),
            Ok(Err(e)) => errors.push(format!("re-encoding a hint: {e}")),
            Err(e) => errors.push(e.to_string()),
        });
        drop(parser);
        for e in errors {
            let n = self.counters.hint_errors.fetch_add(1, Relaxed);
            if n < MAX_WARNINGS {
                tracing::warn!("hint stream: skipped bytes: {e}");
            }
        }
        for message in messages {
            self.counters.hint_messages.fetch_add(1, Relaxed);
            if let Err(e) = self.recorder.hint(message) {
                self.fail(e);
            }
        }
    }

    /// A barrier: the image synced, then everything recorded before made
    /// durable.
    fn barrier(&self) -> Result<(), Errno> {
        self.image.sync_data().map_err(|_| Errno::EIO)?;
        self.recorder.barrier().map_err(|e| self.fail(e))?;
        self.counters.barriers.fetch_add(1, Relaxed);
        Ok(())
    }

    fn fail(&self, e: impl std::fmt::Display) -> Errno {
        if self.counters.failed.fetch_add(1, Relaxed) == 0 {
            tracing::error!("recording failed, answering I/O errors from now on: {e}");
        }
        Errno::EIO
    }
}

fn empty(r: Result<(), Errno>, reply: ReplyEmpty) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

impl Filesystem for DiskFs {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let ino = match name.to_str() {
            Some(DISK_FILE) if parent == INodeNo::ROOT => DISK_INO,
            Some(HINTS_FILE) if parent == INodeNo::ROOT => HINTS_INO,
            _ => return reply.error(Errno::ENOENT),
        };
        match self.attr(ino) {
            Some(attr) => reply.entry(&TTL, &attr, Generation(0)),
            None => reply.error(Errno::ENOENT),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(attr) => reply.attr(&TTL, &attr),
            None => reply.error(Errno::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        _mode: Option<u32>,
        _uid: Option<u32>,
        _gid: Option<u32>,
        size: Option<u64>,
        _atime: Option<fuser::TimeOrNow>,
        _mtime: Option<fuser::TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // The disk's size is fixed; truncating the hint stream (O_TRUNC)
        // is a no-op. Times and modes are not kept.
        let Some(attr) = self.attr(ino) else {
            return reply.error(Errno::ENOENT);
        };
        match size {
            Some(s) if ino == DISK_INO && s != self.size => reply.error(Errno::EPERM),
            _ => reply.attr(&TTL, &attr),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match ino {
            DISK_INO => reply.opened(FileHandle(0), FopenFlags::empty()),
            // A stream: no page cache, every write reaches us as written.
            HINTS_INO => reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO),
            _ => reply.error(Errno::EISDIR),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        if ino != DISK_INO {
            return reply.data(&[]);
        }
        let len = (size as u64).min(self.size.saturating_sub(offset)) as usize;
        let mut buf = vec![0u8; len];
        match self.image.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(_) => reply.error(Errno::EIO),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let r = match ino {
            DISK_INO => self.write_disk(offset, data),
            HINTS_INO => {
                self.write_hints(data);
                Ok(())
            }
            _ => Err(Errno::EBADF),
        };
        match r {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        empty(
            if ino == INodeNo::ROOT {
                Ok(())
            } else {
                self.barrier()
            },
            reply,
        );
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        empty(self.barrier(), reply);
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        if ino != INodeNo::ROOT {
            return reply.error(Errno::ENOTDIR);
        }
        let entries = [
            (INodeNo::ROOT, FileType::Directory, "."),
            (INodeNo::ROOT, FileType::Directory, ".."),
            (DISK_INO, FileType::RegularFile, DISK_FILE),
            (HINTS_INO, FileType::RegularFile, HINTS_FILE),
        ];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(*ino, (i + 1) as u64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

/// A mounted [`DiskFs`]: unmounted (and its requests drained) by
/// [`Served::unmount`] or on drop.
pub struct Served {
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
}

/// Mounts `fs` at the directory `mountpoint` and serves it on a thread.
pub fn mount(fs: DiskFs, mountpoint: &Path) -> Result<Served, ServeError> {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("vmm-disk".into()),
        MountOption::Subtype("vmm".into()),
        MountOption::NoExec,
        MountOption::NoSuid,
        MountOption::NoDev,
    ];
    let session =
        fuser::spawn_mount(fs, mountpoint, &config).map_err(|source| ServeError::Mount {
            path: mountpoint.to_path_buf(),
            source,
        })?;
    Ok(Served {
        session: Some(session),
        mountpoint: mountpoint.to_path_buf(),
    })
}

impl Served {
    /// Unmounts (umount(2)) and waits for the serving thread to drain. Fails
    /// with EBUSY, changing nothing, while the disk is in use (attached to a
    /// loop device): the caller may retry.
    pub fn try_unmount(&mut self) -> std::io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let path = std::ffi::CString::new(self.mountpoint.as_os_str().as_bytes())
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
        // SAFETY: a valid NUL-terminated path.
        if unsafe { libc::umount2(path.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            // EINVAL: no longer a mount point (unmounted by hand); the
            // session has ended.
            if e.raw_os_error() != Some(libc::EINVAL) {
                return Err(e);
            }
        }
        // The kernel ends the session; its thread returns.
        if let Some(session) = self.session.take() {
            session.join()?;
        }
        Ok(())
    }

    /// [`Served::try_unmount`], as a [`ServeError`].
    pub fn unmount(mut self) -> Result<(), ServeError> {
        self.try_unmount().map_err(|source| ServeError::Unmount {
            path: self.mountpoint.clone(),
            source,
        })
    }

    pub fn disk_path(&self) -> PathBuf {
        self.mountpoint.join(DISK_FILE)
    }

    pub fn hints_path(&self) -> PathBuf {
        self.mountpoint.join(HINTS_FILE)
    }
}
