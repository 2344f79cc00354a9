//! The LevelDB log format, shared by the write-ahead log (`NNNNNN.log`) and
//! the `MANIFEST-NNNNNN` file: a reader of its logical records.
//!
//! # Format (google/leveldb doc/log_format.md)
//!
//! The file is a sequence of 32 KiB blocks (the last may be partial). A
//! block holds physical records and, when fewer than 7 bytes are left, a
//! zero trailer that readers skip:
//!
//! ```text
//! record := crc u32 LE    masked CRC32C of type and data (see coding.rs)
//!           length u16 LE bytes of data
//!           type u8       1 FULL, 2 FIRST, 3 MIDDLE, 4 LAST (0: preallocated)
//!           data [length]
//! ```
//!
//! A record never crosses a block boundary: a logical record that does not
//! fit is written as FIRST, MIDDLE..., LAST fragments in consecutive blocks.
//!
//! # Ends and damage
//!
//! Writers only append, so a crash (or a barrier taken while a write is
//! in flight) can leave a torn tail: a short header, a record running past
//! the end of the file, a bad CRC, zero fill, an unfinished fragment chain.
//! Like LevelDB's reader, such a tail ends the log after the last complete
//! logical record. A problem is damage *in the middle* instead — an error
//! naming its offset — when an intact record (good CRC, known type) starts
//! at a later block boundary: bytes were written after the bad ones, so
//! they are not a torn tail. (Pages of an unsynced write reaching the disk
//! out of order look the same; the caller retries at the next barrier.)

use std::borrow::Cow;

use crate::decode::DecodeError;

use super::coding::{fixed32, masked_crc};

/// Bytes per log block.
pub const LOG_BLOCK_SIZE: usize = 32 * 1024;
/// Bytes of a physical record header (crc, length, type).
pub const HEADER_LEN: usize = 7;
/// Record types.
pub const FULL: u8 = 1;
pub const FIRST: u8 = 2;
pub const MIDDLE: u8 = 3;
pub const LAST: u8 = 4;

/// One logical record: where its first fragment starts and its bytes
/// (borrowed when it is a single FULL record).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: usize,
    pub data: Cow<'a, [u8]>,
}

/// A physical record, or why none could be read at an offset.
enum Phys<'a> {
    Ok {
        typ: u8,
        data: &'a [u8],
        next: usize,
    },
    End,
    Bad(&'static str),
}

/// Reads the logical records of a log file in order. Yields an error (once,
/// then ends) for damage in the middle; a torn tail just ends the records.
pub struct LogReader<'a> {
    data: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> LogReader<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        LogReader {
            data,
            pos: 0,
            done: false,
        }
    }

    /// Offset just past the last logical record returned so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    fn physical(&self, mut pos: usize) -> (usize, Phys<'a>) {
        let left = LOG_BLOCK_SIZE - pos % LOG_BLOCK_SIZE;
        if left < HEADER_LEN {
            pos += left; // the block's trailer
        }
        let d = self.data;
        if pos >= d.len() {
            return (pos, Phys::End);
        }
        if d.len() - pos < HEADER_LEN {
            return (pos, Phys::Bad("truncated record header"));
        }
        let (Some(crc), typ) = (fixed32(d, pos), d[pos + 6]) else {
            return (pos, Phys::Bad("truncated record header"));
        };
        let len = u16::from_le_bytes([d[pos + 4], d[pos + 5]]) as usize;
        let start = pos + HEADER_LEN;
        let end = start + len;
        if end > d.len() {
            return (pos, Phys::Bad("record runs past the end of the file"));
        }
        if HEADER_LEN + len > LOG_BLOCK_SIZE - pos % LOG_BLOCK_SIZE {
            return (pos, Phys::Bad("record crosses a block boundary"));
        }
        if typ == 0 {
            return (pos, Phys::Bad("zero (preallocated) record"));
        }
        if !(FULL..=LAST).contains(&typ) {
            return (pos, Phys::Bad("unknown record type"));
        }
        if masked_crc(&[&[typ], &d[start..end]]) != crc {
            return (pos, Phys::Bad("record checksum mismatch"));
        }
        let data = &d[start..end];
        (
            pos,
            Phys::Ok {
                typ,
                data,
                next: end,
            },
        )
    }

    /// A problem at `at`: a torn tail (`None`, the log ends) unless an
    /// intact record starts at a later block boundary.
    fn problem(&mut self, at: usize, why: &str) -> Option<Result<Record<'a>, DecodeError>> {
        self.done = true;
        let mut block = (at / LOG_BLOCK_SIZE + 1) * LOG_BLOCK_SIZE;
        while block < self.data.len() {
            if let (_, Phys::Ok { .. }) = self.physical(block) {
                return Some(Err(DecodeError::new(format!(
                    "leveldb log: {why} at offset {at}, with intact records after it \
                     (at offset {block})"
                ))));
            }
            block += LOG_BLOCK_SIZE;
        }
        None
    }
}

impl<'a> Iterator for LogReader<'a> {
    type Item = Result<Record<'a>, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        // The fragments of a record split over blocks: (offset, bytes).
        let mut partial: Option<(usize, Vec<u8>)> = None;
        let mut pos = self.pos;
        loop {
            let (at, phys) = self.physical(pos);
            let (typ, data, next) = match phys {
                Phys::End => {
                    // A FIRST without its LAST at the end is a torn tail.
                    self.done = true;
                    return None;
                }
                Phys::Bad(why) => return self.problem(at, why),
                Phys::Ok { typ, data, next } => (typ, data, next),
            };
            pos = next;
            match (typ, partial.as_mut()) {
                (FULL, None) => {
                    self.pos = pos;
                    let data = Cow::Borrowed(data);
                    return Some(Ok(Record { offset: at, data }));
                }
                (FIRST, None) => partial = Some((at, data.to_vec())),
                (MIDDLE, Some((_, buf))) => buf.extend_from_slice(data),
                (LAST, Some((_, buf))) => {
                    buf.extend_from_slice(data);
                    self.pos = pos;
                    let (offset, buf) = partial.take().unwrap_or_default();
                    return Some(Ok(Record {
                        offset,
                        data: Cow::Owned(buf),
                    }));
                }
                (FULL | FIRST, Some((start, _))) => {
                    let start = *start;
                    return self.problem(start, "fragmented record without its last fragment");
                }
                _ => return self.problem(at, "fragment without a first fragment"),
            }
        }
    }
}

/// Appends `record` to a log being written whose length is `out.len()`
/// (the writer side, for tests, the bench and guest workloads).
pub fn append_record(out: &mut Vec<u8>, record: &[u8]) {
    let mut rest = record;
    let mut first = true;
    loop {
        let left = LOG_BLOCK_SIZE - out.len() % LOG_BLOCK_SIZE;
        if left < HEADER_LEN {
            out.resize(out.len() + left, 0);
            continue;
        }
        let room = left - HEADER_LEN;
        let n = rest.len().min(room);
        let last = n == rest.len();
        let typ = match (first, last) {
            (true, true) => FULL,
            (true, false) => FIRST,
            (false, false) => MIDDLE,
            (false, true) => LAST,
        };
        let (chunk, tail) = rest.split_at(n);
        out.extend_from_slice(&masked_crc(&[&[typ], chunk]).to_le_bytes());
        out.extend_from_slice(&(n as u16).to_le_bytes());
        out.push(typ);
        out.extend_from_slice(chunk);
        rest = tail;
        first = false;
        if last {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records(data: &[u8]) -> Result<Vec<Vec<u8>>, DecodeError> {
        LogReader::new(data)
            .map(|r| r.map(|r| r.data.into_owned()))
            .collect()
    }

    #[test]
    fn fragments_trailers_and_tails() {
        let mut log = Vec::new();
        let big = vec![7u8; 3 * LOG_BLOCK_SIZE];
        let recs: Vec<Vec<u8>> = vec![b"a".to_vec(), big, vec![], b"z".repeat(LOG_BLOCK_SIZE - 20)];
        for r in &recs {
            append_record(&mut log, r);
        }
        assert_eq!(records(&log).unwrap(), recs);
        // Every truncation is a torn tail: a prefix of the records.
        for cut in [1, 6, 7, 8, 40, LOG_BLOCK_SIZE + 3, log.len() - 1] {
            let got = records(&log[..cut]).unwrap();
            assert!(
                got.len() < recs.len() && got[..] == recs[..got.len()],
                "cut {cut}"
            );
        }
        // Zero fill after the end is the end.
        let mut padded = log.clone();
        padded.resize(log.len() + 5000, 0);
        assert_eq!(records(&padded).unwrap(), recs);
        // A flipped byte in the first record, with intact blocks after it,
        // is damage in the middle, named by offset.
        let mut bad = log.clone();
        bad[7] ^= 1;
        let e = records(&bad).unwrap_err();
        assert!(e.reason.contains("at offset 0"), "{e}");
        // A flipped byte in the last block is a torn tail.
        let mut tail = log.clone();
        let n = tail.len();
        tail[n - 3] ^= 1;
        assert_eq!(records(&tail).unwrap(), recs[..3]);
    }
}
