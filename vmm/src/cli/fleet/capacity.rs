//! What a worker has: cores, memory, free disk and disk write bandwidth,
//! measured at start (each can be set instead, e.g. to keep some for
//! other work on the host).
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Instant;

use replay::fleet::WorkerInfo;

use super::super::CliError;

/// Bytes written to measure the disk's write bandwidth: enough to get past
/// the page cache's first absorption, little enough to take well under a
/// second on an ordinary disk.
const PROBE_BYTES: usize = 32 << 20;

/// What the user set instead of measuring.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub cores: Option<u32>,
    pub mem_bytes: Option<u64>,
    pub write_bytes_per_sec: Option<u64>,
}

/// Measures this host for worker `id`, its jobs' files in `work_dir`.
pub fn measure(
    id: &str,
    work_dir: &Path,
    labels: &[String],
    set: &Overrides,
) -> Result<WorkerInfo, CliError> {
    let cores = set
        .cores
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u32));
    let mem_bytes = match set.mem_bytes {
        Some(m) => m,
        None => mem_available()?,
    };
    let write_bytes_per_sec = match set.write_bytes_per_sec {
        Some(b) => b,
        None => write_bandwidth(work_dir)?,
    };
    Ok(WorkerInfo {
        id: id.to_string(),
        cores,
        mem_bytes,
        free_disk_bytes: free_disk(work_dir)?,
        write_bytes_per_sec,
        labels: labels.to_vec(),
    })
}

/// `MemAvailable` of /proc/meminfo, in bytes.
fn mem_available() -> Result<u64, CliError> {
    let text = std::fs::read_to_string("/proc/meminfo")
        .map_err(|e| CliError::new(format!("cannot read /proc/meminfo: {e}; pass --mem")))?;
    text.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| CliError::new("/proc/meminfo has no MemAvailable line; pass --mem"))
}

/// Bytes free to an unprivileged user on the filesystem of `dir`.
pub fn free_disk(dir: &Path) -> Result<u64, CliError> {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(|_| CliError::new(format!("{} has a NUL byte", dir.display())))?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a NUL-terminated path and `st` a statvfs to fill.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        let e = std::io::Error::last_os_error();
        return Err(CliError::new(format!(
            "cannot stat the filesystem of {}: {e}",
            dir.display()
        )));
    }
    Ok(st.f_bavail as u64 * st.f_frsize as u64)
}

/// Writes and fsyncs [`PROBE_BYTES`] in `dir` (then removes them): the
/// pace at which this host can write the disks its replays rebuild.
fn write_bandwidth(dir: &Path) -> Result<u64, CliError> {
    let path = dir.join(format!(".bandwidth-probe-{}", std::process::id()));
    let fail = |e: std::io::Error| {
        let _ = std::fs::remove_file(&path);
        CliError::new(format!(
            "cannot measure the write bandwidth in {}: {e}; pass --disk-bw",
            dir.display()
        ))
    };
    let chunk = vec![0x5au8; 1 << 20];
    let started = Instant::now();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(fail)?;
    for _ in 0..PROBE_BYTES / chunk.len() {
        file.write_all(&chunk).map_err(fail)?;
    }
    file.sync_all().map_err(fail)?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok((PROBE_BYTES as f64 / secs) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_what_is_not_set() {
        let dir = tempfile::tempdir().unwrap();
        let set = Overrides {
            cores: Some(3),
            ..Overrides::default()
        };
        let info = measure("w1", dir.path(), &["ssd".into()], &set).unwrap();
        assert_eq!(info.cores, 3);
        assert!(info.mem_bytes > 0);
        assert!(info.free_disk_bytes > 0);
        assert!(info.write_bytes_per_sec > 0);
        assert_eq!(info.labels, vec!["ssd".to_string()]);
        // The probe file is gone.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
