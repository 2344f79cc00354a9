//! `LogReader`: records from a seq on, time -> seq lookup, frame listing.
//! Read-only: indexes are loaded or rebuilt in memory, never written.

use std::path::{Path, PathBuf};

use super::cursor::{frame_bad, BadKind, Cursor, Step};
use super::error::LogError;
use super::frame::decode_frame;
use super::index::{load_or_rebuild, IndexEntry, SegmentIndex, DEFAULT_INDEX_INTERVAL};
use super::record::Record;
use super::segment::{
    idx_path, list_segments, open_segment, seg_path, HeaderState, Probe, SegmentFile,
    SEG_HEADER_LEN,
};

struct SegInfo {
    no: u32,
    first_seq: u64,
    index: SegmentIndex,
}

/// One segment file of a log and the seqs it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentSpan {
    pub no: u32,
    pub path: PathBuf,
    pub index_path: PathBuf,
    pub first_seq: u64,
    /// `first_seq - 1` for a segment without records.
    pub last_seq: u64,
}

/// A read-only view of a change log, as of when it was opened (iterators
/// also see records committed since, up to the first incomplete frame).
pub struct LogReader {
    dir: PathBuf,
    vm_id: Option<String>,
    segments: Vec<SegInfo>,
}

/// One frame, as listed by [`LogReader::frames`] (header facts only).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct FrameInfo {
    pub segment: PathBuf,
    pub offset: u64,
    pub first_seq: u64,
    pub count: u32,
    pub compressed: bool,
    pub stored_len: u32,
    pub raw_len: u32,
    pub first_ts_ns: u64,
    pub last_ts_ns: u64,
}

impl std::fmt::Debug for LogReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogReader")
            .field("dir", &self.dir)
            .field("vm_id", &self.vm_id)
            .field("segments", &self.segments.len())
            .field("first_seq", &self.first_seq())
            .field("last_seq", &self.last_seq())
            .finish()
    }
}

impl LogReader {
    /// Opens the log in `dir`. A last segment shorter than its header (being
    /// created, or torn) is ignored; any other bad segment header is an error.
    pub fn open(dir: impl AsRef<Path>) -> Result<LogReader, LogError> {
        let dir = dir.as_ref().to_path_buf();
        let nos = list_segments(&dir)?;
        let mut segments = Vec::with_capacity(nos.len());
        let mut vm_id = None;
        for (i, &no) in nos.iter().enumerate() {
            let path = seg_path(&dir, no);
            let seg = match open_segment(&path)? {
                None => continue,
                Some((_, HeaderState::Short)) if i + 1 == nos.len() => continue,
                Some((file, HeaderState::Valid(header))) => SegmentFile { path, file, header },
                Some((_, HeaderState::Short)) => return Err(bad_header(path, "cut short".into())),
                Some((_, HeaderState::Bad(r))) => return Err(bad_header(path, r)),
            };
            let ipath = idx_path(&dir, no);
            let (index, _) = load_or_rebuild(&seg, &ipath, DEFAULT_INDEX_INTERVAL)?;
            vm_id.get_or_insert_with(|| seg.header.vm_id.clone());
            segments.push(SegInfo {
                no,
                first_seq: seg.header.first_seq,
                index,
            });
        }
        Ok(LogReader {
            dir,
            vm_id,
            segments,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The VM the log belongs to (`None` for an empty log).
    pub fn vm_id(&self) -> Option<&str> {
        self.vm_id.as_deref()
    }

    /// Number of segment files.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Each segment file with the seqs it holds (as of opening), oldest
    /// first.
    pub fn segment_spans(&self) -> Vec<SegmentSpan> {
        self.segments
            .iter()
            .map(|s| SegmentSpan {
                no: s.no,
                path: seg_path(&self.dir, s.no),
                index_path: idx_path(&self.dir, s.no),
                first_seq: s.first_seq,
                last_seq: s.index.next_seq - 1,
            })
            .collect()
    }

    /// Whether records before [`Self::first_seq`] were removed (`vmm store
    /// retain` deletes whole old segments), rather than never written.
    pub fn is_trimmed(&self) -> bool {
        self.segments.first().is_some_and(|s| s.no > 1)
    }

    /// First seq held (`None` for an empty log).
    pub fn first_seq(&self) -> Option<u64> {
        self.segments.first().map(|s| s.first_seq)
    }

    /// Last seq in whole frames as of opening, up to the first unreadable
    /// frame header (0 for an empty log).
    pub fn last_seq(&self) -> u64 {
        self.segments.last().map_or(0, |s| s.index.next_seq - 1)
    }

    /// All records, in seq order.
    pub fn iter(&self) -> Result<RecordIter, LogError> {
        self.iter_from(self.first_seq().unwrap_or(1))
    }

    /// Records from `seq` on (an empty iterator past the end; from the first
    /// record when `seq` is below a log that starts after a gap). Seeks with
    /// the index; every frame read is checked. The iterator yields an error
    /// at the first bad frame and then ends; it ends quietly at a frame the
    /// writer has not finished (or a torn tail not yet cut by an open), but
    /// not at one before the log's sealed end or sync point: that is damage.
    pub fn iter_from(&self, seq: u64) -> Result<RecordIter, LogError> {
        let mut seq = seq.max(1);
        let Some(first) = self.first_seq() else {
            return Ok(RecordIter::empty());
        };
        // A log whose very first segment starts above seq 1 began after a
        // declared gap (its first records were lost with a crash before
        // anything was durable): the seqs below never existed in it.
        if seq < first && self.segments[0].no == 1 {
            seq = first;
        }
        if seq < first {
            return Err(LogError::SeqNotFound {
                dir: self.dir.clone(),
                seq,
                first,
            });
        }
        let i = self.segments.partition_point(|s| s.first_seq <= seq) - 1;
        let info = &self.segments[i];
        let (seg, offset) = self.locate(info, info.index.lookup_seq(seq))?;
        Ok(RecordIter {
            cursor: Some(Cursor::at_offset(&self.dir, info.no, seg, offset)),
            dir: self.dir.clone(),
            skip_before: seq,
            pending: Vec::new().into_iter(),
        })
    }

    /// The last seq whose `ts_ns <= ts_ns`; `None` if every record is later
    /// (or the log is empty).
    pub fn find_seq_at_time(&self, ts_ns: u64) -> Result<Option<u64>, LogError> {
        let starts_by = |s: &SegInfo| s.index.entries.first().is_some_and(|e| e.first_ts <= ts_ns);
        let Some(info) = self.segments.iter().rev().find(|s| starts_by(s)) else {
            return Ok(None);
        };
        let (seg, mut offset) = self.locate(info, info.index.lookup_ts(ts_ns))?;
        let mut best = None;
        loop {
            match seg.probe(offset)? {
                Probe::Whole(h) if h.first_ts > ts_ns => break,
                Probe::Whole(h) if h.last_ts <= ts_ns => {
                    best = Some(h.last_seq());
                    offset += h.total_len();
                }
                Probe::Whole(h) => {
                    let stored = seg.read_stored(offset, &h)?;
                    let (records, _) = decode_frame(&h, &stored, seg.header.version)
                        .map_err(|e| frame_bad(e, &seg.path, offset, h.first_seq).into_error())?;
                    let hit = records.iter().rev().find(|r| r.ts_ns <= ts_ns);
                    best = hit.map(|r| r.seq).or(best);
                    break;
                }
                Probe::Bad(reason) => {
                    return Err(LogError::Corrupt {
                        path: seg.path,
                        offset,
                        seq: best.map(|s| s + 1),
                        reason: format!("bad frame header: {reason}"),
                    })
                }
                Probe::End | Probe::Partial | Probe::Truncated(_) => break,
            }
        }
        Ok(best)
    }

    /// Every whole frame's header facts, in order, up to the first frame
    /// header that does not read (frame data is not checked: see `verify`).
    pub fn frames(&self) -> Result<Vec<FrameInfo>, LogError> {
        let mut out = Vec::new();
        for info in &self.segments {
            let seg = SegmentFile::open(&seg_path(&self.dir, info.no))?;
            let mut offset = SEG_HEADER_LEN;
            while let Probe::Whole(h) = seg.probe(offset)? {
                out.push(FrameInfo {
                    segment: seg.path.clone(),
                    offset,
                    first_seq: h.first_seq,
                    count: h.count,
                    compressed: h.compressed(),
                    stored_len: h.stored_len,
                    raw_len: h.raw_len,
                    first_ts_ns: h.first_ts,
                    last_ts_ns: h.last_ts,
                });
                offset += h.total_len();
            }
        }
        Ok(out)
    }

    /// Opens a segment and checks an index entry against it: the frame at
    /// the entry's offset must start at its seq, else the segment is read
    /// from its first frame.
    fn locate(
        &self,
        info: &SegInfo,
        entry: Option<&IndexEntry>,
    ) -> Result<(SegmentFile, u64), LogError> {
        let seg = SegmentFile::open(&seg_path(&self.dir, info.no))?;
        let offset = match entry {
            Some(e) => match seg.probe(e.offset)? {
                Probe::Whole(h) | Probe::Truncated(h) if h.first_seq == e.first_seq => e.offset,
                _ => SEG_HEADER_LEN,
            },
            None => SEG_HEADER_LEN,
        };
        Ok((seg, offset))
    }
}

fn bad_header(path: PathBuf, reason: String) -> LogError {
    LogError::Corrupt {
        path,
        offset: 0,
        seq: None,
        reason: format!("bad segment header: {reason}"),
    }
}

/// Records in seq order; see [`LogReader::iter_from`].
pub struct RecordIter {
    cursor: Option<Cursor>,
    dir: PathBuf,
    skip_before: u64,
    pending: std::vec::IntoIter<Record>,
}

impl RecordIter {
    fn empty() -> RecordIter {
        RecordIter {
            cursor: None,
            dir: PathBuf::new(),
            skip_before: 0,
            pending: Vec::new().into_iter(),
        }
    }
}

impl Iterator for RecordIter {
    type Item = Result<Record, LogError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(r) = self.pending.next() {
                return Some(Ok(r));
            }
            let cursor = self.cursor.as_mut()?;
            let step = cursor.step_settled(self.skip_before);
            let failure = match step {
                Ok(Step::Frame {
                    records: Some(mut records),
                    ..
                }) => {
                    records.retain(|r| r.seq >= self.skip_before);
                    self.pending = records.into_iter();
                    continue;
                }
                Ok(Step::Frame { records: None, .. } | Step::NewSegment(_)) => continue,
                Ok(Step::End) => None,
                // An unfinished frame ends the records quietly, unless the
                // seal says the log ends (durably) after it: then it is damage.
                Ok(Step::Bad(b)) if b.kind == BadKind::Incomplete => {
                    match super::seal::protects(&self.dir, &b.path, b.offset) {
                        Ok(None) => None,
                        Ok(Some(why)) => {
                            let mut b = b;
                            b.reason = format!("{}; {why}", b.reason);
                            Some(b.into_error())
                        }
                        Err(e) => Some(e),
                    }
                }
                Ok(Step::Bad(b)) => Some(b.into_error()),
                Err(e) => Some(e),
            };
            self.cursor = None;
            return failure.map(Err);
        }
    }
}
