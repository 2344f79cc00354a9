//! Where a file's bytes are on its block device: the FIEMAP ioctl
//! (linux/fiemap.h), with FIEMAP_FLAG_SYNC so that dirty pages are written
//! back and delayed allocations get a place first.
//!
//! FIEMAP reports byte offsets on the filesystem's block device; they become
//! 512-byte sectors of the virtio disk by adding where that device starts on
//! the disk (`start` of a partition in sysfs, 0 for a whole disk, or the
//! `--sector-offset` given). Devices stacked on the disk (LVM, dm-crypt, md)
//! do not map linearly: use a plain partition or whole disk.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use hint_proto::{Extent, MAX_EXTENTS, SECTOR_SIZE};

/// `_IOWR('f', 11, struct fiemap)`.
const FS_IOC_FIEMAP: libc::c_ulong = 0xC020_660B;
const FIEMAP_FLAG_SYNC: u32 = 0x1;
const FIEMAP_EXTENT_LAST: u32 = 0x1;
/// Extent flags that make the disk bytes differ from the file's bytes (or
/// unknown), most telling first.
const UNUSABLE: [(u32, &str); 8] = [
    (0x2, "location unknown (FIEMAP_EXTENT_UNKNOWN)"),
    (0x4, "delayed allocation (FIEMAP_EXTENT_DELALLOC)"),
    (0x8, "encoded, e.g. compressed (FIEMAP_EXTENT_ENCODED)"),
    (0x80, "encrypted (FIEMAP_EXTENT_DATA_ENCRYPTED)"),
    (0x200, "data inline in metadata (FIEMAP_EXTENT_DATA_INLINE)"),
    (0x400, "packed tail (FIEMAP_EXTENT_DATA_TAIL)"),
    (0x100, "not block aligned (FIEMAP_EXTENT_NOT_ALIGNED)"),
    (
        0x800,
        "unwritten, preallocated: the disk holds stale bytes (FIEMAP_EXTENT_UNWRITTEN)",
    ),
];
/// Extents asked for per ioctl.
const BATCH: usize = 128;
/// Most ioctl rounds per file (BATCH * this many extents).
const MAX_ROUNDS: usize = 64 * 1024;

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct FiemapExtent {
    fe_logical: u64,
    fe_physical: u64,
    fe_length: u64,
    fe_reserved64: [u64; 2],
    fe_flags: u32,
    fe_reserved: [u32; 3],
}

/// `struct fiemap` followed by room for BATCH extents.
#[repr(C)]
struct Fiemap {
    fm_start: u64,
    fm_length: u64,
    fm_flags: u32,
    fm_mapped_extents: u32,
    fm_extent_count: u32,
    fm_reserved: u32,
    fm_extents: [FiemapExtent; BATCH],
}

/// One extent as FIEMAP reports it (bytes on the filesystem's device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawExtent {
    /// Byte offset in the file.
    pub logical: u64,
    /// Byte offset on the block device.
    pub physical: u64,
    /// Length in bytes.
    pub length: u64,
    /// FIEMAP_EXTENT_* flags.
    pub flags: u32,
}

/// An extent left out of the hints, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unusable {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// Why its disk bytes cannot be used.
    pub reason: &'static str,
}

/// A file's usable extents (sorted, adjacent ones merged) and the rest.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Mapping {
    /// Extents in virtio-disk sectors, at most MAX_EXTENTS.
    pub extents: Vec<Extent>,
    /// Extents that cannot be used.
    pub unusable: Vec<Unusable>,
    /// Usable extents left out beyond MAX_EXTENTS.
    pub dropped: usize,
}

/// True when `e` means the filesystem has no FIEMAP (tmpfs, procfs, ...).
pub fn is_unsupported(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::ENOTTY | libc::EINVAL)
    )
}

/// Runs FIEMAP over the whole of `file`.
pub fn fiemap(file: &File) -> io::Result<Vec<RawExtent>> {
    let mut out = Vec::new();
    let mut start = 0u64;
    for _ in 0..MAX_ROUNDS {
        let mut fm = Box::new(Fiemap {
            fm_start: start,
            fm_length: u64::MAX - start,
            fm_flags: FIEMAP_FLAG_SYNC,
            fm_mapped_extents: 0,
            fm_extent_count: BATCH as u32,
            fm_reserved: 0,
            fm_extents: [FiemapExtent::default(); BATCH],
        });
        // SAFETY: `fm` is a valid, writable `struct fiemap` with room for
        // `fm_extent_count` extents, alive for the whole call.
        let rc = unsafe {
            libc::ioctl(
                file.as_raw_fd(),
                FS_IOC_FIEMAP as _,
                &mut *fm as *mut Fiemap,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = (fm.fm_mapped_extents as usize).min(BATCH);
        if n == 0 {
            return Ok(out);
        }
        let mut last = false;
        for e in &fm.fm_extents[..n] {
            out.push(RawExtent {
                logical: e.fe_logical,
                physical: e.fe_physical,
                length: e.fe_length,
                flags: e.fe_flags,
            });
            last |= e.fe_flags & FIEMAP_EXTENT_LAST != 0;
        }
        let tail = &fm.fm_extents[n - 1];
        let next = tail.fe_logical.saturating_add(tail.fe_length);
        if last || next <= start || next == u64::MAX {
            return Ok(out);
        }
        start = next;
    }
    Err(io::Error::other("file has too many extents"))
}

/// Turns FIEMAP extents into hint extents: sectors = `sector_offset` +
/// physical / 512; unusable ones set apart; adjacent ones merged.
pub fn classify(raw: &[RawExtent], sector_offset: u64) -> Mapping {
    let mut m = Mapping::default();
    let mut sorted = raw.to_vec();
    sorted.sort_by_key(|e| e.logical);
    for r in sorted.iter().filter(|r| r.length > 0) {
        let reason = UNUSABLE
            .iter()
            .find(|(f, _)| r.flags & f != 0)
            .map(|(_, why)| *why);
        let sector = (r.physical / SECTOR_SIZE).checked_add(sector_offset);
        let reason = reason.or_else(|| {
            if r.physical % SECTOR_SIZE != 0 {
                Some("not sector aligned on the device")
            } else if sector
                .and_then(|s| s.checked_mul(SECTOR_SIZE))
                .and_then(|b| b.checked_add(r.length))
                .is_none()
                || r.logical.checked_add(r.length).is_none()
            {
                Some("offset out of range")
            } else {
                None
            }
        });
        if let Some(reason) = reason {
            m.unusable.push(Unusable {
                file_offset: r.logical,
                len: r.length,
                reason,
            });
            continue;
        }
        let e = Extent {
            file_offset: r.logical,
            sector: sector.unwrap_or_default(),
            len: r.length,
        };
        match m.extents.last_mut() {
            Some(p)
                if p.file_offset + p.len == e.file_offset
                    && p.sector * SECTOR_SIZE + p.len == e.sector * SECTOR_SIZE =>
            {
                p.len += e.len;
            }
            _ => m.extents.push(e),
        }
    }
    if m.extents.len() > MAX_EXTENTS {
        m.dropped = m.extents.len() - MAX_EXTENTS;
        m.extents.truncate(MAX_EXTENTS);
    }
    m
}

/// Where the block device `dev` (an `st_dev`) starts on its disk, in sectors,
/// from sysfs: a partition's `start`, 0 for a whole disk; `None` when sysfs
/// does not know the device (btrfs, overlayfs, network filesystems).
pub fn device_start_sector(dev: u64) -> Option<u64> {
    let dir = format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    match std::fs::read_to_string(format!("{dir}/start")) {
        Ok(s) => s.trim().parse().ok(),
        Err(_) if std::path::Path::new(&dir).exists() => Some(0),
        Err(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(logical: u64, physical: u64, length: u64, flags: u32) -> RawExtent {
        RawExtent {
            logical,
            physical,
            length,
            flags,
        }
    }

    #[test]
    fn sectors_offsets_and_merging() {
        let m = classify(
            &[
                raw(8192, 1 << 20, 4096, 0), // out of order on purpose
                raw(0, 40960, 4096, 0),
                raw(4096, 45056, 4096, 0), // continues the first on disk: merged
                raw(12288, (1 << 20) + 4096, 4096, FIEMAP_EXTENT_LAST),
            ],
            2048,
        );
        assert_eq!(
            m.extents,
            vec![
                Extent {
                    file_offset: 0,
                    sector: 2048 + 80,
                    len: 8192
                },
                Extent {
                    file_offset: 8192,
                    sector: 2048 + 2048,
                    len: 8192
                },
            ]
        );
        assert!(m.unusable.is_empty() && m.dropped == 0);
    }

    #[test]
    fn unusable_flags_are_reported() {
        let flagged: Vec<RawExtent> = UNUSABLE
            .iter()
            .enumerate()
            .map(|(i, (f, _))| raw(i as u64 * 4096, 0, 4096, *f))
            .collect();
        let m = classify(&flagged, 0);
        assert!(m.extents.is_empty());
        assert_eq!(m.unusable.len(), UNUSABLE.len());
        assert!(m.unusable[1].reason.contains("DELALLOC"));
        // Unknown wins over the others; a SHARED (0x2000) or MERGED (0x1000) extent is fine.
        let m = classify(
            &[
                raw(0, 0, 4096, 0x2 | 0x8),
                raw(4096, 512, 100, 0x2000 | 0x1000),
            ],
            0,
        );
        assert!(m.unusable[0].reason.contains("UNKNOWN"));
        assert_eq!(
            m.extents,
            vec![Extent {
                file_offset: 4096,
                sector: 1,
                len: 100
            }]
        );
    }

    #[test]
    fn misaligned_overflowing_empty_and_too_many() {
        let m = classify(
            &[
                raw(0, 100, 4096, 0),
                raw(4096, u64::MAX - 511, 4096, 0),
                raw(8192, 0, 0, 0),
            ],
            0,
        );
        assert!(m.extents.is_empty());
        let reasons: Vec<_> = m.unusable.iter().map(|u| u.reason).collect();
        assert_eq!(
            reasons,
            ["not sector aligned on the device", "offset out of range"]
        );
        let m = classify(&[raw(0, 0, 4096, 0)], u64::MAX);
        assert_eq!(m.unusable[0].reason, "offset out of range");
        // Every other block: nothing merges.
        let many: Vec<_> = (0..MAX_EXTENTS as u64 + 10)
            .map(|i| raw(i * 4096, i * 8192, 4096, 0))
            .collect();
        let m = classify(&many, 0);
        assert_eq!((m.extents.len(), m.dropped), (MAX_EXTENTS, 10));
    }
}
