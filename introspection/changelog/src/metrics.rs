//! What each step of a recorded VM cost: the body of a
//! [`RecordKind::Metrics`](crate::RecordKind::Metrics) record, appended
//! right after the barrier that ends the interval it measures.
//!
//! A step is the interval from the previous barrier of the same run (or
//! from the recording's start) to this barrier. Every count is a delta
//! over that interval, so a run's totals are sums; `rss_kib` is a level
//! (the VMM's resident memory at the barrier). The record is JSON so that
//! fields can be added without a new type code: readers take missing
//! fields as 0 and ignore unknown ones.
use serde::{Deserialize, Serialize};

/// Version of the field set below (1: the first; 2: `vmm_version`).
/// Version 1 records read as version 2 ones with no `vmm_version`.
pub const METRICS_VERSION: u32 = 2;

/// Resource use of one barrier interval.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepMetrics {
    pub v: u32,
    /// Seq of the barrier that ends the interval.
    pub barrier: u64,
    /// Identifies the VMM run (its start, Unix ns): counts restart per run.
    pub run: u64,
    /// Wall-clock length of the interval.
    pub interval_ns: u64,
    /// CPU time of the vCPU thread(s), guest and VMM work on them alike.
    pub vcpu_ns: u64,
    /// VM exits the VMM handled, by kind.
    pub exits: ExitCounts,
    /// Bytes the guest read and wrote through virtio-blk.
    pub guest_read_bytes: u64,
    pub guest_written_bytes: u64,
    /// Bytes of whole 4 KiB blocks logged as `BlockWrite`s.
    pub logged_bytes: u64,
    /// CPU time of the recording thread (hashing, storing, logging).
    pub recorder_ns: u64,
    /// Objects the content store did not have yet (after dedup), their raw
    /// length and what they take in packs (after compression).
    pub new_objects: u64,
    pub new_raw_bytes: u64,
    pub stored_bytes: u64,
    /// Resident memory of the VMM process at the barrier.
    pub rss_kib: u64,
    /// The VMM that recorded the barrier: its crate version and the git
    /// commit it was built from (`0.1.0+g1a2b3c4d5e6f`, `-dirty` when the
    /// tree had changes), the barrier's provenance. Empty in version 1.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub vmm_version: String,
}

/// VM exits by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExitCounts {
    /// Port I/O (serial, exit and snapshot ports).
    pub pio: u64,
    /// MMIO (virtio-mmio devices).
    pub mmio: u64,
    /// Everything else the run loop saw.
    pub other: u64,
}

impl ExitCounts {
    pub fn total(&self) -> u64 {
        self.pio + self.mmio + self.other
    }
}

impl StepMetrics {
    /// The record body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain integers serialize")
    }

    /// Reads a record body.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hlc::{Hlc, NodeId};
    use crate::log::wire;
    use crate::{Record, RecordKind};

    fn sample() -> StepMetrics {
        StepMetrics {
            v: METRICS_VERSION,
            barrier: 42,
            run: 1_764_000_000_000_000_000,
            interval_ns: 3_000_000,
            vcpu_ns: 2_500_000,
            exits: ExitCounts {
                pio: 7,
                mmio: 120,
                other: 1,
            },
            guest_read_bytes: 4096,
            guest_written_bytes: 65536,
            logged_bytes: 65536,
            recorder_ns: 400_000,
            new_objects: 15,
            new_raw_bytes: 61440,
            stored_bytes: 20000,
            rss_kib: 9000,
            vmm_version: "0.1.0+g1a2b3c4d5e6f".into(),
        }
    }

    #[test]
    fn json_round_trips_and_tolerates_other_field_sets() {
        let m = sample();
        assert_eq!(StepMetrics::from_json(&m.to_json()).unwrap(), m);
        // A newer writer's extra field is ignored, a missing one is 0.
        let newer = r#"{"v":3,"barrier":5,"vcpu_ns":9,"gpu_ns":3}"#;
        let got = StepMetrics::from_json(newer).unwrap();
        assert_eq!((got.barrier, got.vcpu_ns, got.rss_kib), (5, 9, 0));
        // A version 1 record (before vmm_version) reads with it empty, and
        // a record without one is written without the field.
        let v1 = r#"{"v":1,"barrier":5,"rss_kib":7}"#;
        let got = StepMetrics::from_json(v1).unwrap();
        assert_eq!((got.v, got.rss_kib, got.vmm_version.as_str()), (1, 7, ""));
        assert!(!got.to_json().contains("vmm_version"));
        assert!(m
            .to_json()
            .contains(r#""vmm_version":"0.1.0+g1a2b3c4d5e6f""#));
    }

    #[test]
    fn the_record_round_trips_in_log_and_wire_forms() {
        let kind = RecordKind::Metrics {
            json: sample().to_json(),
        };
        let record = Record::new(43, Hlc::new(1_000, 1, NodeId(7)), kind.clone());
        // Wire (message) form.
        assert_eq!(wire::decode(&wire::encode(&record)).unwrap(), record);
        // Log form: through a real log file and back.
        let dir = tempfile::tempdir().unwrap();
        let mut w = crate::LogWriter::open(dir.path(), "vm0").unwrap().0;
        w.append(RecordKind::Mark { name: "m".into() }).unwrap();
        w.append(kind.clone()).unwrap();
        w.sync().unwrap();
        drop(w);
        let r = crate::LogReader::open(dir.path()).unwrap();
        let records: Vec<Record> = r.iter().unwrap().map(|r| r.unwrap()).collect();
        assert_eq!(records[1].kind, kind);
        let RecordKind::Metrics { json } = &records[1].kind else {
            unreachable!()
        };
        assert_eq!(StepMetrics::from_json(json).unwrap(), sample());
        assert!(crate::verify(dir.path()).unwrap().is_ok());
    }
}
