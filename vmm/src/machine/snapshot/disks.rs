//! What a snapshot records about the machine's disks (format in
//! `snapshot/src/manifest/disks.rs`): the canonical path, so a restore
//! from any directory finds it; the size; and for a disk no change log
//! records, its BLAKE3, so a restore can refuse a disk that changed.
//!
//! The BLAKE3 is taken while the VM is stopped (the guest writes through
//! its vCPU thread, so the image cannot change meanwhile). To keep that
//! short, each such disk gets a device tap ([`LeafTap`]) that notes which
//! 1 MiB leaves of the BLAKE3 tree the guest wrote; a snapshot rehashes
//! only those (on all cores) and merges the cached rest. The first
//! snapshot hashes the whole image. The VM is assumed to be the image's
//! only writer while it runs.
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use snapshot::manifest::{absolute_disk_path, DiskTree, TREE_LEAF};
use snapshot::DiskRecord;

use crate::devices::virtio::block::WriteTap;
use crate::error::{Result, VmmError};
use crate::machine::DiskConfig;
use crate::recording::RecordResult;

/// Threads for hashing disk images.
pub(in crate::machine) fn hash_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
}

/// Which 1 MiB leaves of a disk were written since the last look.
#[derive(Debug)]
pub struct WrittenLeaves {
    bits: Vec<AtomicU64>,
}

impl WrittenLeaves {
    /// For a disk of `len` bytes, nothing written yet.
    pub fn new(len: u64) -> Arc<WrittenLeaves> {
        let leaves = len.div_ceil(TREE_LEAF) as usize;
        Arc::new(WrittenLeaves {
            bits: (0..leaves.div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
        })
    }

    fn mark(&self, start: u64, end: u64) {
        if end <= start {
            return;
        }
        for leaf in start / TREE_LEAF..=(end - 1) / TREE_LEAF {
            if let Some(w) = self.bits.get((leaf / 64) as usize) {
                w.fetch_or(1 << (leaf % 64), Ordering::Release);
            }
        }
    }

    /// Whether `leaf` was written since the last call; clears it.
    fn take(&self, leaf: usize) -> bool {
        self.bits.get(leaf / 64).is_some_and(|w| {
            let bit = 1u64 << (leaf % 64);
            w.fetch_and(!bit, Ordering::AcqRel) & bit != 0
        })
    }
}

/// The device tap of a disk no change log records: it only notes where
/// the guest wrote (the write is already on the image when it is called).
pub struct LeafTap(pub Arc<WrittenLeaves>);

impl WriteTap for LeafTap {
    fn write(&mut self, offset: u64, data: Vec<u8>) -> RecordResult<()> {
        self.0.mark(offset, offset + data.len() as u64);
        Ok(())
    }

    fn flush(&mut self) -> RecordResult<()> {
        Ok(())
    }

    fn close(&mut self) -> RecordResult<()> {
        Ok(())
    }
}

/// One unrecorded disk's fingerprint state.
pub(super) struct DiskPrint {
    written: Arc<WrittenLeaves>,
    tree: Option<DiskTree>,
}

impl DiskPrint {
    pub fn new(written: Arc<WrittenLeaves>) -> DiskPrint {
        DiskPrint {
            written,
            tree: None,
        }
    }
}

/// The records of `disks`; with `prints` (one per disk, for disks no
/// change log records) their BLAKE3 too.
pub(super) fn records(disks: &[DiskConfig], prints: &mut [DiskPrint]) -> Result<Vec<DiskRecord>> {
    let mut prints = prints.iter_mut();
    disks
        .iter()
        .map(|d| {
            let path = absolute_disk_path(&d.path);
            let disk_err = |what: &str, e: std::io::Error| VmmError::Disk {
                path: path.clone(),
                reason: format!("{what} for the snapshot: {e}"),
            };
            let file = std::fs::File::open(&path).map_err(|e| disk_err("opening it", e))?;
            let bytes = file
                .metadata()
                .map_err(|e| disk_err("reading its size", e))?
                .len();
            let blake3 = match prints.next() {
                Some(p) => {
                    let tree = match &mut p.tree {
                        Some(t) if t.len() == bytes => t,
                        stale => stale.insert(DiskTree::new(bytes)),
                    };
                    for leaf in 0..bytes.div_ceil(TREE_LEAF) as usize {
                        if p.written.take(leaf) {
                            tree.invalidate(leaf);
                        }
                    }
                    Some(
                        tree.fingerprint(&file, hash_threads())
                            .map_err(|e| disk_err("hashing it", e))?,
                    )
                }
                None => None,
            };
            Ok(DiskRecord {
                path,
                read_only: d.read_only,
                bytes: Some(bytes),
                blake3,
            })
        })
        .collect()
}
