//! Files found without an agent: the host maps the guest's files of
//! interest to disk blocks itself, reading the ext4 filesystem on the disk.
//!
//! [`map_ext4`] mounts the disk image read-only in memory with `rsext4`
//! (journal replayed into an in-memory overlay, `fsmap/overlay.rs`, so the
//! view is the last committed transaction's and the disk is never
//! written), resolves each [`Watch`] — a path whose last component may be
//! a glob, with a format, or `auto` to take files whose header is
//! SQLite's — and returns every matching regular file's size and extents
//! (plus an SQLite database's `-journal` and `-wal` siblings).
//!
//! Why rsext4: a mapper needs a file's extents, and `ext4-view` (the
//! read-only reader) keeps them private; rsext4 exposes them
//! (`inspect_inode_extents`, bounded by an extent limit) and replays the
//! journal, without which a file's inode lags behind its data by up to a
//! journal commit interval.
//!
//! The filesystem is the guest's, so everything is bounded: watched files
//! ([`MAX_WATCHED`]), directory entries read ([`MAX_DIR_BYTES`]), extents
//! per file ([`MAX_FILE_EXTENTS`]), file sizes (`lift::MAX_FILE_BYTES`), and
//! a panic inside the library is caught and reported as damage.
use std::fs::File;
use std::panic::{catch_unwind, AssertUnwindSafe};

use hint_proto::{Format as WireFormat, Role};
use rsext4::{
    bmalloc::AbsoluteBN, entries::classic_dir::list_entries, ext4::MountOptions,
    inspect_inode_extents, loopfile::get_file_inode, Ext4FileSystem, FileExtentState,
    FileExtentTarget, InodeNumber, Jbd2Dev,
};
use thiserror::Error;

mod overlay;
mod watch;

pub use watch::{parse_watch, Watch, WatchFormat};

use overlay::Overlay;

/// Most files one mapping returns (siblings included).
pub const MAX_WATCHED: usize = 64;
/// Most extents of one mapped file; a file with more is left out.
pub const MAX_FILE_EXTENTS: usize = hint_proto::MAX_EXTENTS;
/// Most bytes of one directory read to match a glob.
pub const MAX_DIR_BYTES: u64 = 1 << 20;
/// Largest file mapped (as the lifter reads at most this).
const MAX_FILE_BYTES: u64 = crate::lift::MAX_FILE_BYTES;
const SQLITE_MAGIC: &[u8; 16] = b"SQLite format 3\0";

#[derive(Debug, Error)]
pub enum MapError {
    #[error("the disk holds no ext4 filesystem the mapper can read ({0})")]
    NotExt4(String),
    #[error("the ext4 filesystem on the disk is damaged: {0}")]
    Damaged(String),
}

/// One file as the filesystem maps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MappedFile {
    /// Absolute path inside the filesystem.
    pub path: String,
    pub format: WireFormat,
    pub role: Role,
    /// The main file's path (itself for a main file).
    pub main_path: String,
    /// False for a sibling (`-journal`, `-wal`) that does not exist.
    pub exists: bool,
    pub size: u64,
    /// (byte offset in the file, byte offset on the disk, length).
    pub extents: Vec<(u64, u64, u64)>,
}

/// Maps the files `watches` name on the ext4 filesystem in `image`
/// (`disk_bytes` long). Files that cannot be mapped (too many extents,
/// unwritten extents, too large) are left out with a warning; a disk that
/// is not ext4 or that the library cannot read is an error.
pub fn map_ext4(
    image: &File,
    disk_bytes: u64,
    watches: &[Watch],
) -> Result<Vec<MappedFile>, MapError> {
    match catch_unwind(AssertUnwindSafe(|| map_inner(image, disk_bytes, watches))) {
        Ok(r) => r,
        Err(_) => Err(MapError::Damaged(
            "the ext4 reader failed (panicked)".into(),
        )),
    }
}

struct Fs<'a> {
    dev: Jbd2Dev<Overlay<'a>>,
    fs: Ext4FileSystem,
    block_size: u64,
}

fn map_inner(
    image: &File,
    disk_bytes: u64,
    watches: &[Watch],
) -> Result<Vec<MappedFile>, MapError> {
    let mut magic = [0u8; 2];
    use std::os::unix::fs::FileExt;
    if disk_bytes < 2048 || image.read_exact_at(&mut magic, 1024 + 56).is_err() {
        return Err(MapError::NotExt4("too small".into()));
    }
    if magic != [0x53, 0xef] {
        return Err(MapError::NotExt4("no ext2/3/4 superblock magic".into()));
    }
    let mut dev = Jbd2Dev::initial_jbd2dev(0, Overlay::new(image, disk_bytes), true);
    let options = MountOptions {
        readonly: false,
        replay_journal: true,
        block_validity: true,
    };
    let fs = Ext4FileSystem::mount_with_options(&mut dev, options)
        .map_err(|e| MapError::Damaged(format!("mount: {e:?}")))?;
    let block_size = fs.superblock.block_size();
    let mut fs = Fs {
        dev,
        fs,
        block_size,
    };
    let mut out: Vec<MappedFile> = Vec::new();
    for w in watches {
        for (path, ino) in fs.matching(w) {
            if out.len() >= MAX_WATCHED {
                tracing::warn!("agentless mapping: more than {MAX_WATCHED} files match --watch; the rest are left out");
                return Ok(out);
            }
            if out.iter().any(|f| f.path == path) {
                continue;
            }
            let format = match w.format {
                WatchFormat::Known(f) => f,
                WatchFormat::Auto => match fs.read_head(ino) {
                    Some(head) if &head == SQLITE_MAGIC => WireFormat::Sqlite,
                    _ => continue,
                },
            };
            let Some(main) = fs.map_file(&path, ino, format, Role::Main, &path) else {
                continue;
            };
            out.push(main);
            if format == WireFormat::Sqlite {
                for (suffix, role) in [("-journal", Role::Journal), ("-wal", Role::Wal)] {
                    let sib = format!("{path}{suffix}");
                    let mapped = fs
                        .lookup(&sib)
                        .and_then(|ino| fs.map_file(&sib, ino, format, role, &path));
                    out.push(mapped.unwrap_or(MappedFile {
                        path: sib,
                        format,
                        role,
                        main_path: path.clone(),
                        exists: false,
                        size: 0,
                        extents: Vec::new(),
                    }));
                }
            }
        }
    }
    Ok(out)
}

impl Fs<'_> {
    fn lookup(&mut self, path: &str) -> Option<InodeNumber> {
        match get_file_inode(&mut self.fs, &mut self.dev, path) {
            Ok(Some((ino, inode))) if inode.is_file() => Some(ino),
            _ => None,
        }
    }

    /// The regular files `w` names, with their inodes.
    fn matching(&mut self, w: &Watch) -> Vec<(String, InodeNumber)> {
        let Some(pattern) = &w.name_glob else {
            return self
                .lookup(&w.path)
                .map(|ino| vec![(w.path.clone(), ino)])
                .unwrap_or_default();
        };
        let dir = &w.path;
        let Ok(Some((dir_ino, inode))) = get_file_inode(&mut self.fs, &mut self.dev, dir) else {
            return Vec::new();
        };
        if !inode.is_dir() {
            return Vec::new();
        }
        let Some(bytes) = self.read_inode(dir_ino, MAX_DIR_BYTES) else {
            return Vec::new();
        };
        let mut names = Vec::new();
        for block in bytes.chunks(self.block_size as usize) {
            for e in list_entries(block) {
                let Some(name) = e.name_str() else { continue };
                if e.inode == 0 || e.is_dot() || e.is_dotdot() || !pattern.matches(name) {
                    continue;
                }
                names.push(name.to_string());
            }
        }
        names.sort();
        let mut out = Vec::new();
        for name in names.into_iter().take(MAX_WATCHED) {
            let path = format!("{}/{name}", dir.trim_end_matches('/'));
            if let Some(ino) = self.lookup(&path) {
                out.push((path, ino));
            }
        }
        out
    }

    /// The extents of inode `ino` (disk byte offsets), at most `limit`
    /// bytes of the file, None when it cannot be mapped whole.
    fn extents(&mut self, ino: InodeNumber, size: u64) -> Option<Vec<(u64, u64, u64)>> {
        if size == 0 {
            return Some(Vec::new());
        }
        let map = inspect_inode_extents(
            &mut self.dev,
            &mut self.fs,
            ino,
            0,
            size,
            FileExtentTarget::Data,
            MAX_FILE_EXTENTS,
        )
        .ok()?;
        if !map.complete {
            return None;
        }
        let mut out = Vec::with_capacity(map.extents.len());
        for e in &map.extents {
            if e.state != FileExtentState::Initialized
                || e.physical_start % 512 != 0
                || e.length == 0
            {
                return None;
            }
            out.push((e.logical_start, e.physical_start, e.length));
        }
        Some(out)
    }

    fn size(&mut self, path: &str) -> Option<u64> {
        get_file_inode(&mut self.fs, &mut self.dev, path)
            .ok()
            .flatten()
            .map(|(_, inode)| inode.size())
    }

    fn map_file(
        &mut self,
        path: &str,
        ino: InodeNumber,
        format: WireFormat,
        role: Role,
        main_path: &str,
    ) -> Option<MappedFile> {
        let size = self.size(path)?;
        if size > MAX_FILE_BYTES || path.len() > hint_proto::MAX_PATH {
            tracing::warn!("agentless mapping: {path} is too large or its path too long; left out");
            return None;
        }
        let Some(extents) = self.extents(ino, size) else {
            tracing::warn!("agentless mapping: {path} has extents the mapper cannot use (unwritten, inline or over {MAX_FILE_EXTENTS}); left out");
            return None;
        };
        Some(MappedFile {
            path: path.to_string(),
            format,
            role,
            main_path: main_path.to_string(),
            exists: true,
            size,
            extents,
        })
    }

    /// The first 16 bytes of inode `ino`'s data.
    fn read_head(&mut self, ino: InodeNumber) -> Option<[u8; 16]> {
        let bytes = self.read_inode(ino, self.block_size)?;
        bytes.get(..16)?.try_into().ok()
    }

    /// Up to `limit` bytes of inode `ino`'s data, read through the overlay
    /// (directory blocks are journaled metadata).
    fn read_inode(&mut self, ino: InodeNumber, limit: u64) -> Option<Vec<u8>> {
        let map = inspect_inode_extents(
            &mut self.dev,
            &mut self.fs,
            ino,
            0,
            limit,
            FileExtentTarget::Data,
            MAX_FILE_EXTENTS,
        )
        .ok()?;
        let mut out = Vec::new();
        for e in &map.extents {
            if e.state != FileExtentState::Initialized {
                continue;
            }
            let len = e.length.min(limit.saturating_sub(out.len() as u64));
            let blocks = len.div_ceil(self.block_size);
            let mut buf = vec![0u8; (blocks * self.block_size) as usize];
            let first = AbsoluteBN::new(e.physical_start / self.block_size);
            self.dev.read_blocks(&mut buf, first, blocks as u32).ok()?;
            out.extend_from_slice(&buf[..len as usize]);
            if out.len() as u64 >= limit {
                break;
            }
        }
        Some(out)
    }
}
