//! The tap's temporal checkpoints (`changelog::checkpoints`): the disk's
//! block map, taken at a barrier every [`CheckpointPolicy::every_barriers`]
//! barriers or [`CheckpointPolicy::every_bytes`] bytes written, and at
//! every snapshot, so that a replay to any later point starts there.
//!
//! A checkpoint is derived data: one that cannot be stored is a warning,
//! not a recording failure (the log, the truth, is durable already).
use changelog::checkpoints;
use changelog::log::LogError;

use super::{BlockTap, TapError};

/// When the tap takes checkpoints (0 turns a trigger off).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CheckpointPolicy {
    pub every_barriers: u64,
    pub every_bytes: u64,
}

impl Default for CheckpointPolicy {
    /// Every 1000 barriers or 1 GiB written: a replay then reads at most
    /// that much log past its checkpoint, for a map's cost per 1000
    /// barriers (40 bytes per written block).
    fn default() -> Self {
        CheckpointPolicy {
            every_barriers: 1000,
            every_bytes: 1 << 30,
        }
    }
}

/// Progress towards the next checkpoint.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct SinceCheckpoint {
    barriers: u64,
    bytes: u64,
    /// The seq of the last checkpoint this tap took.
    last_seq: Option<u64>,
}

impl BlockTap {
    /// Sets when checkpoints are taken.
    pub fn set_checkpoint_policy(&mut self, policy: CheckpointPolicy) {
        self.checkpoint_policy = policy;
    }

    /// Counts `bytes` written towards the next checkpoint.
    pub(super) fn count_for_checkpoint(&mut self, bytes: u64) {
        self.since_checkpoint.bytes += bytes;
    }

    /// After barrier `seq` is durable: takes a checkpoint if one is due.
    pub(super) fn maybe_checkpoint(&mut self, seq: u64) {
        self.since_checkpoint.barriers += 1;
        let p = self.checkpoint_policy;
        let s = self.since_checkpoint;
        let due = (p.every_barriers > 0 && s.barriers >= p.every_barriers)
            || (p.every_bytes > 0 && s.bytes >= p.every_bytes);
        if due {
            self.checkpoint_now(seq);
        }
    }

    /// A checkpoint at the last barrier, unless there is one already (a
    /// snapshot was taken there: its disk state is where restores start).
    pub(super) fn checkpoint_at_last_barrier(&mut self) {
        if let Some(seq) = self.last_barrier {
            if self.since_checkpoint.last_seq != Some(seq) {
                self.checkpoint_now(seq);
            }
        }
    }

    fn checkpoint_now(&mut self, seq: u64) {
        match self.checkpoint(seq) {
            Ok(()) => {
                self.since_checkpoint = SinceCheckpoint {
                    last_seq: Some(seq),
                    ..SinceCheckpoint::default()
                };
                self.stats.checkpoints += 1;
            }
            Err(e) => tracing::warn!(
                "VM {}: no checkpoint at seq {seq} (replays start from an earlier one): {e}",
                self.vm_id
            ),
        }
    }

    fn checkpoint(&mut self, seq: u64) -> Result<(), TapError> {
        let ts_ns = self.last_barrier_hlc.map_or(0, |h| h.physical_ns);
        let cp = checkpoints::save(&self.state, seq, ts_ns, &*self.store).map_err(|e| {
            TapError::Log(LogError::Backend {
                location: self.store.location(),
                source: Box::new(e),
            })
        })?;
        // The map before the entry that names it.
        self.store.sync()?;
        self.log.add_checkpoint(&cp)?;
        Ok(())
    }
}
