//! Locks on disk images, so that two VMMs (or a VMM and `vmm replay`) never
//! use one image in conflicting ways.
//!
//! `flock(2)`, non-blocking: shared for readers (a read-only
//! `--disk PATH,ro`, a replay base), exclusive for writers (a read-write
//! disk, the file a replay output replaces). A flock belongs to the open
//! file description, so it lasts exactly as long as the `File` holding it
//! and dies with the process however that ends: there is no stale lock to
//! clean up after a crash. The locks are advisory: they bind `vmm` and any
//! other tool that takes them (QEMU's image locking uses fcntl ranges and is
//! not seen here).
//!
//! A refused lock names the process holding it, found in `/proc/locks`
//! (checked against that process's open files) or, failing that, by
//! looking through `/proc/*/fd`.
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

/// How much of an image a lock claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Others may read too; nobody may write.
    Shared,
    /// Nobody else may use the image.
    Exclusive,
}

#[derive(Debug, Error)]
pub enum LockError {
    #[error("{} is in use by {holder}; stop that process first, or use another image", .path.display())]
    InUse { path: PathBuf, holder: String },
    #[error("cannot lock {}: {source}", .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Locks the open image `file` (named `path` in messages) for as long as
/// `file` stays open.
pub fn lock(file: &File, path: &Path, mode: LockMode) -> Result<(), LockError> {
    let op = match mode {
        LockMode::Shared => libc::LOCK_SH,
        LockMode::Exclusive => libc::LOCK_EX,
    } | libc::LOCK_NB;
    loop {
        // SAFETY: flock on a descriptor we own; no memory is passed.
        if unsafe { libc::flock(file.as_raw_fd(), op) } == 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {
                return Err(LockError::InUse {
                    path: path.to_path_buf(),
                    holder: holder(file).unwrap_or_else(|| "another process".into()),
                })
            }
            _ => {
                return Err(LockError::Io {
                    path: path.to_path_buf(),
                    source: e,
                })
            }
        }
    }
}

/// Opens `path` read-only and locks it; the lock lasts while the returned
/// file is open. (An exclusive flock needs no write access.)
pub fn lock_path(path: &Path, mode: LockMode) -> Result<File, LockError> {
    let file = File::open(path).map_err(|source| LockError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    lock(&file, path, mode)?;
    Ok(file)
}

/// Whether some process holds a lock on `path` (an existing file) that a
/// writer would conflict with. Takes and drops an exclusive lock to find
/// out.
pub fn check_unlocked(path: &Path) -> Result<(), LockError> {
    lock_path(path, LockMode::Exclusive).map(drop)
}

/// "pid 1234 (vmm run --disk disk.img)" for a process holding a lock on
/// the file `file` has open, if one is found.
pub fn holder(file: &File) -> Option<String> {
    let meta = file.metadata().ok()?;
    let me = std::process::id();
    let pid = locks_on(meta.ino())
        .into_iter()
        .filter(|&pid| pid != me)
        .find(|&pid| has_open(pid, meta.dev(), meta.ino()))
        .or_else(|| openers(meta.dev(), meta.ino(), me))?;
    Some(describe_pid(pid))
}

/// Pids that `/proc/locks` lists as holding a lock on inode `ino`. Lines
/// look like `1: FLOCK  ADVISORY  WRITE 1234 00:2d:5678 0 EOF`; waiters
/// (`1: -> FLOCK ...`) hold nothing and are skipped. The device is not
/// compared: on overlay filesystems it differs from what stat reports, so
/// candidates are confirmed by their open files instead.
fn locks_on(ino: u64) -> Vec<u32> {
    let Ok(text) = std::fs::read_to_string("/proc/locks") else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.get(1) == Some(&"->") {
                return None;
            }
            let file_ino: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
            (file_ino == ino).then(|| fields.get(4)?.parse().ok())?
        })
        .collect()
}

/// Whether process `pid` has the file (dev, ino) open.
fn has_open(pid: u32, dev: u64, ino: u64) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(|e| e.ok())
        .filter_map(|e| std::fs::metadata(e.path()).ok())
        .any(|m| m.dev() == dev && m.ino() == ino)
}

/// The first process other than us with the file open.
fn openers(dev: u64, ino: u64, me: u32) -> Option<u32> {
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .find(|&pid| has_open(pid, dev, ino))
}

/// `pid N (its command line)`, shortened to a readable length.
pub fn describe_pid(pid: u32) -> String {
    const MAX: usize = 100;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let mut args = cmdline
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned());
    let Some(program) = args.next() else {
        return format!("pid {pid}");
    };
    let program = program.rsplit('/').next().unwrap_or(&program).to_string();
    let mut line = std::iter::once(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ");
    if line.chars().count() > MAX {
        line = line.chars().take(MAX).collect::<String>() + "...";
    }
    format!("pid {pid} ({line})")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_coexist_and_exclude_a_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        let a = lock_path(&path, LockMode::Shared).unwrap();
        let b = lock_path(&path, LockMode::Shared).unwrap();
        let err = lock_path(&path, LockMode::Exclusive).unwrap_err();
        // Held by this very process: the holder is not found elsewhere.
        assert!(matches!(err, LockError::InUse { .. }), "{err}");
        assert!(err.to_string().contains("disk.img is in use by"), "{err}");
        drop((a, b));
        let c = lock_path(&path, LockMode::Exclusive).unwrap();
        assert!(check_unlocked(&path).is_err());
        drop(c);
        check_unlocked(&path).unwrap();
    }

    #[test]
    fn a_holder_in_another_process_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.img");
        std::fs::write(&path, [0u8; 4096]).unwrap();
        // flock(1) holds the lock in a child for as long as `sleep` runs.
        let Ok(mut child) = std::process::Command::new("flock")
            .arg("-x")
            .arg(&path)
            .args(["sleep", "30"])
            .spawn()
        else {
            eprintln!("skipped: flock(1) is not installed");
            return;
        };
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let err = loop {
            match lock_path(&path, LockMode::Shared) {
                Err(e) => break e,
                Ok(_) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(10))
                }
                Ok(_) => panic!("flock(1) never took the lock"),
            }
        };
        let _ = child.kill();
        let _ = child.wait();
        let msg = err.to_string();
        // flock(1) forks `sleep`, which inherits the locked descriptor:
        // either of them is a correct answer.
        assert!(msg.contains("held.img is in use by pid "), "{msg}");
        assert!(msg.contains("flock") || msg.contains("sleep"), "{msg}");
    }
}
