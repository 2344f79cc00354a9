//! The first decode of a file in a recorded run, when the log already has
//! a past for it.
//!
//! A run that only opens a database must not log its rows as inserted
//! again. So when a main file is first decoded in a run and the log has
//! semantic events naming its path from before this run, the decoder is
//! first seeded with the file as it was at the end of the previous run:
//! read with the file's current hints from the log's disk state then
//! (block hashes replayed from the log, contents from the store), not
//! from the image. Then:
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
use std::path::Path;

use serde::Deserialize;
use snapshot::{ObjectId, Store};

use super::{BlockTap, JobKind, LiftJob, BLOCK};
use crate::disk_state::{DiskState, ZERO_BLOCK_HASH};
use crate::log::{LogError, LogReader, RecordKind};

/// The log's view of the disk before this run.
pub(crate) struct RunStart {
    /// The disk at the end of the last recorded run.
    logged: DiskState,
    /// The disk at the start of this run and the barrier of its base, when
    /// it differed from `logged`.
    opened: Option<(DiskState, u64)>,
    /// The last seq before this run.
    before_seq: u64,
    /// Paths named by semantic events up to `before_seq` (read when first
    /// needed; `Err` when the log could not be read).
    history: Option<Result<BTreeSet<String>, String>>,
}

impl RunStart {
    pub(crate) fn new(
        logged: DiskState,
        opened: Option<(DiskState, u64)>,
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

/// The file names semantic events up to `last` name.
fn files_with_history(dir: &Path, last: u64) -> Result<BTreeSet<String>, LogError> {
    #[derive(Deserialize)]
    struct Named {
        file: String,
    }
    let mut files = BTreeSet::new();
    let reader = LogReader::open(dir)?;
    for record in reader.iter()? {
        let record = record?;
        if record.seq > last {
            break;
        }
        if let RecordKind::Semantic { json } = record.kind {
            // Both changes and decode-error events name their file.
            if let Ok(named) = serde_json::from_str::<Named>(&json) {
                files.insert(named.file);
            }
        }
    }
    Ok(files)
}

/// Reads `len` bytes at byte `offset` of the disk `state` describes, the
/// blocks' contents from `store`.
pub(crate) fn read_state(
    store: &Store,
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
        let history = start.history.get_or_insert_with(|| {
            files_with_history(self.log.dir(), start.before_seq).map_err(|e| e.to_string())
        });
        let with_past: Vec<u32> = match history {
            Ok(files) => first
                .iter()
                .copied()
                .filter(|id| {
                    self.lifter
                        .table
                        .get(*id)
                        .is_some_and(|f| files.contains(&f.path))
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
        let mut states = vec![(JobKind::SeedPrior, &start.logged, self.log.last_seq())];
        if let Some((opened, base_barrier)) = &start.opened {
            states.push((JobKind::Outside, opened, *base_barrier));
        }
        for (kind, state, seq) in states {
            let store = &self.store;
            let mut read = |offset: u64, len: usize| read_state(store, state, offset, len);
            let versions = with_past
                .iter()
                .filter_map(|id| self.lifter.version_with(*id, &mut read))
                .collect();
            let job = LiftJob {
                vm: self.vm_id.clone(),
                seq,
                ts_ns: crate::log::now_ns(),
                versions,
                kind,
            };
            if let Some(jobs) = &self.lift_jobs {
                let _ = jobs.send(job);
            }
        }
    }
}

#[cfg(test)]
mod tests;
