//! Retention of a record directory's logs (`vmm store retain`): history
//! older than a window is dropped at checkpoint granularity.
//!
//! For each VM, the *base* is the latest checkpoint taken at or before
//! the cut time whose map loads and hashes to its barrier's checksum.
//! Every whole segment whose records all lie at or before the base is
//! removed (never the last segment: a writer appends there), so the kept
//! log replays from the base's map on. Checkpoints older than the base
//! are thinned to the first of every `checkpoint_every` period; those
//! kept stay restorable on their own (`vmm replay --until seq=N` at one of
//! them), as the store's collection keeps every block their maps name
//! once a log is trimmed (`snapshot::refs`). Newer checkpoints are all
//! kept.
//!
//! Applying takes the log's writer lock (a recording VM is refused),
//! rewrites the checkpoint index (temp file, fsync, rename), then deletes
//! the segments oldest first and fsyncs the directory: a crash at any
//! step leaves a log that reads, replays and verifies, missing a prefix of
//! what was planned at most. The blocks only the removed records named
//! stay in the store until `vmm store gc`.
use std::path::PathBuf;

use serde::Serialize;
use store::ObjectBackend;

use crate::checkpoints::{self, Checkpoint, CheckpointError};
use crate::log::{lock_dir, LogError, LogReader};
use crate::recording::RecordDir;

#[derive(Debug, thiserror::Error)]
pub enum RetainError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("removing {}: {source}", .path.display())]
    Remove {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What to keep.
#[derive(Debug, Clone, Copy)]
pub struct RetainPolicy {
    /// Records stamped before this time (ns since the Unix epoch) may go.
    pub cut_ns: u64,
    /// Of the checkpoints before the base, keep the first of every period
    /// this long.
    pub checkpoint_every_ns: u64,
}

/// What retention would do (or did) to one VM's log.
#[derive(Debug, Clone, Serialize)]
pub struct RetainPlan {
    pub vm: String,
    pub cut_ns: u64,
    /// The checkpoint the kept log replays from.
    pub base_checkpoint: Option<u64>,
    pub first_seq: u64,
    pub first_kept_seq: u64,
    pub records_removed: u64,
    pub segments_removed: Vec<PathBuf>,
    /// Their index files (a cache of each segment).
    #[serde(skip)]
    pub index_files: Vec<PathBuf>,
    pub bytes_removed: u64,
    pub checkpoints_kept: Vec<u64>,
    pub checkpoints_dropped: Vec<u64>,
    /// Why nothing is removed, when nothing is.
    pub note: Option<String>,
    #[serde(skip)]
    kept: Vec<Checkpoint>,
}

impl RetainPlan {
    pub fn is_empty(&self) -> bool {
        self.segments_removed.is_empty() && self.checkpoints_dropped.is_empty()
    }
}

/// Plans retention of `vm`'s log in `dir` under `policy`; `objects` holds
/// the checkpoints' maps (each candidate base is loaded and checked).
pub fn plan(
    dir: &RecordDir,
    objects: &dyn ObjectBackend,
    vm: &str,
    policy: RetainPolicy,
) -> Result<RetainPlan, RetainError> {
    let log_dir = dir.log_dir(vm);
    let reader = LogReader::open(&log_dir)?;
    let spans = reader.segment_spans();
    let first_seq = reader.first_seq().unwrap_or(1);
    let all = checkpoints::read_local(&log_dir).list;
    let mut plan = RetainPlan {
        vm: vm.to_string(),
        cut_ns: policy.cut_ns,
        base_checkpoint: None,
        first_seq,
        first_kept_seq: first_seq,
        records_removed: 0,
        segments_removed: Vec::new(),
        index_files: Vec::new(),
        bytes_removed: 0,
        checkpoints_kept: all.iter().map(|c| c.seq).collect(),
        checkpoints_dropped: Vec::new(),
        note: None,
        kept: all.clone(),
    };
    let base = all
        .iter()
        .rev()
        .filter(|c| c.ts_ns <= policy.cut_ns && c.seq + 1 >= first_seq)
        .find(|c| checkpoints::load(c, objects).is_ok());
    let Some(base) = base else {
        plan.note = Some(if all.iter().any(|c| c.ts_ns <= policy.cut_ns) {
            "no usable checkpoint at or before the cut (damaged, or already older than the log)"
                .into()
        } else {
            "no checkpoint at or before the cut: the log cannot be shortened (record with --checkpoint-every)".into()
        });
        return Ok(plan);
    };
    plan.base_checkpoint = Some(base.seq);
    // Whole segments at or before the base; never the writer's last one.
    for span in spans.iter().take(spans.len().saturating_sub(1)) {
        if span.last_seq > base.seq {
            break;
        }
        plan.bytes_removed += std::fs::metadata(&span.path).map_or(0, |m| m.len());
        plan.segments_removed.push(span.path.clone());
        plan.index_files.push(span.index_path.clone());
        plan.first_kept_seq = span.last_seq + 1;
    }
    plan.records_removed = plan.first_kept_seq - first_seq;
    let mut kept = Vec::new();
    let mut last_kept_ts = None;
    for cp in &all {
        let keep = cp.seq >= base.seq
            || last_kept_ts
                .is_none_or(|t: u64| cp.ts_ns.saturating_sub(t) >= policy.checkpoint_every_ns);
        if keep {
            if cp.seq < base.seq {
                last_kept_ts = Some(cp.ts_ns);
            }
            kept.push(cp.clone());
        } else {
            plan.checkpoints_dropped.push(cp.seq);
        }
    }
    plan.checkpoints_kept = kept.iter().map(|c| c.seq).collect();
    plan.kept = kept;
    if plan.segments_removed.is_empty() {
        plan.note = Some(format!(
            "every segment holds records after the base checkpoint (seq {}): smaller segments (--log-segment-kib) let retention cut finer",
            base.seq
        ));
    }
    Ok(plan)
}

/// Carries out `plan` (see the module doc for the order and why).
pub fn apply(dir: &RecordDir, plan: &RetainPlan) -> Result<(), RetainError> {
    let log_dir = dir.log_dir(&plan.vm);
    let _lock = lock_dir(&log_dir)?;
    if !plan.checkpoints_dropped.is_empty() {
        checkpoints::rewrite_local(&log_dir, &plan.kept)?;
    }
    for (seg, idx) in plan.segments_removed.iter().zip(&plan.index_files) {
        for path in [idx, seg] {
            match std::fs::remove_file(path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(RetainError::Remove {
                        path: path.clone(),
                        source,
                    })
                }
            }
        }
    }
    std::fs::File::open(&log_dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| RetainError::Remove {
            path: log_dir.clone(),
            source,
        })
}
