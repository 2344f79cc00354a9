//! The change log's one error type.

use std::io;
use std::path::{Path, PathBuf};

use crate::hlc::Hlc;

/// Everything that can go wrong with a change log. Messages name the file
/// and offset or seq, and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An operating-system call failed.
    #[error("change log: {op} {}: {source}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The data is damaged or inconsistent somewhere that is not a torn tail.
    #[error(
        "change log {} is damaged at offset {offset}{}: {reason}. It was not repaired: \
         run verify on the log directory for details, and restore the log from a copy",
        .path.display(), seq_note(.seq)
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        seq: Option<u64>,
        reason: String,
    },

    /// A record with a type code this build does not know (a newer writer,
    /// or a reserved type not defined yet).
    #[error(
        "change log {} at offset {offset}: record seq {seq} has type code {code}, which this \
         build does not read (written by a newer version?): read it with a newer build",
        .path.display()
    )]
    UnknownRecordType {
        path: PathBuf,
        offset: u64,
        seq: u64,
        code: u8,
    },

    /// The directory holds another VM's log.
    #[error(
        "change log {} belongs to VM {found:?}, not {expected:?}: use that VM's own log directory",
        .path.display()
    )]
    VmIdMismatch {
        path: PathBuf,
        expected: String,
        found: String,
    },

    /// Another writer holds the directory's lock.
    #[error(
        "change log {} is open for writing by another process: stop it first (one writer per log)",
        .path.display()
    )]
    Locked { path: PathBuf },

    /// The record handed to `append` breaks a format rule; nothing was appended.
    #[error("invalid change-log record: {0}")]
    InvalidRecord(String),

    /// A bad argument: vm id, options.
    #[error("invalid change-log argument: {0}")]
    InvalidArgument(String),

    /// `append_at` was given a time before the previous record's.
    #[error(
        "record time {ts_ns} ns is before the previous record's {last_ts_ns} ns: \
         change-log timestamps must not go backwards"
    )]
    TimeWentBackwards { ts_ns: u64, last_ts_ns: u64 },

    /// `append_stamped` was given an HLC stamp that orders before the
    /// previous record's (a copy out of order).
    #[error(
        "record HLC stamp {hlc} orders before the previous record's {last}: \
         a log's stamps must not go backwards"
    )]
    ClockWentBackwards { hlc: Hlc, last: Hlc },

    /// The asked-for seq is before the start of the log.
    #[error(
        "seq {seq} is not in change log {}: it starts at seq {first}",
        .dir.display()
    )]
    SeqNotFound { dir: PathBuf, seq: u64, first: u64 },

    /// An earlier failure (fsync, or an unremovable partial write) left the
    /// writer unable to know what is on disk.
    #[error(
        "change-log writer for {} stopped after an earlier failure ({reason}): \
         reopen the log with LogWriter::open to recover",
        .dir.display()
    )]
    Poisoned { dir: PathBuf, reason: String },

    /// A log backend other than the local directory (a replicated one)
    /// failed: `location` names it (e.g. its cluster URL and stream).
    #[error("change log at {location}: {source}")]
    Backend {
        location: String,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn seq_note(seq: &Option<u64>) -> String {
    match seq {
        Some(s) => format!(" (seq {s})"),
        None => String::new(),
    }
}

/// `map_err` helper: wraps an `io::Error` with what was being done to `path`.
pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> LogError + 'a {
    move |source| LogError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}
