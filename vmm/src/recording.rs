//! Recording a VM's disk: the glue between the virtio-blk device (which
//! reports completed writes and flushes through its `WriteTap` seam) and
//! the block tap of `introspection`, which turns them into log records and
//! store objects. The machine keeps a handle too, for marks and for the
//! final barrier when the VM ends.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use introspection::log::BarrierKind;
use introspection::recording::RecordDir;
use introspection::{BlockTap, TapError, TapOpenReport, TapStats};

use crate::devices::virtio::block::WriteTap;
use crate::error::{Result, VmmError};

/// Where and as whom to record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub dir: PathBuf,
    pub vm_id: String,
}

/// A VM id names a log directory: keep it a plain, short file name.
pub fn check_vm_id(id: &str) -> std::result::Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "'{id}' is not a valid VM id: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')"
        ))
    }
}

/// One recorded disk.
pub struct Recorder {
    tap: Mutex<Option<BlockTap>>,
    /// The disk image, to make it durable with the final barrier.
    image: File,
    pub open_report: TapOpenReport,
}

fn tap_error(e: TapError) -> VmmError {
    VmmError::Record(e.to_string())
}

impl Recorder {
    pub fn open(config: &RecordConfig, image: &Path) -> Result<Arc<Self>> {
        let dir = RecordDir::new(&config.dir);
        std::fs::create_dir_all(dir.root())
            .map_err(|e| VmmError::Record(format!("{}: {e}", dir.root().display())))?;
        let (tap, open_report) = BlockTap::open(&dir, &config.vm_id, image).map_err(tap_error)?;
        let log = &open_report.log;
        if log.truncated_bytes > 0 {
            tracing::warn!(
                "log of {} ended in a torn tail (a crash mid-write): cut {} bytes after seq {}: {}",
                config.vm_id,
                log.truncated_bytes,
                log.last_seq,
                log.tail_reason.as_deref().unwrap_or("incomplete frame")
            );
        }
        if open_report.rebased {
            tracing::warn!(
                "disk image {} differs from what the log of {} recorded (changed outside the recorder, or writes lost with a torn tail): logged {} differing blocks as a new base",
                image.display(),
                config.vm_id,
                open_report.base_blocks
            );
        }
        let image =
            File::open(image).map_err(|e| VmmError::Record(format!("{}: {e}", image.display())))?;
        Ok(Arc::new(Self {
            tap: Mutex::new(Some(tap)),
            image,
            open_report,
        }))
    }

    fn tap(&self) -> MutexGuard<'_, Option<BlockTap>> {
        self.tap.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_tap<T>(
        &self,
        f: impl FnOnce(&mut BlockTap) -> std::result::Result<T, TapError>,
    ) -> std::result::Result<T, String> {
        match self.tap().as_mut() {
            Some(tap) => f(tap).map_err(|e| e.to_string()),
            None => Err("recording already closed".into()),
        }
    }

    /// Writes a named mark into the log.
    pub fn mark(&self, name: &str) -> std::result::Result<u64, String> {
        self.with_tap(|t| t.mark(name))
    }

    /// Syncs the image, writes a final barrier if anything happened since
    /// the last one, and closes the log.
    pub fn close(&self) -> Result<Option<TapStats>> {
        let Some(tap) = self.tap().take() else {
            return Ok(None);
        };
        self.image
            .sync_data()
            .map_err(|e| VmmError::Record(format!("syncing the disk image: {e}")))?;
        tap.close().map(Some).map_err(tap_error)
    }
}

/// The device's view of a recorder.
pub struct DeviceTap(pub Arc<Recorder>);

impl WriteTap for DeviceTap {
    fn write(&mut self, offset: u64, data: &[u8]) -> std::result::Result<(), String> {
        self.0
            .with_tap(|t| t.record_write(offset, data))
            .map(|_| ())
    }

    fn flush(&mut self) -> std::result::Result<(), String> {
        self.0
            .with_tap(|t| t.barrier(BarrierKind::Flush))
            .map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::check_vm_id;

    #[test]
    fn vm_ids_are_plain_names() {
        for good in ["vm0", "web-1", "a.b_c"] {
            assert!(check_vm_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65), "sp ace"] {
            assert!(check_vm_id(bad).is_err(), "{bad}");
        }
    }
}
