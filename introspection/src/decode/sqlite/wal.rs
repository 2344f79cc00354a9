//! Write-ahead log: overlay the committed frames onto the database image
//! (fileformat2 §4).
//!
//! WAL header (32 bytes, big-endian): magic 0x377f0682 (checksums over
//! little-endian words) or 0x377f0683 (big-endian words) | format version
//! 3007000 | page size | checkpoint sequence | salt-1 | salt-2 | checksum-1 |
//! checksum-2 (over the first 24 bytes). Each frame: a 24-byte header (page
//! number | database size in pages after a commit, else 0 | salt-1 | salt-2
//! | checksum-1 | checksum-2, cumulative over the previous checksum, the
//! first 8 header bytes and the page) and the page.
//!
//! As SQLite's recovery does, frames are read until the first one whose
//! salts or checksum do not match (stale frames of an earlier WAL
//! generation, zero fill, a torn write); of those, only frames up to the
//! last commit frame count. A WAL whose header is invalid counts as empty.

use super::header::{be32, page_size_field, Header};
use crate::decode::{bad, is_blank, DecodeError};

pub const WAL_HEADER_LEN: usize = 32;
pub const FRAME_HEADER_LEN: usize = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;
const VERSION: u32 = 3_007_000;

/// What [`apply_wal_info`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WalInfo {
    /// Frames that passed the salt and checksum checks.
    pub valid_frames: usize,
    /// Frames applied (valid and at or before the last commit frame).
    pub committed_frames: usize,
    /// Commit frames among those.
    pub commits: usize,
    /// Database size in pages after the last commit (0 when none).
    pub db_pages: u32,
}

fn checksum(data: &[u8], big_endian: bool, mut s0: u32, mut s1: u32) -> (u32, u32) {
    for w in data.chunks_exact(8) {
        let (x0, x1) = if big_endian {
            (
                u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_be_bytes([w[4], w[5], w[6], w[7]]),
            )
        } else {
            (
                u32::from_le_bytes([w[0], w[1], w[2], w[3]]),
                u32::from_le_bytes([w[4], w[5], w[6], w[7]]),
            )
        };
        s0 = s0.wrapping_add(x0).wrapping_add(s1);
        s1 = s1.wrapping_add(x1).wrapping_add(s0);
    }
    (s0, s1)
}

/// The database image after the committed transactions of `wal`: `db` with
/// the committed frames overlaid, sized to the last commit's page count.
/// `db` may be empty or blank (a new database whose pages are all in the
/// WAL) and may extend past the database (a fixed extent).
pub fn apply_wal(db: &[u8], wal: &[u8]) -> Result<Vec<u8>, DecodeError> {
    apply_wal_info(db, wal).map(|(image, _)| image)
}

/// [`apply_wal`], also saying how many frames were valid and committed.
pub fn apply_wal_info(db: &[u8], wal: &[u8]) -> Result<(Vec<u8>, WalInfo), DecodeError> {
    let mut info = WalInfo::default();
    let unchanged = |info| Ok((db.to_vec(), info));
    if wal.len() < WAL_HEADER_LEN || is_blank(&wal[..WAL_HEADER_LEN]) {
        return unchanged(info);
    }
    let f = |at| be32(wal, at).unwrap_or(0);
    let big_endian = match f(0) {
        MAGIC_BE => true,
        MAGIC_LE => false,
        _ => return unchanged(info),
    };
    if f(4) != VERSION {
        return bad(format!("sqlite wal: unsupported format version {}", f(4)));
    }
    let Some(page_size) = page_size_field(f(8), true) else {
        return unchanged(info);
    };
    if checksum(&wal[..24], big_endian, 0, 0) != (f(24), f(28)) {
        return unchanged(info);
    }
    if !is_blank(db) {
        let h = Header::parse(db)?;
        if h.page_size != page_size {
            return bad(format!(
                "sqlite wal: page size {page_size} differs from the database's {}",
                h.page_size
            ));
        }
    }
    let (salt1, salt2) = (f(16), f(20));
    let ps = page_size as usize;
    let frame_len = FRAME_HEADER_LEN + ps;
    let mut sum = (f(24), f(28));
    let mut last_commit: Option<(usize, u32)> = None;
    let mut at = WAL_HEADER_LEN;
    let mut n = 0usize;
    while let Some(frame) = wal.get(at..at + frame_len) {
        let g = |o| be32(frame, o).unwrap_or(0);
        if g(0) == 0 || g(8) != salt1 || g(12) != salt2 {
            break;
        }
        let s = checksum(&frame[..8], big_endian, sum.0, sum.1);
        let s = checksum(&frame[FRAME_HEADER_LEN..], big_endian, s.0, s.1);
        if s != (g(16), g(20)) {
            break;
        }
        sum = s;
        n += 1;
        if g(4) != 0 {
            last_commit = Some((n, g(4)));
        }
        at += frame_len;
    }
    info.valid_frames = n;
    let Some((committed, db_pages)) = last_commit else {
        return unchanged(info);
    };
    let out_len = db_pages as u64 * ps as u64;
    if out_len > (db.len() as u64).saturating_add(wal.len() as u64) {
        return bad(format!(
            "sqlite wal: commit claims {db_pages} pages, more than db and wal hold"
        ));
    }
    let mut out = vec![0u8; out_len as usize];
    let keep = db.len().min(out.len());
    out[..keep].copy_from_slice(&db[..keep]);
    for k in 0..committed {
        let frame = &wal[WAL_HEADER_LEN + k * frame_len..][..frame_len];
        if be32(frame, 4).unwrap_or(0) != 0 {
            info.commits += 1;
        }
        let pgno = be32(frame, 0).unwrap_or(0) as usize;
        if pgno == 0 || pgno > db_pages as usize {
            continue;
        }
        out[(pgno - 1) * ps..pgno * ps].copy_from_slice(&frame[FRAME_HEADER_LEN..]);
    }
    info.committed_frames = committed;
    info.db_pages = db_pages;
    Ok((out, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_words() {
        let d = [1u8, 0, 0, 0, 2, 0, 0, 0];
        assert_eq!(checksum(&d, false, 0, 0), (1, 3));
        assert_eq!(checksum(&d, true, 0, 0), (1 << 24, 3 << 24));
    }

    #[test]
    fn blank_or_bad_wal_is_empty() {
        let db = vec![0u8; 4096];
        assert_eq!(apply_wal(&db, &[]).unwrap(), db);
        assert_eq!(apply_wal(&db, &[0u8; 4096]).unwrap(), db);
        assert_eq!(apply_wal(&db, &[0x55u8; 4096]).unwrap(), db);
    }
}
