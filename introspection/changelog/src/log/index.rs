//! The sparse per-segment index (`NNNNNNNN.idx`): frame seq -> offset and
//! frame time -> offset. A cache only: rebuilt by scanning frame headers
//! when missing, damaged or stale, and each entry is checked against the
//! segment before use (see `LogReader`).

use std::fs;
use std::io;
use std::path::Path;

use super::error::{io_err, LogError};
use super::frame::FrameHeader;
use super::segment::{Probe, SegmentFile, SEG_HEADER_LEN};
use super::{get_u16, get_u32, get_u64};

const IDX_MAGIC: [u8; 8] = *b"VMMCIDX\0";
const IDX_VERSION: u16 = 1;
const IDX_HEADER_LEN: usize = 48;
const ENTRY_LEN: usize = 24;
/// Index density a reader uses when it rebuilds an index in memory.
pub(crate) const DEFAULT_INDEX_INTERVAL: u64 = 64 << 10;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct IndexEntry {
    pub first_seq: u64,
    pub offset: u64,
    pub first_ts: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentIndex {
    /// The segment header's first seq.
    pub first_seq: u64,
    /// Bytes of the segment described: the end of the last frame noted.
    pub covered_len: u64,
    /// Seq after the last frame noted.
    pub next_seq: u64,
    /// ts_ns of the last record noted (0 if none).
    pub last_ts: u64,
    pub entries: Vec<IndexEntry>,
}

impl SegmentIndex {
    pub fn new(first_seq: u64) -> Self {
        SegmentIndex {
            first_seq,
            covered_len: SEG_HEADER_LEN,
            next_seq: first_seq,
            last_ts: 0,
            entries: Vec::new(),
        }
    }

    /// Records a whole frame at `offset` (frames must be noted in order).
    pub fn note_frame(&mut self, offset: u64, h: &FrameHeader, interval: u64) {
        let due = match self.entries.last() {
            None => true,
            Some(e) => offset - e.offset >= interval,
        };
        if due {
            self.entries.push(IndexEntry {
                first_seq: h.first_seq,
                offset,
                first_ts: h.first_ts,
            });
        }
        self.covered_len = offset + h.total_len();
        self.next_seq = h.last_seq() + 1;
        self.last_ts = h.last_ts;
    }

    /// The last entry starting at or before `seq`.
    pub fn lookup_seq(&self, seq: u64) -> Option<&IndexEntry> {
        let i = self.entries.partition_point(|e| e.first_seq <= seq);
        i.checked_sub(1).map(|i| &self.entries[i])
    }

    /// The last entry whose first record is at or before `ts_ns`.
    pub fn lookup_ts(&self, ts_ns: u64) -> Option<&IndexEntry> {
        let i = self.entries.partition_point(|e| e.first_ts <= ts_ns);
        i.checked_sub(1).map(|i| &self.entries[i])
    }

    fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(IDX_HEADER_LEN + self.entries.len() * ENTRY_LEN + 4);
        b.extend_from_slice(&IDX_MAGIC);
        b.extend_from_slice(&IDX_VERSION.to_le_bytes());
        b.extend_from_slice(&[0, 0]);
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for v in [
            self.first_seq,
            self.covered_len,
            self.next_seq,
            self.last_ts,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        for e in &self.entries {
            for v in [e.first_seq, e.offset, e.first_ts] {
                b.extend_from_slice(&v.to_le_bytes());
            }
        }
        let crc = crc32fast::hash(&b);
        b.extend_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SegmentIndex> {
        if b.len() < IDX_HEADER_LEN + 4 || b[0..8] != IDX_MAGIC || get_u16(b, 8) != IDX_VERSION {
            return None;
        }
        let count = get_u32(b, 12) as usize;
        if b.len() != IDX_HEADER_LEN + count.checked_mul(ENTRY_LEN)? + 4 {
            return None;
        }
        let body = &b[..b.len() - 4];
        if crc32fast::hash(body) != get_u32(b, body.len()) {
            return None;
        }
        let entries = body[IDX_HEADER_LEN..]
            .chunks_exact(ENTRY_LEN)
            .map(|e| IndexEntry {
                first_seq: get_u64(e, 0),
                offset: get_u64(e, 8),
                first_ts: get_u64(e, 16),
            })
            .collect();
        Some(SegmentIndex {
            first_seq: get_u64(b, 16),
            covered_len: get_u64(b, 24),
            next_seq: get_u64(b, 32),
            last_ts: get_u64(b, 40),
            entries,
        })
    }

    /// Reads an index file; `None` if missing or unreadable as an index.
    pub fn load(path: &Path) -> Option<SegmentIndex> {
        SegmentIndex::decode(&fs::read(path).ok()?)
    }

    /// Writes the index atomically (temporary file, then rename). Not
    /// fsynced: it is a cache, rebuilt if lost.
    pub fn store(&self, path: &Path) -> Result<(), LogError> {
        let tmp = path.with_extension("idx.tmp");
        if let Err(e) = fs::write(&tmp, self.encode()) {
            // A full disk must not also leave a partial temp file behind.
            let _ = fs::remove_file(&tmp);
            return Err(io_err("writing", &tmp)(e));
        }
        fs::rename(&tmp, path).map_err(io_err("renaming into place", path))
    }
}

/// Notes the whole frames after `idx.covered_len`, stopping at the first
/// thing that is not a whole frame continuing the seq. With `strict`, a
/// covered length that does not land on such a frame (when there is more
/// data) returns `false`: the index does not match the segment.
fn extend(
    seg: &SegmentFile,
    idx: &mut SegmentIndex,
    interval: u64,
    strict: bool,
) -> Result<bool, LogError> {
    let mut first = true;
    loop {
        match seg.probe(idx.covered_len)? {
            Probe::Whole(h)
                if (h.first_seq == idx.next_seq || (h.seq_gap() && h.first_seq > idx.next_seq))
                    && h.first_ts >= idx.last_ts =>
            {
                idx.note_frame(idx.covered_len, &h, interval);
            }
            Probe::End => return Ok(true),
            _ => return Ok(!(strict && first)),
        }
        first = false;
    }
}

/// The segment's index: the stored one if it matches the segment (extended
/// over frames appended since), else one rebuilt by scanning. The flag is
/// true when the result differs from what is stored.
pub(crate) fn load_or_rebuild(
    seg: &SegmentFile,
    path: &Path,
    interval: u64,
) -> Result<(SegmentIndex, bool), LogError> {
    let len = seg.len()?;
    if let Some(mut idx) = SegmentIndex::load(path) {
        let plausible = idx.first_seq == seg.header.first_seq
            && (SEG_HEADER_LEN..=len).contains(&idx.covered_len)
            && idx.next_seq >= idx.first_seq;
        if plausible {
            let before = idx.covered_len;
            if extend(seg, &mut idx, interval, true)? {
                let changed = idx.covered_len != before;
                return Ok((idx, changed));
            }
        }
    }
    let mut idx = SegmentIndex::new(seg.header.first_seq);
    extend(seg, &mut idx, interval, false)?;
    Ok((idx, true))
}

/// Removes an index file; a missing one is fine.
pub(crate) fn remove(path: &Path) -> Result<(), LogError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("removing", path)(e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(first_seq: u64, count: u32, stored: u32, ts: u64) -> FrameHeader {
        FrameHeader {
            flags: 0,
            first_seq,
            count,
            stored_len: stored,
            raw_len: stored,
            prev_crc: 0,
            first_ts: ts,
            last_ts: ts + 1,
            data_crc: 0,
        }
    }

    #[test]
    fn sparse_entries_and_lookup() {
        let mut idx = SegmentIndex::new(1);
        let mut off = SEG_HEADER_LEN;
        for i in 0..10u64 {
            let h = frame(1 + i * 4, 4, 944, 100 * i);
            idx.note_frame(off, &h, 2000);
            off += h.total_len();
        }
        // Frames are 1000 bytes apart: an entry every second frame.
        assert_eq!(idx.entries.len(), 5);
        assert_eq!(idx.next_seq, 41);
        assert_eq!(idx.covered_len, off);
        assert_eq!(idx.lookup_seq(14).unwrap().first_seq, 9);
        assert_eq!(idx.lookup_seq(0), None);
        assert_eq!(idx.lookup_ts(250).unwrap().first_ts, 200);
        let back = SegmentIndex::decode(&idx.encode()).unwrap();
        assert_eq!(back, idx);
        let mut bytes = idx.encode();
        bytes[30] ^= 1;
        assert_eq!(SegmentIndex::decode(&bytes), None);
    }
}
