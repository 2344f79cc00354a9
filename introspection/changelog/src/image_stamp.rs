//! What the recorder saw of a disk image when it closed a log, so that the
//! next recorded run can trust the log's disk state instead of hashing the
//! whole image again (`introspection/src/tap/fast_open.rs` decides).
//!
//! `DIR/logs/<vm>/image.stamp`, written after the log is sealed and its
//! state checkpoint (`state.ckpt`) saved (temp file, then rename; derived
//! data, never trusted blindly):
//! ```text
//! magic "VMMISTMP" | version u32 = 1 | flags u32 (bit 0: racy) |
//! seq u64 | checksum [32] | size u64 | dev u64 | ino u64 |
//! mtime_s i64 | mtime_ns u32 | ctime_s i64 | ctime_ns u32 |
//! recent_count u32 | recent_count x block u64 | crc32 of everything before
//! ```
//! - `seq` is the barrier the log ended at and `checksum` the disk state
//!   checksum there: the image held exactly that state when stamped.
//! - size, device, inode, mtime and ctime identify the image's content
//!   as of the stamp. A write through the file system moves mtime and
//!   ctime; `touch -r` or `utimensat` can put mtime back, but ctime is set
//!   by the kernel to the current time on every change and cannot be set
//!   by a user: a ctime that still matches means nobody wrote the inode,
//!   short of a clock set back or a tool that bypasses the file system.
//! - `racy`: the image's ctime was not yet behind the clock the kernel
//!   stamps files with when the stamp was taken, so a later write could
//!   carry the same ctime (git's "racily clean" problem; it happens on
//!   file systems with coarse timestamps). A racy stamp is not trusted.
//! - `recent` are the blocks the run wrote last: the open's content
//!   sample always includes them.
use std::fs::{File, Metadata};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const MAGIC: &[u8; 8] = b"VMMISTMP";
const VERSION: u32 = 1;
const FILE: &str = "image.stamp";
const FLAG_RACY: u32 = 1;
/// Fixed part: magic .. recent_count.
const HEAD: usize = 8 + 4 + 4 + 8 + 32 + 8 * 3 + (8 + 4) * 2 + 4;
/// Most recently written blocks a stamp keeps.
pub const MAX_RECENT: usize = 32;
/// How long [`settle`] waits for the kernel's file clock to pass the
/// image's ctime (one tick is 1-10 ms).
const SETTLE_LIMIT: Duration = Duration::from_millis(50);

/// Identity and change times of an image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageMeta {
    pub size: u64,
    pub dev: u64,
    pub ino: u64,
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
}

/// Which part of an image's metadata moved since its stamp.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetaChange {
    #[error("its size changed from {was} to {now} bytes")]
    Size { was: u64, now: u64 },
    #[error("it is another file now (device/inode changed: replaced or moved)")]
    File,
    #[error("its modification time changed")]
    Mtime,
    #[error("its change time (ctime) changed: written, or its metadata changed (touch, chmod, a new hard link)")]
    Ctime,
}

impl ImageMeta {
    pub fn of(m: &Metadata) -> ImageMeta {
        ImageMeta {
            size: m.len(),
            dev: m.dev(),
            ino: m.ino(),
            mtime: (m.mtime(), m.mtime_nsec() as u32),
            ctime: (m.ctime(), m.ctime_nsec() as u32),
        }
    }

    /// The first difference between the stamped metadata (`self`) and the
    /// image's now, in order of how much it says.
    pub fn change_to(&self, now: &ImageMeta) -> Option<MetaChange> {
        if self.size != now.size {
            Some(MetaChange::Size {
                was: self.size,
                now: now.size,
            })
        } else if (self.dev, self.ino) != (now.dev, now.ino) {
            Some(MetaChange::File)
        } else if self.mtime != now.mtime {
            Some(MetaChange::Mtime)
        } else if self.ctime != now.ctime {
            Some(MetaChange::Ctime)
        } else {
            None
        }
    }
}

/// What the recorder saw when it closed a log (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageStamp {
    pub seq: u64,
    pub checksum: [u8; 32],
    pub meta: ImageMeta,
    pub racy: bool,
    pub recent: Vec<u64>,
}

/// Why a stamp file could not be read.
#[derive(Debug, thiserror::Error)]
pub enum StampError {
    #[error("reading {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is damaged or of an unknown version")]
    Damaged { path: String },
}

/// The image's metadata once the kernel's file clock has passed its ctime
/// (so that any later write gets another ctime), and whether that did not
/// happen within [`SETTLE_LIMIT`] (`racy`).
pub fn settle(image: &File) -> std::io::Result<(ImageMeta, bool)> {
    let meta = ImageMeta::of(&image.metadata()?);
    let start = Instant::now();
    loop {
        if coarse_now() > meta.ctime {
            return Ok((meta, false));
        }
        if start.elapsed() >= SETTLE_LIMIT {
            return Ok((meta, true));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The clock the kernel stamps file times with (`CLOCK_REALTIME_COARSE`).
fn coarse_now() -> (i64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec as u32)
}

/// Writes the stamp beside the log (temp file, then rename). Not fsynced:
/// a stamp lost or torn by a crash only costs a full scan at the next open.
pub fn save(log_dir: &Path, stamp: &ImageStamp) -> std::io::Result<()> {
    let recent = &stamp.recent[..stamp.recent.len().min(MAX_RECENT)];
    let mut out = Vec::with_capacity(HEAD + recent.len() * 8 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(if stamp.racy { FLAG_RACY } else { 0 }).to_le_bytes());
    out.extend_from_slice(&stamp.seq.to_le_bytes());
    out.extend_from_slice(&stamp.checksum);
    let m = &stamp.meta;
    for v in [m.size, m.dev, m.ino] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    for (s, ns) in [m.mtime, m.ctime] {
        out.extend_from_slice(&s.to_le_bytes());
        out.extend_from_slice(&ns.to_le_bytes());
    }
    out.extend_from_slice(&(recent.len() as u32).to_le_bytes());
    for b in recent {
        out.extend_from_slice(&b.to_le_bytes());
    }
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let tmp = log_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, log_dir.join(FILE)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// Removes the stamp (best effort): the log moves on without one.
pub fn remove(log_dir: &Path) {
    let _ = std::fs::remove_file(log_dir.join(FILE));
}

/// The stamp beside the log, `None` when there is none.
pub fn load(log_dir: &Path) -> Result<Option<ImageStamp>, StampError> {
    let path = log_dir.join(FILE);
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(StampError::Io {
                path: path.display().to_string(),
                source,
            })
        }
    };
    decode(&bytes).map(Some).ok_or(StampError::Damaged {
        path: path.display().to_string(),
    })
}

fn decode(bytes: &[u8]) -> Option<ImageStamp> {
    if bytes.len() < HEAD + 4 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let mut r = Fields { b: body, at: 8 };
    let (version, flags) = (r.u32(), r.u32());
    if version != VERSION || flags & !FLAG_RACY != 0 {
        return None;
    }
    let seq = r.u64();
    let checksum = r.take(32).try_into().ok()?;
    let (size, dev, ino) = (r.u64(), r.u64(), r.u64());
    let mtime = (r.u64() as i64, r.u32());
    let ctime = (r.u64() as i64, r.u32());
    let count = r.u32() as usize;
    if count > MAX_RECENT || body.len() != HEAD + count * 8 {
        return None;
    }
    let recent = (0..count).map(|_| r.u64()).collect();
    Some(ImageStamp {
        seq,
        checksum,
        meta: ImageMeta {
            size,
            dev,
            ino,
            mtime,
            ctime,
        },
        racy: flags & FLAG_RACY != 0,
        recent,
    })
}

/// Little-endian fields read in order (lengths are checked before).
struct Fields<'a> {
    b: &'a [u8],
    at: usize,
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> &[u8] {
        self.at += n;
        &self.b[self.at - n..self.at]
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take(4).try_into().expect("4 bytes"))
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take(8).try_into().expect("8 bytes"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stamp_roundtrips_and_damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![1u8; 8192]).unwrap();
        let (meta, racy) = settle(&File::open(&image).unwrap()).unwrap();
        assert!(!racy, "a local file system's ctime is passed within a tick");
        let stamp = ImageStamp {
            seq: 42,
            checksum: [7; 32],
            meta,
            racy,
            recent: vec![1, 0],
        };
        assert!(load(dir.path()).unwrap().is_none());
        save(dir.path(), &stamp).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Some(stamp));
        let path = dir.path().join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[30] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(load(dir.path()), Err(StampError::Damaged { .. })));
        remove(dir.path());
        assert!(load(dir.path()).unwrap().is_none());
    }

    #[test]
    fn any_write_or_touch_moves_the_metadata() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("disk.img");
        std::fs::write(&image, vec![1u8; 8192]).unwrap();
        let (meta, _) = settle(&File::open(&image).unwrap()).unwrap();
        let now = || ImageMeta::of(&std::fs::metadata(&image).unwrap());
        assert_eq!(meta.change_to(&now()), None);
        // Same size, same inode, content changed, mtime put back: ctime.
        let before = std::fs::metadata(&image).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap()
            .set_len(8192)
            .unwrap();
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&image)
            .unwrap();
        f.write_all_at(&[2u8; 10], 0).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        assert_eq!(meta.change_to(&now()), Some(MetaChange::Ctime));
        f.set_len(4096).unwrap();
        assert!(matches!(
            meta.change_to(&now()),
            Some(MetaChange::Size { .. })
        ));
    }
}
