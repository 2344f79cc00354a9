//! Resource metrics per step: right after each barrier the tap appends a
//! `Metrics` record saying what the interval since the previous barrier
//! cost (`changelog::metrics::StepMetrics`).
//!
//! The tap knows its own side (bytes logged, objects the store did not
//! have yet); what the VM cost (vCPU time, exits, guest I/O, the
//! recording thread's CPU, RSS) is known only to the VMM, which plugs in a
//! [`StepProbe`]. Without a probe no metrics are recorded, so a tap used
//! outside a VMM (tests, tools) writes the log it always wrote.
use changelog::log::RecordKind;
use changelog::metrics::{StepMetrics, METRICS_VERSION};
use store::PutReport;

use super::{BlockTap, TapError};

/// What the tap itself saw during one barrier interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TapInterval {
    /// Bytes of guest writes logged (whole blocks; not the base).
    pub logged_bytes: u64,
    /// What putting the interval's blocks added to the store.
    pub stored: PutReport,
}

/// The VMM's side of each step's metrics.
pub trait StepProbe: Send {
    /// Called on the recording thread right after barrier `m.barrier` was
    /// appended, with the tap's fields of `m` filled in: fills in the rest.
    fn fill(&mut self, m: &mut StepMetrics);
}

impl BlockTap {
    /// Records a `Metrics` record after every later barrier, completed by
    /// `probe`.
    pub fn set_step_probe(&mut self, probe: Box<dyn StepProbe>) {
        self.probe = Some(probe);
        self.interval = TapInterval::default();
    }

    /// Counts a guest write logged in this interval.
    pub(super) fn meter_write(&mut self, bytes: u64) {
        self.interval.logged_bytes += bytes;
    }

    /// Counts what a store put added.
    pub(super) fn meter_put(&mut self, r: PutReport) {
        let s = &mut self.interval.stored;
        s.new_objects += r.new_objects;
        s.new_raw_bytes += r.new_raw_bytes;
        s.new_stored_bytes += r.new_stored_bytes;
    }

    /// After barrier `seq` is appended (not yet synced: the metrics record
    /// becomes durable with it): appends its `Metrics` record.
    pub(super) fn append_metrics(&mut self, seq: u64) -> Result<(), TapError> {
        let interval = std::mem::take(&mut self.interval);
        let Some(probe) = self.probe.as_mut() else {
            return Ok(());
        };
        let mut m = StepMetrics {
            v: METRICS_VERSION,
            barrier: seq,
            logged_bytes: interval.logged_bytes,
            new_objects: interval.stored.new_objects,
            new_raw_bytes: interval.stored.new_raw_bytes,
            stored_bytes: interval.stored.new_stored_bytes,
            ..Default::default()
        };
        probe.fill(&mut m);
        self.append(RecordKind::Metrics { json: m.to_json() })?;
        Ok(())
    }
}
