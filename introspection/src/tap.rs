//! The block tap: every completed guest write becomes a `BlockWrite` record
//! in the VM's change log, its 4 KiB blocks go to the content store, and
//! every flush becomes a `Barrier` carrying the disk's state checksum.
//!
//! Ordering, which is what makes a crash safe:
//! 1. blocks are put into the store *before* the log frame that references
//!    them is written (pending blocks are stored, then the frame committed,
//!    also when a full frame would commit by itself); after a failure the
//!    tap is [`BlockTap::abandon`]ed: nothing it buffered is written, and
//!    the log is cut back to its last durable barrier;
//! 2. at a barrier the store is synced, then the log (with the barrier
//!    record) is synced, and only then does the device tell the guest the
//!    flush is done. After a crash, every record up to the last barrier the
//!    guest saw complete is durable and every block it names is in the store.
//!
//! When a tap opens, the log's recorded disk state (the block hashes of
//! every write so far) is compared with the image on disk: the image is
//! hashed whole unless the recorder closed the log last and the image is
//! untouched since (`tap/fast_open.rs`; opening is `tap/open.rs`). Blocks that
//! differ — every non-zero block of a fresh log, or blocks changed outside
//! the recorder or left by a crashed or failed run — are written into the
//! log as a base, after a `vmm:base` mark and followed by a barrier. A log
//! therefore replays onto an all-zero disk by itself. Before that, records
//! a crashed run left after the log's sync point are checked against the
//! store (`crate::tap_recovery`).
//!
//! The first decode of a hinted file in a run is diffed against the file's
//! state at the end of the previous recorded run when the log has a past
//! for it, so reopening a database logs no phantom inserts, and changes
//! made between runs are reported once, labelled (`tap/prior.rs`).
use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::path::PathBuf;
use std::sync::mpsc::{Receiver, SyncSender};
use std::thread::JoinHandle;

use serde::Serialize;
use store::{ObjectBackend, ObjectId, StoreError};
use thiserror::Error;

use crate::lift::{HintError, Lifter, SemanticEvent};
use crate::tap_recovery::{Abandoned, TapCut};
use changelog::disk_state::{hash_block, DiskState, DiskStateError, ZERO_BLOCK_HASH};
use changelog::log::{BarrierKind, LogError, OpenReport, RecordKind};

use changelog::{Hlc, LogAppend, LogBackend};

mod checkpointing;
mod differ;
pub mod fast_open;
mod lifting;
mod metering;
mod open;
mod prior;
mod restore;
mod watching;

pub use checkpointing::CheckpointPolicy;
pub use fast_open::{OpenPath, ScanReason};
pub use metering::{StepProbe, TapInterval};
pub use open::TapOpenOptions;
pub use watching::HOST_FILE_ID_BASE;

use differ::{JobKind, LiftJob};

const BLOCK: usize = store::BLOCK_SIZE;
/// Pending block data is stored (and its log frame committed) beyond this.
const PENDING_LIMIT: usize = 16 << 20;
/// Blocks per base `BlockWrite` record.
const BASE_RUN_BLOCKS: u64 = 256;
/// The mark that precedes the base writes of a log: `vmm:base bytes=N`,
/// N being the disk's size (replay from an empty disk needs it).
pub const BASE_MARK: &str = "vmm:base";

/// The disk size a base mark names, if `name` is one.
pub fn parse_base_mark(name: &str) -> Option<u64> {
    name.strip_prefix(BASE_MARK)?
        .trim()
        .strip_prefix("bytes=")?
        .parse()
        .ok()
}

#[derive(Debug, Error)]
pub enum TapError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("disk image {}: {source}", .path.display())]
    Image {
        path: PathBuf,
        source: DiskStateError,
    },
    #[error("reading disk image {}: {source}", .path.display())]
    ImageRead {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("write at byte {offset} of {len} bytes is not whole 4 KiB blocks")]
    Unaligned { offset: u64, len: usize },
    #[error("the log in {} names blocks past the end of this {blocks}-block image: use another --vm-id for a different disk", .dir.display())]
    ImageTooSmall { dir: PathBuf, blocks: u64 },
}

/// What opening the tap found and did.
#[derive(Debug, Clone, Serialize)]
pub struct TapOpenReport {
    #[serde(skip)]
    pub log: OpenReport,
    /// Blocks written into the log as the base (0 when the image matched).
    pub base_blocks: u64,
    /// True when the log already had records and the image no longer
    /// matched them (changed outside the recorder, or writes a failed run
    /// could not record).
    pub rebased: bool,
    /// Records after the log's last sync point that named blocks missing
    /// from the store, cut before anything else was written.
    pub cut: Option<TapCut>,
    /// Whether the image was hashed whole or the log's state trusted, and
    /// why (`tap/fast_open.rs`).
    pub open: OpenPath,
}

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct TapStats {
    pub writes: u64,
    pub blocks: u64,
    pub zero_blocks: u64,
    pub bytes: u64,
    pub barriers: u64,
    pub hints: u64,
    pub bad_hints: u64,
    pub semantic_changes: u64,
    pub decode_errors: u64,
    /// Temporal checkpoints taken (`tap/checkpointing.rs`).
    pub checkpoints: u64,
    /// Agentless mappings of the watched files made, and failed (the disk
    /// is not ext4 or is damaged) (`tap/watching.rs`).
    pub mappings: u64,
    pub map_failures: u64,
    /// Barriers at which an agent's hint for a file disagreed with the
    /// filesystem's own map of it (counted per file).
    pub hint_mismatches: u64,
}

pub struct BlockTap {
    /// Where this VM's records go, and where its earlier records are read
    /// from (the same log, through the reading side of the seam).
    log: Box<dyn LogAppend>,
    history: Box<dyn LogBackend + Send + Sync>,
    /// Where blocks go.
    store: Box<dyn ObjectBackend>,
    /// Keeps `vmm store gc` away from a local store while this log may
    /// still be about to reference objects it has put (they are stored
    /// before the log frame naming them is written).
    _pin: Option<store::Pin>,
    state: DiskState,
    /// Writes whose blocks are not in the store yet (kept whole, not
    /// copied), their blocks' ids in order (zero blocks too: the store
    /// skips them), and their bytes.
    pending_data: Vec<Vec<u8>>,
    pending_ids: Vec<ObjectId>,
    pending_bytes: usize,
    /// Records were appended since the last barrier.
    dirty: bool,
    /// Seq of the last barrier this tap wrote.
    last_barrier: Option<u64>,
    /// The barrier at which `state` was last exactly the disk (this tap's
    /// last barrier, or the log's when it opened on the saved state): the
    /// state checkpoint and image stamp at close are taken for it.
    state_at: Option<u64>,
    /// The blocks written last (first and last of each write), for the
    /// content sample of the next open (`tap/fast_open.rs`).
    recent: VecDeque<u64>,
    /// The log's directory (for the image stamp at close).
    log_dir: PathBuf,
    /// Its HLC stamp (changes found later but lifted there carry it).
    last_barrier_hlc: Option<Hlc>,
    stats: TapStats,
    vm_id: String,
    /// The disk image, read at barriers to lift hinted files.
    image: File,
    lifter: Lifter,
    /// Decoding runs on its own thread, off the barrier's path: jobs go
    /// out with the file versions read at a barrier, events come back and
    /// are appended to the log as they arrive (each names its barrier).
    lift_jobs: Option<SyncSender<LiftJob>>,
    lift_events: Receiver<Vec<SemanticEvent>>,
    lift_worker: Option<JoinHandle<()>>,
    /// Blocks written and files hinted since the last barrier (tracked only
    /// once the guest hinted a file).
    written_since: BTreeSet<u64>,
    hinted_since: BTreeSet<u32>,
    /// The log's disk states before this run, for the first decode of a
    /// file with a past in the log (`tap/prior.rs`); None for a new log.
    run_start: Option<prior::RunStart>,
    /// Main files whose first decode in this run has been sent.
    baselined: BTreeSet<u32>,
    checkpoint_policy: CheckpointPolicy,
    since_checkpoint: checkpointing::SinceCheckpoint,
    /// The VMM's side of the per-step metrics (`tap/metering.rs`), and the
    /// tap's own counts since the last barrier.
    probe: Option<Box<dyn StepProbe>>,
    interval: TapInterval,
    /// Agentless mapping of watched files (`tap/watching.rs`).
    watching: Option<watching::Watching>,
}

impl BlockTap {
    /// Records a completed write of whole 4 KiB blocks at byte `offset`
    /// (an owned buffer is kept until its blocks are stored, not copied).
    pub fn record_write(&mut self, offset: u64, data: impl Into<Vec<u8>>) -> Result<u64, TapError> {
        self.log_write(offset, data.into(), true)
    }

    fn log_write(&mut self, offset: u64, data: Vec<u8>, count: bool) -> Result<u64, TapError> {
        if offset % BLOCK as u64 != 0 || data.len() % BLOCK != 0 || data.is_empty() {
            return Err(TapError::Unaligned {
                offset,
                len: data.len(),
            });
        }
        let mut hashes = Vec::with_capacity(data.len() / BLOCK);
        let mut stored = false;
        for block in data.chunks_exact(BLOCK) {
            let h = hash_block(block);
            if h == ZERO_BLOCK_HASH {
                if count {
                    self.stats.zero_blocks += 1;
                }
            } else {
                stored = true;
            }
            hashes.push(h);
        }
        let len = data.len();
        if stored {
            self.pending_ids.extend(hashes.iter().map(|h| ObjectId(*h)));
            self.pending_bytes += len;
            self.pending_data.push(data);
        }
        let first = offset / BLOCK as u64;
        let last = first + hashes.len() as u64 - 1;
        for b in [first, last] {
            if self.recent.back() != Some(&b) {
                if self.recent.len() == changelog::image_stamp::MAX_RECENT {
                    self.recent.pop_front();
                }
                self.recent.push_back(b);
            }
        }
        if let Some(w) = self.watching.as_mut() {
            w.dirty = true;
        }
        if count && self.lifter.table.files().next().is_some() {
            self.written_since
                .extend(first..first + hashes.len() as u64);
        }
        self.state
            .apply_block_write(offset / 512, &hashes)
            .map_err(|source| TapError::Image {
                path: self.log.location().into(),
                source,
            })?;
        let seq = self.append(RecordKind::BlockWrite {
            sector: offset / 512,
            len: len as u32,
            blocks: hashes,
        })?;
        self.dirty = true;
        if count {
            self.stats.writes += 1;
            self.stats.blocks += (len / BLOCK) as u64;
            self.stats.bytes += len as u64;
            self.count_for_checkpoint(len as u64);
            self.meter_write(len as u64);
        }
        if self.pending_bytes >= PENDING_LIMIT {
            self.store_pending()?;
            self.log.commit()?;
        }
        Ok(seq)
    }

    /// Appends a record. A record reaches the log file only after the
    /// blocks of every write before it are in the store: when this append
    /// is about to commit the pending frame, the pending blocks go first.
    fn append(&mut self, kind: RecordKind) -> Result<u64, TapError> {
        if self.log.append_commits() {
            self.store_pending()?;
        }
        Ok(self.log.append(kind)?)
    }

    /// Puts the pending blocks into the store (not yet durable). They go
    /// uncompressed: the guest may be waiting on this (a flush, or a full
    /// queue), and `vmm store gc` compresses them later.
    fn store_pending(&mut self) -> Result<(), TapError> {
        if self.pending_ids.is_empty() {
            return Ok(());
        }
        let blocks: Vec<&[u8]> = self
            .pending_data
            .iter()
            .flat_map(|w| w.chunks_exact(BLOCK))
            .collect();
        let report = self
            .store
            .put_hashed_uncompressed(&blocks, &self.pending_ids)?;
        self.meter_put(report);
        self.pending_data.clear();
        self.pending_ids.clear();
        self.pending_bytes = 0;
        Ok(())
    }

    /// A barrier: stores pending blocks, appends the barrier with the disk
    /// checksum, and makes store and log durable. Returns the barrier's seq.
    pub fn barrier(&mut self, kind: BarrierKind) -> Result<u64, TapError> {
        self.map_watched()?;
        self.store_pending()?;
        self.store.sync()?;
        let seq = self.append(RecordKind::Barrier {
            kind,
            disk_checksum: self.state.checksum(),
        })?;
        let hlc = self.log.last_hlc();
        self.append_metrics(seq)?;
        self.lift(seq, hlc)?;
        self.log.sync()?;
        self.last_barrier = Some(seq);
        self.state_at = Some(seq);
        self.last_barrier_hlc = hlc;
        self.dirty = false;
        self.stats.barriers += 1;
        self.maybe_checkpoint(seq);
        Ok(seq)
    }

    /// Records a hint the guest sent (one hint-proto message) and applies it
    /// to the file table. A hint that does not decode or does not fit the
    /// disk is kept in the log, counted and reported, and changes nothing.
    pub fn record_hint(&mut self, message: &[u8]) -> Result<u64, TapError> {
        let message = &message[..message.len().min(changelog::log::MAX_HINT_LEN)];
        let seq = self.append(RecordKind::Hint {
            message: message.to_vec(),
        })?;
        self.dirty = true;
        self.stats.hints += 1;
        let applied = match hint_proto::decode(message) {
            Ok((hint, used)) if used == message.len() => {
                let id = hint.file_id();
                self.lifter.table.apply(&hint).map(|()| id)
            }
            Ok(_) => Err(HintError::TrailingBytes),
            Err(e) => Err(HintError::Undecodable(e)),
        };
        match applied {
            Ok(id) => {
                self.hinted_since.insert(id);
            }
            Err(reason) => {
                self.stats.bad_hints += 1;
                tracing::warn!(vm = %self.vm_id, "guest sent a bad hint (seq {seq}): {reason}");
            }
        }
        Ok(seq)
    }

    /// A named mark at the current position (committed, not synced).
    pub fn mark(&mut self, name: &str) -> Result<u64, TapError> {
        self.store_pending()?;
        let seq = self.append(RecordKind::Mark {
            name: name.to_string(),
        })?;
        self.log.commit()?;
        self.dirty = true;
        Ok(seq)
    }

    /// Records that snapshot `id` was taken here (after a barrier the caller
    /// made): committed, not synced.
    pub fn snapshot_taken(&mut self, id: &str) -> Result<u64, TapError> {
        let seq = self
            .log
            .append(RecordKind::SnapshotTaken { id: id.to_string() })?;
        self.log.commit()?;
        self.dirty = true;
        self.checkpoint_at_last_barrier();
        Ok(seq)
    }

    pub fn checksum(&self) -> [u8; 32] {
        self.state.checksum()
    }

    /// The last barrier this tap made durable.
    pub fn last_barrier(&self) -> Option<u64> {
        self.last_barrier
    }

    pub fn last_seq(&self) -> u64 {
        self.log.last_seq()
    }

    pub fn stats(&self) -> TapStats {
        self.stats
    }

    /// The final barrier (unless nothing happened since the last one) and
    /// the decoder's last events: what [`BlockTap::close`] does before it
    /// seals the log. A caller that must abandon the tap when this fails
    /// calls it first.
    pub fn finish(&mut self) -> Result<(), TapError> {
        if self.dirty {
            self.barrier(BarrierKind::Flush)?;
        }
        self.finish_lifting()
    }

    /// Ends recording ([`BlockTap::finish`]) and closes (seals) the log.
    pub fn close(mut self) -> Result<TapStats, TapError> {
        self.finish()?;
        let stats = self.stats;
        let BlockTap {
            log,
            state_at,
            state,
            image,
            recent,
            log_dir,
            ..
        } = self;
        // After the final barrier only semantic records follow: the disk
        // state at that barrier is the state now.
        log.close(state_at.map(|seq| (seq, &state)))?;
        if let Some(seq) = state_at {
            open::stamp_image(&log_dir, &image, seq, &state, recent.into());
        }
        Ok(stats)
    }
}

impl BlockTap {
    /// Ends a tap after a failure (of the store or the log): the blocks and
    /// records not yet stored are dropped, and the log is cut back to its
    /// last sync point, so it names nothing that is not in the store. The
    /// log stays unsealed; the next open logs a new base for the image.
    pub fn abandon(self) -> Result<Abandoned, TapError> {
        // Pending blocks and the decoding thread's queue go with `self`.
        let BlockTap {
            log, last_barrier, ..
        } = self;
        let last_seq = log.last_seq();
        let cut = log.abandon()?;
        Ok(Abandoned {
            last_seq: cut.as_ref().map_or(last_seq, |c| c.last_seq),
            cut,
            last_barrier,
        })
    }
}
