//! Opening a log for append: lock, find the tail, verify the last segment,
//! cut a torn tail back to the last whole frame, bring indexes up to date.

use std::fs::{self, File, OpenOptions};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

use super::cursor::{BadKind, Cursor, Step};
use super::error::{io_err, LogError};
use super::frame::FrameBuilder;
use super::index::{self, load_or_rebuild, SegmentIndex};
use super::seal::{self, SealFile, SealState, SEQ_RESERVE};
use super::segment::{
    find_valid_frame, idx_path, list_segments, open_segment, seg_path, HeaderState, SegmentFile,
    MAX_VM_ID_LEN, SEG_HEADER_LEN,
};
use super::writer::{LogOptions, LogWriter};
use super::FORMAT_VERSION;
use crate::hlc::{Hlc, HlcClock, NodeId};

/// What [`LogWriter::open`] found and did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OpenReport {
    /// Seq of the last record kept (0 for an empty log).
    pub last_seq: u64,
    /// Segment files in the log after opening.
    pub segments: usize,
    /// Bytes of torn tail dropped (cut from the last segment, or whole
    /// segment files whose header never reached the disk). 0 if none.
    pub truncated_bytes: u64,
    /// The segment cut back, and the offset it now ends at.
    pub truncated_segment: Option<(PathBuf, u64)>,
    /// Segment files removed because nothing whole was in them.
    pub removed_segments: Vec<PathBuf>,
    /// Why the tail was dropped, when it was.
    pub tail_reason: Option<String>,
    /// Index files that were missing or stale and were rewritten.
    pub rebuilt_indexes: Vec<PathBuf>,
    /// Whether the log was sealed (closed cleanly) before this open; `None`
    /// when it has no seal file (new, or written before seals existed).
    pub was_sealed: Option<bool>,
    /// Seqs handed out by the writer before a crash that are not in the log
    /// (first, last): the next record starts above them, after a declared
    /// gap, so no seq is ever used for two records.
    pub skipped_seqs: Option<(u64, u64)>,
    /// First seq of the records kept after the last sync point: written
    /// before a crash, never made durable (their store objects may be
    /// missing; see [`LogWriter::cut_to_sync_point`]). `None` if none.
    pub unsynced_from: Option<u64>,
    /// How far the log's last HLC stamp is ahead of this host's clock, in
    /// ns (0: not ahead). The writer stamps after it regardless (see
    /// [`crate::hlc`]); a large value means a clock is wrong somewhere.
    pub clock_behind_ns: u64,
}

/// The state of the last segment after its check.
pub(crate) struct Tail {
    pub seg_no: u32,
    pub len: u64,
    pub index: SegmentIndex,
    pub next_seq: u64,
    pub chain: u32,
    /// The last seq a cut torn frame's (valid) header named, if any.
    pub torn_last_seq: Option<u64>,
    /// The segment's format version.
    pub version: u16,
    /// The stamp of the segment's last record (`None`: it holds none).
    pub last_hlc: Option<Hlc>,
}

/// The clock a writer resumes with: after the log's last stamp. When the
/// last segment holds no record (its only frame was a torn tail), only the
/// previous records' time is known: the clock then starts 1 ns past it,
/// which is after any stamp at that time.
fn resume_clock(node: NodeId, tail: &Tail, last_ts: u64) -> HlcClock {
    let mut clock = HlcClock::new(node);
    match tail.last_hlc {
        Some(hlc) => clock.observe(hlc),
        None if last_ts > 0 => clock.observe(Hlc::new(last_ts, u32::MAX, NodeId(u64::MAX))),
        None => {}
    }
    clock
}

impl LogWriter {
    /// Opens (creating if needed) the log in `dir` for VM `vm_id` with
    /// default options. See [`LogWriter::open_with`].
    pub fn open(dir: impl AsRef<Path>, vm_id: &str) -> Result<(LogWriter, OpenReport), LogError> {
        LogWriter::open_with(dir, vm_id, LogOptions::default())
    }

    /// Opens (creating if needed) the log in `dir` for VM `vm_id`: takes the
    /// directory lock, verifies the last segment frame by frame, and cuts a
    /// torn tail (a partial frame, or CRC-bad frames with nothing valid
    /// after them) back to the last whole frame. Damage followed by valid
    /// frames is an error, never truncated. Earlier segments are checked by
    /// [`crate::log::verify`], not here.
    pub fn open_with(
        dir: impl AsRef<Path>,
        vm_id: &str,
        opts: LogOptions,
    ) -> Result<(LogWriter, OpenReport), LogError> {
        let dir = dir.as_ref().to_path_buf();
        if vm_id.is_empty() || vm_id.len() > MAX_VM_ID_LEN {
            return Err(LogError::InvalidArgument(format!(
                "vm id {vm_id:?} must be 1..={MAX_VM_ID_LEN} bytes"
            )));
        }
        opts.check()?;
        if !dir.is_dir() {
            fs::create_dir_all(&dir).map_err(io_err("creating directory", &dir))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let lock = lock_dir(&dir)?;
        let mut report = OpenReport::default();
        let sealed = seal::load(&dir)?;
        report.was_sealed = sealed.map(|s| s.sealed);
        let protect = sealed;
        let mut nos = list_segments(&dir)?;
        let tail = find_tail(&dir, &mut nos, vm_id, &opts, protect, &mut report)?;
        if let Some(s) = sealed.filter(|s| s.seg_no > tail.seg_no) {
            return Err(LogError::Corrupt {
                path: seg_path(&dir, s.seg_no),
                offset: 0,
                seq: Some(s.next_seq.saturating_sub(1)),
                reason: "this segment was fsynced (the seal file names it) but is missing".into(),
            });
        }
        if let Some(s) = sealed.filter(|s| s.sealed && s.next_seq != tail.next_seq) {
            return Err(LogError::Corrupt {
                path: seg_path(&dir, tail.seg_no),
                offset: tail.len,
                seq: Some(tail.next_seq),
                reason: format!(
                    "the log was sealed after seq {}, but its records end at seq {}",
                    s.next_seq - 1,
                    tail.next_seq - 1
                ),
            });
        }
        refresh_sealed_indexes(&dir, &nos, &opts, &mut report)?;
        let mut last_ts = tail.index.last_ts;
        if tail.index.entries.is_empty() && tail.seg_no > 1 {
            let prev = SegmentFile::open(&seg_path(&dir, tail.seg_no - 1))?;
            let path = idx_path(&dir, tail.seg_no - 1);
            last_ts = load_or_rebuild(&prev, &path, opts.index_interval_bytes)?
                .0
                .last_ts;
        }
        let clock = resume_clock(opts.node, &tail, last_ts);
        report.clock_behind_ns = clock.last_physical().saturating_sub(store::clock::now_ns());
        let seg = match tail.seg_no {
            0 => None,
            no => {
                let path = seg_path(&dir, no);
                let f = OpenOptions::new().read(true).write(true).open(&path);
                Some(f.map_err(io_err("opening for append", &path))?)
            }
        };
        report.last_seq = tail.next_seq - 1;
        report.segments = nos.len();
        // Where the next record starts: above every seq a crashed writer
        // may have handed out (a sealed log handed out exactly its records).
        let mut next_seq = tail.next_seq;
        if let Some(s) = sealed.filter(|s| !s.sealed) {
            next_seq = next_seq
                .max(s.seq_limit)
                .max(tail.torn_last_seq.map_or(0, |l| l + 1));
            if tail.next_seq > s.next_seq {
                report.unsynced_from = Some(s.next_seq.max(1));
            }
        }
        if next_seq > tail.next_seq {
            report.skipped_seqs = Some((tail.next_seq, next_seq - 1));
        }
        // The sync point the seal file names from now on: an unsealed log
        // keeps its old one (records after it were never made durable); a
        // sealed or new one ends here, made durable first.
        if let Some(seg) = &seg {
            seg.sync_data()
                .map_err(io_err("fsync of", &seg_path(&dir, tail.seg_no)))?;
        }
        let point = match sealed {
            Some(s) if !s.sealed => s,
            _ => SealState {
                generation: 0,
                sealed: false,
                seg_no: tail.seg_no,
                end: tail.len,
                next_seq: tail.next_seq,
                seq_limit: 0,
            },
        };
        let seal = SealFile::open(
            &dir,
            SealState {
                sealed: false,
                // Reserved ahead, so records this writer buffers and never
                // commits (it dies first) are covered as well.
                seq_limit: sealed
                    .map_or(0, |s| s.seq_limit)
                    .max(next_seq + SEQ_RESERVE),
                ..point
            },
        )?;
        let frame = if next_seq > tail.next_seq {
            FrameBuilder::after_gap(next_seq, tail.chain)
        } else {
            FrameBuilder::new(next_seq, tail.chain)
        };
        let writer = LogWriter {
            dir,
            vm_id: vm_id.to_string(),
            opts,
            _lock: lock,
            seg_no: tail.seg_no,
            seg,
            seg_len: tail.len,
            seg_version: tail.version,
            index: tail.index,
            frame,
            clock,
            data_sync_needed: false,
            dir_sync_needed: false,
            poisoned: None,
            closed: false,
            seal,
            seal_stale: false,
        };
        if writer.seg.is_some() {
            let ipath = idx_path(&writer.dir, writer.seg_no);
            if SegmentIndex::load(&ipath).as_ref() != Some(&writer.index) {
                writer.store_index()?;
                report.rebuilt_indexes.push(ipath);
            }
        }
        Ok((writer, report))
    }
}

/// Finds and checks the last segment (removing segments torn at creation),
/// cutting a torn tail where `protect` allows it.
pub(crate) fn find_tail(
    dir: &Path,
    nos: &mut Vec<u32>,
    vm_id: &str,
    opts: &LogOptions,
    protect: Option<SealState>,
    report: &mut OpenReport,
) -> Result<Tail, LogError> {
    while let Some(&no) = nos.last() {
        if let Some(seg) = open_last_segment(dir, no, vm_id, protect, report)? {
            return check_tail(dir, no, seg, opts, protect, report);
        }
        nos.pop();
    }
    Ok(Tail {
        seg_no: 0,
        len: 0,
        index: SegmentIndex::new(1),
        next_seq: 1,
        chain: 0,
        torn_last_seq: None,
        version: FORMAT_VERSION,
        last_hlc: None,
    })
}

/// Takes `dir/LOCK` exclusively (released when the file closes): the one
/// writer, or `store retain` removing old segments.
pub fn lock_dir(dir: &Path) -> Result<File, LogError> {
    let path = dir.join("LOCK");
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("creating", &path))?;
    // SAFETY: flock on a file descriptor we own; no memory is passed.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.kind() == std::io::ErrorKind::WouldBlock {
            return Err(LogError::Locked {
                path: dir.to_path_buf(),
            });
        }
        return Err(io_err("locking", &path)(e));
    }
    Ok(file)
}

/// Opens the last segment. A segment whose header is short or bad and that
/// holds no valid frame is a torn creation: removed (returns `None`).
fn open_last_segment(
    dir: &Path,
    no: u32,
    vm_id: &str,
    protect: Option<SealState>,
    report: &mut OpenReport,
) -> Result<Option<SegmentFile>, LogError> {
    let path = seg_path(dir, no);
    let Some((file, state)) = open_segment(&path)? else {
        return Ok(None);
    };
    let reason = match state {
        HeaderState::Valid(header) if header.vm_id != vm_id => {
            return Err(LogError::VmIdMismatch {
                path,
                expected: vm_id.to_string(),
                found: header.vm_id,
            })
        }
        HeaderState::Valid(header) => return Ok(Some(SegmentFile { path, file, header })),
        HeaderState::Short => "segment header cut short".to_string(),
        HeaderState::Bad(r) => r,
    };
    if let Some(p) = protect.filter(|p| p.covers(no, 0)) {
        return Err(LogError::Corrupt {
            path,
            offset: 0,
            seq: None,
            reason: format!("{reason}; {}", p.why()),
        });
    }
    if find_valid_frame(&file, &path, 0)?.is_some() {
        return Err(LogError::Corrupt {
            path,
            offset: 0,
            seq: None,
            reason: format!("{reason}, and valid frames follow it (not a torn tail)"),
        });
    }
    let len = file
        .metadata()
        .map_err(io_err("reading the size of", &path))?
        .len();
    drop(file);
    fs::remove_file(&path).map_err(io_err("removing torn segment", &path))?;
    index::remove(&idx_path(dir, no))?;
    sync_dir(dir)?;
    report.truncated_bytes += len;
    report.removed_segments.push(path);
    report.tail_reason = Some(format!("last segment was torn at creation: {reason}"));
    Ok(None)
}

/// Verifies every frame of the last segment; cuts a torn tail.
fn check_tail(
    dir: &Path,
    no: u32,
    seg: SegmentFile,
    opts: &LogOptions,
    protect: Option<SealState>,
    report: &mut OpenReport,
) -> Result<Tail, LogError> {
    let mut index = SegmentIndex::new(seg.header.first_seq);
    let version = seg.header.version;
    let mut last_hlc = None;
    let mut cursor = Cursor::at_segment_start(dir, no, seg);
    let cut = loop {
        match cursor.step(0)? {
            Step::Frame {
                offset,
                header,
                records,
            } => {
                index.note_frame(offset, &header, opts.index_interval_bytes);
                // Every frame is decoded here (skip_before 0).
                last_hlc = records.and_then(|r| r.last().map(|r| r.hlc())).or(last_hlc);
            }
            Step::End => break None,
            Step::Bad(b) if b.kind == BadKind::Incomplete => break Some(b),
            Step::Bad(b) if b.kind == BadKind::Damaged => {
                let seg = cursor.segment();
                match find_valid_frame(&seg.file, &seg.path, b.offset + 1)? {
                    None => break Some(b),
                    Some(at) => {
                        let mut b = b;
                        b.reason = format!(
                            "{}; a valid frame follows at offset {at}, so this is not a torn tail",
                            b.reason
                        );
                        return Err(b.into_error());
                    }
                }
            }
            Step::Bad(b) => return Err(b.into_error()),
            Step::NewSegment(n) => {
                return Err(LogError::Corrupt {
                    path: seg_path(dir, n),
                    offset: 0,
                    seq: None,
                    reason: "a segment appeared while the log was locked".into(),
                })
            }
        }
    };
    let path = cursor.segment().path.clone();
    let mut len = cursor.segment().len()?;
    if let Some(p) = protect {
        let refuse = |offset: u64, seq: Option<u64>, reason: String| LogError::Corrupt {
            path: path.clone(),
            offset,
            seq,
            reason,
        };
        if let Some(bad) = cut.as_ref().filter(|b| p.covers(no, b.offset)) {
            let reason = format!("{}; {}", bad.reason, p.why());
            return Err(refuse(bad.offset, bad.seq, reason));
        }
        let durable = if no == p.seg_no { p.end } else { 0 };
        if cut.is_none() && len < durable {
            let r =
                format!("the segment is {len} bytes, shorter than its fsynced length {durable}");
            return Err(refuse(len, cursor.next_seq(), r));
        }
        if p.sealed && cut.is_none() && (no != p.seg_no || len != p.end) {
            let r = format!(
                "the log was sealed at {} bytes of segment {:08}, but it ends here",
                p.end, p.seg_no
            );
            return Err(refuse(len, cursor.next_seq(), r));
        }
    }
    let torn_last_seq = cut.as_ref().and_then(|b| b.torn_last_seq);
    if let Some(bad) = cut {
        let keep = cursor.offset();
        let f = OpenOptions::new().write(true).open(&path);
        let f = f.map_err(io_err("opening to cut the torn tail of", &path))?;
        f.set_len(keep)
            .map_err(io_err("cutting the torn tail of", &path))?;
        f.sync_all().map_err(io_err("fsync of", &path))?;
        report.truncated_bytes += len - keep;
        report.truncated_segment = Some((path, keep));
        report.tail_reason = Some(bad.reason);
        len = keep;
    }
    debug_assert_eq!(len.max(SEG_HEADER_LEN), index.covered_len);
    Ok(Tail {
        seg_no: no,
        len,
        next_seq: cursor.next_seq().expect("known from the segment header"),
        chain: cursor.chain().expect("every frame was decoded"),
        index,
        torn_last_seq,
        version,
        last_hlc,
    })
}

/// Rewrites the index of each sealed segment whose index is missing or stale.
fn refresh_sealed_indexes(
    dir: &Path,
    nos: &[u32],
    opts: &LogOptions,
    report: &mut OpenReport,
) -> Result<(), LogError> {
    let sealed = &nos[..nos.len().saturating_sub(1)];
    for &no in sealed {
        let path = seg_path(dir, no);
        // A damaged header is verify's to report; the writer does not need it.
        let Some((file, HeaderState::Valid(header))) = open_segment(&path)? else {
            continue;
        };
        let seg = SegmentFile { path, file, header };
        let ipath = idx_path(dir, no);
        let (idx, changed) = load_or_rebuild(&seg, &ipath, opts.index_interval_bytes)?;
        if changed {
            idx.store(&ipath)?;
            report.rebuilt_indexes.push(ipath);
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync of directory", dir))
}
