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
use crate::checkpoint;
use crate::disk_state::DiskState;
use crate::log::{CutReport, LogError, LogReader, LogWriter, Record, RecordKind};
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
    fn records(&self, vm: &str, from: u64) -> Result<Records<'_>, LogError>;

    /// The last seq of `vm` whose record was stamped at or before `ts_ns`
    /// (None if every record is later). Reads the log unless the backend
    /// has an index for it.
    fn seq_at_time(&self, vm: &str, ts_ns: u64) -> Result<Option<u64>, LogError> {
        let mut found = None;
        for record in self.records(vm, 1)? {
            let record = record?;
            if record.ts_ns > ts_ns {
                break;
            }
            found = Some(record.seq);
        }
        Ok(found)
    }
}

/// Writing one VM's change log (the block tap's side of the seam).
pub trait LogAppend: Send {
    /// Where the log lives, for messages.
    fn location(&self) -> String;

    /// Appends a record stamped with the host clock (never earlier than the
    /// record before it) and returns its seq. Buffered: visible after
    /// [`LogAppend::commit`], durable after [`LogAppend::sync`].
    fn append(&mut self, kind: RecordKind) -> Result<u64, LogError>;

    /// Appends a record stamped `ts_ns` (a copy of a record from another
    /// log keeps its time); a time before the previous record's is
    /// refused ([`LogError::TimeWentBackwards`]).
    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError>;

    /// True when the next append will first commit the records buffered so
    /// far by itself: a caller that must store something before its records
    /// reach the log (the tap stores blocks first) does that before.
    fn append_commits(&self) -> bool {
        false
    }

    /// Makes the buffered records visible to readers (not yet durable).
    fn commit(&mut self) -> Result<(), LogError>;

    /// Makes every record appended before the call durable.
    fn sync(&mut self) -> Result<(), LogError>;

    /// The seq of the last record appended (0 if none).
    fn last_seq(&self) -> u64;

    /// Syncs and seals the log; `at_last_barrier` is the disk state at its
    /// last barrier, which a backend may keep so that the next open need not
    /// read the whole log (a checkpoint).
    fn close(self: Box<Self>, at_last_barrier: Option<(u64, &DiskState)>) -> Result<(), LogError>;

    /// Ends the log after a failure: drops what was not made durable and
    /// cuts back to the last sync point, leaving it unsealed so the next
    /// open knows a failed run came before. Returns what was cut.
    fn abandon(self: Box<Self>) -> Result<Option<CutReport>, LogError>;
}

impl LogBackend for RecordDir {
    /// The record directory as the user named it.
    fn location(&self) -> String {
        self.root().display().to_string()
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

    fn records(&self, vm: &str, from: u64) -> Result<Records<'_>, LogError> {
        let reader = LogReader::open(self.log_dir(vm))?;
        Ok(Box::new(reader.iter_from(from)?))
    }

    fn seq_at_time(&self, vm: &str, ts_ns: u64) -> Result<Option<u64>, LogError> {
        LogReader::open(self.log_dir(vm))?.find_seq_at_time(ts_ns)
    }
}

impl LogAppend for LogWriter {
    fn location(&self) -> String {
        self.dir().display().to_string()
    }

    fn append(&mut self, kind: RecordKind) -> Result<u64, LogError> {
        LogWriter::append(self, kind)
    }

    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError> {
        LogWriter::append_at(self, ts_ns, kind)
    }

    fn append_commits(&self) -> bool {
        LogWriter::append_commits(self)
    }

    fn commit(&mut self) -> Result<(), LogError> {
        LogWriter::commit(self)
    }

    fn sync(&mut self) -> Result<(), LogError> {
        LogWriter::sync(self)
    }

    fn last_seq(&self) -> u64 {
        LogWriter::last_seq(self)
    }

    fn close(self: Box<Self>, at_last_barrier: Option<(u64, &DiskState)>) -> Result<(), LogError> {
        let dir = self.dir().to_path_buf();
        LogWriter::close(*self)?;
        if let Some((seq, state)) = at_last_barrier {
            checkpoint::save(&dir, seq, state);
        }
        Ok(())
    }

    fn abandon(self: Box<Self>) -> Result<Option<CutReport>, LogError> {
        LogWriter::abandon(*self)
    }
}
