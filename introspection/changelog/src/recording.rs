//! A record directory: one content store shared by every VM, one change
//! log per VM, and the VMs' snapshots. [`RecordDir`] is the one type that
//! knows these paths.
//!
//! ```text
//! DIR/store/          the content store (store::Store)
//! DIR/logs/<vm-id>/   that VM's change log (crate::log)
//! DIR/snapshots/      snapshot manifests (the snapshot crate's SnapshotDir)
//! DIR/drills.jsonl    results of `vmm drill` runs (insight::drills)
//! ```
//! `verify` checks a log completely: frame and record CRCs and the chain
//! (crate::log::verify_with), that every block a write names is in the
//! store, and that every barrier's disk checksum equals the checksum
//! recomputed from the writes before it.
use std::path::{Path, PathBuf};

use serde::Serialize;
use store::{ObjectId, Store, StoreError};

use crate::checkpoints;
use crate::disk_state::{DiskState, ZERO_BLOCK_HASH};
use crate::log::{verify_with, LogError, LogReader, RecordKind, VerifyReport};
use store::hex;
use thiserror::Error;

use crate::disk_state::DiskStateError;

/// What reading a record directory can fail with.
#[derive(Debug, Error)]
pub enum RecordError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("disk image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: DiskStateError,
    },
}

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

    /// Where snapshot manifests live.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.root.join("snapshots")
    }

    /// Where the VMs' logs live, one directory each.
    pub fn logs_dir(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn log_dir(&self, vm_id: &str) -> PathBuf {
        self.logs_dir().join(vm_id)
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
            || (store.is_dir() && (self.logs_dir().is_dir() || self.snapshots_dir().is_dir()))
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
        let logs = self.logs_dir();
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
    pub fn logged_state(&self, vm_id: &str, num_blocks: u64) -> Result<DiskState, RecordError> {
        Ok(self.logged_state_at(vm_id, num_blocks)?.0)
    }

    /// [`Self::logged_state`] and the seq of the log's last barrier when no
    /// write follows it (the state is exactly the disk at that barrier);
    /// `None` when writes follow the last barrier or there is none.
    pub fn logged_state_at(
        &self,
        vm_id: &str,
        num_blocks: u64,
    ) -> Result<(DiskState, Option<u64>), RecordError> {
        let mut state = DiskState::zeroed(num_blocks);
        let dir = self.log_dir(vm_id);
        if !dir.exists() {
            return Ok((state, None));
        }
        let reader = LogReader::open(&dir)?;
        // From the checkpoint the last close left, when it is valid.
        let (mut from, mut at_barrier) = (1, None);
        if let Some((seq, saved)) = crate::checkpoint::load(&dir, &reader, num_blocks) {
            state = saved;
            (from, at_barrier) = (seq + 1, Some(seq));
        }
        if from > reader.last_seq() {
            return Ok((state, at_barrier));
        }
        for record in reader.iter_from(from)? {
            let record = record?;
            match record.kind {
                RecordKind::BlockWrite { sector, blocks, .. } => {
                    at_barrier = None;
                    state.apply_block_write(sector, &blocks).map_err(|source| {
                        RecordError::Image {
                            path: dir.clone(),
                            source,
                        }
                    })?
                }
                RecordKind::Barrier { .. } => at_barrier = Some(record.seq),
                _ => {}
            }
        }
        Ok((state, at_barrier))
    }

    /// The disk state the log of `vm_id` describes at seq `seq` (from the
    /// saved state when it is at or before `seq`).
    pub fn logged_state_until(
        &self,
        vm_id: &str,
        num_blocks: u64,
        seq: u64,
    ) -> Result<DiskState, RecordError> {
        let dir = self.log_dir(vm_id);
        let reader = LogReader::open(&dir)?;
        let (mut state, from) = match crate::checkpoint::load(&dir, &reader, num_blocks) {
            Some((at, saved)) if at <= seq => (saved, at + 1),
            _ => (DiskState::zeroed(num_blocks), 1),
        };
        if from > seq.min(reader.last_seq()) {
            return Ok(state);
        }
        for record in reader.iter_from(from)? {
            let record = record?;
            if record.seq > seq {
                break;
            }
            if let RecordKind::BlockWrite { sector, blocks, .. } = record.kind {
                state
                    .apply_block_write(sector, &blocks)
                    .map_err(|source| RecordError::Image {
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

/// The result of a full verification of one VM's log.
#[derive(Debug, Clone, Serialize)]
pub struct RecordingReport {
    pub vm_id: String,
    #[serde(flatten)]
    pub log: VerifyReport,
    pub barriers_checked: u64,
    pub objects_checked: u64,
    /// The checkpoint the disk checks started from, when the log's oldest
    /// records were removed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_checkpoint: Option<u64>,
}

impl RecordingReport {
    pub fn is_ok(&self) -> bool {
        self.log.is_ok()
    }
}

/// Verifies the log of `vm_id` against the store (see the module doc).
///
/// A log whose oldest segments were removed (`vmm store retain`) is
/// checked from the first checkpoint whose later records are all kept:
/// its map stands in for the removed writes; the records before it are
/// checked for framing and order only.
pub fn verify(dir: &RecordDir, vm_id: &str) -> Result<RecordingReport, RecordError> {
    let store = dir.open_store()?;
    let mut state = DiskState::zeroed(ANY_DISK_BLOCKS);
    let reader = LogReader::open(dir.log_dir(vm_id))?;
    let (mut start, mut from_checkpoint) = (0, None);
    let mut no_start = None;
    if reader.is_trimmed() {
        let first = reader.first_seq().unwrap_or(1);
        let usable = checkpoints::read_local(&dir.log_dir(vm_id))
            .list
            .into_iter()
            .filter(|c| c.seq + 1 >= first)
            .find_map(|c| checkpoints::load(&c, &store).ok().map(|s| (c.seq, s)));
        match usable {
            Some((seq, loaded)) => {
                state = loaded;
                start = seq;
                from_checkpoint = Some(seq);
            }
            None => {
                no_start = Some(format!(
                    "the records before seq {first} were removed (store retain), and no checkpoint lets a check start after them"
                ))
            }
        }
    }
    drop(reader);
    let (mut barriers, mut objects) = (0u64, 0u64);
    let log = verify_with(dir.log_dir(vm_id), |record| {
        if let Some(why) = no_start.take() {
            return Err(why);
        }
        if record.seq <= start {
            return Ok(());
        }
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
        from_checkpoint,
    })
}
