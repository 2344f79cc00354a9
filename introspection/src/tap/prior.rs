//! The first decode of a file in a recorded run, when the log already has
//! a past for it.
//!
//! A run that only opens a database must not log its rows as inserted
//! again. So when a main file is first decoded in a run and the log has
//! semantic events naming its path from before this run, the decoder is
//! first seeded with the file as it was at the end of the previous run:
//! read from the log's disk state then (block hashes replayed from the
//! log, contents from the store), not from the image, with the file's
//! extents and size as the hints logged before this run left them (the
//! log's `Hint` records replayed into a file table; the current hints when
//! the path has none), so a file that grew or moved between runs is still
//! read as it was. Then:
//! - if the image matched the log when the tap opened (the log's checksum
//!   equals the image's, no base was written), that state is also the disk
//!   at the start of this run, and only what this run changed is reported;
//! - if the disk was changed outside recording (a base was logged), the
//!   file as it was at the start of this run is diffed against it once,
//!   those changes labelled `source: "outside-recording"` at the base's
//!   barrier, and this run's changes follow as usual;
//! - a file without a past in the log is decoded from nothing: its rows
//!   are inserts, which is its real history.
//!
//! A past that does not decode (the file moved on the disk between runs)
//! or is mid-transaction gives a decode-error event saying what is
//! unknown, never a stream of inserts (`lift/prior.rs`).
use std::collections::BTreeSet;

use hint_proto::Role;
use serde::Deserialize;
use store::{ObjectBackend, ObjectId};

use super::{BlockTap, JobKind, LiftJob, BLOCK};
use crate::lift::{FileTable, Lifter};
use changelog::disk_state::{DiskState, ZERO_BLOCK_HASH};
use changelog::log::{LogError, RecordKind};
use changelog::recording::RecordDir;
use changelog::{Hlc, LogBackend};

/// The disk at the end of the last recorded run.
pub(crate) enum Logged {
    Known(DiskState),
    /// In the log (its saved state): read when first needed. A tap that
    /// opened on the saved state holds it as its own state, which this
    /// run changes; copying it at open cost more than the rest of the open
    /// (tens of ms for a full 1 GiB disk), and most runs never need it.
    InLog {
        dir: RecordDir,
        num_blocks: u64,
    },
}

/// The log's view of the disk before this run.
pub(crate) struct RunStart {
    /// The disk at the end of the last recorded run.
    logged: Logged,
    /// The disk at the start of this run and the barrier of its base (seq
    /// and stamp), when it differed from `logged`.
    opened: Option<(DiskState, u64, Option<Hlc>)>,
    /// The last seq before this run.
    before_seq: u64,
    /// What the log says up to `before_seq` (read when first needed;
    /// `Err` when the log could not be read).
    history: Option<Result<Past, String>>,
}

impl RunStart {
    pub(crate) fn new(
        logged: Logged,
        opened: Option<(DiskState, u64, Option<Hlc>)>,
        before_seq: u64,
    ) -> Self {
        RunStart {
            logged,
            opened,
            before_seq,
            history: None,
        }
    }
}

/// The log before this run.
pub(crate) struct Past {
    /// The paths its semantic events name.
    files: BTreeSet<String>,
    /// Its hints applied in order: the files as the last run left them.
    lifter: Lifter,
}

/// Reads `vm`'s log up to seq `last`, for a disk of `disk_bytes`.
fn read_past(
    logs: &dyn LogBackend,
    vm: &str,
    last: u64,
    disk_bytes: u64,
) -> Result<Past, LogError> {
    #[derive(Deserialize)]
    struct Named {
        file: String,
    }
    let mut files = BTreeSet::new();
    let mut table = FileTable::new(disk_bytes);
    for record in logs.records(vm, 1)? {
        let record = record?;
        if record.seq > last {
            break;
        }
        match record.kind {
            RecordKind::Semantic { json } => {
                // Both changes and decode-error events name their file.
                if let Ok(named) = serde_json::from_str::<Named>(&json) {
                    files.insert(named.file);
                }
            }
            RecordKind::Hint { message } => {
                // As the live tap did: a bad hint changes nothing.
                if let Ok((hint, used)) = hint_proto::decode(&message) {
                    if used == message.len() {
                        let _ = table.apply(&hint);
                    }
                }
            }
            _ => {}
        }
    }
    Ok(Past {
        files,
        lifter: Lifter::restored(table),
    })
}

/// Reads `len` bytes at byte `offset` of the disk `state` describes, the
/// blocks' contents from `store`.
pub(crate) fn read_state(
    store: &dyn ObjectBackend,
    state: &DiskState,
    offset: u64,
    len: usize,
) -> std::io::Result<Vec<u8>> {
    let block = BLOCK as u64;
    let mut out = Vec::with_capacity(len);
    let end = offset + len as u64;
    let mut pos = offset;
    while pos < end {
        let b = pos / block;
        let within = (pos % block) as usize;
        let n = (BLOCK - within).min((end - pos) as usize);
        match state.block_hash(b) {
            None => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!("block {b} is past the end of the disk"),
                ))
            }
            Some(h) if h == ZERO_BLOCK_HASH => out.resize(out.len() + n, 0),
            Some(h) => {
                let data = store.get(&ObjectId(h)).map_err(std::io::Error::other)?;
                let part = data.get(within..within + n).ok_or_else(|| {
                    std::io::Error::other(format!("block {b} in the store is short"))
                })?;
                out.extend_from_slice(part);
            }
        }
        pos += n as u64;
    }
    Ok(out)
}

impl BlockTap {
    /// Sends the decoder the earlier states of the files in `first` (main
    /// files decoded for the first time in this run) that have a past in
    /// the log, ahead of this barrier's job.
    pub(super) fn send_priors(&mut self, first: &[u32]) {
        let Some(start) = self.run_start.as_mut() else {
            return;
        };
        let disk_bytes = self.state.num_blocks() * BLOCK as u64;
        let history = start.history.get_or_insert_with(|| {
            read_past(&*self.history, &self.vm_id, start.before_seq, disk_bytes)
                .map_err(|e| e.to_string())
        });
        let with_past: Vec<u32> = match &*history {
            Ok(past) => first
                .iter()
                .copied()
                .filter(|id| {
                    self.lifter
                        .table
                        .get(*id)
                        .is_some_and(|f| past.files.contains(&f.path))
                })
                .collect(),
            // Unknown past: no phantom inserts, at worst a file's first
            // state is reported as a baseline instead of as inserts.
            Err(e) => {
                tracing::warn!(vm = %self.vm_id, "reading the log's earlier semantic events: {e}");
                first.to_vec()
            }
        };
        if with_past.is_empty() {
            return;
        }
        if let Logged::InLog { dir, num_blocks } = &start.logged {
            match dir.logged_state_until(&self.vm_id, *num_blocks, start.before_seq) {
                Ok(state) => start.logged = Logged::Known(state),
                Err(e) => {
                    tracing::warn!(vm = %self.vm_id, "reading the log's disk state before this run: {e}");
                    return;
                }
            }
        }
        let Logged::Known(logged) = &start.logged else {
            return;
        };
        // Each state's position in the log: the end of the last run, and
        // the barrier of this run's base.
        let mut states = vec![(
            JobKind::SeedPrior,
            logged,
            self.log.last_seq(),
            self.log.last_hlc(),
            start.before_seq,
        )];
        if let Some((opened, base_barrier, hlc)) = &start.opened {
            states.push((JobKind::Outside, opened, *base_barrier, *hlc, *base_barrier));
        }
        let mut past = history.as_mut().ok();
        for (kind, state, seq, hlc, at) in states {
            let store = &*self.store;
            let mut read = |offset: u64, len: usize| read_state(store, state, offset, len);
            let mut versions = Vec::new();
            for &id in &with_past {
                // The end of the last run is read as its hints left the
                // file; the start of this one as this run's hints say.
                let earlier = match (kind, past.as_deref_mut()) {
                    (JobKind::SeedPrior, Some(past)) => {
                        same_file(&past.lifter.table, &self.lifter.table, id).and_then(|old| {
                            past.lifter.version_with(old, &mut read).map(|mut v| {
                                v.id = id;
                                v
                            })
                        })
                    }
                    _ => None,
                };
                versions.extend(earlier.or_else(|| self.lifter.version_with(id, &mut read)));
            }
            for v in &mut versions {
                v.fill_reads(Some(at), &|b| state.block_hash(b));
            }
            let job = LiftJob {
                vm: self.vm_id.clone(),
                seq,
                hlc,
                versions,
                kind,
            };
            if let Some(jobs) = &self.lift_jobs {
                let _ = jobs.send(job);
            }
        }
    }
}

/// The main file of `old` with the path and format of main file `id` of
/// `now`.
fn same_file(old: &FileTable, now: &FileTable, id: u32) -> Option<u32> {
    let file = now.get(id)?;
    old.files()
        .find(|(_, f)| {
            f.role == Role::Main
                && f.path == file.path
                && f.format == file.format
                && !f.extents.is_empty()
        })
        .map(|(old_id, _)| *old_id)
}

#[cfg(test)]
mod tests;
