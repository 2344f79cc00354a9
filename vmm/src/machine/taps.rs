//! The recorder plugged into the devices: the block device's write tap and
//! the console's hint sink. They live with the machine, which builds both
//! sides, so that the devices and the recorder do not depend on each other
//! (the devices know only [`RecorderError`], what a tap answers).
use std::sync::Arc;

use crate::devices::virtio::block::WriteTap;
use crate::devices::virtio::console::HintSink;
#[cfg(doc)]
use crate::recording::RecorderError;
use crate::recording::{RecordResult, Recorder};

/// The block device's view of a recorder.
pub(super) struct DeviceTap(pub Arc<Recorder>);

impl WriteTap for DeviceTap {
    fn write(&mut self, offset: u64, data: Vec<u8>) -> RecordResult<()> {
        self.0.write(offset, data)
    }

    fn failed(&self) -> bool {
        self.0.failure().is_some()
    }

    fn flush(&mut self) -> RecordResult<()> {
        self.0.barrier().map(|_| ())
    }

    fn close(&mut self) -> RecordResult<()> {
        if self.failed() {
            // Reported once by the recorder, and again when it closes.
            return Ok(());
        }
        self.0.send_writes()
    }
}

/// The console device's view of a recorder: hints go into the same log,
/// in order with the disk's writes.
pub(super) struct RecorderHints(pub Arc<Recorder>);

impl HintSink for RecorderHints {
    fn hint(&mut self, message: Vec<u8>) -> RecordResult<()> {
        self.0.hint(message)
    }
}
