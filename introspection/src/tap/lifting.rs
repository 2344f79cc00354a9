//! The tap's side of lifting: at a barrier, the hinted files touched
//! since the last one are read from the image and sent to the decoding
//! thread (`differ.rs`); the semantic events it sends back are appended
//! to the log, each labelled with its barrier's seq and HLC stamp (so
//! `vmm changes` merges VMs, across hosts, by stamp).
use std::os::unix::fs::FileExt;

use super::{BlockTap, JobKind, LiftJob, TapError};
use crate::lift::SemanticEvent;
use crate::semantic::DecodeErrorEvent;
use changelog::log::RecordKind;
use changelog::Hlc;

impl BlockTap {
    /// Reads the versions of the hinted files touched since the last
    /// barrier `seq` (stamped `hlc`) and hands them to the decoding thread;
    /// appends the events that thread has finished so far.
    pub(super) fn lift(&mut self, seq: u64, hlc: Option<Hlc>) -> Result<(), TapError> {
        if !self.written_since.is_empty() || !self.hinted_since.is_empty() {
            let image = &self.image;
            let mut read = |offset: u64, len: usize| {
                let mut buf = vec![0u8; len];
                image.read_exact_at(&mut buf, offset).map(|()| buf)
            };
            let mut versions =
                self.lifter
                    .versions(&self.written_since, &self.hinted_since, &mut read);
            // The block map is the disk at this barrier: the step's inputs.
            let state = &self.state;
            for v in &mut versions {
                v.fill_reads(Some(seq), &|b| state.block_hash(b));
            }
            self.written_since.clear();
            self.hinted_since.clear();
            let first: Vec<u32> = versions
                .iter()
                .map(|v| v.id)
                .filter(|id| self.baselined.insert(*id))
                .collect();
            if !first.is_empty() {
                self.send_priors(&first);
            }
            if !versions.is_empty() {
                let job = LiftJob {
                    vm: self.vm_id.clone(),
                    seq,
                    hlc,
                    versions,
                    kind: JobKind::Diff,
                };
                if let Some(jobs) = &self.lift_jobs {
                    let _ = jobs.send(job);
                }
            }
        }
        while let Ok(events) = self.lift_events.try_recv() {
            self.append_events(events)?;
        }
        Ok(())
    }

    pub(super) fn append_events(&mut self, events: Vec<SemanticEvent>) -> Result<(), TapError> {
        for event in events {
            match &event {
                SemanticEvent::Change(_) => self.stats.semantic_changes += 1,
                SemanticEvent::DecodeError(e) => {
                    self.stats.decode_errors += 1;
                    tracing::warn!(vm = %self.vm_id, "{}: cannot decode at seq {}: {}", e.file, e.seq, e.reason);
                }
            }
            let mut json = serde_json::to_string(&event).expect("events serialize");
            if json.len() > changelog::log::MAX_SEMANTIC_LEN {
                let (seq, ts_ns, hlc) = match &event {
                    SemanticEvent::Change(c) => (c.seq, c.ts_ns, c.hlc),
                    SemanticEvent::DecodeError(e) => (e.seq, e.ts_ns, e.hlc),
                };
                json = serde_json::to_string(&SemanticEvent::DecodeError(DecodeErrorEvent {
                    vm: self.vm_id.clone(),
                    seq,
                    ts_ns,
                    hlc,
                    file: "(oversized change)".into(),
                    format: crate::semantic::Format::Sqlite,
                    reason: "a single change exceeded the record size limit".into(),
                }))
                .expect("events serialize");
            }
            self.append(RecordKind::Semantic { json })?;
            self.dirty = true;
        }
        Ok(())
    }

    /// Waits for the decoding thread to finish and appends what it found.
    pub(super) fn finish_lifting(&mut self) -> Result<(), TapError> {
        self.lift_jobs.take();
        if let Some(worker) = self.lift_worker.take() {
            let _ = worker.join();
        }
        while let Ok(events) = self.lift_events.try_recv() {
            self.append_events(events)?;
        }
        Ok(())
    }
}
