//! What a block tap does when it opens a log that a failed or crashed run
//! left behind: records after the log's last sync point were written but
//! never made durable, and the store objects they name may be missing (a
//! crash lost them, or the store filled up). If any is missing, the log is
//! cut back to its last sync point (the last barrier the guest saw
//! acknowledged, whose objects were synced before it); the tap then logs a
//! new base for whatever the image holds beyond it. Also where a log ends
//! after a tap was abandoned ([`Abandoned`]).
use serde::Serialize;
use store::{ObjectId, Store};

use crate::tap::TapError;
use changelog::disk_state::ZERO_BLOCK_HASH;
use changelog::log::{CutReport, LogOptions, LogReader, LogWriter, OpenReport, RecordKind};
use changelog::recording::RecordDir;
use store::hex;

/// Where a log ends after [`crate::tap::BlockTap::abandon`].
#[derive(Debug, Clone, Serialize)]
pub struct Abandoned {
    /// What was cut after the last sync point (`None`: nothing was there).
    pub cut: Option<CutReport>,
    /// The seq the log now ends at.
    pub last_seq: u64,
    /// The last barrier this tap made durable, if any.
    pub last_barrier: Option<u64>,
}

/// A cut made when the tap opened, and why.
#[derive(Debug, Clone, Serialize)]
pub struct TapCut {
    #[serde(flatten)]
    pub cut: CutReport,
    /// What was missing, naming the record.
    pub reason: String,
}

impl std::fmt::Display for TapCut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cut seqs {}..={} ({} bytes) back to seq {}, the log's last durable point: {}",
            self.cut.seqs.0, self.cut.seqs.1, self.cut.bytes, self.cut.last_seq, self.reason
        )
    }
}

/// Opens the log of `vm_id` for appending, as every writer of a record
/// directory must: records a failed or crashed run left after the sync
/// point are checked against the store first (and cut if they name missing
/// blocks), before anything new makes that point move past them.
///
/// New segments are started at `segment_max_bytes` (default: the log's).
pub fn open_log(
    dir: &RecordDir,
    store: &Store,
    vm_id: &str,
    segment_max_bytes: Option<u64>,
) -> Result<(LogWriter, OpenReport, Option<TapCut>), TapError> {
    let mut opts = LogOptions::default();
    if let Some(bytes) = segment_max_bytes {
        opts.segment_max_bytes = bytes;
    }
    let (mut log, report) = LogWriter::open_with(dir.log_dir(vm_id), vm_id, opts)?;
    if report.clock_behind_ns > changelog::hlc::SKEW_WARN_NS {
        // Records still order after the log's (the clock holds its time),
        // but `time=` points near them are off until this clock catches up.
        tracing::warn!(
            vm = %vm_id,
            "the log's last record is stamped {:.3} s ahead of this host's clock: \
             a clock was wrong or hosts are not time-synchronized (NTP); new records \
             keep its time until this clock passes it",
            report.clock_behind_ns as f64 / 1e9
        );
    }
    let cut = match report.unsynced_from {
        Some(from) => cut_unstored_tail(&mut log, store, from)?,
        None => None,
    };
    Ok((log, report, cut))
}

/// Checks every write from seq `from` on (the records after the sync point)
/// against the store; cuts the log back to its sync point at the first
/// write whose block is missing.
fn cut_unstored_tail(
    log: &mut LogWriter,
    store: &Store,
    from: u64,
) -> Result<Option<TapCut>, TapError> {
    let reader = LogReader::open(log.dir())?;
    let mut missing = None;
    for record in reader.iter_from(from)? {
        let record = record?;
        if let RecordKind::BlockWrite { blocks, .. } = &record.kind {
            let absent = blocks
                .iter()
                .find(|h| **h != ZERO_BLOCK_HASH && !store.contains(&ObjectId(**h)));
            if let Some(h) = absent {
                missing = Some(format!(
                    "the write at seq {} names block object {}, which is not in the store {} \
                     (it never became durable before the run ended)",
                    record.seq,
                    hex::encode(h),
                    store.dir().display()
                ));
                break;
            }
        }
    }
    let Some(reason) = missing else {
        return Ok(None);
    };
    Ok(log.cut_to_sync_point()?.map(|cut| TapCut { cut, reason }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tap::BlockTap;
    use changelog::log::BarrierKind;

    #[test]
    fn records_naming_unstored_blocks_are_cut_at_the_next_open() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path().join("rec"));
        let image = tmp.path().join("disk.img");
        std::fs::write(&image, vec![0u8; 64 * 4096]).unwrap();

        // A run that made one barrier durable, then died.
        let (mut tap, _) = BlockTap::open(&dir, "vm", &image).unwrap();
        tap.record_write(0, [7u8; 4096]).unwrap();
        let barrier = tap.barrier(BarrierKind::Flush).unwrap();
        drop(tap);
        // What a crash can leave after that point: a written frame whose
        // blocks never reached the store.
        let (mut log, report) = LogWriter::open(dir.log_dir("vm"), "vm").unwrap();
        assert_eq!(report.unsynced_from, None);
        let lost = log
            .append(RecordKind::BlockWrite {
                sector: 8,
                len: 4096,
                blocks: vec![[0xab; 32]],
            })
            .unwrap();
        log.commit().unwrap();
        drop(log);
        let found = changelog::recording::verify(&dir, "vm").unwrap();
        assert!(!found.is_ok(), "verify sees the missing block");

        let (tap, report) = BlockTap::open(&dir, "vm", &image).unwrap();
        let cut = report.cut.expect("the unstored write is cut");
        assert_eq!(cut.cut.last_seq, barrier);
        assert!(cut.cut.seqs.0 == barrier + 1 && cut.cut.seqs.1 >= lost);
        assert!(cut.reason.contains(&format!("seq {lost}")), "{cut}");
        assert!(cut.reason.contains("not in the store"), "{cut}");
        tap.close().unwrap();
        assert!(changelog::recording::verify(&dir, "vm").unwrap().is_ok());
        // The cut seqs stay used.
        let reader = LogReader::open(dir.log_dir("vm")).unwrap();
        let seqs: Vec<u64> = reader.iter().unwrap().map(|r| r.unwrap().seq).collect();
        assert!(!seqs.contains(&lost));
        assert!(*seqs.last().unwrap() > lost);
    }

    #[test]
    fn a_log_whose_first_run_kept_nothing_still_gets_its_base() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = RecordDir::new(tmp.path().join("rec"));
        let image = tmp.path().join("disk.img");
        std::fs::write(&image, vec![0u8; 16 * 4096]).unwrap();
        // A first run whose records never reached the file (a full disk).
        let (mut log, _) = LogWriter::open(dir.log_dir("vm"), "vm").unwrap();
        log.append(RecordKind::Mark { name: "x".into() }).unwrap();
        drop(log);
        let (tap, report) = BlockTap::open(&dir, "vm", &image).unwrap();
        let (first, _) = report.log.skipped_seqs.expect("seqs after a gap");
        assert_eq!(first, 1);
        assert!(!report.rebased);
        tap.close().unwrap();
        let reader = LogReader::open(dir.log_dir("vm")).unwrap();
        let head = reader.iter().unwrap().next().unwrap().unwrap();
        match head.kind {
            RecordKind::Mark { name } => assert!(name.starts_with(crate::tap::BASE_MARK)),
            other => panic!("the log must start with its base, not {other:?}"),
        }
    }
}
