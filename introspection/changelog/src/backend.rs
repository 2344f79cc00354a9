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
use crate::checkpoints::{self, Checkpoint};
use crate::disk_state::DiskState;
use crate::hlc::Hlc;
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

    /// `vm`'s temporal checkpoints, by seq ([`crate::checkpoints`]); none
    /// where the backend keeps none.
    fn checkpoints(&self, vm: &str) -> Result<Vec<Checkpoint>, LogError> {
        let _ = vm;
        Ok(Vec::new())
    }
}

/// Writing one VM's change log (the block tap's side of the seam).
pub trait LogAppend: Send {
    /// Where the log lives, for messages.
    fn location(&self) -> String;

    /// Appends a record stamped by the writer's hybrid logical clock from
    /// the host clock (never before the record before it; see
    /// [`crate::hlc`]) and returns its seq. Buffered: visible after
    /// [`LogAppend::commit`], durable after [`LogAppend::sync`].
    fn append(&mut self, kind: RecordKind) -> Result<u64, LogError>;

    /// Appends a record at time `ts_ns`, stamped by the writer's clock; a
    /// time before the previous record's is refused
    /// ([`LogError::TimeWentBackwards`]).
    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError>;

    /// Appends a copy of a record from another log with its HLC stamp kept
    /// (a push or a replica must order exactly as the original); a stamp
    /// before the previous record's is refused
    /// ([`LogError::ClockWentBackwards`]).
    fn append_stamped(&mut self, hlc: Hlc, kind: RecordKind) -> Result<u64, LogError>;

    /// The stamp of the last record appended (of the log's last record
    /// before any append; `None` for an empty log). The recorder labels the
    /// changes it lifts at a barrier with the barrier's stamp.
    fn last_hlc(&self) -> Option<Hlc>;

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

    /// Records checkpoint `cp` (its map already durable in the objects)
    /// durably beside the log.
    fn add_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), LogError>;

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
        // From the first record kept when older ones were removed (`store
        // retain`), as the trait promises; callers see the gap in the seqs.
        let from = from.max(reader.first_seq().unwrap_or(1));
        Ok(Box::new(reader.iter_from(from)?))
    }

    fn seq_at_time(&self, vm: &str, ts_ns: u64) -> Result<Option<u64>, LogError> {
        LogReader::open(self.log_dir(vm))?.find_seq_at_time(ts_ns)
    }

    fn checkpoints(&self, vm: &str) -> Result<Vec<Checkpoint>, LogError> {
        Ok(checkpoints::read_local(&self.log_dir(vm)).list)
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

    fn append_stamped(&mut self, hlc: Hlc, kind: RecordKind) -> Result<u64, LogError> {
        LogWriter::append_stamped(self, hlc, kind)
    }

    fn last_hlc(&self) -> Option<Hlc> {
        LogWriter::last_hlc(self)
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

    fn add_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), LogError> {
        checkpoints::append_local(self.dir(), cp).map_err(|e| LogError::Backend {
            location: self.dir().display().to_string(),
            source: Box::new(e),
        })
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

/// What [`verify_through`] found in one VM's log.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct BackendVerifyReport {
    pub vm: String,
    pub location: String,
    pub records: u64,
    pub last_seq: u64,
    pub barriers_checked: u64,
    pub objects_checked: u64,
    /// Objects read back and checked against their hash (`deep`).
    pub objects_read: u64,
    /// The first problem: the seq and what is wrong (None: OK).
    pub problem: Option<(u64, String)>,
    /// When the log's oldest records were removed (retention limits of a
    /// record set in a cluster): the first seq kept, and the checkpoint
    /// the check started from.
    pub trimmed_before: Option<u64>,
    pub from_checkpoint: Option<u64>,
}

/// Checks `vm`'s log wherever it lives: every record decodes (a replicated
/// backend checks its own framing and CRC), seqs increase, times and HLC
/// stamps never go back, every block a write names is present in `objects` (with
/// `deep`, read back, which checks its hash), and every barrier's disk
/// checksum equals the one recomputed from the writes before it.
pub fn verify_through(
    logs: &dyn LogBackend,
    objects: &dyn store::ObjectBackend,
    vm: &str,
    deep: bool,
) -> Result<BackendVerifyReport, LogError> {
    let mut report = BackendVerifyReport {
        vm: vm.to_string(),
        location: logs.location(),
        ..Default::default()
    };
    // A disk of any size: the log says which blocks it writes.
    let mut state = DiskState::zeroed(u64::MAX / 4096);
    let mut last_hlc = None;
    let mut from = 1;
    let first = match logs.records(vm, 1)?.next().transpose() {
        Ok(r) => r.map(|r| r.seq),
        Err(e) => {
            report.problem = Some((1, e.to_string()));
            return Ok(report);
        }
    };
    if let Some(first) = first.filter(|&f| f > 1) {
        // The oldest records were removed (retention): start from the
        // first checkpoint whose later records are all kept.
        report.trimmed_before = Some(first);
        let usable = logs
            .checkpoints(vm)?
            .into_iter()
            .filter(|c| c.seq + 1 >= first)
            .find_map(|c| checkpoints::load(&c, objects).ok().map(|s| (c.seq, s)));
        match usable {
            Some((seq, loaded)) => {
                state = loaded;
                from = seq + 1;
                report.last_seq = seq;
                report.from_checkpoint = Some(seq);
            }
            None => {
                report.problem = Some((
                    first,
                    format!("the records before seq {first} were removed by the record set's retention limits, and no checkpoint lets a check start after them"),
                ));
                return Ok(report);
            }
        }
    }
    for record in logs.records(vm, from)? {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                report.problem = Some((report.last_seq + 1, e.to_string()));
                return Ok(report);
            }
        };
        let seq = record.seq;
        let fail = |why: String| Some((seq, why));
        if seq <= report.last_seq {
            report.problem = fail(format!("seq {seq} follows seq {}", report.last_seq));
            return Ok(report);
        }
        if last_hlc.is_some_and(|last: Hlc| record.ts_ns < last.physical_ns) {
            report.problem = fail("its time is before the previous record's".into());
            return Ok(report);
        }
        if last_hlc.is_some_and(|last| record.hlc() < last) {
            report.problem = fail("its HLC stamp is before the previous record's".into());
            return Ok(report);
        }
        match &record.kind {
            RecordKind::BlockWrite { sector, blocks, .. } => {
                for h in blocks {
                    let id = store::ObjectId(*h);
                    let present = if deep && id.zero_len().is_none() {
                        report.objects_read += 1;
                        objects.get(&id).map(|_| true)
                    } else {
                        objects.contains(&id)
                    };
                    match present {
                        Ok(true) => report.objects_checked += 1,
                        Ok(false) => {
                            report.problem = fail(format!(
                                "block object {id} is missing from {}",
                                objects.location()
                            ));
                            return Ok(report);
                        }
                        Err(e) => {
                            report.problem = fail(format!("block object {id}: {e}"));
                            return Ok(report);
                        }
                    }
                }
                if let Err(e) = state.apply_block_write(*sector, blocks) {
                    report.problem = fail(e.to_string());
                    return Ok(report);
                }
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                if state.checksum() != *disk_checksum {
                    report.problem =
                        fail("the barrier's checksum does not match the writes before it".into());
                    return Ok(report);
                }
                report.barriers_checked += 1;
            }
            _ => {}
        }
        report.records += 1;
        report.last_seq = seq;
        last_hlc = Some(record.hlc());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::BarrierKind;

    #[test]
    fn verify_through_names_a_missing_block_and_a_wrong_barrier() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path());
        let store = dir.open_store().unwrap();
        let data = vec![7u8; 4096];
        let id = store.put(&data).unwrap();
        let mut state = DiskState::zeroed(16);
        state.apply_block_write(8, &[id.0]).unwrap();
        let (mut log, _) = LogWriter::open(dir.log_dir("good"), "good").unwrap();
        log.append(RecordKind::BlockWrite {
            sector: 8,
            len: 4096,
            blocks: vec![id.0],
        })
        .unwrap();
        log.append(RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: state.checksum(),
        })
        .unwrap();
        log.close().unwrap();
        let r = verify_through(&dir, &store, "good", true).unwrap();
        assert_eq!(
            (r.problem, r.barriers_checked, r.objects_read),
            (None, 1, 1)
        );

        let (mut log, _) = LogWriter::open(dir.log_dir("bad"), "bad").unwrap();
        log.append(RecordKind::BlockWrite {
            sector: 0,
            len: 4096,
            blocks: vec![[9; 32]],
        })
        .unwrap();
        log.close().unwrap();
        let r = verify_through(&dir, &store, "bad", false).unwrap();
        let (seq, why) = r.problem.unwrap();
        assert_eq!(seq, 1);
        assert!(why.contains("missing"), "{why}");

        let (mut log, _) = LogWriter::open(dir.log_dir("lie"), "lie").unwrap();
        log.append(RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: [1; 32],
        })
        .unwrap();
        log.close().unwrap();
        let (_, why) = verify_through(&dir, &store, "lie", false)
            .unwrap()
            .problem
            .unwrap();
        assert!(why.contains("checksum"), "{why}");
    }
}
