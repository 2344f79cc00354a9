//! A record directory: one content store shared by every VM, and one change
//! log per VM.
//!
//! ```text
//! DIR/store/          the content store (store::Store)
//! DIR/logs/<vm-id>/   that VM's change log (crate::log)
//! ```
//! `verify` checks a log completely: frame and record CRCs and the chain
//! (crate::log::verify_with), that every block a write names is in the
//! store, and that every barrier's disk checksum equals the checksum
//! recomputed from the writes before it.
use std::path::{Path, PathBuf};

use serde::Serialize;
use store::{ObjectId, Store, StoreError, StoreStats};

use crate::disk_state::{DiskState, ZERO_BLOCK_HASH};
use crate::log::{verify_with, LogError, LogReader, RecordKind, VerifyReport};
use crate::tap::TapError;
use store::hex;

/// Upper bound on a disk's blocks when none is known (2^61 sectors).
const ANY_DISK_BLOCKS: u64 = u64::MAX / 4096;

#[derive(Debug, Clone)]
pub struct RecordDir {
    root: PathBuf,
}

impl RecordDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn store_dir(&self) -> PathBuf {
        self.root.join("store")
    }

    pub fn log_dir(&self, vm_id: &str) -> PathBuf {
        self.root.join("logs").join(vm_id)
    }

    pub fn open_store(&self) -> Result<Store, StoreError> {
        Store::open(self.store_dir())
    }

    /// Whether the root has a record (or snapshot) directory's layout: a
    /// content store (`store/` holding the store's `index.log`), or a
    /// `store/` beside `logs/` or `snapshots/`. Requiring `store/` keeps an
    /// ordinary folder that happens to hold `logs/` from looking like one.
    pub fn has_layout(&self) -> bool {
        let store = self.store_dir();
        store.join("index.log").is_file()
            || (store.is_dir()
                && (self.root.join("logs").is_dir() || self.root.join("snapshots").is_dir()))
    }

    /// The record directory that `path` (an absolute, canonical path) lies
    /// in: `path` itself or its nearest ancestor with the layout.
    pub fn enclosing(path: &Path) -> Option<RecordDir> {
        path.ancestors()
            .map(RecordDir::new)
            .find(RecordDir::has_layout)
    }

    /// The VM ids that have a log here, sorted.
    pub fn vm_ids(&self) -> std::io::Result<Vec<String>> {
        let logs = self.root.join("logs");
        if !logs.is_dir() {
            return Ok(Vec::new());
        }
        let mut ids: Vec<String> = std::fs::read_dir(logs)?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// The disk state the log of `vm_id` describes (hashes only; no block
    /// data is read). An empty state when there is no log yet.
    pub fn logged_state(&self, vm_id: &str, num_blocks: u64) -> Result<DiskState, TapError> {
        let mut state = DiskState::zeroed(num_blocks);
        let dir = self.log_dir(vm_id);
        if !dir.exists() {
            return Ok(state);
        }
        let reader = LogReader::open(&dir)?;
        // From the checkpoint the last close left, when it is valid.
        let mut from = 1;
        if let Some((seq, saved)) = crate::checkpoint::load(&dir, &reader, num_blocks) {
            state = saved;
            from = seq + 1;
        }
        if from > reader.last_seq() {
            return Ok(state);
        }
        for record in reader.iter_from(from)? {
            if let RecordKind::BlockWrite { sector, blocks, .. } = record?.kind {
                state
                    .apply_block_write(sector, &blocks)
                    .map_err(|source| TapError::Image {
                        path: dir.clone(),
                        source,
                    })?;
            }
        }
        Ok(state)
    }

    /// Bytes every log here references (the logical size before dedup).
    pub fn logical_bytes(&self) -> Result<u64, LogError> {
        let mut total = 0;
        for vm in self.vm_ids().unwrap_or_default() {
            let reader = LogReader::open(self.log_dir(&vm))?;
            for record in reader.iter()? {
                if let RecordKind::BlockWrite { len, .. } = record?.kind {
                    total += u64::from(len);
                }
            }
        }
        Ok(total)
    }
}

/// Store figures plus what the logs reference.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingStats {
    #[serde(flatten)]
    pub store: StoreStats,
    /// Bytes the change logs reference.
    pub logical_bytes: u64,
    /// Bytes of memory the snapshots in DIR/snapshots describe.
    pub snapshot_bytes: u64,
    /// (logical_bytes + snapshot_bytes) / stored_bytes (0 when nothing is
    /// stored).
    pub dedup_ratio: f64,
}

pub fn stats(dir: &RecordDir) -> Result<RecordingStats, TapError> {
    let store = dir.open_store()?.stats();
    let logical_bytes = dir.logical_bytes()?;
    let snapshot_bytes = snapshot_bytes(dir);
    let dedup_ratio = if store.stored_bytes == 0 {
        0.0
    } else {
        (logical_bytes + snapshot_bytes) as f64 / store.stored_bytes as f64
    };
    Ok(RecordingStats {
        store,
        logical_bytes,
        snapshot_bytes,
        dedup_ratio,
    })
}

/// Memory bytes described by every readable snapshot in the directory.
fn snapshot_bytes(dir: &RecordDir) -> u64 {
    if !dir.root().join("snapshots").is_dir() {
        return 0;
    }
    snapshot::SnapshotDir::open(dir.root())
        .and_then(|d| d.list())
        .map(|list| list.into_iter().flatten().map(|s| s.memory_bytes).sum())
        .unwrap_or(0)
}

/// The result of a full verification of one VM's log.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingReport {
    pub vm_id: String,
    #[serde(flatten)]
    pub log: VerifyReport,
    pub barriers_checked: u64,
    pub objects_checked: u64,
}

impl RecordingReport {
    pub fn is_ok(&self) -> bool {
        self.log.is_ok()
    }
}

/// Verifies the log of `vm_id` against the store (see the module doc).
pub fn verify(dir: &RecordDir, vm_id: &str) -> Result<RecordingReport, TapError> {
    let store = dir.open_store()?;
    let mut state = DiskState::zeroed(ANY_DISK_BLOCKS);
    let (mut barriers, mut objects) = (0u64, 0u64);
    let log = verify_with(dir.log_dir(vm_id), |record| {
        match &record.kind {
            RecordKind::BlockWrite { sector, blocks, .. } => {
                for (i, h) in blocks.iter().enumerate() {
                    if *h != ZERO_BLOCK_HASH && !store.contains(&ObjectId(*h)) {
                        return Err(format!(
                            "block {i} of the write (object {}) is missing from the store {}",
                            hex::encode(h),
                            store.dir().display()
                        ));
                    }
                    objects += 1;
                }
                state
                    .apply_block_write(*sector, blocks)
                    .map_err(|e| e.to_string())?;
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                let actual = state.checksum();
                if actual != *disk_checksum {
                    return Err(format!(
                        "barrier checksum {} does not match the writes before it ({})",
                        hex::encode(disk_checksum),
                        hex::encode(&actual)
                    ));
                }
                barriers += 1;
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(RecordingReport {
        vm_id: vm_id.to_string(),
        log,
        barriers_checked: barriers,
        objects_checked: objects,
    })
}
