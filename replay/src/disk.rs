//! Disk replay: apply a VM's logged writes to an image, in order.
//!
//! Every block comes from the content store (BLAKE3-checked by the store);
//! every barrier passed is checked against the checksum recomputed from the
//! writes applied so far, starting from the checksum of the image as it was
//! before the first applied record. A mismatch stops the replay at that
//! barrier with an error: the image then holds the state of the last
//! verified barrier plus the writes after it, and the caller decides what
//! to keep (the caller should write to a temporary file and rename it only
//! on success).
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use introspection::disk_state::{DiskState, ZERO_BLOCK_HASH};
use introspection::hex;
use introspection::log::{LogError, LogReader, RecordKind};
use introspection::recording::RecordDir;
use serde::Serialize;
use snapshot::{ObjectId, StoreError};
use thiserror::Error;

const BLOCK: u64 = 4096;

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
    #[error("seq {seq}: barrier checksum {expected} does not match the replayed disk ({actual}); the log or the base image is not what was recorded")]
    BarrierMismatch {
        seq: u64,
        expected: String,
        actual: String,
    },
    #[error("seq {seq}: write at sector {sector} lies outside the {blocks}-block image")]
    OutOfRange { seq: u64, sector: u64, blocks: u64 },
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ApplyReport {
    pub records_read: u64,
    pub writes_applied: u64,
    pub blocks_written: u64,
    pub barriers_verified: u64,
    /// Seq of the last record applied (0 when none).
    pub last_seq: u64,
    /// The image's state checksum at the end, hex.
    pub checksum: String,
}

/// Applies the writes of `vm_id`'s log with `from_seq <= seq <= until_seq`
/// (all of them when `until_seq` is None) to the image at `image`.
pub fn apply(
    dir: &RecordDir,
    vm_id: &str,
    image: &Path,
    from_seq: u64,
    until_seq: Option<u64>,
) -> Result<ApplyReport, ReplayError> {
    let store = dir.open_store()?;
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(|source| ReplayError::Image {
            path: image.to_path_buf(),
            source,
        })?;
    let mut state = DiskState::from_image(image).map_err(|e| ReplayError::ImageState {
        path: image.to_path_buf(),
        reason: e.to_string(),
    })?;
    let blocks = state.num_blocks();
    let reader = LogReader::open(dir.log_dir(vm_id))?;
    let mut report = ApplyReport::default();
    for record in reader.iter_from(from_seq.max(1))? {
        let record = record?;
        if until_seq.is_some_and(|u| record.seq > u) {
            break;
        }
        report.records_read += 1;
        report.last_seq = record.seq;
        match record.kind {
            RecordKind::BlockWrite {
                sector,
                blocks: hashes,
                ..
            } => {
                let first = sector / (BLOCK / 512);
                if first + hashes.len() as u64 > blocks {
                    return Err(ReplayError::OutOfRange {
                        seq: record.seq,
                        sector,
                        blocks,
                    });
                }
                for (i, h) in hashes.iter().enumerate() {
                    let data = if *h == ZERO_BLOCK_HASH {
                        vec![0u8; BLOCK as usize]
                    } else {
                        store.get(&ObjectId(*h))?
                    };
                    file.write_all_at(&data, (first + i as u64) * BLOCK)
                        .map_err(|source| ReplayError::Image {
                            path: image.to_path_buf(),
                            source,
                        })?;
                }
                state
                    .apply_block_write(sector, &hashes)
                    .map_err(|e| ReplayError::ImageState {
                        path: image.to_path_buf(),
                        reason: e.to_string(),
                    })?;
                report.writes_applied += 1;
                report.blocks_written += hashes.len() as u64;
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                let actual = state.checksum();
                if actual != disk_checksum {
                    return Err(ReplayError::BarrierMismatch {
                        seq: record.seq,
                        expected: hex::encode(&disk_checksum),
                        actual: hex::encode(&actual),
                    });
                }
                report.barriers_verified += 1;
            }
            _ => {}
        }
    }
    file.sync_data().map_err(|source| ReplayError::Image {
        path: image.to_path_buf(),
        source,
    })?;
    report.checksum = hex::encode(&state.checksum());
    Ok(report)
}
