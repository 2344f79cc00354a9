//! Rebuilding past state.
//!
//! Owns: restoring a base (an empty disk, a disk image; VM snapshots to
//! come), reapplying a change log to a sequence number, time or mark,
//! verifying every barrier checksum on the way, stepping, speed-controlled
//! playback and what-if transformations.
//!
//! Does not own: the log format and record directory (`changelog`), the
//! objects (`store`, read through its `ObjectBackend` trait) or what the
//! guest's files mean (`introspection`, whose decoders the proof uses).
//!
//! - [`point`]: where to stop (`seq=`, `time=`, `mark=`).
//! - [`base`]: where to start, and checking that a base image is a state
//!   the log passed through.
//! - [`engine`]: the replay loop itself.
//! - [`metering`]: what each replayed interval (barrier to barrier) cost.
//! - [`filter`]: what-if transformations.
//! - [`fleet`]: many VMs' replays as jobs placed on workers by their
//!   resources, each done exactly once.
//! - [`replay_to_file`]: all of it, writing a new image atomically.
//! - [`semantic`]: application-level replay (rows, documents, keys) from
//!   the semantic change log, proved against the block-level replay.
use std::path::{Path, PathBuf};

use changelog::log::LogError;
use changelog::recording::RecordDir;
use changelog::LogBackend;
use store::{ObjectBackend, StoreError};
use thiserror::Error;

pub mod base;
pub mod engine;
pub mod filter;
pub mod fleet;
pub mod metering;
mod progress;
pub mod semantic;

pub use base::Base;
/// Replay points are the introspection crate's (one syntax everywhere).
pub use changelog::point::{Point, PointError};
pub use engine::{replay, Control, Options, ReplayReport, Step};
pub use filter::{Filter, WhatIf};
pub use metering::{ReplayStep, StepTotals};

#[derive(Debug, Error)]
pub enum ReplayError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("image {}: {reason}", .path.display())]
    ImageState { path: PathBuf, reason: String },
    #[error("{0}")]
    PointNotInLog(String),
    #[error("base image {} matches no barrier of the log before the target: it is not a state this VM's disk passed through (use --base empty to replay from the log alone)", .0.display())]
    BaseNotInLog(PathBuf),
    #[error("the log has no base mark recording the disk size; pass --base IMAGE")]
    NoBaseSize,
    #[error("VM '{vm}': cannot start from the checkpoint at seq {seq}: {why}")]
    NoCheckpoint { vm: String, seq: u64, why: String },
    #[error("the log of VM '{vm}' at {location} starts at seq {first_seq}: its older records were removed by the record set's retention limits, and no checkpoint at or before the target lets a replay start after them; replay to a later point (`vmm log checkpoints {location}` lists the checkpoints)")]
    Trimmed {
        vm: String,
        first_seq: u64,
        location: String,
    },
    #[error("replay stopped: {reason}; {}", match .last_verified_barrier {
        Some(seq) => format!("the last verified barrier is seq {seq} (--until seq={seq} rebuilds that state)"),
        None => "no barrier was verified before it".to_string(),
    })]
    Interrupted {
        reason: String,
        last_verified_barrier: Option<u64>,
    },
    #[error("replay cancelled before it finished; the output was not written")]
    Cancelled,
}

impl From<PointError> for ReplayError {
    fn from(e: PointError) -> ReplayError {
        match e {
            PointError::Log(e) => ReplayError::Log(e),
            PointError::NotInLog(m) => ReplayError::PointNotInLog(m),
        }
    }
}

/// Replays from `base` to `point` into a new file `out`. The result is
/// built under a temporary name beside `out` and renamed only when the
/// replay succeeded, so `out` never holds a partial or unverified result.
pub fn replay_to_file(
    dir: &RecordDir,
    vm_id: &str,
    base: &Base,
    point: &Point,
    out: &Path,
    opts: Options<'_>,
) -> Result<ReplayReport, ReplayError> {
    let store = dir.open_store()?;
    replay_to_file_from(dir, &store, vm_id, base, point, out, opts)
}

/// [`replay_to_file`] from wherever the log and the objects live.
pub fn replay_to_file_from(
    logs: &dyn LogBackend,
    objects: &dyn ObjectBackend,
    vm_id: &str,
    base: &Base,
    point: &Point,
    out: &Path,
    mut opts: Options<'_>,
) -> Result<ReplayReport, ReplayError> {
    let until = point.resolve(logs, vm_id)?;
    let tmp = temp_path(out);
    let cancel = opts.cancel;
    let cancelled = || cancel.is_some_and(|c| c());
    let result = (|| {
        if cancelled() {
            return Err(ReplayError::Cancelled);
        }
        // A what-if may change records before any checkpoint: from the
        // beginning then.
        let checkpoints = opts.checkpoints && !opts.what_if.changes_history();
        let start = base::prepare(logs, objects, vm_id, base, until, &tmp, checkpoints)?;
        opts.from_seq = start.from_seq;
        opts.until_seq = until;
        let mut report = engine::replay_from(logs, objects, vm_id, &tmp, opts)?;
        report.checkpoint = start.checkpoint;
        if let Some(cp) = start.checkpoint {
            // The checkpoint's map was checked against its barrier: the
            // disk is verified at least to there, even if no record
            // followed it.
            if report.last_seq < cp {
                report.last_seq = cp;
            }
            report.last_verified_barrier = report.last_verified_barrier.or(Some(cp));
        }
        // The last chance to leave `out` as it was.
        if cancelled() {
            return Err(ReplayError::Cancelled);
        }
        std::fs::rename(&tmp, out).map_err(|source| ReplayError::Image {
            path: out.to_path_buf(),
            source,
        })?;
        if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
            let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
        }
        Ok(report)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

pub(crate) fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "replay".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Applies every write of `vm_id`'s log with `from_seq <= seq <= until_seq`
/// to an existing image, verifying barriers (a convenience over [`replay`]).
pub fn apply(
    dir: &RecordDir,
    vm_id: &str,
    image: &Path,
    from_seq: u64,
    until_seq: Option<u64>,
) -> Result<ReplayReport, ReplayError> {
    replay(
        dir,
        vm_id,
        image,
        Options {
            from_seq,
            until_seq: until_seq.unwrap_or(u64::MAX),
            ..Options::default()
        },
    )
}
