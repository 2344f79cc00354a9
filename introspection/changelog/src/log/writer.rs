//! `LogWriter`: appends records, batches them into frames, writes and syncs
//! segments. Opening (tail recovery) is in `open.rs`.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, LogError};
use super::frame::{FrameBuilder, FrameHeader};
use super::index::SegmentIndex;
use super::record::RecordKind;
use super::seal::{SealFile, SealState, SEQ_RESERVE};
use super::segment::{idx_path, seg_path, SegmentHeader, FORMAT_VERSION, SEG_HEADER_LEN};
use crate::hlc::{Hlc, HlcClock, NodeId};

/// Tuning for a [`LogWriter`]. Readers need none of it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// Start a new segment when the next frame would make the current one
    /// larger than this (a segment always holds at least one frame).
    pub segment_max_bytes: u64,
    /// `append` commits the pending frame by itself once its raw records
    /// reach this size (1 byte ..= 16 MiB).
    pub frame_max_bytes: usize,
    /// One index entry per this many bytes of segment (at least one per segment).
    pub index_interval_bytes: u64,
    /// Try zstd on each frame (kept only when smaller).
    pub compress: bool,
    /// zstd level for frames.
    pub zstd_level: i32,
    /// The host the writer's HLC stamps name (default: [`NodeId::local`],
    /// which `$VMM_NODE_ID` overrides).
    pub node: NodeId,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_max_bytes: 64 << 20,
            frame_max_bytes: 1 << 20,
            index_interval_bytes: 64 << 10,
            compress: true,
            // Level 1: semantic records compress almost as well, and frames
            // are compressed on the barrier's path.
            zstd_level: 1,
            node: NodeId::local(),
        }
    }
}

impl LogOptions {
    pub(crate) fn check(&self) -> Result<(), LogError> {
        let bad = |m: &str| Err(LogError::InvalidArgument(m.to_string()));
        if self.segment_max_bytes <= SEG_HEADER_LEN {
            return bad("segment_max_bytes must be larger than the 96-byte segment header");
        }
        if self.frame_max_bytes == 0 || self.frame_max_bytes > 16 << 20 {
            return bad("frame_max_bytes must be 1 ..= 16 MiB");
        }
        if self.index_interval_bytes == 0 {
            return bad("index_interval_bytes must be at least 1");
        }
        if !zstd::compression_level_range().contains(&self.zstd_level) {
            return bad("zstd_level is outside zstd's range");
        }
        Ok(())
    }
}

/// The one writer of a VM's change log (it holds the directory's `LOCK`).
/// See the `log` module doc for the durability contract. Dropping it
/// stores the index of what was committed and discards records not yet
/// committed (as a crash would: a caller that failed half-way must not have
/// its buffered records written for it); call [`LogWriter::close`] to
/// commit, sync, seal and see errors.
pub struct LogWriter {
    pub(crate) dir: PathBuf,
    pub(crate) vm_id: String,
    pub(crate) opts: LogOptions,
    pub(crate) _lock: File,
    /// Current segment number; 0 before the first segment exists.
    pub(crate) seg_no: u32,
    pub(crate) seg: Option<File>,
    pub(crate) seg_len: u64,
    /// Format version of the current segment: frames are appended to it
    /// only when it is [`FORMAT_VERSION`] (an older log gets a new segment).
    pub(crate) seg_version: u16,
    pub(crate) index: SegmentIndex,
    pub(crate) frame: FrameBuilder,
    /// Stamps records; its last stamp is the last record's (or after it).
    pub(crate) clock: HlcClock,
    pub(crate) data_sync_needed: bool,
    pub(crate) dir_sync_needed: bool,
    pub(crate) poisoned: Option<String>,
    pub(crate) closed: bool,
    /// The durable sync point, seal flag and seq limit (`SEAL`).
    pub(crate) seal: SealFile,
    /// Frames were written since the seal file last named the sync point.
    pub(crate) seal_stale: bool,
}

impl LogWriter {
    /// Appends a record stamped by the writer's hybrid logical clock from
    /// the host clock ([`store::clock::now_ns`]): a clock that stepped back
    /// holds the time and counts the stamp's logical part, so stamps (and
    /// `ts_ns`) never go backwards. Returns its seq. Buffered only: see
    /// [`LogWriter::commit`] and [`LogWriter::sync`].
    pub fn append(&mut self, kind: RecordKind) -> Result<u64, LogError> {
        self.append_at(store::clock::now_ns().max(self.clock.last_physical()), kind)
    }

    /// Appends a record at the given time (for imports and tests), stamped
    /// by this writer's clock; fails if it is before the previous record's.
    /// On error nothing was appended.
    pub fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError> {
        self.check_append(&kind)?;
        let last_ts_ns = self.clock.last_physical();
        if ts_ns < last_ts_ns {
            return Err(LogError::TimeWentBackwards { ts_ns, last_ts_ns });
        }
        self.commit_if_full()?;
        let hlc = self.clock.tick(ts_ns);
        Ok(self.frame.push(hlc, &kind))
    }

    /// Appends a copy of a record from another log with its stamp kept
    /// (`vmm log push` copies this way); fails if `hlc` orders before the
    /// previous record's. On error nothing was appended.
    pub fn append_stamped(&mut self, hlc: Hlc, kind: RecordKind) -> Result<u64, LogError> {
        self.check_append(&kind)?;
        if !self.clock.accepts(hlc) {
            return Err(LogError::ClockWentBackwards {
                hlc,
                last: self.clock.last().unwrap_or_default(),
            });
        }
        self.commit_if_full()?;
        self.clock.observe(hlc);
        Ok(self.frame.push(hlc, &kind))
    }

    /// The stamp of the last record appended, or of the log's last record
    /// when nothing was appended since it was opened (`None`: empty log).
    pub fn last_hlc(&self) -> Option<Hlc> {
        self.clock.last()
    }

    fn check_append(&self, kind: &RecordKind) -> Result<(), LogError> {
        self.check_poisoned()?;
        kind.validate().map_err(LogError::InvalidRecord)
    }

    fn commit_if_full(&mut self) -> Result<(), LogError> {
        if self.frame.raw_len() >= self.opts.frame_max_bytes {
            self.commit()?;
        }
        Ok(())
    }

    /// Writes the pending records as one frame (one `write`). They are then
    /// visible to readers, but not durable until [`LogWriter::sync`].
    pub fn commit(&mut self) -> Result<(), LogError> {
        self.check_poisoned()?;
        if self.frame.is_empty() {
            return Ok(());
        }
        let (h, bytes) = self
            .frame
            .build(self.opts.compress, self.opts.zstd_level)
            .map_err(io_err("compressing a frame for", &self.dir))?;
        if h.last_seq() >= self.seal.state.seq_limit {
            // Never let a seq reach the disk before the limit covering it
            // is durable: a writer after a crash starts above it.
            let state = SealState {
                seq_limit: h.last_seq() + 1 + SEQ_RESERVE,
                ..self.seal.state
            };
            self.seal.write(state)?;
        }
        let fits = self.seg_len == SEG_HEADER_LEN
            || self.seg_len + bytes.len() as u64 <= self.opts.segment_max_bytes;
        // Frames are in this build's format: never append them to a
        // segment an older version wrote (its header names that version).
        if self.seg.is_some() && fits && self.seg_version == FORMAT_VERSION {
            self.write_frame(&h, &bytes)?;
        } else {
            self.start_segment(&h, &bytes)?;
        }
        self.frame.reset();
        Ok(())
    }

    /// Commits, then makes everything written durable: `fdatasync` of the
    /// segment, and `fsync` of the directory when a segment was created.
    /// A failed sync poisons the writer.
    pub fn sync(&mut self) -> Result<(), LogError> {
        self.commit()?;
        if self.data_sync_needed {
            if let Some(seg) = &self.seg {
                let r = seg.sync_data();
                self.poison_on_err(r, "fdatasync of", seg_path(&self.dir, self.seg_no))?;
            }
            self.data_sync_needed = false;
        }
        if self.dir_sync_needed {
            let r = File::open(&self.dir).and_then(|d| d.sync_all());
            self.poison_on_err(r, "fsync of directory", self.dir.clone())?;
            self.dir_sync_needed = false;
        }
        if self.seal_stale {
            let state = self.sync_point(false);
            if let Err(e) = self.seal.write(state) {
                self.poisoned = Some(format!("recording the sync point failed: {e}"));
                return Err(e);
            }
            self.seal_stale = false;
        }
        Ok(())
    }

    /// Syncs, stores the index and seals the log (a later open then
    /// refuses any damage instead of taking it for a torn tail); reports
    /// what `Drop` would swallow.
    pub fn close(mut self) -> Result<(), LogError> {
        self.sync()?;
        self.store_index()?;
        let state = self.sync_point(true);
        self.seal.write(state)?;
        self.closed = true;
        Ok(())
    }

    /// The seal state for the current end of the log (everything committed).
    fn sync_point(&self, sealed: bool) -> SealState {
        let next_seq = self.frame.next_seq();
        SealState {
            sealed,
            seg_no: self.seg_no,
            end: self.seg_len,
            next_seq,
            seq_limit: self.seal.state.seq_limit.max(next_seq + SEQ_RESERVE),
            ..self.seal.state
        }
    }

    /// True when the next [`LogWriter::append`] will first commit the
    /// pending records as a frame by itself (the frame is full). A caller
    /// that must make something durable before its records reach the log
    /// (the tap stores blocks first) does that before appending.
    pub fn append_commits(&self) -> bool {
        self.frame.raw_len() >= self.opts.frame_max_bytes
    }

    /// The seq the next appended record gets.
    pub fn next_seq(&self) -> u64 {
        self.frame.next_seq()
    }

    /// The seq of the last appended record (0 if the log is empty).
    pub fn last_seq(&self) -> u64 {
        self.frame.next_seq() - 1
    }

    /// Records appended but not yet committed.
    pub fn pending(&self) -> u32 {
        self.frame.count()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    fn check_poisoned(&self) -> Result<(), LogError> {
        match &self.poisoned {
            Some(reason) => Err(LogError::Poisoned {
                dir: self.dir.clone(),
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }

    fn poison_on_err(
        &mut self,
        r: std::io::Result<()>,
        op: &'static str,
        path: PathBuf,
    ) -> Result<(), LogError> {
        r.map_err(|source| {
            self.poisoned = Some(format!("{op} {} failed: {source}", path.display()));
            LogError::Io { op, path, source }
        })
    }

    pub(crate) fn store_index(&self) -> Result<(), LogError> {
        if self.seg.is_some() {
            self.index.store(&idx_path(&self.dir, self.seg_no))?;
        }
        Ok(())
    }

    fn write_frame(&mut self, h: &FrameHeader, bytes: &[u8]) -> Result<(), LogError> {
        let path = seg_path(&self.dir, self.seg_no);
        let seg = self.seg.as_ref().expect("checked by commit");
        if let Err(e) = seg.write_all_at(bytes, self.seg_len) {
            // Cut a partial write back so the segment ends on a whole frame.
            if let Err(e2) = seg.set_len(self.seg_len) {
                self.poisoned = Some(format!(
                    "a failed write left a partial frame in {} that could not be cut ({e2})",
                    path.display()
                ));
            }
            return Err(io_err("writing", &path)(e));
        }
        self.index
            .note_frame(self.seg_len, h, self.opts.index_interval_bytes);
        self.seg_len += bytes.len() as u64;
        self.data_sync_needed = true;
        self.seal_stale = true;
        Ok(())
    }

    /// Seals the current segment (synced, index stored) and starts the next
    /// one with this frame: header and frame in one write.
    fn start_segment(&mut self, h: &FrameHeader, bytes: &[u8]) -> Result<(), LogError> {
        if let Some(old) = &self.seg {
            let r = old.sync_data();
            self.poison_on_err(r, "fdatasync of", seg_path(&self.dir, self.seg_no))?;
            self.data_sync_needed = false;
            self.store_index()?;
        }
        let no = self.seg_no + 1;
        let path = seg_path(&self.dir, no);
        let header = SegmentHeader {
            version: FORMAT_VERSION,
            vm_id: self.vm_id.clone(),
            first_seq: h.first_seq,
            prev_crc: h.prev_crc,
        };
        let mut buf = Vec::with_capacity(SEG_HEADER_LEN as usize + bytes.len());
        buf.extend_from_slice(&header.encode());
        buf.extend_from_slice(bytes);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(io_err("creating", &path))?;
        if let Err(e) = file.write_all_at(&buf, 0) {
            drop(file);
            let _ = std::fs::remove_file(&path);
            return Err(io_err("writing", &path)(e));
        }
        self.seg = Some(file);
        self.seg_no = no;
        self.seg_len = buf.len() as u64;
        self.seg_version = FORMAT_VERSION;
        self.index = SegmentIndex::new(h.first_seq);
        self.index
            .note_frame(SEG_HEADER_LEN, h, self.opts.index_interval_bytes);
        self.data_sync_needed = true;
        self.dir_sync_needed = true;
        self.seal_stale = true;
        Ok(())
    }
}

impl std::fmt::Debug for LogWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogWriter")
            .field("dir", &self.dir)
            .field("vm_id", &self.vm_id)
            .field("segment", &self.seg_no)
            .field("segment_len", &self.seg_len)
            .field("next_seq", &self.next_seq())
            .field("pending", &self.pending())
            .field("poisoned", &self.poisoned)
            .finish()
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        if self.closed || self.poisoned.is_some() {
            return;
        }
        let _ = self.store_index();
    }
}
