//! The log's `SEAL` file: where the log durably ends, whether it was closed
//! cleanly, and the seq floor for the next writer. It is what lets an open
//! tell a crash's torn tail (cut) from damage (refused). Layout and rules:
//! see "Seal and sync point" in the `log` module doc.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::error::{io_err, LogError};
use super::{get_u32, get_u64};

pub(crate) const SEAL_FILE: &str = "SEAL";
const SEAL_MAGIC: [u8; 8] = *b"VMMCSEAL";
const SLOT_LEN: usize = 64;
/// Bytes covered by a slot's CRC.
const SLOT_BODY: usize = 52;
const FLAG_SEALED: u32 = 1;
/// Seqs reserved ahead of the last committed one: the writer persists a new
/// limit (one extra fsync) only when a commit would cross the old one.
pub(crate) const SEQ_RESERVE: u64 = 4096;

/// One state of the seal file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SealState {
    pub generation: u64,
    /// The log was closed cleanly and ends exactly at the sync point.
    pub sealed: bool,
    /// Segment number of the sync point (0: before the first segment).
    pub seg_no: u32,
    /// Length of segment `seg_no` that is durable (fsynced).
    pub end: u64,
    /// Seq after the last record before the sync point.
    pub next_seq: u64,
    /// No seq at or above this was ever handed out by a writer.
    pub seq_limit: u64,
}

impl SealState {
    /// Whether bytes at `offset` of segment `no` are protected: sealed, or
    /// before the sync point. Damage there is damage, never a torn tail.
    pub fn covers(&self, no: u32, offset: u64) -> bool {
        self.sealed || no < self.seg_no || (no == self.seg_no && offset < self.end)
    }

    /// Why protected bytes are not cut (for error messages).
    pub fn why(&self) -> &'static str {
        if self.sealed {
            "the log was sealed by a clean close, so this is damage, not a torn tail"
        } else {
            "it lies before the log's last sync point, where every record was fsynced \
             and acknowledged, so this is damage, not a torn tail"
        }
    }

    fn encode(&self) -> [u8; SLOT_LEN] {
        let mut b = [0u8; SLOT_LEN];
        b[0..8].copy_from_slice(&SEAL_MAGIC);
        b[8..16].copy_from_slice(&self.generation.to_le_bytes());
        let flags = if self.sealed { FLAG_SEALED } else { 0 };
        b[16..20].copy_from_slice(&flags.to_le_bytes());
        b[20..24].copy_from_slice(&self.seg_no.to_le_bytes());
        b[24..32].copy_from_slice(&self.end.to_le_bytes());
        b[32..40].copy_from_slice(&self.next_seq.to_le_bytes());
        b[40..48].copy_from_slice(&self.seq_limit.to_le_bytes());
        let crc = crc32fast::hash(&b[..SLOT_BODY]);
        b[SLOT_BODY..SLOT_BODY + 4].copy_from_slice(&crc.to_le_bytes());
        b
    }

    fn decode(b: &[u8]) -> Option<SealState> {
        if b.len() < SLOT_LEN
            || b[0..8] != SEAL_MAGIC
            || crc32fast::hash(&b[..SLOT_BODY]) != get_u32(b, SLOT_BODY)
        {
            return None;
        }
        let flags = get_u32(b, 16);
        let s = SealState {
            generation: get_u64(b, 8),
            sealed: flags & FLAG_SEALED != 0,
            seg_no: get_u32(b, 20),
            end: get_u64(b, 24),
            next_seq: get_u64(b, 32),
            seq_limit: get_u64(b, 40),
        };
        (flags & !FLAG_SEALED == 0 && s.next_seq >= 1 && s.seq_limit >= s.next_seq).then_some(s)
    }
}

/// Reads the seal state of the log in `dir`: `None` when the log has no
/// seal file (a new log, or one written before seals existed). A file with
/// no valid slot is damage: it was created whole (temp file and rename),
/// and a torn update can only hit the slot being written.
pub(crate) fn load(dir: &Path) -> Result<Option<SealState>, LogError> {
    let path = dir.join(SEAL_FILE);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("reading", &path)(e)),
    };
    let best = bytes
        .chunks(SLOT_LEN)
        .take(2)
        .filter_map(SealState::decode)
        .max_by_key(|s| s.generation);
    match best {
        Some(s) => Ok(Some(s)),
        None => Err(LogError::Corrupt {
            path,
            offset: 0,
            seq: None,
            reason: "the seal file holds no valid state".into(),
        }),
    }
}

/// Why a bad or unfinished frame at `offset` of segment file `path` in
/// `dir` cannot be a torn tail (the seal protects it), or `None`.
pub(crate) fn protects(
    dir: &Path,
    path: &Path,
    offset: u64,
) -> Result<Option<&'static str>, LogError> {
    let no: Option<u32> = path
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok());
    Ok(match (load(dir)?, no) {
        (Some(s), Some(no)) if s.covers(no, offset) => Some(s.why()),
        _ => None,
    })
}

/// The open seal file of a writer.
pub(crate) struct SealFile {
    path: PathBuf,
    file: File,
    pub state: SealState,
}

impl SealFile {
    /// Opens the seal file of `dir` (creating it whole when missing) and
    /// makes `state` (its generation is assigned here) durable in it.
    pub fn open(dir: &Path, mut state: SealState) -> Result<SealFile, LogError> {
        let path = dir.join(SEAL_FILE);
        let prev = load(dir)?;
        if prev.is_none() {
            // Created whole: a crash leaves either no seal file or this one.
            state.generation = 1;
            let tmp = dir.join(format!("{SEAL_FILE}.tmp"));
            let mut bytes = [0u8; 2 * SLOT_LEN];
            bytes[SLOT_LEN..].copy_from_slice(&state.encode());
            let created = File::create(&tmp)
                .and_then(|mut f| f.write_all(&bytes).and_then(|()| f.sync_all()));
            created.map_err(io_err("creating", &tmp))?;
            fs::rename(&tmp, &path).map_err(io_err("renaming into place", &path))?;
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync of directory", dir))?;
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_err("opening", &path))?;
        let mut seal = SealFile {
            path,
            file,
            state: prev.unwrap_or(state),
        };
        if prev.is_some() {
            seal.write(state)?;
        }
        Ok(seal)
    }

    /// Writes `state` as the next generation into the older slot and
    /// `fdatasync`s it; the other slot keeps the previous state whole.
    pub fn write(&mut self, mut state: SealState) -> Result<(), LogError> {
        state.generation = self.state.generation + 1;
        let slot = (state.generation % 2) * SLOT_LEN as u64;
        self.file
            .write_all_at(&state.encode(), slot)
            .and_then(|()| self.file.sync_data())
            .map_err(io_err("writing", &self.path))?;
        self.state = state;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(generation: u64) -> SealState {
        SealState {
            generation,
            sealed: generation % 2 == 0,
            seg_no: 3,
            end: 4096,
            next_seq: 17,
            seq_limit: 17 + SEQ_RESERVE,
        }
    }

    #[test]
    fn newest_valid_slot_wins_and_a_torn_slot_falls_back() {
        let tmp = tempfile::tempdir().unwrap();
        let mut seal = SealFile::open(tmp.path(), state(0)).unwrap();
        assert_eq!(load(tmp.path()).unwrap().unwrap().generation, 1);
        seal.write(state(0)).unwrap();
        seal.write(SealState {
            next_seq: 20,
            ..state(0)
        })
        .unwrap();
        let got = load(tmp.path()).unwrap().unwrap();
        assert_eq!((got.generation, got.next_seq, got.sealed), (3, 20, true));
        // Tear the newest slot (generation 3 lives in slot 1).
        let path = tmp.path().join(SEAL_FILE);
        let mut bytes = fs::read(&path).unwrap();
        bytes[SLOT_LEN + 30] ^= 1;
        fs::write(&path, &bytes).unwrap();
        let got = load(tmp.path()).unwrap().unwrap();
        assert_eq!((got.generation, got.next_seq), (2, 17));
        // Both slots bad: damage, reported.
        bytes[5] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(tmp.path()), Err(LogError::Corrupt { .. })));
    }
}
