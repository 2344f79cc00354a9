//! Opening a tap: the log (after a crashed run's tail is checked), the
//! image's state (the log's saved state when `fast_open` trusts it, else a
//! hash of the whole image), and the base of whatever the image holds that
//! the log does not. Also the image stamp a clean close leaves for the next
//! open.
use std::collections::{BTreeSet, VecDeque};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{channel, sync_channel};
use std::time::Instant;

use changelog::disk_state::DiskState;
use changelog::image_stamp::{self, ImageStamp};
use changelog::log::{BarrierKind, RecordKind};
use changelog::recording::{RecordDir, RecordError};

use super::differ::{run_differ, LiftJob, LIFT_QUEUE};
use super::fast_open::{self, OpenPath, ScanReason};
use super::{prior, BlockTap, TapError, TapOpenReport, BASE_MARK, BASE_RUN_BLOCKS, BLOCK};
use crate::decode::DecodeLimits;
use crate::lift::Lifter;
use crate::tap_recovery::open_log;

/// How to open a tap.
#[derive(Debug, Clone, Copy, Default)]
pub struct TapOpenOptions {
    /// Limits of each decode of a hinted file (`--decode-budget-mib`).
    pub limits: DecodeLimits,
    /// Hash the whole image even when the log's saved state could be
    /// trusted (`--rescan`).
    pub rescan: bool,
    /// Largest log segment (`--log-segment-kib`; default 64 MiB): the
    /// grain at which `store retain` can drop old history.
    pub segment_max_bytes: Option<u64>,
}

/// What the tap's state at open is to the log.
enum Prior {
    /// Unknown: read the log's state and compare.
    Read,
    /// The log's saved state at this barrier, trusted (`fast_open`).
    Same(u64),
}

impl BlockTap {
    /// Opens (or creates) the log of `vm_id` in `dir` for the disk `image`.
    pub fn open(
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
    ) -> Result<(Self, TapOpenReport), TapError> {
        Self::open_with(dir, vm_id, image, TapOpenOptions::default())
    }

    /// [`Self::open`], decoding hinted files within `limits`
    /// (`--decode-budget-mib`).
    pub fn open_with_limits(
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
        limits: DecodeLimits,
    ) -> Result<(Self, TapOpenReport), TapError> {
        let opts = TapOpenOptions {
            limits,
            ..Default::default()
        };
        Self::open_with(dir, vm_id, image, opts)
    }

    /// [`Self::open`] with options.
    pub fn open_with(
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
        opts: TapOpenOptions,
    ) -> Result<(Self, TapOpenReport), TapError> {
        let started = Instant::now();
        let store = dir.open_store()?;
        let pin = store.pin()?;
        let (log, log_report, cut) = open_log(dir, &store, vm_id, opts.segment_max_bytes)?;
        // Seqs may start above 1 (after a declared gap): ask what is kept.
        let had_records = cut.as_ref().map_or(log_report.last_seq, |c| c.cut.last_seq) > 0;
        let saved = if !had_records {
            Err(ScanReason::NewLog)
        } else if opts.rescan {
            Err(ScanReason::Requested)
        } else {
            fast_open::try_saved(dir, vm_id, image, &log_report, cut.is_some())
        };
        let mut recent = VecDeque::new();
        let (state, prior, mut path) = match saved {
            Ok(saved) => {
                let path = OpenPath {
                    fast: true,
                    blocks_read: saved.sampled,
                    ..Default::default()
                };
                recent = saved.recent.into();
                (saved.logged, Prior::Same(saved.barrier), path)
            }
            Err(why) => {
                if why.warns() {
                    tracing::warn!(
                        vm = %vm_id,
                        "hashing the whole disk image {} ({why})",
                        image.display()
                    );
                }
                let state = DiskState::from_image(image).map_err(|source| TapError::Image {
                    path: image.to_path_buf(),
                    source,
                })?;
                let path = OpenPath {
                    why: Some(why.to_string()),
                    blocks_read: state.num_blocks(),
                    ..Default::default()
                };
                (state, Prior::Read, path)
            }
        };
        path.state_us = started.elapsed().as_micros() as u64;
        let image_file = File::open(image).map_err(|source| TapError::ImageRead {
            path: image.to_path_buf(),
            source,
        })?;
        let disk_bytes = state.num_blocks() * BLOCK as u64;
        let (lift_jobs, jobs) = sync_channel::<LiftJob>(LIFT_QUEUE);
        let (events_tx, lift_events) = channel();
        let limits = opts.limits;
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
            pending_bytes: 0,
            dirty: false,
            last_barrier: None,
            state_at: None,
            recent,
            log_dir: dir.log_dir(vm_id),
            last_barrier_hlc: None,
            stats: Default::default(),
            checkpoint_policy: Default::default(),
            since_checkpoint: Default::default(),
            probe: None,
            interval: super::TapInterval::default(),
            watching: None,
        };
        let base_blocks = tap.write_base(dir, vm_id, image, !had_records, prior)?;
        if log_report.skipped_seqs.is_some() {
            // The log continues after a gap of seqs a crashed writer may
            // have handed out; a close with no record after the gap would
            // seal it at a seq its records do not reach (the next open
            // refuses that as damage). The final barrier is that record.
            tap.dirty = true;
        }
        path.open_us = started.elapsed().as_micros() as u64;
        Ok((
            tap,
            TapOpenReport {
                log: log_report,
                base_blocks,
                rebased: had_records && base_blocks > 0,
                cut,
                open: path,
            },
        ))
    }

    /// Logs every block whose content differs between the log's recorded
    /// state and the image, then a barrier (nothing when `prior` says the
    /// state is the log's).
    fn write_base(
        &mut self,
        dir: &RecordDir,
        vm_id: &str,
        image: &Path,
        fresh: bool,
        prior: Prior,
    ) -> Result<u64, TapError> {
        let num_blocks = self.state.num_blocks();
        let before_seq = self.log.last_seq();
        if let Prior::Same(at) = prior {
            let logged = prior::Logged::InLog {
                dir: dir.clone(),
                num_blocks,
            };
            self.run_start = Some(prior::RunStart::new(logged, None, before_seq));
            self.state_at = Some(at);
            return Ok(0);
        }
        let (logged, logged_at) = dir
            .logged_state_at(vm_id, num_blocks)
            .map_err(|e| match e {
                RecordError::Image { .. } => TapError::ImageTooSmall {
                    dir: dir.log_dir(vm_id),
                    blocks: num_blocks,
                },
                RecordError::Log(e) => TapError::Log(e),
                RecordError::Store(e) => TapError::Store(e),
            })?;
        if !fresh && logged.checksum() == self.state.checksum() {
            let logged = prior::Logged::Known(logged);
            self.run_start = Some(prior::RunStart::new(logged, None, before_seq));
            // The image is the log's state. When that is exactly a barrier,
            // a clean close can stamp the image for it; otherwise (writes
            // after the last barrier, left by a crash) the close makes one.
            self.state_at = logged_at;
            self.dirty = logged_at.is_none();
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
            self.log_write(start * BLOCK as u64, data, false)?;
        }
        let base_barrier = self.barrier(BarrierKind::Flush)?;
        if !fresh {
            let opened = (self.state.clone(), base_barrier, self.last_barrier_hlc);
            let logged = prior::Logged::Known(logged);
            self.run_start = Some(prior::RunStart::new(logged, Some(opened), before_seq));
        }
        Ok(changed.len() as u64)
    }
}

/// Stamps the image for the next open after a clean close at barrier `seq`
/// (best effort: without a stamp the next open hashes the image).
pub(super) fn stamp_image(
    log_dir: &Path,
    image: &File,
    seq: u64,
    state: &DiskState,
    recent: Vec<u64>,
) {
    let saved = image_stamp::settle(image).and_then(|(meta, racy)| {
        let stamp = ImageStamp {
            seq,
            checksum: state.checksum(),
            meta,
            racy,
            recent,
        };
        image_stamp::save(log_dir, &stamp)
    });
    if let Err(e) = saved {
        image_stamp::remove(log_dir);
        tracing::warn!(
            "could not stamp the disk image for {} ({e}): its next recorded run hashes the whole image",
            log_dir.display()
        );
    }
}
