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
//! every write so far) is compared with the image on disk. Blocks that
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
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{channel, sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;

use serde::Serialize;
use store::{ObjectBackend, ObjectId, StoreError};
use thiserror::Error;

use crate::decode::DecodeLimits;
use crate::lift::{HintError, Lifter, SemanticEvent};
use crate::tap_recovery::{open_log, Abandoned, TapCut};
use changelog::disk_state::{hash_block, DiskState, DiskStateError, ZERO_BLOCK_HASH};
use changelog::log::{BarrierKind, LogError, OpenReport, RecordKind};
use changelog::recording::{RecordDir, RecordError};
use changelog::{Hlc, LogAppend, LogBackend};

mod checkpointing;
mod differ;
mod lifting;
mod metering;
mod prior;
mod restore;

pub use checkpointing::CheckpointPolicy;
pub use metering::{StepProbe, TapInterval};

use differ::{run_differ, JobKind, LiftJob, LIFT_QUEUE};

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
    pending_data: Vec<u8>,
    pending_ids: Vec<ObjectId>,
    /// Records were appended since the last barrier.
    dirty: bool,
    /// Seq of the last barrier written (for the state checkpoint).
    last_barrier: Option<u64>,
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
}

impl BlockTap {
    /// Opens (or creates) the log of `vm_id` in `dir` for the disk `image`.
    pub fn open(
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
    ) -> Result<(Self, TapOpenReport), TapError> {
        Self::open_with_limits(dir, vm_id, image, DecodeLimits::default())
    }

    /// [`Self::open`], decoding hinted files within `limits`
    /// (`--decode-budget-mib`).
    pub fn open_with_limits(
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
        limits: DecodeLimits,
    ) -> Result<(Self, TapOpenReport), TapError> {
        let store = dir.open_store()?;
        let pin = store.pin()?;
        let (log, log_report, cut) = open_log(dir, &store, vm_id)?;
        let state = DiskState::from_image(image).map_err(|source| TapError::Image {
            path: image.to_path_buf(),
            source,
        })?;
        let image_file = File::open(image).map_err(|source| TapError::ImageRead {
            path: image.to_path_buf(),
            source,
        })?;
        let disk_bytes = state.num_blocks() * BLOCK as u64;
        let (lift_jobs, jobs) = sync_channel::<LiftJob>(LIFT_QUEUE);
        let (events_tx, lift_events) = channel();
        let lift_worker = std::thread::Builder::new()
            .name("lifter".into())
            .spawn(move || run_differ(jobs, events_tx, limits))
            .map_err(|source| TapError::ImageRead {
                path: image.to_path_buf(),
                source,
            })?;
        let mut tap = Self {
            log: Box::new(log),
            history: Box::new(dir.clone()),
            store: Box::new(store),
            _pin: Some(pin),
            state,
            vm_id: vm_id.to_string(),
            image: image_file,
            lifter: Lifter::new(disk_bytes),
            lift_jobs: Some(lift_jobs),
            lift_events,
            lift_worker: Some(lift_worker),
            written_since: BTreeSet::new(),
            hinted_since: BTreeSet::new(),
            run_start: None,
            baselined: BTreeSet::new(),
            pending_data: Vec::new(),
            pending_ids: Vec::new(),
            dirty: false,
            last_barrier: None,
            last_barrier_hlc: None,
            stats: TapStats::default(),
            checkpoint_policy: CheckpointPolicy::default(),
            since_checkpoint: Default::default(),
            probe: None,
            interval: TapInterval::default(),
        };
        // Seqs may start above 1 (after a declared gap): ask what is kept.
        let had_records = cut.as_ref().map_or(log_report.last_seq, |c| c.cut.last_seq) > 0;
        let base_blocks = tap.write_base(dir, vm_id, image, !had_records)?;
        Ok((
            tap,
            TapOpenReport {
                log: log_report,
                base_blocks,
                rebased: had_records && base_blocks > 0,
                cut,
            },
        ))
    }

    /// Logs every block whose content differs between the log's recorded
    /// state and the image, then a barrier.
    fn write_base(
        &mut self,
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
        fresh: bool,
    ) -> Result<u64, TapError> {
        let num_blocks = self.state.num_blocks();
        let logged = dir.logged_state(vm_id, num_blocks).map_err(|e| match e {
            RecordError::Image { .. } => TapError::ImageTooSmall {
                dir: dir.log_dir(vm_id),
                blocks: num_blocks,
            },
            RecordError::Log(e) => TapError::Log(e),
            RecordError::Store(e) => TapError::Store(e),
        })?;
        let before_seq = self.log.last_seq();
        if !fresh && logged.checksum() == self.state.checksum() {
            self.run_start = Some(prior::RunStart::new(logged, None, before_seq));
            return Ok(0);
        }
        let differs = |b: u64| self.state.block_hash(b) != logged.block_hash(b);
        let mut changed: Vec<u64> = self
            .state
            .iter_nonzero()
            .map(|(b, _)| b)
            .chain(logged.iter_nonzero().map(|(b, _)| b))
            .filter(|&b| differs(b))
            .collect();
        changed.sort_unstable();
        changed.dedup();
        let file = File::open(image).map_err(|source| TapError::ImageRead {
            path: image.to_path_buf(),
            source,
        })?;
        self.append(RecordKind::Mark {
            name: format!("{BASE_MARK} bytes={}", num_blocks * BLOCK as u64),
        })?;
        let mut i = 0;
        while i < changed.len() {
            let start = changed[i];
            let mut end = start + 1;
            while i + 1 < changed.len() && changed[i + 1] == end && end - start < BASE_RUN_BLOCKS {
                i += 1;
                end += 1;
            }
            i += 1;
            let mut data = vec![0u8; ((end - start) as usize) * BLOCK];
            file.read_exact_at(&mut data, start * BLOCK as u64)
                .map_err(|source| TapError::ImageRead {
                    path: image.to_path_buf(),
                    source,
                })?;
            self.log_write(start * BLOCK as u64, &data, false)?;
        }
        let base_barrier = self.barrier(BarrierKind::Flush)?;
        if !fresh {
            let opened = (self.state.clone(), base_barrier, self.last_barrier_hlc);
            self.run_start = Some(prior::RunStart::new(logged, Some(opened), before_seq));
        }
        Ok(changed.len() as u64)
    }

    /// Records a completed write of whole 4 KiB blocks at byte `offset`.
    pub fn record_write(&mut self, offset: u64, data: &[u8]) -> Result<u64, TapError> {
        self.log_write(offset, data, true)
    }

    fn log_write(&mut self, offset: u64, data: &[u8], count: bool) -> Result<u64, TapError> {
        if offset % BLOCK as u64 != 0 || data.len() % BLOCK != 0 || data.is_empty() {
            return Err(TapError::Unaligned {
                offset,
                len: data.len(),
            });
        }
        let mut hashes = Vec::with_capacity(data.len() / BLOCK);
        for block in data.chunks_exact(BLOCK) {
            let h = hash_block(block);
            if h == ZERO_BLOCK_HASH {
                if count {
                    self.stats.zero_blocks += 1;
                }
            } else {
                self.pending_data.extend_from_slice(block);
                self.pending_ids.push(ObjectId(h));
            }
            hashes.push(h);
        }
        if count && self.lifter.table.files().next().is_some() {
            let first = offset / BLOCK as u64;
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
            len: data.len() as u32,
            blocks: hashes,
        })?;
        self.dirty = true;
        if count {
            self.stats.writes += 1;
            self.stats.blocks += (data.len() / BLOCK) as u64;
            self.stats.bytes += data.len() as u64;
            self.count_for_checkpoint(data.len() as u64);
            self.meter_write(data.len() as u64);
        }
        if self.pending_data.len() >= PENDING_LIMIT {
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

    /// Puts the pending blocks into the store (not yet durable).
    fn store_pending(&mut self) -> Result<(), TapError> {
        if self.pending_ids.is_empty() {
            return Ok(());
        }
        let blocks: Vec<&[u8]> = self.pending_data.chunks_exact(BLOCK).collect();
        let report = self.store.put_hashed(&blocks, &self.pending_ids)?;
        self.meter_put(report);
        self.pending_data.clear();
        self.pending_ids.clear();
        Ok(())
    }

    /// A barrier: stores pending blocks, appends the barrier with the disk
    /// checksum, and makes store and log durable. Returns the barrier's seq.
    pub fn barrier(&mut self, kind: BarrierKind) -> Result<u64, TapError> {
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
            last_barrier,
            state,
            ..
        } = self;
        // After the final barrier only semantic records follow: the disk
        // state at that barrier is the state now.
        log.close(last_barrier.map(|seq| (seq, &state)))?;
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
