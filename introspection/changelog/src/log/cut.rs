//! Cutting a log back to its last sync point: after a recording failure
//! (records after the point may name blocks that never reached the store)
//! and at an open that finds such records (see `crate::tap`).

use std::fs::{self, OpenOptions};
use std::path::Path;

use super::error::{io_err, LogError};
use super::frame::FrameBuilder;
use super::index;
use super::open::{find_tail, OpenReport};
use super::seal::{SealState, SEQ_RESERVE};
use super::segment::{idx_path, list_segments, seg_path};
use super::writer::LogWriter;

/// What [`LogWriter::cut_to_sync_point`] removed.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CutReport {
    /// The seqs removed or discarded (first, last), written or buffered
    /// after the sync point. They are never handed out again.
    pub seqs: (u64, u64),
    /// Bytes of segment data removed.
    pub bytes: u64,
    /// The seq the log now ends at.
    pub last_seq: u64,
}

impl LogWriter {
    /// Removes every record after the last sync point (the last
    /// [`LogWriter::sync`], or the sync point a crashed writer left): the
    /// records not yet committed are discarded, committed frames after the
    /// point are cut from the segments. The seqs removed stay used: the next
    /// record starts above them, after a declared gap. `None` when there was
    /// nothing after the point.
    pub fn cut_to_sync_point(&mut self) -> Result<Option<CutReport>, LogError> {
        let point = self.seal.state;
        let handed_out = self.next_seq();
        if handed_out <= point.next_seq {
            return Ok(None);
        }
        if handed_out > point.seq_limit {
            // Buffered records got seqs above the durable limit: raise it
            // before they vanish, so no later writer hands them out again.
            let state = SealState {
                seq_limit: handed_out + SEQ_RESERVE,
                ..point
            };
            self.seal.write(state)?;
        }
        let mut bytes = 0;
        for no in list_segments(&self.dir)? {
            let path = seg_path(&self.dir, no);
            if no > point.seg_no {
                bytes += fs::metadata(&path).map_or(0, |m| m.len());
                fs::remove_file(&path).map_err(io_err("removing", &path))?;
                index::remove(&idx_path(&self.dir, no))?;
            } else if no == point.seg_no {
                let f = OpenOptions::new().write(true).open(&path);
                let f = f.map_err(io_err("opening to cut", &path))?;
                let len = f.metadata().map_err(io_err("reading the size of", &path))?;
                bytes += len.len().saturating_sub(point.end);
                f.set_len(point.end).map_err(io_err("cutting", &path))?;
                f.sync_all().map_err(io_err("fsync of", &path))?;
            }
        }
        sync_dir(&self.dir)?;
        // Re-read the tail as an open would, to learn its index and chain.
        let mut nos = list_segments(&self.dir)?;
        let protect = SealState {
            sealed: true,
            ..point
        };
        let mut report = OpenReport::default();
        let tail = find_tail(
            &self.dir,
            &mut nos,
            &self.vm_id,
            &self.opts,
            Some(protect),
            &mut report,
        )?;
        self.seg = match tail.seg_no {
            0 => None,
            no => {
                let path = seg_path(&self.dir, no);
                let f = OpenOptions::new().read(true).write(true).open(&path);
                Some(f.map_err(io_err("opening for append", &path))?)
            }
        };
        self.seg_no = tail.seg_no;
        self.seg_len = tail.len;
        self.seg_version = tail.version;
        self.index = tail.index;
        // The index is a cache: with no room to rewrite it (a full disk is
        // why we are cutting), remove it; the next open rebuilds it.
        if self.store_index().is_err() && self.seg.is_some() {
            index::remove(&idx_path(&self.dir, self.seg_no))?;
        }
        self.frame = FrameBuilder::after_gap(handed_out.max(point.seq_limit), tail.chain);
        self.data_sync_needed = false;
        self.dir_sync_needed = false;
        self.seal_stale = false;
        Ok(Some(CutReport {
            seqs: (point.next_seq, handed_out - 1),
            bytes,
            last_seq: tail.next_seq - 1,
        }))
    }

    /// Ends a writer whose caller failed: cuts the log back to its last sync
    /// point (nothing after it is trusted) and leaves it unsealed, so the
    /// next open knows a failed run came before. Returns what was cut.
    pub fn abandon(mut self) -> Result<Option<CutReport>, LogError> {
        let cut = self.cut_to_sync_point();
        self.closed = true;
        cut
    }
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync of directory", dir))
}
