//! A memory region shared by several VMs (`--shared-mem NAME,SIZE[,PATH]`).
//!
//! The region is a file (PATH: every VM that maps the same file shares it)
//! or an anonymous memfd (this VM only), mapped MAP_SHARED into the guest
//! at `SHARED_MEM_BASE` in the MMIO gap and announced on the command line as
//! `shmem=NAME@0xe0000000:SIZE`. It is its own KVM memory slot, with dirty
//! logging when snapshots are on: a snapshot captures its pages (each
//! distinct page version is stored once, across VMs, by the content store).
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::PathBuf;

use crate::error::{Result, VmmError};
use crate::memory::MIB;

/// Guest physical address of the shared region (in the MMIO gap, above the
/// virtio windows).
pub const SHARED_MEM_BASE: u64 = 0xe000_0000;
/// Largest shared region.
pub const MAX_SHARED_MIB: u64 = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedMemConfig {
    pub name: String,
    pub size_mib: u64,
    pub path: Option<PathBuf>,
}

impl std::str::FromStr for SharedMemConfig {
    type Err = String;

    /// `NAME,SIZE_MIB[,PATH]`, e.g. `mailbox,4,/dev/shm/mailbox`.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = |why: &str| {
            format!("'{s}': {why}; use NAME,SIZE_MIB[,PATH] (e.g. mailbox,4,/dev/shm/mailbox)")
        };
        let mut parts = s.splitn(3, ',');
        let name = parts.next().unwrap_or_default();
        if name.is_empty()
            || name.len() > 64
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        {
            return Err(bad("the name must be 1-64 of A-Z a-z 0-9 - _ ."));
        }
        let size_mib: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| bad("the size (MiB) is missing or not a number"))?;
        if size_mib == 0 || size_mib > MAX_SHARED_MIB {
            return Err(bad(&format!("the size must be 1..={MAX_SHARED_MIB} MiB")));
        }
        let path = parts.next().filter(|p| !p.is_empty()).map(PathBuf::from);
        Ok(Self {
            name: name.to_string(),
            size_mib,
            path,
        })
    }
}

/// A mapped shared region.
pub struct SharedMem {
    pub config: SharedMemConfig,
    _file: File,
    host: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this object and only handed out as raw
// memory to KVM and, while the vCPU is stopped, to snapshots.
unsafe impl Send for SharedMem {}

impl SharedMem {
    pub fn open(config: &SharedMemConfig) -> Result<Self> {
        let len = (config.size_mib * MIB) as usize;
        let err = |what: String| VmmError::SharedMem(format!("{}: {what}", config.name));
        let file = match &config.path {
            Some(path) => OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map_err(|e| err(format!("{}: {e}", path.display())))?,
            None => {
                let name = std::ffi::CString::new(config.name.clone()).expect("checked name");
                // SAFETY: memfd_create takes a NUL-terminated name and flags.
                let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
                if fd < 0 {
                    return Err(err(format!(
                        "memfd_create: {}",
                        std::io::Error::last_os_error()
                    )));
                }
                // SAFETY: fd is a fresh descriptor that we own.
                unsafe { File::from_raw_fd(fd) }
            }
        };
        let current = file.metadata().map_err(|e| err(e.to_string()))?.len();
        if current < len as u64 {
            file.set_len(len as u64).map_err(|e| err(e.to_string()))?;
        }
        // SAFETY: a new shared mapping of `len` bytes of this file; it is
        // unmapped in Drop and nothing else maps at that address.
        let host = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if host == libc::MAP_FAILED {
            return Err(err(format!("mmap: {}", std::io::Error::last_os_error())));
        }
        Ok(Self {
            config: config.clone(),
            _file: file,
            host: host.cast(),
            len,
        })
    }

    pub fn host(&self) -> *mut u8 {
        self.host
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The command-line word that announces the region to the guest.
    pub fn cmdline_arg(config: &SharedMemConfig) -> String {
        format!(
            "shmem={}@{SHARED_MEM_BASE:#x}:{}",
            config.name,
            config.size_mib * MIB
        )
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping made in `open`, after KVM
        // (dropped before us) no longer uses it.
        unsafe { libc::munmap(self.host.cast(), self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        let c: SharedMemConfig = "mailbox,4,/dev/shm/x".parse().unwrap();
        assert_eq!(
            c,
            SharedMemConfig {
                name: "mailbox".into(),
                size_mib: 4,
                path: Some("/dev/shm/x".into())
            }
        );
        assert_eq!("m,1".parse::<SharedMemConfig>().unwrap().path, None);
        for bad in ["", ",4", "m", "m,0", "m,9999", "bad name,4", "m,x"] {
            assert!(bad.parse::<SharedMemConfig>().is_err(), "{bad}");
        }
    }
}
