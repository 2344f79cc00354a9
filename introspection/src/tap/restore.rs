//! The block tap of a restored VM: the guest's hinted files a snapshot
//! saved, taken over with the restored disk as the decoder's baseline
//! (see `lift/restore.rs`).
use std::os::unix::fs::FileExt;

use super::{BlockTap, JobKind, LiftJob, BLOCK};
use crate::lift::{FileTable, HintError, Lifter};

impl BlockTap {
    /// The guest's hinted files now, for a snapshot's manifest.
    pub fn guest_files(&self) -> Vec<snapshot::GuestFile> {
        self.lifter.table.to_guest_files()
    }

    /// Takes over the hinted files a snapshot saved (the restored guest
    /// will not hint them again) and their state on the restored disk as
    /// the decoder's baseline. Returns the files whose state is unknown
    /// and why (their next consistent state becomes the baseline).
    pub fn restore_guest_files(
        &mut self,
        files: &[snapshot::GuestFile],
    ) -> Result<Vec<(String, String)>, HintError> {
        let disk_bytes = self.state.num_blocks() * BLOCK as u64;
        let table = FileTable::from_guest_files(disk_bytes, files)?;
        self.lifter = Lifter::restored(table);
        // Their baseline is the restored disk, not the log's past.
        self.baselined = self.lifter.table.files().map(|(id, _)| *id).collect();
        let image = &self.image;
        let mut read = |offset: u64, len: usize| {
            let mut buf = vec![0u8; len];
            image.read_exact_at(&mut buf, offset).map(|()| buf)
        };
        let mut versions = self.lifter.baseline(&mut read);
        // The restored disk is the snapshot's, not a barrier of this log.
        let state = &self.state;
        for v in &mut versions {
            v.fill_reads(None, &|b| state.block_hash(b));
        }
        let unknown = versions
            .iter()
            .filter_map(|v| v.bytes.as_ref().err().map(|e| (v.file.clone(), e.clone())))
            .collect();
        let job = LiftJob {
            vm: self.vm_id.clone(),
            seq: self.log.last_seq(),
            hlc: self.log.last_hlc(),
            versions,
            kind: JobKind::Seed,
        };
        if let Some(jobs) = &self.lift_jobs {
            let _ = jobs.send(job);
        }
        Ok(unknown)
    }
}
