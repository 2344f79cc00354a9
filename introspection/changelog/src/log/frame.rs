//! Frames: a header plus a batch of records, optionally zstd-compressed;
//! the records' chained CRCs. Layout: see the module doc of `log`.

use super::record::{record_type, BodyError, Record, RecordKind};
use super::{get_u32, get_u64};
use crate::hlc::{Hlc, NodeId};

pub(crate) const FRAME_MAGIC: [u8; 4] = *b"VLFR";
pub(crate) const FRAME_HEADER_LEN: usize = 56;
pub(crate) const FLAG_ZSTD: u8 = 0x01;
/// The frame's first seq may be above the previous record's seq + 1: the
/// seqs between were handed out before a crash and are not in the log.
pub(crate) const FLAG_SEQ_GAP: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_ZSTD | FLAG_SEQ_GAP;
/// Largest stored or raw frame a reader accepts.
pub(crate) const MAX_FRAME_BYTES: u32 = 64 << 20;
/// `len u32 | crc u32 | type u8`.
const RECORD_HEADER_LEN: usize = 9;
/// Smallest record of any version read: header plus `ts_ns` (version 1).
const MIN_RECORD_LEN: u64 = RECORD_HEADER_LEN as u64 + 8;
/// The stamp at the start of a version-2 payload: `ts_ns u64 | logical
/// u32 | node u64`.
const STAMP_LEN: usize = 8 + 4 + 8;

/// Bytes of stamp before the body in a payload of format `version`.
fn stamp_len(version: u16) -> usize {
    if version >= 2 {
        STAMP_LEN
    } else {
        8
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub flags: u8,
    pub first_seq: u64,
    pub count: u32,
    pub stored_len: u32,
    pub raw_len: u32,
    pub prev_crc: u32,
    pub first_ts: u64,
    pub last_ts: u64,
    pub data_crc: u32,
}

impl FrameHeader {
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    /// Header plus stored bytes.
    pub fn total_len(&self) -> u64 {
        FRAME_HEADER_LEN as u64 + u64::from(self.stored_len)
    }

    pub fn compressed(&self) -> bool {
        self.flags & FLAG_ZSTD != 0
    }

    /// The frame follows a documented seq gap.
    pub fn seq_gap(&self) -> bool {
        self.flags & FLAG_SEQ_GAP != 0
    }

    pub fn encode(&self) -> [u8; FRAME_HEADER_LEN] {
        let mut b = [0u8; FRAME_HEADER_LEN];
        b[0..4].copy_from_slice(&FRAME_MAGIC);
        b[4] = self.flags;
        b[8..16].copy_from_slice(&self.first_seq.to_le_bytes());
        b[16..20].copy_from_slice(&self.count.to_le_bytes());
        b[20..24].copy_from_slice(&self.stored_len.to_le_bytes());
        b[24..28].copy_from_slice(&self.raw_len.to_le_bytes());
        b[28..32].copy_from_slice(&self.prev_crc.to_le_bytes());
        b[32..40].copy_from_slice(&self.first_ts.to_le_bytes());
        b[40..48].copy_from_slice(&self.last_ts.to_le_bytes());
        b[48..52].copy_from_slice(&self.data_crc.to_le_bytes());
        let crc = crc32fast::hash(&b[..52]);
        b[52..56].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Decodes and sanity-checks a header; the error says what is wrong.
    pub fn decode(b: &[u8]) -> Result<FrameHeader, String> {
        if b.len() < FRAME_HEADER_LEN || b[0..4] != FRAME_MAGIC {
            return Err("no frame magic".into());
        }
        if crc32fast::hash(&b[..52]) != get_u32(b, 52) {
            return Err("frame header CRC mismatch".into());
        }
        let h = FrameHeader {
            flags: b[4],
            first_seq: get_u64(b, 8),
            count: get_u32(b, 16),
            stored_len: get_u32(b, 20),
            raw_len: get_u32(b, 24),
            prev_crc: get_u32(b, 28),
            first_ts: get_u64(b, 32),
            last_ts: get_u64(b, 40),
            data_crc: get_u32(b, 48),
        };
        let problem = if h.flags & !KNOWN_FLAGS != 0 || b[5..8] != [0; 3] {
            Some(format!("unknown frame flags {:#04x}", h.flags))
        } else if h.first_seq == 0 || h.count == 0 {
            Some("frame with seq 0 or no records".into())
        } else if h.first_seq.checked_add(u64::from(h.count)).is_none() {
            Some("frame seq range overflows".into())
        } else if h.stored_len > MAX_FRAME_BYTES || h.raw_len > MAX_FRAME_BYTES {
            Some(format!(
                "frame of {} stored / {} raw bytes is too large",
                h.stored_len, h.raw_len
            ))
        } else if !h.compressed() && h.stored_len != h.raw_len {
            Some("uncompressed frame whose stored and raw lengths differ".into())
        } else if u64::from(h.count) * MIN_RECORD_LEN > u64::from(h.raw_len) {
            Some(format!(
                "{} records cannot fit in {} bytes",
                h.count, h.raw_len
            ))
        } else if h.first_ts > h.last_ts {
            Some("frame's first timestamp is after its last".into())
        } else {
            None
        };
        match problem {
            Some(p) => Err(p),
            None => Ok(h),
        }
    }
}

/// CRC of one record, chained to the previous record's.
pub(crate) fn chain_crc(prev: u32, code: u8, payload: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&prev.to_le_bytes());
    h.update(&[code]);
    h.update(payload);
    h.finalize()
}

/// Records being gathered into the next frame.
pub(crate) struct FrameBuilder {
    raw: Vec<u8>,
    first_seq: u64,
    count: u32,
    prev_crc: u32,
    chain: u32,
    first_ts: u64,
    last_ts: u64,
    gap: bool,
}

impl FrameBuilder {
    /// An empty frame whose first record will get `first_seq`, chained to `chain`.
    pub fn new(first_seq: u64, chain: u32) -> Self {
        FrameBuilder {
            raw: Vec::new(),
            first_seq,
            count: 0,
            prev_crc: chain,
            chain,
            first_ts: 0,
            last_ts: 0,
            gap: false,
        }
    }

    /// Like [`FrameBuilder::new`], for a frame that starts after a seq gap.
    pub fn after_gap(first_seq: u64, chain: u32) -> Self {
        FrameBuilder {
            gap: true,
            ..FrameBuilder::new(first_seq, chain)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn raw_len(&self) -> usize {
        self.raw.len()
    }

    /// The seq the next pushed record gets.
    pub fn next_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    /// Adds a record (already validated) stamped `hlc`, in the current
    /// format; returns its seq.
    pub fn push(&mut self, hlc: Hlc, kind: &RecordKind) -> u64 {
        let code = kind.type_code();
        let ts_ns = hlc.physical_ns;
        let start = self.raw.len();
        self.raw.extend_from_slice(&[0; RECORD_HEADER_LEN]);
        self.raw.extend_from_slice(&ts_ns.to_le_bytes());
        self.raw.extend_from_slice(&hlc.logical.to_le_bytes());
        self.raw.extend_from_slice(&hlc.node.0.to_le_bytes());
        kind.encode_body(&mut self.raw);
        let payload = &self.raw[start + RECORD_HEADER_LEN..];
        let len = u32::try_from(payload.len()).expect("record payload fits in u32");
        let crc = chain_crc(self.chain, code, payload);
        self.raw[start..start + 4].copy_from_slice(&len.to_le_bytes());
        self.raw[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
        self.raw[start + 8] = code;
        self.chain = crc;
        if self.count == 0 {
            self.first_ts = ts_ns;
        }
        self.last_ts = ts_ns;
        let seq = self.next_seq();
        self.count += 1;
        seq
    }

    /// Header and the whole frame's bytes, compressed when that is smaller.
    /// The builder is unchanged: call [`FrameBuilder::reset`] once written.
    pub fn build(&self, compress: bool, level: i32) -> std::io::Result<(FrameHeader, Vec<u8>)> {
        let packed = if compress {
            let c = zstd::bulk::compress(&self.raw, level)?;
            (c.len() < self.raw.len()).then_some(c)
        } else {
            None
        };
        let (flags, stored) = match &packed {
            Some(c) => (FLAG_ZSTD, c.as_slice()),
            None => (0, self.raw.as_slice()),
        };
        let flags = if self.gap {
            flags | FLAG_SEQ_GAP
        } else {
            flags
        };
        let h = FrameHeader {
            flags,
            first_seq: self.first_seq,
            count: self.count,
            stored_len: u32::try_from(stored.len()).expect("frame fits in u32"),
            raw_len: u32::try_from(self.raw.len()).expect("frame fits in u32"),
            prev_crc: self.prev_crc,
            first_ts: self.first_ts,
            last_ts: self.last_ts,
            data_crc: crc32fast::hash(stored),
        };
        let mut out = Vec::with_capacity(FRAME_HEADER_LEN + stored.len());
        out.extend_from_slice(&h.encode());
        out.extend_from_slice(stored);
        Ok((h, out))
    }

    /// Starts the next frame after this one was written.
    pub fn reset(&mut self) {
        *self = FrameBuilder::new(self.next_seq(), self.chain);
    }
}

/// Why a frame's stored bytes did not decode.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum FrameError {
    /// The stored bytes do not match their CRC (damage, or a torn write).
    Damaged(String),
    /// CRC-correct bytes that break a format rule at `seq`.
    Invalid { seq: u64, reason: String },
    /// A record of a type this build does not read.
    UnknownType { seq: u64, code: u8 },
}

/// Checks and decodes a frame's stored bytes, written in format `version`
/// (its segment's); returns its records and the chain CRC after the last.
pub(crate) fn decode_frame(
    h: &FrameHeader,
    stored: &[u8],
    version: u16,
) -> Result<(Vec<Record>, u32), FrameError> {
    if crc32fast::hash(stored) != h.data_crc {
        return Err(FrameError::Damaged(format!(
            "frame data CRC mismatch (frame of {} records from seq {})",
            h.count, h.first_seq
        )));
    }
    let invalid = |seq, reason: String| FrameError::Invalid { seq, reason };
    let unpacked;
    let raw: &[u8] = if h.compressed() {
        unpacked = zstd::bulk::decompress(stored, h.raw_len as usize)
            .map_err(|e| invalid(h.first_seq, format!("zstd decompression failed: {e}")))?;
        &unpacked
    } else {
        stored
    };
    if raw.len() != h.raw_len as usize {
        return Err(invalid(
            h.first_seq,
            format!(
                "frame holds {} raw bytes, header says {}",
                raw.len(),
                h.raw_len
            ),
        ));
    }
    let mut records: Vec<Record> = Vec::with_capacity(h.count as usize);
    let mut chain = h.prev_crc;
    let mut prev_ts = h.first_ts;
    let mut pos = 0;
    let stamp = stamp_len(version);
    for seq in h.first_seq..=h.last_seq() {
        if raw.len() - pos < RECORD_HEADER_LEN {
            return Err(invalid(seq, "frame ends inside a record header".into()));
        }
        let len = get_u32(raw, pos) as usize;
        let crc = get_u32(raw, pos + 4);
        let code = raw[pos + 8];
        let start = pos + RECORD_HEADER_LEN;
        let end = match start.checked_add(len) {
            Some(end) if end <= raw.len() => end,
            _ => {
                return Err(invalid(
                    seq,
                    format!("record length {len} runs past the frame"),
                ))
            }
        };
        let payload = &raw[start..end];
        if chain_crc(chain, code, payload) != crc {
            return Err(invalid(seq, "record CRC chain broken".into()));
        }
        if payload.len() < stamp {
            // A type from a newer writer may be laid out otherwise: say so.
            if !record_type::is_known(code) {
                return Err(FrameError::UnknownType { seq, code });
            }
            return Err(invalid(
                seq,
                "record payload shorter than its timestamp".into(),
            ));
        }
        let hlc = if stamp == STAMP_LEN {
            Hlc::new(
                get_u64(payload, 0),
                get_u32(payload, 8),
                NodeId(get_u64(payload, 12)),
            )
        } else {
            Hlc::legacy(get_u64(payload, 0))
        };
        let ts_ns = hlc.physical_ns;
        if ts_ns < prev_ts || ts_ns > h.last_ts {
            return Err(invalid(seq, "record timestamps out of order".into()));
        }
        if records.last().is_some_and(|r| r.hlc() > hlc) {
            return Err(invalid(seq, "record HLC stamps out of order".into()));
        }
        let kind = RecordKind::decode_body(code, &payload[stamp..]).map_err(|e| match e {
            BodyError::UnknownType(code) => FrameError::UnknownType { seq, code },
            BodyError::Bad(reason) => invalid(seq, reason),
        })?;
        records.push(Record::new(seq, hlc, kind));
        chain = crc;
        prev_ts = ts_ns;
        pos = end;
    }
    if pos != raw.len() {
        return Err(invalid(
            h.last_seq(),
            "bytes after the frame's last record".into(),
        ));
    }
    if records.first().map(|r| r.ts_ns) != Some(h.first_ts) || prev_ts != h.last_ts {
        return Err(invalid(
            h.first_seq,
            "frame timestamps disagree with its records".into(),
        ));
    }
    Ok((records, chain))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::FORMAT_VERSION;

    fn built(kinds: &[RecordKind]) -> (FrameHeader, Vec<u8>) {
        let mut b = FrameBuilder::new(10, 0x1234);
        for (i, k) in kinds.iter().enumerate() {
            b.push(Hlc::new(100 + i as u64, 0, NodeId(7)), k);
        }
        b.build(true, 3).unwrap()
    }

    #[test]
    fn header_roundtrip_and_crc() {
        let (h, bytes) = built(&[RecordKind::Mark { name: "a".into() }]);
        assert_eq!(FrameHeader::decode(&bytes).unwrap(), h);
        let mut bad = bytes.clone();
        bad[9] ^= 1;
        assert!(FrameHeader::decode(&bad).is_err());
    }

    #[test]
    fn records_decode_with_seq_and_chain() {
        let kinds = [
            RecordKind::Mark { name: "a".into() },
            RecordKind::SnapshotTaken { id: "b".into() },
        ];
        let (h, bytes) = built(&kinds);
        let (recs, chain) = decode_frame(&h, &bytes[FRAME_HEADER_LEN..], FORMAT_VERSION).unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!((recs[0].seq, recs[0].ts_ns), (10, 100));
        assert_eq!(recs[1].hlc(), Hlc::new(101, 0, NodeId(7)));
        assert_eq!((recs[1].seq, recs[1].kind.clone()), (11, kinds[1].clone()));
        assert_ne!(chain, 0x1234);
        // A different chain seed breaks the first record's CRC.
        let moved = FrameHeader { prev_crc: 0, ..h };
        assert!(matches!(
            decode_frame(&moved, &bytes[FRAME_HEADER_LEN..], FORMAT_VERSION),
            Err(FrameError::Invalid { seq: 10, .. })
        ));
    }

    #[test]
    fn hashes_stay_raw_marks_compress() {
        let hashes: Vec<[u8; 32]> = (0..64u32)
            .map(|i| *blake3::hash(&i.to_le_bytes()).as_bytes())
            .collect();
        let (h, _) = built(&[RecordKind::BlockWrite {
            sector: 0,
            len: 64 * 4096,
            blocks: hashes,
        }]);
        assert!(!h.compressed());
        let marks: Vec<_> = (0..50)
            .map(|i| RecordKind::Mark {
                name: format!("checkpoint-{i:04}"),
            })
            .collect();
        let (h, bytes) = built(&marks);
        assert!(h.compressed() && h.stored_len < h.raw_len);
        assert_eq!(
            decode_frame(&h, &bytes[FRAME_HEADER_LEN..], FORMAT_VERSION)
                .unwrap()
                .0
                .len(),
            50
        );
    }
}
