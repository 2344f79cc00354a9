//! Errors of the recorder: what the block device, the hint channel, the
//! machine (snapshots, marks, the end of a run) and the control socket
//! get back when they hand something to it.
use std::path::PathBuf;
use std::sync::Arc;

use introspection::lift::HintError;
use introspection::TapError;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum RecorderError {
    /// Opening the record directory or the tap failed.
    #[error("{}: {source}", .path.display())]
    Open {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    OpenTap(TapError),
    #[error("starting the recording thread: {0}")]
    Spawn(std::io::Error),
    /// Storing or logging failed for this request: recording failed for
    /// good. The recording thread keeps the same error to abandon the tap
    /// (hence shared), and prints the one line about it.
    #[error("recording failed: {0}")]
    Tap(Arc<TapError>),
    /// Recording had failed before: the line the recorder printed then.
    #[error("{0}")]
    Failed(String),
    /// Closing the log after its final barrier failed (everything up to
    /// that barrier is durable; the log is only not sealed).
    #[error("{0}")]
    Seal(TapError),
    #[error("syncing the disk image: {0}")]
    ImageSync(std::io::Error),
    /// A snapshot's saved file table does not fit the restored disk (this
    /// fails the restore, not the recording).
    #[error(transparent)]
    GuestFiles(#[from] HintError),
    /// The cluster a recording is replicated to could not be reached or
    /// caught up when recording started.
    #[error("replicating the recording to {url}: {source}")]
    Replicate {
        url: String,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("the recording thread stopped")]
    ThreadGone,
    #[error("recording already closed")]
    Closed,
}

/// A VM id that cannot name a log directory.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("'{0}' is not a valid VM id: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')")]
pub struct InvalidVmId(pub String);
