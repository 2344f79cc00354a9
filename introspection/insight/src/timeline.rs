//! A record set's history in equal time buckets: per VM, what each bucket
//! held (records, writes, bytes, barriers, semantic changes, bytes logged
//! and stored) and the named points (marks, snapshots, checkpoints).
//!
//! The buckets span all VMs' logs together (they share one store), from
//! the first record to the last, so series from several VMs add up.
use std::collections::BTreeMap;

use changelog::log::RecordKind;
use changelog::metrics::StepMetrics;
use changelog::{LogBackend, LogError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum TimelineError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("{location} has no records to show")]
    Empty { location: String },
}

/// What one time bucket of one VM held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Serialize)]
pub struct Bucket {
    pub records: u64,
    pub writes: u64,
    pub written_bytes: u64,
    pub barriers: u64,
    pub semantic: u64,
    /// From the metrics records: bytes of blocks logged, and what new
    /// objects took in the store (after dedup and compression).
    pub logged_bytes: u64,
    pub stored_bytes: u64,
    pub new_raw_bytes: u64,
}

impl Bucket {
    fn add(&mut self, o: &Bucket) {
        self.records += o.records;
        self.writes += o.writes;
        self.written_bytes += o.written_bytes;
        self.barriers += o.barriers;
        self.semantic += o.semantic;
        self.logged_bytes += o.logged_bytes;
        self.stored_bytes += o.stored_bytes;
        self.new_raw_bytes += o.new_raw_bytes;
    }
}

/// A named point of a log.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PointEvent {
    pub ts_ns: u64,
    pub seq: u64,
    pub name: String,
}

/// One VM's history.
#[derive(Debug, Clone, Serialize)]
pub struct VmTimeline {
    pub vm: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub totals: Bucket,
    pub buckets: Vec<Bucket>,
    pub marks: Vec<PointEvent>,
    pub snapshots: Vec<PointEvent>,
    pub checkpoints: Vec<PointEvent>,
    /// Semantic changes per "file: table" (or "file" for decode events).
    pub tables: BTreeMap<String, u64>,
}

/// Every VM's history over one set of buckets.
#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub location: String,
    pub t0_ns: u64,
    pub t1_ns: u64,
    pub bucket_ns: u64,
    pub vms: Vec<VmTimeline>,
}

impl Timeline {
    /// Reads the logs of `vms` (every VM's when empty) into `buckets`
    /// equal buckets (at least 1).
    pub fn read(
        logs: &dyn LogBackend,
        vms: &[String],
        buckets: usize,
    ) -> Result<Timeline, TimelineError> {
        let vms = if vms.is_empty() {
            logs.vm_ids()?
        } else {
            vms.to_vec()
        };
        let mut span: Option<(u64, u64)> = None;
        for vm in &vms {
            let Some(first) = logs.records(vm, 1)?.next().transpose()? else {
                continue;
            };
            let last_seq = logs.last_seq(vm)?;
            let last = logs
                .records(vm, last_seq)?
                .next()
                .transpose()?
                .map_or(first.ts_ns, |r| r.ts_ns);
            span = Some(match span {
                None => (first.ts_ns, last),
                Some((a, b)) => (a.min(first.ts_ns), b.max(last)),
            });
        }
        let Some((t0, t1)) = span else {
            return Err(TimelineError::Empty {
                location: logs.location(),
            });
        };
        let n = buckets.max(1);
        // Every record falls in a bucket, the last one's included.
        let bucket_ns = ((t1 - t0) / n as u64 + 1).max(1);
        let mut out = Vec::new();
        for vm in &vms {
            out.push(read_vm(logs, vm, t0, bucket_ns, n)?);
        }
        Ok(Timeline {
            location: logs.location(),
            t0_ns: t0,
            t1_ns: t1,
            bucket_ns,
            vms: out,
        })
    }

    /// The buckets of all VMs added up.
    pub fn combined(&self) -> Vec<Bucket> {
        let n = self.vms.first().map_or(0, |v| v.buckets.len());
        let mut sum = vec![Bucket::default(); n];
        for vm in &self.vms {
            for (s, b) in sum.iter_mut().zip(&vm.buckets) {
                s.add(b);
            }
        }
        sum
    }

    /// All VMs' totals added up.
    pub fn totals(&self) -> Bucket {
        let mut t = Bucket::default();
        for vm in &self.vms {
            t.add(&vm.totals);
        }
        t
    }
}

fn read_vm(
    logs: &dyn LogBackend,
    vm: &str,
    t0: u64,
    bucket_ns: u64,
    n: usize,
) -> Result<VmTimeline, TimelineError> {
    let mut buckets = vec![Bucket::default(); n];
    let mut t = VmTimeline {
        vm: vm.to_string(),
        first_seq: 0,
        last_seq: 0,
        totals: Bucket::default(),
        buckets: Vec::new(),
        marks: Vec::new(),
        snapshots: Vec::new(),
        checkpoints: Vec::new(),
        tables: BTreeMap::new(),
    };
    for record in logs.records(vm, 1)? {
        let r = record?;
        if t.first_seq == 0 {
            t.first_seq = r.seq;
        }
        t.last_seq = r.seq;
        let i = (((r.ts_ns.saturating_sub(t0)) / bucket_ns) as usize).min(n - 1);
        let b = &mut buckets[i];
        b.records += 1;
        let point = |name: &str| PointEvent {
            ts_ns: r.ts_ns,
            seq: r.seq,
            name: name.to_string(),
        };
        match &r.kind {
            RecordKind::BlockWrite { len, .. } => {
                b.writes += 1;
                b.written_bytes += u64::from(*len);
            }
            RecordKind::Barrier { .. } => b.barriers += 1,
            RecordKind::Mark { name } => t.marks.push(point(name)),
            RecordKind::SnapshotTaken { id } => t.snapshots.push(point(id)),
            RecordKind::Semantic { json } => {
                b.semantic += 1;
                *t.tables.entry(table_of(json)).or_default() += 1;
            }
            RecordKind::Metrics { json } => {
                // A metrics record a newer build wrote in another shape is
                // left out of the sums rather than failing the view.
                if let Ok(m) = serde_json::from_str::<StepMetrics>(json) {
                    b.logged_bytes += m.logged_bytes;
                    b.stored_bytes += m.stored_bytes;
                    b.new_raw_bytes += m.new_raw_bytes;
                }
            }
            RecordKind::Hint { .. } => {}
        }
    }
    for cp in logs.checkpoints(vm)? {
        t.checkpoints.push(PointEvent {
            ts_ns: cp.ts_ns,
            seq: cp.seq,
            name: format!("checkpoint {}", cp.seq),
        });
    }
    for b in &buckets {
        t.totals.add(b);
    }
    t.buckets = buckets;
    Ok(t)
}

/// "file: table" of a semantic change's JSON, "file (decode event)" for a
/// record that names no table.
fn table_of(json: &str) -> String {
    let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
    let file = v["file"].as_str().unwrap_or("?");
    match v["collection"].as_str() {
        Some(c) => format!("{file}: {c}"),
        None => format!("{file} (decode event)"),
    }
}
