//! What a record directory holds and how well it deduplicates: the store's
//! figures, the bytes the change logs reference and the memory the
//! snapshots describe (`vmm store stats`).
use changelog::{RecordDir, RecordError};
use serde::Serialize;
use store::StoreStats;

use crate::SnapshotDir;

/// Store figures plus what the logs and snapshots reference.
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

pub fn stats(dir: &RecordDir) -> Result<RecordingStats, RecordError> {
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
    if !dir.snapshots_dir().is_dir() {
        return 0;
    }
    SnapshotDir::open(dir.root())
        .and_then(|d| d.list())
        .map(|list| list.into_iter().flatten().map(|s| s.memory_bytes).sum())
        .unwrap_or(0)
}
