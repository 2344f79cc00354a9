//! What a block tap does when it opens a log that a failed or crashed run
//! left behind: records after the log's last sync point were written but
//! never made durable, and the store objects they name may be missing (a
//! crash lost them, or the store filled up). If any is missing, the log is
//! cut back to its last sync point (the last barrier the guest saw
//! acknowledged, whose objects were synced before it); the tap then logs a
//! new base for whatever the image holds beyond it.
use serde::Serialize;
use snapshot::{ObjectId, Store};

use crate::disk_state::ZERO_BLOCK_HASH;
use crate::hex;
use crate::log::{CutReport, LogReader, LogWriter, RecordKind};
use crate::tap::TapError;

/// A cut made when the tap opened, and why.
#[derive(Debug, Clone, Serialize)]
pub struct TapCut {
    #[serde(flatten)]
    pub cut: CutReport,
    /// What was missing, naming the record.
    pub reason: String,
}

/// Checks every write from seq `from` on (the records after the sync point)
/// against the store; cuts the log back to its sync point at the first
/// write whose block is missing.
pub(crate) fn cut_unstored_tail(
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
