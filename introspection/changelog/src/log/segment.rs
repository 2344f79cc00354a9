//! Segment files: names, the segment header, frame-level reads.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, LogError};
use super::frame::{FrameHeader, FRAME_HEADER_LEN, FRAME_MAGIC};
use super::{get_u16, get_u32, get_u64};

/// The change-log format version this build writes: 2 stamps every record
/// with a hybrid logical clock (logical counter and node id after its
/// `ts_ns`; see the `log` module doc).
pub const FORMAT_VERSION: u16 = 2;
/// The oldest format version this build still reads (1: records carry
/// `ts_ns` only; they read back with a legacy HLC stamp). A writer never
/// appends to a segment of an older version: it starts a new segment.
pub const OLDEST_FORMAT_VERSION: u16 = 1;
/// Longest VM id, in bytes of UTF-8.
pub const MAX_VM_ID_LEN: usize = 64;
pub(crate) const SEG_MAGIC: [u8; 8] = *b"VMMCLOG\0";
pub(crate) const SEG_HEADER_LEN: u64 = 96;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct SegmentHeader {
    /// The format version of every frame in the segment.
    pub version: u16,
    pub vm_id: String,
    pub first_seq: u64,
    /// Chain CRC of the record before `first_seq` (0 at the log's start).
    pub prev_crc: u32,
}

impl SegmentHeader {
    pub fn encode(&self) -> [u8; SEG_HEADER_LEN as usize] {
        let id = self.vm_id.as_bytes();
        assert!(id.len() <= MAX_VM_ID_LEN, "vm id checked by the writer");
        let mut b = [0u8; SEG_HEADER_LEN as usize];
        b[0..8].copy_from_slice(&SEG_MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10..12].copy_from_slice(&(id.len() as u16).to_le_bytes());
        b[12..16].copy_from_slice(&self.prev_crc.to_le_bytes());
        b[16..24].copy_from_slice(&self.first_seq.to_le_bytes());
        b[24..24 + id.len()].copy_from_slice(id);
        let crc = crc32fast::hash(&b[..92]);
        b[92..96].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<SegmentHeader, String> {
        if b.len() < SEG_HEADER_LEN as usize || b[0..8] != SEG_MAGIC {
            return Err("not a change-log segment (no segment magic)".into());
        }
        if crc32fast::hash(&b[..92]) != get_u32(b, 92) {
            return Err("segment header CRC mismatch".into());
        }
        let version = get_u16(b, 8);
        if !(OLDEST_FORMAT_VERSION..=FORMAT_VERSION).contains(&version) {
            return Err(format!(
                "segment format version {version}; this build reads versions \
                 {OLDEST_FORMAT_VERSION} to {FORMAT_VERSION}"
            ));
        }
        let id_len = usize::from(get_u16(b, 10));
        if id_len > MAX_VM_ID_LEN {
            return Err(format!("vm id length {id_len} is over {MAX_VM_ID_LEN}"));
        }
        let vm_id = std::str::from_utf8(&b[24..24 + id_len])
            .map_err(|_| "vm id is not UTF-8".to_string())?
            .to_string();
        let first_seq = get_u64(b, 16);
        if first_seq == 0 {
            return Err("segment starts at seq 0".into());
        }
        Ok(SegmentHeader {
            version,
            vm_id,
            first_seq,
            prev_crc: get_u32(b, 12),
        })
    }
}

pub(crate) fn seg_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(format!("{no:08}.seg"))
}

pub(crate) fn idx_path(dir: &Path, no: u32) -> PathBuf {
    dir.join(format!("{no:08}.idx"))
}

/// Segment numbers present in `dir`, ascending.
pub(crate) fn list_segments(dir: &Path) -> Result<Vec<u32>, LogError> {
    let mut nos = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_err("listing", dir))? {
        let name = entry.map_err(io_err("listing", dir))?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(".seg")) else {
            continue;
        };
        if stem.len() == 8 && stem.bytes().all(|c| c.is_ascii_digit()) {
            nos.push(stem.parse().expect("8 digits"));
        }
    }
    nos.sort_unstable();
    Ok(nos)
}

/// What a segment's first bytes hold.
pub(crate) enum HeaderState {
    Valid(SegmentHeader),
    /// The file is shorter than a header.
    Short,
    Bad(String),
}

/// Opens a segment read-only and reads its header; `None` if it does not exist.
pub(crate) fn open_segment(path: &Path) -> Result<Option<(File, HeaderState)>, LogError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("opening", path)(e)),
    };
    let mut b = [0u8; SEG_HEADER_LEN as usize];
    let n = read_full_at(&file, &mut b, 0).map_err(io_err("reading", path))?;
    let state = if n < b.len() {
        HeaderState::Short
    } else {
        match SegmentHeader::decode(&b) {
            Ok(h) => HeaderState::Valid(h),
            Err(r) => HeaderState::Bad(r),
        }
    };
    Ok(Some((file, state)))
}

/// Reads until `buf` is full or end of file; returns the bytes read.
pub(crate) fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// What lies at an offset where a frame should start.
pub(crate) enum Probe {
    /// End of file: no more frames.
    End,
    /// The file ends inside a frame header.
    Partial,
    /// Not a valid frame header.
    Bad(String),
    /// A valid header whose stored bytes run past the end of the file.
    Truncated(FrameHeader),
    /// A valid header and all its stored bytes are in the file (not yet checked).
    Whole(FrameHeader),
}

/// A segment with a valid header, open for reading.
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub file: File,
    pub header: SegmentHeader,
}

impl SegmentFile {
    /// Opens a segment whose header must be valid.
    pub fn open(path: &Path) -> Result<SegmentFile, LogError> {
        let corrupt = |reason: String| LogError::Corrupt {
            path: path.to_path_buf(),
            offset: 0,
            seq: None,
            reason,
        };
        match open_segment(path)? {
            Some((file, HeaderState::Valid(header))) => Ok(SegmentFile {
                path: path.to_path_buf(),
                file,
                header,
            }),
            Some((_, HeaderState::Short)) => Err(corrupt("segment header cut short".into())),
            Some((_, HeaderState::Bad(r))) => Err(corrupt(r)),
            None => Err(io_err("opening", path)(io::ErrorKind::NotFound.into())),
        }
    }

    pub fn len(&self) -> Result<u64, LogError> {
        Ok(self
            .file
            .metadata()
            .map_err(io_err("reading the size of", &self.path))?
            .len())
    }

    pub fn probe(&self, offset: u64) -> Result<Probe, LogError> {
        let mut b = [0u8; FRAME_HEADER_LEN];
        let n = read_full_at(&self.file, &mut b, offset).map_err(io_err("reading", &self.path))?;
        if n == 0 {
            return Ok(Probe::End);
        }
        if n < FRAME_HEADER_LEN {
            return Ok(Probe::Partial);
        }
        let h = match FrameHeader::decode(&b) {
            Ok(h) => h,
            Err(r) => return Ok(Probe::Bad(r)),
        };
        Ok(if offset + h.total_len() > self.len()? {
            Probe::Truncated(h)
        } else {
            Probe::Whole(h)
        })
    }

    /// The stored bytes of the frame at `offset`.
    pub fn read_stored(&self, offset: u64, h: &FrameHeader) -> Result<Vec<u8>, LogError> {
        let mut buf = vec![0u8; h.stored_len as usize];
        self.file
            .read_exact_at(&mut buf, offset + FRAME_HEADER_LEN as u64)
            .map_err(io_err("reading", &self.path))?;
        Ok(buf)
    }
}

/// Offset of the first valid frame header at or after `from`, if any: tells a
/// torn tail (nothing valid follows) from damage in the middle.
pub(crate) fn find_valid_frame(
    file: &File,
    path: &Path,
    from: u64,
) -> Result<Option<u64>, LogError> {
    const CHUNK: usize = 1 << 20;
    let mut buf = vec![0u8; CHUNK + FRAME_HEADER_LEN];
    let mut pos = from;
    loop {
        let n = read_full_at(file, &mut buf, pos).map_err(io_err("reading", path))?;
        if n < FRAME_HEADER_LEN {
            return Ok(None);
        }
        let last_start = n - FRAME_HEADER_LEN;
        let hit = (0..=last_start).find(|&i| {
            buf[i..i + 4] == FRAME_MAGIC
                && FrameHeader::decode(&buf[i..i + FRAME_HEADER_LEN]).is_ok()
        });
        if let Some(i) = hit {
            return Ok(Some(pos + i as u64));
        }
        if n < buf.len() {
            return Ok(None);
        }
        pos += last_start as u64 + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_roundtrip_and_checks() {
        let h = SegmentHeader {
            version: FORMAT_VERSION,
            vm_id: "vm-7".into(),
            first_seq: 42,
            prev_crc: 0xdead_beef,
        };
        let b = h.encode();
        assert_eq!(SegmentHeader::decode(&b), Ok(h));
        let mut bad = b;
        bad[20] ^= 0x10;
        assert!(SegmentHeader::decode(&bad).unwrap_err().contains("CRC"));
        assert!(SegmentHeader::decode(&b[..95]).is_err());
        // Version 1 still reads; a version from the future does not.
        for (version, ok) in [(1, true), (FORMAT_VERSION + 1, false), (0, false)] {
            let mut v = b;
            v[8..10].copy_from_slice(&u16::to_le_bytes(version));
            let crc = crc32fast::hash(&v[..92]);
            v[92..96].copy_from_slice(&crc.to_le_bytes());
            let got = SegmentHeader::decode(&v).map(|h| h.version);
            assert_eq!(got.is_ok(), ok, "version {version}: {got:?}");
        }
    }

    #[test]
    fn names() {
        let d = Path::new("/x");
        assert_eq!(seg_path(d, 3), Path::new("/x/00000003.seg"));
        assert_eq!(idx_path(d, 12), Path::new("/x/00000012.idx"));
    }
}
