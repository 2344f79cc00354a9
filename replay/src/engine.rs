//! The replay engine: apply a VM's logged writes to an image, in order,
//! verifying every barrier on the way.
//!
//! Every block comes from the content store (which checks its BLAKE3 on
//! read); every barrier passed is checked against the checksum recomputed
//! from the image's starting state plus the writes applied since. The first
//! problem — a corrupt or missing record, a missing object, a checksum that
//! does not match — stops the replay with an error that names the record,
//! the reason, and the last barrier that did verify. Replays are
//! deterministic: the same inputs give the same bytes.
//!
//! What-if replays (dropping records, stopping before one) change history on
//! purpose; their barriers can no longer match, so verification stops at
//! the first dropped write and the report says the result is not the
//! recorded history.
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::sync_channel;
use std::time::Duration;

use changelog::disk_state::{DiskState, ZERO_BLOCK_HASH};
use changelog::log::{LogReader, RecordKind};
use changelog::recording::RecordDir;
use serde::Serialize;
use store::hex;
use store::ObjectId;

use crate::filter::WhatIf;
use crate::ReplayError;

const BLOCK: u64 = 4096;
/// Longest pause `--speed` reproduces between two records.
const MAX_GAP: Duration = Duration::from_secs(10);

/// One step of a replay, as an observer sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Write {
        seq: u64,
        ts_ns: u64,
        sector: u64,
        blocks: u64,
        dropped: bool,
    },
    Barrier {
        seq: u64,
        ts_ns: u64,
        verified: bool,
        checksum: String,
    },
    Mark {
        seq: u64,
        ts_ns: u64,
        name: String,
    },
    Snapshot {
        seq: u64,
        ts_ns: u64,
        id: String,
    },
    /// A guest hint (file extents): no disk change.
    Hint {
        seq: u64,
        ts_ns: u64,
    },
    /// A semantic change lifted at the barrier before it (JSON).
    Change {
        seq: u64,
        ts_ns: u64,
        json: String,
    },
}

/// What an observer wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

pub struct Options<'a> {
    /// First record to apply.
    pub from_seq: u64,
    /// Last record to apply.
    pub until_seq: u64,
    /// Check every barrier (on unless the caller explicitly allows
    /// unverified results).
    pub verify: bool,
    pub what_if: WhatIf,
    /// Called after every record; may stop the replay.
    pub observer: Option<&'a mut dyn FnMut(&Step) -> Control>,
    /// Reproduce the recorded timing, sped up by this factor.
    pub speed: Option<f64>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Asked before every record: true abandons the replay with
    /// `ReplayError::Cancelled` (a signal arrived, say).
    pub cancel: Option<&'a dyn Fn() -> bool>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            from_seq: 1,
            until_seq: u64::MAX,
            verify: true,
            what_if: WhatIf::default(),
            observer: None,
            speed: None,
            progress: false,
            cancel: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub from_seq: u64,
    pub records_read: u64,
    pub writes_applied: u64,
    pub writes_dropped: u64,
    pub blocks_written: u64,
    pub barriers_verified: u64,
    pub barriers_unverified: u64,
    pub last_verified_barrier: Option<u64>,
    /// Seq and time of the last record applied (0 when none).
    pub last_seq: u64,
    pub last_ts_ns: u64,
    /// The observer stopped the replay before `until_seq`.
    pub stopped_early: bool,
    /// Every barrier passed was verified and nothing was changed.
    pub verified: bool,
    /// A what-if replay: not the recorded history.
    pub what_if: bool,
    /// The image's state checksum at the end, hex.
    pub checksum: String,
}

/// Replays `vm_id`'s log onto the image at `image` (see the module doc).
pub fn replay(
    dir: &RecordDir,
    vm_id: &str,
    image: &Path,
    mut opts: Options<'_>,
) -> Result<ReplayReport, ReplayError> {
    let store = dir.open_store()?;
    let io = |source| ReplayError::Image {
        path: image.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io)?;
    let mut state = DiskState::from_image(image).map_err(|e| ReplayError::ImageState {
        path: image.to_path_buf(),
        reason: e.to_string(),
    })?;
    let disk_blocks = state.num_blocks();
    let reader = LogReader::open(dir.log_dir(vm_id))?;
    let until = opts.until_seq.min(reader.last_seq());
    let stop_before = opts.what_if.stop_before.unwrap_or(u64::MAX);
    let mut report = ReplayReport {
        from_seq: opts.from_seq,
        what_if: opts.what_if.changes_history(),
        ..Default::default()
    };
    let mut verifying = opts.verify;
    let progress = crate::progress::bar(opts.progress, until.saturating_sub(opts.from_seq) + 1);
    let mut prev_ts = None;
    let from = opts.from_seq.max(1);
    let what_if = opts.what_if.clone();
    let iter = reader.iter_from(from)?;
    // A second thread reads the log ahead and fetches (and BLAKE3-checks)
    // each write's blocks from the store while this one writes the image.
    std::thread::scope(|scope| -> Result<ReplayReport, ReplayError> {
    let (tx, rx) = sync_channel::<Fetched>(PREFETCH);
    let store = &store;
    scope.spawn(move || {
        for record in iter {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Fetched { record: Err(e.to_string()), data: None });
                    return;
                }
            };
            if record.seq > until || record.seq >= stop_before {
                return;
            }
            let data = match &record.kind {
                RecordKind::BlockWrite { sector, blocks, .. }
                    if !what_if.drops(record.seq, *sector, blocks.len() as u64) =>
                {
                    Some(fetch(store, blocks).map_err(|e| format!("seq {}: {e}", record.seq)))
                }
                _ => None,
            };
            let last = record.seq >= until || record.seq + 1 >= stop_before;
            if tx.send(Fetched { record: Ok(record), data }).is_err() || last {
                return;
            }
        }
    });
    for fetched in rx {
        if opts.cancel.is_some_and(|cancel| cancel()) {
            return Err(ReplayError::Cancelled);
        }
        let record = fetched.record.map_err(|e| report.interrupted(e))?;
        if let (Some(speed), Some(prev)) = (opts.speed, prev_ts) {
            let gap = Duration::from_nanos(record.ts_ns.saturating_sub(prev));
            std::thread::sleep(gap.div_f64(speed.max(1e-6)).min(MAX_GAP));
        }
        prev_ts = Some(record.ts_ns);
        report.records_read += 1;
        let (seq, ts_ns) = (record.seq, record.ts_ns);
        let step = match record.kind {
            RecordKind::BlockWrite { sector, blocks, .. } => {
                let first = sector / (BLOCK / 512);
                if first + blocks.len() as u64 > disk_blocks {
                    return Err(report.interrupted(format!(
                        "seq {seq}: write at sector {sector} lies outside the {disk_blocks}-block image"
                    )));
                }
                let dropped = opts.what_if.drops(seq, sector, blocks.len() as u64);
                if dropped {
                    report.writes_dropped += 1;
                    verifying = false;
                } else {
                    let buf = fetched
                        .data
                        .unwrap_or_else(|| Err(format!("seq {seq}: blocks were not fetched")))
                        .map_err(|e| report.interrupted(e))?;
                    file.write_all_at(&buf, first * BLOCK).map_err(io)?;
                    state
                        .apply_block_write(sector, &blocks)
                        .map_err(|e| report.interrupted(format!("seq {seq}: {e}")))?;
                    report.writes_applied += 1;
                    report.blocks_written += blocks.len() as u64;
                }
                Step::Write {
                    seq,
                    ts_ns,
                    sector,
                    blocks: blocks.len() as u64,
                    dropped,
                }
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                let actual = state.checksum();
                let verified = verifying && actual == disk_checksum;
                if verified {
                    report.barriers_verified += 1;
                    report.last_verified_barrier = Some(seq);
                } else {
                    report.barriers_unverified += 1;
                    if verifying {
                        return Err(report.interrupted(format!(
                            "seq {seq}: barrier checksum {} does not match the replayed disk ({}): the log or the base image is not what was recorded",
                            hex::encode(&disk_checksum),
                            hex::encode(&actual)
                        )));
                    }
                }
                Step::Barrier {
                    seq,
                    ts_ns,
                    verified,
                    checksum: hex::encode(&actual),
                }
            }
            RecordKind::Mark { name } => Step::Mark { seq, ts_ns, name },
            RecordKind::SnapshotTaken { id } => Step::Snapshot { seq, ts_ns, id },
            RecordKind::Hint { .. } => Step::Hint { seq, ts_ns },
            RecordKind::Semantic { json } => Step::Change { seq, ts_ns, json },
        };
        report.last_seq = seq;
        report.last_ts_ns = ts_ns;
        progress.inc(1);
        if let Some(observer) = opts.observer.as_mut() {
            if observer(&step) == Control::Stop {
                report.stopped_early = seq < until;
                break;
            }
        }
        // Stop without reading on: what lies after the target (even a
        // damaged frame) does not concern this replay.
        if seq >= until || seq + 1 >= stop_before {
            break;
        }
    }
    Ok(report.clone())
    })
    .map(|r| {
        report = r;
    })?;
    progress.finish_and_clear();
    file.sync_data().map_err(io)?;
    report.verified = opts.verify && report.barriers_unverified == 0 && !report.what_if;
    report.checksum = hex::encode(&state.checksum());
    Ok(report)
}

/// Records read ahead of the writer.
const PREFETCH: usize = 64;

/// A record and, for a write to apply, its blocks from the store.
struct Fetched {
    record: Result<changelog::Record, String>,
    data: Option<Result<Vec<u8>, String>>,
}

/// A write's blocks, concatenated (each checked against its BLAKE3 by the
/// store; zero blocks are not stored).
fn fetch(store: &store::Store, blocks: &[[u8; 32]]) -> Result<Vec<u8>, store::StoreError> {
    let mut buf = Vec::with_capacity(blocks.len() * BLOCK as usize);
    for h in blocks {
        if *h == ZERO_BLOCK_HASH {
            buf.resize(buf.len() + BLOCK as usize, 0);
        } else {
            buf.extend_from_slice(&store.get(&ObjectId(*h))?);
        }
    }
    Ok(buf)
}

impl ReplayReport {
    fn interrupted(&self, reason: String) -> ReplayError {
        ReplayError::Interrupted {
            reason,
            last_verified_barrier: self.last_verified_barrier,
        }
    }
}
