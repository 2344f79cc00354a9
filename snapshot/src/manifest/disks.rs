//! What a manifest records about the VM's disks, and the disk fingerprint.
//!
//! Disks are recorded in the manifest's annotations (so manifests written
//! before these keys existed still decode; absent keys read as unknown):
//!
//! ```text
//! disks         number of disks
//! disk<i>.path  the image's canonical absolute path at the snapshot
//!               (older manifests: the path as given, maybe relative)
//! disk<i>.ro    "true" | "false"
//! disk<i>.bytes the image's size in bytes at the snapshot
//! disk<i>.blake3  hex BLAKE3 of the whole image at the snapshot (only for
//!               disks no change log records: a recorded disk is checked
//!               against its log barrier instead, see `DiskPosition`)
//! ```
//!
//! The fingerprint is the plain BLAKE3 hash of the image (what `b3sum IMG`
//! prints), computed over the BLAKE3 tree in parallel ([`fingerprint`]).
//! A VMM that sees every write can keep the chaining values of the tree's
//! 1 MiB subtrees ([`DiskTree`]) and rehash only those written since.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use blake3::hazmat::{left_subtree_len, merge_subtrees_non_root, merge_subtrees_root};
use blake3::hazmat::{ChainingValue, HasherExt, Mode};

use super::{Manifest, ManifestError, Result};

/// One disk as a manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRecord {
    /// The image path (absolute for manifests written by this version).
    pub path: PathBuf,
    /// Attached read-only.
    pub read_only: bool,
    /// Size in bytes (unknown for older manifests).
    pub bytes: Option<u64>,
    /// BLAKE3 of the image at the snapshot (unrecorded disks only).
    pub blake3: Option<[u8; 32]>,
}

/// How a recorded disk path was resolved to a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathResolution {
    /// The manifest holds an absolute path.
    Absolute,
    /// A relative path (older manifest), found under the record directory.
    SnapshotDir,
    /// A relative path (older manifest), found under the current directory.
    CurrentDir,
}

impl Manifest {
    /// The disks recorded in the annotations (see the module doc).
    pub fn disks(&self) -> Result<Vec<DiskRecord>> {
        let invalid = |detail: String| ManifestError::Invalid {
            id: self.id.clone(),
            detail,
        };
        let get = |key: &str| self.annotations.get(key).map(String::as_str);
        let n: usize = match get("disks") {
            None => return Ok(Vec::new()),
            Some(v) => v
                .parse()
                .map_err(|_| invalid(format!("annotation disks={v:?} is not a number")))?,
        };
        (0..n)
            .map(|i| {
                let path = get(&format!("disk{i}.path"))
                    .ok_or_else(|| invalid(format!("disk{i} has no recorded path")))?;
                let bytes = match get(&format!("disk{i}.bytes")) {
                    None => None,
                    Some(v) => Some(
                        v.parse()
                            .map_err(|_| invalid(format!("disk{i}.bytes={v:?} is not a number")))?,
                    ),
                };
                let blake3 = match get(&format!("disk{i}.blake3")) {
                    None => None,
                    Some(v) => Some(
                        *blake3::Hash::from_hex(v)
                            .map_err(|_| invalid(format!("disk{i}.blake3={v:?} is not a hash")))?
                            .as_bytes(),
                    ),
                };
                Ok(DiskRecord {
                    path: PathBuf::from(path),
                    read_only: get(&format!("disk{i}.ro")) == Some("true"),
                    bytes,
                    blake3,
                })
            })
            .collect()
    }

    /// Records `disks` in the annotations (replacing earlier disk keys).
    pub fn set_disks(&mut self, disks: &[DiskRecord]) {
        self.annotations
            .retain(|k, _| !(k.starts_with("disk") && k != "disks" && k.contains('.')));
        self.annotations
            .insert("disks".into(), disks.len().to_string());
        for (i, d) in disks.iter().enumerate() {
            let a = &mut self.annotations;
            a.insert(format!("disk{i}.path"), d.path.display().to_string());
            a.insert(format!("disk{i}.ro"), d.read_only.to_string());
            if let Some(b) = d.bytes {
                a.insert(format!("disk{i}.bytes"), b.to_string());
            }
            if let Some(h) = d.blake3 {
                a.insert(
                    format!("disk{i}.blake3"),
                    blake3::Hash::from(h).to_hex().to_string(),
                );
            }
        }
    }
}

/// Where the disk recorded as `recorded` is: an absolute path as it is; a
/// relative one (written by an older vmm) under `snapshot_root` (the
/// record directory) if it exists there, else under the current
/// directory. `None` when a relative path exists in neither place; the
/// caller names both.
pub fn resolve_disk_path(
    recorded: &Path,
    snapshot_root: &Path,
) -> Option<(PathBuf, PathResolution)> {
    if recorded.is_absolute() {
        return Some((recorded.to_path_buf(), PathResolution::Absolute));
    }
    let under_dir = snapshot_root.join(recorded);
    if under_dir.exists() {
        return Some((under_dir, PathResolution::SnapshotDir));
    }
    recorded
        .exists()
        .then(|| (recorded.to_path_buf(), PathResolution::CurrentDir))
}

/// The path to record for a disk: canonical and absolute, so a restore
/// from any directory finds it (the path as given, made absolute against
/// the current directory, when it cannot be canonicalized).
pub fn absolute_disk_path(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).unwrap_or_else(|_| {
        std::env::current_dir()
            .map(|cwd| cwd.join(path))
            .unwrap_or_else(|_| path.to_path_buf())
    })
}

/// Subtrees smaller than this are hashed on one thread (a thread costs
/// more than hashing a few MiB).
const MIN_PARALLEL: u64 = 4 << 20;
/// Bytes read per `pread`.
const READ: usize = 1 << 20;

/// BLAKE3 of the file at `path` (equal to `b3sum`'s), hashing disjoint
/// subtrees of the BLAKE3 tree on up to `threads` threads.
pub fn fingerprint(path: &Path, threads: usize) -> std::io::Result<[u8; 32]> {
    let f = File::open(path)?;
    let len = f.metadata()?.len();
    if len <= MIN_PARALLEL || threads <= 1 {
        let mut h = blake3::Hasher::new();
        hash_range(&f, 0, len, &mut h)?;
        return Ok(*h.finalize().as_bytes());
    }
    let left = left_subtree_len(len);
    let (l, r) = std::thread::scope(|s| {
        let right = s.spawn(|| subtree(&f, left, len - left, threads - threads / 2));
        let l = subtree(&f, 0, left, threads / 2);
        (l, right.join().unwrap_or_else(|_| Err(panicked())))
    });
    Ok(*merge_subtrees_root(&l?, &r?, Mode::Hash).as_bytes())
}

fn panicked() -> std::io::Error {
    std::io::Error::other("a disk hashing thread panicked")
}

/// The chaining value of the complete BLAKE3 subtree `offset..offset+len`.
fn subtree(f: &File, offset: u64, len: u64, threads: usize) -> std::io::Result<ChainingValue> {
    if len <= MIN_PARALLEL || threads <= 1 {
        let mut h = blake3::Hasher::new();
        h.set_input_offset(offset);
        hash_range(f, offset, len, &mut h)?;
        return Ok(h.finalize_non_root());
    }
    let left = left_subtree_len(len);
    let (l, r) = std::thread::scope(|s| {
        let right = s.spawn(|| subtree(f, offset + left, len - left, threads - threads / 2));
        let l = subtree(f, offset, left, threads / 2);
        (l, right.join().unwrap_or_else(|_| Err(panicked())))
    });
    Ok(merge_subtrees_non_root(&l?, &r?, Mode::Hash))
}

fn hash_range(f: &File, offset: u64, len: u64, h: &mut blake3::Hasher) -> std::io::Result<()> {
    let mut buf = vec![0u8; READ.min(len as usize)];
    let mut done = 0u64;
    while done < len {
        let n = ((len - done) as usize).min(buf.len());
        f.read_exact_at(&mut buf[..n], offset + done)?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(())
}

/// Size of a cached subtree of [`DiskTree`]: 1024 BLAKE3 chunks. Every
/// BLAKE3 subtree of an input longer than this starts at a multiple of it,
/// so the tree above these leaves is the same for any content.
pub const TREE_LEAF: u64 = 1 << 20;

/// The chaining values of a file's 1 MiB BLAKE3 subtrees, so that after
/// some writes only the leaves written need hashing again.
#[derive(Debug, Clone)]
pub struct DiskTree {
    len: u64,
    leaves: Vec<Option<ChainingValue>>,
}

impl DiskTree {
    /// An empty cache for a file of `len` bytes (every leaf to hash).
    pub fn new(len: u64) -> DiskTree {
        DiskTree {
            len,
            leaves: vec![None; len.div_ceil(TREE_LEAF) as usize],
        }
    }

    /// The file length the cache is for.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets leaf `leaf` (bytes `leaf * TREE_LEAF ..`), which changed.
    pub fn invalidate(&mut self, leaf: usize) {
        if let Some(l) = self.leaves.get_mut(leaf) {
            *l = None;
        }
    }

    /// Leaves that will be hashed by the next [`DiskTree::fingerprint`].
    pub fn missing(&self) -> usize {
        self.leaves.iter().filter(|l| l.is_none()).count()
    }

    /// BLAKE3 of `f` (which must be `len` bytes long and unchanged except
    /// in invalidated leaves), hashing the missing leaves on up to
    /// `threads` threads.
    pub fn fingerprint(&mut self, f: &File, threads: usize) -> std::io::Result<[u8; 32]> {
        if self.len <= TREE_LEAF {
            let mut h = blake3::Hasher::new();
            hash_range(f, 0, self.len, &mut h)?;
            return Ok(*h.finalize().as_bytes());
        }
        let todo: Vec<usize> = (0..self.leaves.len())
            .filter(|&i| self.leaves[i].is_none())
            .collect();
        let parts = threads.clamp(1, todo.len().max(1));
        let len = self.len;
        let results: Vec<std::io::Result<Vec<(usize, ChainingValue)>>> = std::thread::scope(|s| {
            let handles: Vec<_> = todo
                .chunks(todo.len().div_ceil(parts).max(1))
                .map(|part| {
                    s.spawn(move || {
                        part.iter()
                            .map(|&i| {
                                let off = i as u64 * TREE_LEAF;
                                let n = (len - off).min(TREE_LEAF);
                                let mut h = blake3::Hasher::new();
                                h.set_input_offset(off);
                                hash_range(f, off, n, &mut h)?;
                                Ok((i, h.finalize_non_root()))
                            })
                            .collect()
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err(panicked())))
                .collect()
        });
        for r in results {
            for (i, cv) in r? {
                self.leaves[i] = Some(cv);
            }
        }
        let left = left_subtree_len(self.len);
        let l = self.merged(0, left);
        let r = self.merged(left, self.len - left);
        Ok(*merge_subtrees_root(&l, &r, Mode::Hash).as_bytes())
    }

    /// The chaining value of the complete subtree `offset..offset+len`
    /// from the cached leaves.
    fn merged(&self, offset: u64, len: u64) -> ChainingValue {
        if len <= TREE_LEAF {
            return self.leaves[(offset / TREE_LEAF) as usize].expect("hashed above");
        }
        let left = left_subtree_len(len);
        merge_subtrees_non_root(
            &self.merged(offset, left),
            &self.merged(offset + left, len - left),
            Mode::Hash,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_blake3_of_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for len in [
            0u64,
            1,
            1024,
            1025,
            4 << 20,
            (4 << 20) + 1,
            (9 << 20) + 4095,
            24 << 20,
        ] {
            let data: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x as u8
                })
                .collect();
            let p = dir.path().join(format!("f{len}"));
            std::fs::write(&p, &data).unwrap();
            for threads in [1, 2, 3, 8] {
                assert_eq!(
                    fingerprint(&p, threads).unwrap(),
                    *blake3::hash(&data).as_bytes(),
                    "len {len} threads {threads}"
                );
            }
        }
    }

    #[test]
    fn a_disk_tree_rehashes_only_invalidated_leaves() {
        let dir = tempfile::tempdir().unwrap();
        for len in [
            100u64,
            TREE_LEAF,
            TREE_LEAF + 1,
            5 * TREE_LEAF + 12345,
            8 * TREE_LEAF,
        ] {
            let mut data: Vec<u8> = (0..len).map(|i| (i * 7 % 251) as u8).collect();
            let p = dir.path().join(format!("t{len}"));
            std::fs::write(&p, &data).unwrap();
            let f = File::open(&p).unwrap();
            let mut tree = DiskTree::new(len);
            assert_eq!(
                tree.fingerprint(&f, 2).unwrap(),
                *blake3::hash(&data).as_bytes()
            );
            if len > TREE_LEAF {
                assert_eq!(tree.missing(), 0, "a file up to one leaf is hashed whole");
            }
            // Change a byte in the last leaf; only that leaf is invalidated.
            let at = len - 1;
            data[at as usize] ^= 0x55;
            std::fs::write(&p, &data).unwrap();
            let f = File::open(&p).unwrap();
            tree.invalidate((at / TREE_LEAF) as usize);
            assert!(tree.missing() <= 1);
            assert_eq!(
                tree.fingerprint(&f, 3).unwrap(),
                *blake3::hash(&data).as_bytes()
            );
        }
    }

    #[test]
    fn disks_round_trip_through_annotations() {
        let mut m = Manifest::new("vm", super::super::SnapshotKind::Full, None);
        assert_eq!(m.disks().unwrap(), vec![]);
        let disks = vec![
            DiskRecord {
                path: "/a/b.img".into(),
                read_only: false,
                bytes: Some(4096),
                blake3: Some([7; 32]),
            },
            DiskRecord {
                path: "rel.img".into(),
                read_only: true,
                bytes: None,
                blake3: None,
            },
        ];
        m.set_disks(&disks);
        assert_eq!(m.disks().unwrap(), disks);
        m.set_disks(&disks[1..]);
        assert_eq!(m.disks().unwrap(), disks[1..]);
    }

    #[test]
    fn relative_paths_resolve_under_the_snapshot_dir_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("d.img"), b"x").unwrap();
        let (p, how) = resolve_disk_path(Path::new("d.img"), dir.path()).unwrap();
        assert_eq!(
            (p, how),
            (dir.path().join("d.img"), PathResolution::SnapshotDir)
        );
        assert!(resolve_disk_path(Path::new("nope-xyz.img"), dir.path()).is_none());
        let abs = dir.path().join("d.img");
        assert_eq!(
            resolve_disk_path(&abs, Path::new("/")).unwrap().1,
            PathResolution::Absolute
        );
    }
}
