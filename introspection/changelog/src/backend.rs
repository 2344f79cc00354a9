//! The seam between the users of change logs (the block tap writes one,
//! replay, verify and the audit queries read them) and where logs live.
//! [`RecordDir`] (one directory per VM under `logs/`) is one
//! implementation; a replicated backend (a NATS JetStream stream with a
//! subject per VM) is the other. The contract every backend keeps:
//!
//! - each VM's log is a sequence of [`Record`]s with strictly increasing
//!   seqs, read in order from any seq;
//! - an appended record is durable once a [`LogAppend::sync`] that started
//!   after its append returned `Ok` (for a replicated backend: acknowledged
//!   by a quorum); nothing is acknowledged earlier;
//! - one writer per VM log at a time: a second is refused with an error.
use crate::log::{LogError, LogReader, LogWriter, Record, RecordKind};
use crate::recording::RecordDir;

/// Records of one log, in seq order.
pub type Records<'a> = Box<dyn Iterator<Item = Result<Record, LogError>> + Send + 'a>;

/// Reading the change logs of a record set.
pub trait LogBackend {
    /// Where the logs live, for messages (a directory, a cluster URL).
    fn location(&self) -> String;

    /// The VMs that have a log, sorted.
    fn vm_ids(&self) -> Result<Vec<String>, LogError>;

    /// The last seq of `vm`'s log (0 when it has no records).
    fn last_seq(&self, vm: &str) -> Result<u64, LogError>;

    /// `vm`'s records from the first with seq >= `from`.
    fn records(&self, vm: &str, from: u64) -> Result<Records<'static>, LogError>;
}

/// Writing one VM's change log.
pub trait LogAppend: Send {
    /// Appends a record stamped `ts_ns` and returns its seq (buffered: not
    /// durable until [`LogAppend::sync`]).
    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError>;

    /// Makes every record appended before the call durable.
    fn sync(&mut self) -> Result<(), LogError>;

    /// The seq of the last record appended (0 if none).
    fn last_seq(&self) -> u64;
}

impl LogBackend for RecordDir {
    fn location(&self) -> String {
        self.logs_dir().display().to_string()
    }

    fn vm_ids(&self) -> Result<Vec<String>, LogError> {
        RecordDir::vm_ids(self).map_err(|source| LogError::Io {
            op: "list",
            path: self.logs_dir(),
            source,
        })
    }

    fn last_seq(&self, vm: &str) -> Result<u64, LogError> {
        Ok(LogReader::open(self.log_dir(vm))?.last_seq())
    }

    fn records(&self, vm: &str, from: u64) -> Result<Records<'static>, LogError> {
        let reader = LogReader::open(self.log_dir(vm))?;
        Ok(Box::new(reader.iter_from(from)?))
    }
}

impl LogAppend for LogWriter {
    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError> {
        LogWriter::append_at(self, ts_ns, kind)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        LogWriter::sync(self)
    }

    fn last_seq(&self) -> u64 {
        LogWriter::last_seq(self)
    }
}
