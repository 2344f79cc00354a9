//! Walks frames in seq order across segments, checking each frame and the
//! links between them (seq continuity, CRC chain, time order, vm id).
//! Shared by the reader, `verify` and the writer's tail check, which differ
//! only in what they do with a bad frame.

use std::path::{Path, PathBuf};

use super::error::LogError;
use super::frame::{decode_frame, FrameError, FrameHeader};
use super::record::Record;
use super::segment::{
    list_segments, open_segment, seg_path, HeaderState, Probe, SegmentFile, SEG_HEADER_LEN,
};
use crate::hlc::Hlc;

/// How a frame is bad, which decides whether it can be a torn tail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BadKind {
    /// The file ends inside the frame (or segment header): a torn or
    /// in-progress write at the end of the last segment.
    Incomplete,
    /// Bytes fail their CRC: damage, or a torn write if nothing valid follows.
    Damaged,
    /// CRC-correct but inconsistent: never a torn write.
    Invalid,
    /// A record type this build does not read.
    UnknownType(u8),
}

#[derive(Clone, Debug)]
pub(crate) struct BadFrame {
    pub path: PathBuf,
    pub offset: u64,
    pub seq: Option<u64>,
    pub reason: String,
    pub kind: BadKind,
    /// The last seq the bad frame's header names, when the header is valid
    /// (a cut torn frame's seqs were handed out: they are never reused).
    pub torn_last_seq: Option<u64>,
}

impl BadFrame {
    pub fn into_error(self) -> LogError {
        match self.kind {
            BadKind::UnknownType(code) => LogError::UnknownRecordType {
                path: self.path,
                offset: self.offset,
                seq: self.seq.unwrap_or(0),
                code,
            },
            _ => LogError::Corrupt {
                path: self.path,
                offset: self.offset,
                seq: self.seq,
                reason: self.reason,
            },
        }
    }
}

/// Turns a frame decode failure at `offset` of `path` into a `BadFrame`.
pub(crate) fn frame_bad(e: FrameError, path: &Path, offset: u64, first_seq: u64) -> BadFrame {
    let (seq, reason, kind) = match e {
        FrameError::Damaged(r) => (first_seq, r, BadKind::Damaged),
        FrameError::Invalid { seq, reason } => (seq, reason, BadKind::Invalid),
        FrameError::UnknownType { seq, code } => (
            seq,
            format!("unknown record type code {code}"),
            BadKind::UnknownType(code),
        ),
    };
    BadFrame {
        path: path.to_path_buf(),
        offset,
        seq: Some(seq),
        reason,
        kind,
        torn_last_seq: None,
    }
}

pub(crate) enum Step {
    /// A good frame; `records` is `None` when it was skipped undecoded.
    Frame {
        offset: u64,
        header: FrameHeader,
        records: Option<Vec<Record>>,
    },
    /// Moved on to the start of segment `no`.
    NewSegment(u32),
    /// No more frames.
    End,
    /// A bad frame (or segment header); the cursor does not move past it.
    Bad(BadFrame),
}

pub(crate) struct Cursor {
    dir: PathBuf,
    vm_id: String,
    seg_no: u32,
    seg: SegmentFile,
    offset: u64,
    expected_seq: Option<u64>,
    chain: Option<u32>,
    last_ts: u64,
    /// The last decoded record's HLC stamp (`None` after a skipped frame).
    last_hlc: Option<Hlc>,
    /// The segment header starts after a seq gap: its first frame must
    /// declare it.
    need_gap: bool,
}

impl Cursor {
    /// At the first frame of segment `seg_no`, linked to its header.
    pub fn at_segment_start(dir: &Path, seg_no: u32, seg: SegmentFile) -> Cursor {
        let (expected, chain) = (seg.header.first_seq, seg.header.prev_crc);
        Cursor {
            dir: dir.to_path_buf(),
            vm_id: seg.header.vm_id.clone(),
            seg_no,
            seg,
            offset: SEG_HEADER_LEN,
            expected_seq: Some(expected),
            chain: Some(chain),
            last_ts: 0,
            last_hlc: None,
            need_gap: false,
        }
    }

    /// At a frame boundary inside a segment, taking the frame found there
    /// on trust for its seq and chain (its header CRC still applies).
    pub fn at_offset(dir: &Path, seg_no: u32, seg: SegmentFile, offset: u64) -> Cursor {
        let mut c = Cursor::at_segment_start(dir, seg_no, seg);
        if offset != SEG_HEADER_LEN {
            c.offset = offset;
            c.expected_seq = None;
            c.chain = None;
        }
        c
    }

    pub fn segment(&self) -> &SegmentFile {
        &self.seg
    }

    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The seq of the next frame (known once a frame or header was seen).
    pub fn next_seq(&self) -> Option<u64> {
        self.expected_seq
    }

    /// The chain CRC after the last decoded record.
    pub fn chain(&self) -> Option<u32> {
        self.chain
    }

    fn bad(&self, kind: BadKind, reason: String) -> Step {
        Step::Bad(BadFrame {
            path: self.seg.path.clone(),
            offset: self.offset,
            seq: self.expected_seq,
            reason,
            kind,
            torn_last_seq: None,
        })
    }

    /// Moves to the next frame. Frames whose records all come before
    /// `skip_before` are checked by header only and not decoded.
    pub fn step(&mut self, skip_before: u64) -> Result<Step, LogError> {
        let h = match self.seg.probe(self.offset)? {
            Probe::End => return self.next_segment(),
            Probe::Partial => return self.incomplete("the file ends inside a frame header".into()),
            Probe::Truncated(h) => {
                let r = format!(
                    "the frame from seq {} runs past the end of the file",
                    h.first_seq
                );
                return Ok(match self.incomplete(r)? {
                    Step::Bad(mut b) => {
                        b.torn_last_seq = Some(h.last_seq());
                        Step::Bad(b)
                    }
                    other => other,
                });
            }
            Probe::Bad(r) => {
                return Ok(self.bad(BadKind::Damaged, format!("bad frame header: {r}")))
            }
            Probe::Whole(h) => h,
        };
        // A frame may start above the expected seq only when it declares
        // the gap (seqs lost with a crash's tail); the CRC chain still links.
        let gap_ok = |want: u64| h.seq_gap() && h.first_seq > want;
        if let Some(want) = self
            .expected_seq
            .filter(|&s| s != h.first_seq && !gap_ok(s))
        {
            let r = format!("frame starts at seq {}, expected seq {want}", h.first_seq);
            return Ok(self.bad(BadKind::Invalid, r));
        }
        if self.need_gap && !h.seq_gap() {
            let r = "segment starts after a seq gap its first frame does not declare".into();
            return Ok(self.bad(BadKind::Invalid, r));
        }
        if self.chain.is_some_and(|c| c != h.prev_crc) {
            let r = "frame does not continue the previous record's CRC chain".into();
            return Ok(self.bad(BadKind::Invalid, r));
        }
        if h.first_ts < self.last_ts {
            return Ok(self.bad(BadKind::Invalid, "frame time goes backwards".into()));
        }
        let offset = self.offset;
        let records = if h.last_seq() < skip_before {
            self.chain = None;
            self.last_hlc = None;
            None
        } else {
            let stored = self.seg.read_stored(offset, &h)?;
            match decode_frame(&h, &stored, self.seg.header.version) {
                Ok((records, _)) if self.hlc_goes_back(&records) => {
                    let r = "frame's HLC stamps go backwards".into();
                    return Ok(self.bad(BadKind::Invalid, r));
                }
                Ok((records, chain)) => {
                    self.chain = Some(chain);
                    self.last_hlc = records.last().map(Record::hlc);
                    Some(records)
                }
                Err(e) => {
                    let mut b = frame_bad(e, &self.seg.path, offset, h.first_seq);
                    b.torn_last_seq = Some(h.last_seq());
                    return Ok(Step::Bad(b));
                }
            }
        };
        self.need_gap = false;
        self.offset += h.total_len();
        self.expected_seq = Some(h.last_seq() + 1);
        self.last_ts = h.last_ts;
        Ok(Step::Frame {
            offset,
            header: h,
            records,
        })
    }

    /// The first of `records` orders before the record read before them
    /// (within a frame, `decode_frame` checks the order).
    fn hlc_goes_back(&self, records: &[Record]) -> bool {
        let first = records.first().map(Record::hlc);
        matches!((self.last_hlc, first), (Some(last), Some(first)) if first < last)
    }

    /// Like [`Cursor::step`], but an unfinished frame that the seal file
    /// says is durable is probed once more: a live writer may have finished
    /// and synced it between the probe and the seal read.
    pub fn step_settled(&mut self, skip_before: u64) -> Result<Step, LogError> {
        let step = self.step(skip_before)?;
        if let Step::Bad(b) = &step {
            if b.kind == BadKind::Incomplete
                && super::seal::protects(&self.dir, &b.path, b.offset)?.is_some()
            {
                return self.step(skip_before);
            }
        }
        Ok(step)
    }

    fn later_segment_exists(&self, after: u32) -> Result<bool, LogError> {
        Ok(list_segments(&self.dir)?.iter().any(|&n| n > after))
    }

    fn incomplete(&self, reason: String) -> Result<Step, LogError> {
        if self.later_segment_exists(self.seg_no)? {
            let r = format!("{reason}, but later segments exist");
            return Ok(self.bad(BadKind::Invalid, r));
        }
        Ok(self.bad(BadKind::Incomplete, reason))
    }

    fn next_segment(&mut self) -> Result<Step, LogError> {
        let no = self.seg_no + 1;
        let path = seg_path(&self.dir, no);
        let at_new = |kind, reason: String| {
            Step::Bad(BadFrame {
                path: path.clone(),
                offset: 0,
                seq: self.expected_seq,
                reason,
                kind,
                torn_last_seq: None,
            })
        };
        let (file, header) = match open_segment(&path)? {
            None if self.later_segment_exists(no)? => {
                let r = format!("segment {no:08}.seg is missing but later segments exist");
                return Ok(at_new(BadKind::Invalid, r));
            }
            None => return Ok(Step::End),
            Some((_, HeaderState::Short)) => {
                let r = "the file ends inside the segment header".to_string();
                let kind = if self.later_segment_exists(no)? {
                    BadKind::Invalid
                } else {
                    BadKind::Incomplete
                };
                return Ok(at_new(kind, r));
            }
            Some((_, HeaderState::Bad(r))) => return Ok(at_new(BadKind::Damaged, r)),
            Some((file, HeaderState::Valid(h))) => (file, h),
        };
        let problem = if header.vm_id != self.vm_id {
            Some(format!(
                "segment is for VM {:?}, the log for {:?}",
                header.vm_id, self.vm_id
            ))
        } else if self.expected_seq.is_some_and(|s| s > header.first_seq) {
            Some(format!(
                "segment starts at seq {}, expected seq {}",
                header.first_seq,
                self.expected_seq.unwrap_or(0)
            ))
        } else if self.chain.is_some_and(|c| c != header.prev_crc) {
            Some("segment does not continue the previous record's CRC chain".into())
        } else {
            None
        };
        if let Some(r) = problem {
            return Ok(at_new(BadKind::Invalid, r));
        }
        self.need_gap = self.expected_seq.is_some_and(|s| s < header.first_seq);
        self.expected_seq = Some(header.first_seq);
        self.chain = Some(header.prev_crc);
        self.seg = SegmentFile { path, file, header };
        self.seg_no = no;
        self.offset = SEG_HEADER_LEN;
        Ok(Step::NewSegment(no))
    }
}
