//! `verify`: walk a whole log and report the first problem.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::cursor::{BadFrame, BadKind, Cursor, Step};
use super::error::LogError;
use super::record::Record;
use super::segment::{
    find_valid_frame, list_segments, open_segment, seg_path, HeaderState, SegmentFile,
};

/// What [`verify`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub segments: usize,
    pub frames: u64,
    pub compressed_frames: u64,
    /// Records read and checked before the first problem (if any).
    pub records: u64,
    pub first_seq: Option<u64>,
    /// Last good seq (0 if none).
    pub last_seq: u64,
    /// The first problem; `None` means the whole log checked out.
    pub problem: Option<VerifyProblem>,
}

impl VerifyReport {
    pub fn is_ok(&self) -> bool {
        self.problem.is_none()
    }
}

/// Where a log first goes wrong.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct VerifyProblem {
    pub segment: PathBuf,
    /// Offset of the bad frame (or 0 for a segment header).
    pub offset: u64,
    /// The record at fault, or the first seq of the bad frame, when known.
    pub seq: Option<u64>,
    pub reason: String,
    /// The problem is a torn tail that [`crate::log::LogWriter::open`] would
    /// cut off (nothing valid follows it); otherwise the log is damaged.
    pub torn_tail: bool,
}

impl fmt::Display for VerifyProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} at offset {}", self.segment.display(), self.offset)?;
        if let Some(seq) = self.seq {
            write!(f, " (seq {seq})")?;
        }
        write!(f, ": {}", self.reason)?;
        if self.torn_tail {
            write!(f, " [torn tail: opening the log for append cuts it off]")?;
        }
        Ok(())
    }
}

/// Checks the whole log in `dir`: segment headers, frame and record CRCs,
/// the CRC chain, seq continuity across segments, time order. Stops at the
/// first problem. `Err` only when the log cannot be read at all.
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport, LogError> {
    verify_with(dir, |_| Ok(()))
}

/// Like [`verify`], also calling `check` on each record in order (to check
/// that referenced objects exist, or recompute barrier checksums); its
/// first `Err(reason)` is reported as the problem at that record's seq.
pub fn verify_with(
    dir: impl AsRef<Path>,
    mut check: impl FnMut(&Record) -> Result<(), String>,
) -> Result<VerifyReport, LogError> {
    let dir = dir.as_ref();
    let mut report = VerifyReport::default();
    let nos = list_segments(dir)?;
    let Some(&first_no) = nos.first() else {
        return Ok(report);
    };
    let path = seg_path(dir, first_no);
    let header = match open_segment(&path)? {
        Some((file, HeaderState::Valid(header))) => SegmentFile { path, file, header },
        other => {
            let reason = match other {
                Some((_, HeaderState::Bad(r))) => format!("bad segment header: {r}"),
                _ => "segment header cut short".to_string(),
            };
            let file = std::fs::File::open(&path).ok();
            let valid_after = match &file {
                Some(f) => find_valid_frame(f, &path, 0)?.is_some(),
                None => false,
            };
            report.segments = 1;
            report.problem = Some(VerifyProblem {
                torn_tail: nos.len() == 1 && !valid_after,
                segment: path,
                offset: 0,
                seq: None,
                reason,
            });
            return Ok(report);
        }
    };
    report.segments = 1;
    let mut cursor = Cursor::at_segment_start(dir, first_no, header);
    loop {
        match cursor.step_settled(0)? {
            Step::Frame {
                offset,
                header,
                records,
            } => {
                report.frames += 1;
                report.compressed_frames += u64::from(header.compressed());
                for r in records.unwrap_or_default() {
                    if let Err(reason) = check(&r) {
                        report.problem = Some(VerifyProblem {
                            segment: cursor.segment().path.clone(),
                            offset,
                            seq: Some(r.seq),
                            reason,
                            torn_tail: false,
                        });
                        return Ok(report);
                    }
                    report.records += 1;
                    report.first_seq.get_or_insert(r.seq);
                    report.last_seq = r.seq;
                }
            }
            Step::NewSegment(_) => report.segments += 1,
            Step::End => return Ok(report),
            Step::Bad(b) => {
                let (torn_tail, protected) = is_torn_tail(dir, &b)?;
                let reason = match protected {
                    Some(why) => format!("{}; {why}", b.reason),
                    None => b.reason,
                };
                report.problem = Some(VerifyProblem {
                    segment: b.path,
                    offset: b.offset,
                    seq: b.seq,
                    reason,
                    torn_tail,
                });
                return Ok(report);
            }
        }
    }
}

/// A bad frame is a torn tail when the file ends inside it, or when its
/// bytes fail their CRC in the last segment with no valid frame after it.
/// Never in a sealed log, nor before an unsealed log's last sync point.
/// The second value says why a tail-like problem is not one.
fn is_torn_tail(dir: &Path, b: &BadFrame) -> Result<(bool, Option<&'static str>), LogError> {
    if matches!(b.kind, BadKind::Incomplete | BadKind::Damaged) {
        if let Some(why) = super::seal::protects(dir, &b.path, b.offset)? {
            return Ok((false, Some(why)));
        }
    }
    let torn = match b.kind {
        BadKind::Incomplete => true,
        BadKind::Damaged => {
            let last = list_segments(dir)?.last().map(|&n| seg_path(dir, n));
            if last.as_deref() != Some(b.path.as_path()) {
                return Ok((false, None));
            }
            let file =
                std::fs::File::open(&b.path).map_err(super::error::io_err("opening", &b.path))?;
            find_valid_frame(&file, &b.path, b.offset + 1)?.is_none()
        }
        BadKind::Invalid | BadKind::UnknownType(_) => false,
    };
    Ok((torn, None))
}
