//! The snapshots directory.
//!
//! ```text
//! DIR/snapshots/<id>.snap     one manifest per snapshot (format.rs)
//! DIR/snapshots/.tmp-*        a write in progress, or left by a crash
//! DIR/store/                  the content store the page lists live in
//! DIR/logs/                   change logs (introspection)
//! ```
//!
//! A manifest is written to a temporary file, fsynced, hard-linked to its
//! final name (which fails if that name exists: a snapshot is never
//! overwritten), then the temporary name is removed and the directory
//! fsynced. A reader therefore sees either no `<id>.snap` or a whole one;
//! a crash can leave only a `.tmp-*` file, which readers ignore.
//!
//! Writing a manifest and deleting snapshots hold an exclusive `flock` on
//! `DIR/snapshots/.lock`, so that a delete that found no children is not
//! raced by a VMM writing a child of the snapshot being deleted (the
//! write re-checks its parent under the lock). Deleting a subtree removes
//! the leaves first, so a crash midway leaves no snapshot without its
//! parent.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::error::io_err;
use super::{decode, encode, validate_id, Manifest, ManifestError, Result, SnapshotKind};
use changelog::RecordDir;
use store::{Store, StoreError};

/// Suffix of manifest files.
const SUFFIX: &str = ".snap";

/// A record directory's snapshots (see the module doc for the layout).
#[derive(Debug, Clone)]
pub struct SnapshotDir {
    root: PathBuf,
    snaps: PathBuf,
}

/// One line of [`SnapshotDir::list`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotSummary {
    /// Snapshot id.
    pub id: String,
    /// Its parent, if any.
    pub parent: Option<String>,
    /// Full or incremental.
    pub kind: &'static str,
    /// The VM it was taken from.
    pub vm_id: String,
    /// Creation time, ns since the Unix epoch.
    pub created_ns: u64,
    /// Bytes of memory and shared regions.
    pub memory_bytes: u64,
    /// Pages that differed from the parent.
    pub changed_pages: u64,
    /// Size of the manifest file.
    pub file_bytes: u64,
    /// The change-log seq of the disk at the snapshot (recorded disks):
    /// `vmm replay --until seq=N` rebuilds a disk to restore it onto.
    pub log_seq: Option<u64>,
}

impl SnapshotDir {
    /// Opens the record directory `root`, creating `root/snapshots`.
    pub fn open(root: impl AsRef<Path>) -> Result<SnapshotDir> {
        let root = root.as_ref().to_path_buf();
        let snaps = RecordDir::new(&root).snapshots_dir();
        if !snaps.is_dir() {
            std::fs::create_dir_all(&snaps).map_err(io_err("create directory", &snaps))?;
            fsync_dir(&root)?;
        }
        Ok(SnapshotDir { root, snaps })
    }

    /// Opens the existing record directory `root` for reading or deleting:
    /// refuses a missing directory, or one without `snapshots/`, naming the
    /// path and what was expected (a typo must not look like "no
    /// snapshots").
    pub fn open_existing(root: impl AsRef<Path>) -> Result<SnapshotDir> {
        let root = root.as_ref().to_path_buf();
        let snaps = RecordDir::new(&root).snapshots_dir();
        let detail = if !root.exists() {
            "it does not exist"
        } else if !root.is_dir() {
            "it is not a directory"
        } else if !snaps.is_dir() {
            "it has no snapshots/ subdirectory"
        } else {
            return Ok(SnapshotDir { root, snaps });
        };
        Err(ManifestError::NotASnapshotDir { path: root, detail })
    }

    /// The record directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `DIR/snapshots`.
    pub fn snapshots_dir(&self) -> &Path {
        &self.snaps
    }

    /// `DIR/store`, the content store of this record directory.
    pub fn store_dir(&self) -> PathBuf {
        RecordDir::new(&self.root).store_dir()
    }

    /// Opens (creating if needed) the content store at [`Self::store_dir`].
    pub fn open_store(&self) -> Result<Store, StoreError> {
        Store::open(self.store_dir())
    }

    /// The manifest file of snapshot `id`.
    pub fn path(&self, id: &str) -> Result<PathBuf> {
        validate_id(id)?;
        Ok(self.snaps.join(format!("{id}{SUFFIX}")))
    }

    /// Whether snapshot `id` exists.
    pub fn exists(&self, id: &str) -> bool {
        self.path(id).is_ok_and(|p| p.is_file())
    }

    /// Writes `m` as a new snapshot, atomically and durably (see the module
    /// doc). Refuses an invalid manifest, an id that exists, and a parent
    /// that does not.
    pub fn write(&self, m: &Manifest) -> Result<PathBuf> {
        m.validate()?;
        let path = self.path(&m.id)?;
        if path.exists() {
            return Err(ManifestError::AlreadyExists {
                id: m.id.clone(),
                path,
            });
        }
        let _lock = self.lock()?;
        if let Some(parent) = &m.parent {
            if !self.exists(parent) {
                return Err(ManifestError::MissingParent {
                    id: m.id.clone(),
                    parent: parent.clone(),
                    dir: self.snaps.clone(),
                });
            }
        }
        let bytes = encode(m)?;
        let tmp = self
            .snaps
            .join(format!(".tmp-{}-{}", m.id, std::process::id()));
        let result = (|| {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            f.write_all(&bytes).map_err(io_err("write", &tmp))?;
            f.sync_all().map_err(io_err("fsync", &tmp))?;
            std::fs::hard_link(&tmp, &path).map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    ManifestError::AlreadyExists {
                        id: m.id.clone(),
                        path: path.clone(),
                    }
                } else {
                    io_err("link", &path)(e)
                }
            })
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        fsync_dir(&self.snaps)?;
        Ok(path)
    }

    /// Reads snapshot `id`.
    pub fn read(&self, id: &str) -> Result<Manifest> {
        let path = self.path(id)?;
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ManifestError::UnknownId {
                    id: id.to_string(),
                    dir: self.snaps.clone(),
                })
            }
            Err(e) => return Err(io_err("read", &path)(e)),
        };
        let m = decode(&bytes, &path)?;
        if m.id != id {
            return Err(ManifestError::Corrupt {
                path,
                detail: format!("the manifest inside has id {:?}", m.id),
            });
        }
        Ok(m)
    }

    /// Ids of all snapshots, sorted (= by creation time for generated ids).
    pub fn ids(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.snaps).map_err(io_err("list", &self.snaps))?;
        let mut ids = Vec::new();
        for e in rd {
            let e = e.map_err(io_err("list", &self.snaps))?;
            let name = e.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
                continue;
            };
            if validate_id(id).is_ok() {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// A summary of every snapshot, sorted by id; a manifest that cannot be
    /// read is listed as its error.
    pub fn list(&self) -> Result<Vec<Result<SnapshotSummary>>> {
        let mut out = Vec::new();
        for id in self.ids()? {
            out.push(self.read(&id).map(|m| {
                let file_bytes = self
                    .path(&id)
                    .ok()
                    .and_then(|p| p.metadata().ok())
                    .map_or(0, |md| md.len());
                summary(&m, file_bytes)
            }));
        }
        Ok(out)
    }

    /// Deletes snapshot `id`'s manifest (its objects stay in the store
    /// until a collection, see [`crate::gc`]). Refuses while other
    /// snapshots name it as their parent, naming them.
    pub fn remove(&self, id: &str) -> Result<()> {
        self.delete(id, false).map(|_| ())
    }

    /// Deletes snapshot `id`, and with `with_children` every snapshot
    /// descending from it; returns the ids deleted, leaves first. Without
    /// `with_children` a snapshot that is some snapshot's parent is
    /// refused ([`ManifestError::HasChildren`] names them). The removals
    /// are durable (directory fsynced) when this returns; the objects are
    /// freed by the next collection.
    pub fn delete(&self, id: &str, with_children: bool) -> Result<Vec<String>> {
        let path = self.path(id)?;
        let _lock = self.lock()?;
        if !path.is_file() {
            return Err(ManifestError::UnknownId {
                id: id.to_string(),
                dir: self.snaps.clone(),
            });
        }
        // Parent links of every snapshot; one that cannot be read might be
        // a child: refuse rather than orphan it.
        let mut links = Vec::new();
        for other in self.ids()? {
            if other != id {
                let parent = self.read(&other)?.parent;
                links.push((other, parent));
            }
        }
        let mut subtree = vec![id.to_string()];
        let mut i = 0;
        while i < subtree.len() {
            let p = subtree[i].clone();
            for (child, parent) in &links {
                if parent.as_deref() == Some(p.as_str()) && !subtree.contains(child) {
                    subtree.push(child.clone());
                }
            }
            i += 1;
        }
        if subtree.len() > 1 && !with_children {
            let children = links
                .iter()
                .filter(|(_, p)| p.as_deref() == Some(id))
                .map(|(c, _)| c.clone())
                .collect();
            return Err(ManifestError::HasChildren {
                id: id.to_string(),
                children,
            });
        }
        // Breadth-first order puts every child after its parent: remove
        // from the end, so no snapshot ever lacks its parent.
        subtree.reverse();
        for s in &subtree {
            let p = self.path(s)?;
            std::fs::remove_file(&p).map_err(io_err("remove", &p))?;
        }
        fsync_dir(&self.snaps)?;
        Ok(subtree)
    }

    /// Takes the directory's writer lock (see the module doc).
    fn lock(&self) -> Result<File> {
        let path = self.snaps.join(".lock");
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        loop {
            // SAFETY: flock on an open file descriptor; no memory is passed.
            if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
                return Ok(f);
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io_err("lock (flock)", &path)(e));
            }
        }
    }

    /// Snapshot `id` and its ancestors: `id` first, the root (no parent)
    /// last. Fails on a missing parent or a cycle.
    pub fn chain(&self, id: &str) -> Result<Vec<Manifest>> {
        let mut chain: Vec<Manifest> = vec![self.read(id)?];
        while let Some(parent) = chain.last().and_then(|m| m.parent.clone()) {
            if chain.iter().any(|m| m.id == parent) {
                return Err(ManifestError::ChainCycle {
                    id: id.to_string(),
                    repeated: parent,
                });
            }
            let child = chain.last().map(|m| m.id.clone()).unwrap_or_default();
            match self.read(&parent) {
                Ok(m) => chain.push(m),
                Err(ManifestError::UnknownId { .. }) => {
                    return Err(ManifestError::MissingParent {
                        id: child,
                        parent,
                        dir: self.snaps.clone(),
                    })
                }
                Err(e) => return Err(e),
            }
        }
        Ok(chain)
    }
}

fn summary(m: &Manifest, file_bytes: u64) -> SnapshotSummary {
    SnapshotSummary {
        id: m.id.clone(),
        parent: m.parent.clone(),
        kind: match m.kind {
            SnapshotKind::Full => "full",
            SnapshotKind::Incremental => "incremental",
        },
        vm_id: m.vm_id.clone(),
        created_ns: m.created_ns,
        memory_bytes: m.regions().iter().map(|(_, p)| p.bytes()).sum(),
        changed_pages: m.stats.changed_pages,
        file_bytes,
        log_seq: m.disk.as_ref().map(|d| d.seq),
    }
}

/// fsyncs a directory so that entries made in it survive a crash.
fn fsync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}
