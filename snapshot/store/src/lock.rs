//! The writers' lock file and the host boot id.

use std::fs::File;
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;

use super::error::{io_err, Result};
use super::format::BootId;

/// Holds `flock(LOCK_EX)` on the store's lock file until dropped. The
/// caller keeps the file open for at least as long as the guard.
pub(crate) struct LockGuard {
    fd: RawFd,
}

/// Blocks until this open file description holds the exclusive lock.
pub(crate) fn lock_exclusive(file: &File, path: &Path) -> Result<LockGuard> {
    let fd = file.as_raw_fd();
    loop {
        // SAFETY: flock on an open file descriptor; no memory is passed.
        let rc = unsafe { libc::flock(fd, libc::LOCK_EX) };
        if rc == 0 {
            return Ok(LockGuard { fd });
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(io_err("lock (flock)", path)(e));
        }
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        // SAFETY: as above (the file is still open, see the type's doc).
        // Unlocking cannot fail on a valid descriptor; if it did, closing
        // the file would release the lock anyway.
        unsafe { libc::flock(self.fd, libc::LOCK_UN) };
    }
}

/// This host boot's id from `/proc/sys/kernel/random/boot_id`.
///
/// Where that file cannot be read, a random id for this process is used:
/// every handle then treats the store as written in an earlier boot and
/// re-checks unsynced entries before its first write (slower, still safe).
pub(crate) fn current_boot_id() -> BootId {
    static BOOT: std::sync::OnceLock<BootId> = std::sync::OnceLock::new();
    *BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .and_then(|s| parse_uuid(s.trim()))
            .unwrap_or_else(|| {
                let seed = format!(
                    "{}-{:?}-{:?}",
                    std::process::id(),
                    std::time::SystemTime::now(),
                    std::thread::current().id()
                );
                blake3::hash(seed.as_bytes()).as_bytes()[..16]
                    .try_into()
                    .expect("16 bytes")
            })
    })
}

fn parse_uuid(s: &str) -> Option<BootId> {
    let hex: Vec<u8> = s.bytes().filter(|&c| c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn boot_id_parses() {
        let b = super::parse_uuid("76aa092f-7394-40ec-bc0b-be1b4657454f").unwrap();
        assert_eq!(b[0], 0x76);
        assert_eq!(b[15], 0x4f);
        assert!(super::parse_uuid("nope").is_none());
        assert_eq!(super::current_boot_id(), super::current_boot_id());
    }
}
