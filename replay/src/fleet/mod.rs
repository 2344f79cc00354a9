//! Fleet replay planning: the work of replaying many VMs' logs split into
//! jobs, each with what it needs, and placed on workers by what they have.
//!
//! - [`plan`] reads each VM's log (through [`LogBackend`], wherever it
//!   lives) up to a point and makes one [`JobSpec`]: the seq to replay to,
//!   the disk it rebuilds, the bytes it reads, the memory it holds.
//! - [`place`] assigns jobs to [`WorkerInfo`]s that can take them (disk,
//!   memory, label, within the user's [`Limits`]), longest first, each to
//!   the worker that would finish it first (its cores run jobs side by
//!   side; its measured write bandwidth sets the pace). A job no worker can
//!   take is reported with the reason, never dropped.
//! - [`Ledger`] follows jobs to the end: each job is done exactly once;
//!   the jobs of a worker that died go back to be placed again.
//!
//! - [`Roster`] tells live workers from dead ones by their adverts.
//! - [`wire`]: the messages workers and the coordinator exchange.
//!
//! The transport (a work-queue stream, workers that advertise themselves:
//! `jetstream::WorkQueue`) and the processes (`vmm worker`, `vmm fleet`)
//! are not here: this is the part that decides, and it is tested alone.
use std::collections::BTreeMap;

use changelog::log::{LogError, RecordKind};
use changelog::point::Point;
use changelog::LogBackend;
use serde::{Deserialize, Serialize};
use thiserror::Error;

mod ledger;
mod roster;
#[cfg(test)]
mod tests;
pub mod wire;

pub use ledger::{Ledger, Outcome};
pub use roster::Roster;

/// The mark the block tap writes before a base: `vmm:base bytes=N`.
const BASE_MARK_PREFIX: &str = "vmm:base bytes=";
/// Memory a replay holds besides its block table: the read-ahead of
/// records and blocks, buffers, the process itself.
const REPLAY_FIXED_MEM: u64 = 64 << 20;
/// Memory per non-zero block of the disk state table (hash map entry).
const MEM_PER_BLOCK: u64 = 64;
/// Seconds a job costs besides its bytes (process start, open, fsync).
const JOB_FIXED_SECS: f64 = 0.2;

#[derive(Debug, Error)]
pub enum FleetError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("VM '{vm}': {point} is not in its log ({why})")]
    NotInLog {
        vm: String,
        point: Point,
        why: String,
    },
    #[error("VM '{vm}' has no log in {location}")]
    NoSuchVm { vm: String, location: String },
}

/// One replay to run: a VM's log up to a seq (from its beginning, or a
/// segment from one of its checkpoints).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobSpec {
    pub vm: String,
    /// Start from the log's checkpoint at this seq (a segment of a long
    /// log); None: the log's own start (or its nearest checkpoint).
    #[serde(default)]
    pub from_checkpoint: Option<u64>,
    pub until_seq: u64,
    /// Size of the disk the replay rebuilds (from the log's base mark).
    pub disk_bytes: u64,
    /// Block data the replay reads from the object store.
    pub read_bytes: u64,
    /// Memory the replay holds at most.
    pub mem_bytes: u64,
}

/// What a worker advertises.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    pub id: String,
    pub cores: u32,
    pub mem_bytes: u64,
    pub free_disk_bytes: u64,
    /// Disk write bandwidth measured at the worker's start.
    pub write_bytes_per_sec: u64,
    pub labels: Vec<String>,
}

/// What the user allows the fleet to use.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Limits {
    /// Jobs run at once on one worker, at most (its cores otherwise).
    pub max_cpu: Option<u32>,
    /// Memory one worker may give its jobs together, at most.
    pub max_mem: Option<u64>,
    /// Only workers with this label.
    pub only_label: Option<String>,
}

/// Where each job goes.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Placement {
    /// (job index, worker index), in the order they should start.
    pub assigned: Vec<(usize, usize)>,
    /// Expected seconds until each worker is done, by worker index.
    pub expected_secs: Vec<f64>,
    /// Jobs no worker can take, with why.
    pub unplaceable: Vec<(usize, String)>,
}

/// One job per VM in `vms`: its log read up to `point` (see the module
/// doc). With `segment_bytes`, a log that reads more than that is split at
/// its checkpoints into segments of about that much each, every segment a
/// job that starts from its checkpoint and verifies the barriers up to the
/// next (the last one ends at `point`): the history of one long log is
/// checked on several workers at once.
pub fn plan(
    logs: &dyn LogBackend,
    vms: &[String],
    point: &Point,
    segment_bytes: Option<u64>,
) -> Result<Vec<JobSpec>, FleetError> {
    let known = logs.vm_ids()?;
    let mut jobs = Vec::with_capacity(vms.len());
    for vm in vms {
        if !known.contains(vm) {
            return Err(FleetError::NoSuchVm {
                vm: vm.clone(),
                location: logs.location(),
            });
        }
        jobs.extend(plan_one(logs, vm, point, segment_bytes)?);
    }
    Ok(jobs)
}

fn plan_one(
    logs: &dyn LogBackend,
    vm: &str,
    point: &Point,
    segment_bytes: Option<u64>,
) -> Result<Vec<JobSpec>, FleetError> {
    // Per seq: bytes read so far, the disk size so far, the blocks written
    // so far; the point picks one of them once the log has been read.
    struct Row {
        seq: u64,
        ts_ns: u64,
        read: u64,
        disk: u64,
        blocks: u64,
    }
    let mut rows: Vec<Row> = Vec::new();
    let mut marks: BTreeMap<String, u64> = BTreeMap::new();
    let (mut read, mut disk, mut blocks) = (0u64, 0u64, 0u64);
    for record in logs.records(vm, 1)? {
        let record = record?;
        match &record.kind {
            RecordKind::BlockWrite { len, blocks: b, .. } => {
                read += u64::from(*len);
                blocks += b.len() as u64;
            }
            RecordKind::Mark { name } => {
                if let Some(bytes) = name
                    .strip_prefix(BASE_MARK_PREFIX)
                    .and_then(|b| b.parse().ok())
                {
                    disk = bytes;
                }
                marks.insert(name.clone(), record.seq);
            }
            _ => {}
        }
        rows.push(Row {
            seq: record.seq,
            ts_ns: record.ts_ns,
            read,
            disk,
            blocks,
        });
    }
    let not_in_log = |why: String| FleetError::NotInLog {
        vm: vm.to_string(),
        point: point.clone(),
        why,
    };
    let last = rows.last().map_or(0, |r| r.seq);
    let at = match point {
        Point::End => rows.len().checked_sub(1),
        Point::Seq(n) => rows.iter().rposition(|r| r.seq == *n),
        Point::Time(ns) => rows.iter().rposition(|r| r.ts_ns <= *ns),
        Point::Mark(name) => marks
            .get(name)
            .and_then(|seq| rows.iter().rposition(|r| r.seq == *seq)),
    }
    .ok_or_else(|| not_in_log(format!("its records run from seq 1 to {last}")))?;
    let row = &rows[at];
    let mem = |r: &Row| REPLAY_FIXED_MEM + r.blocks.min(r.disk / 4096) * MEM_PER_BLOCK;
    let whole = JobSpec {
        vm: vm.to_string(),
        from_checkpoint: None,
        until_seq: row.seq,
        disk_bytes: row.disk,
        read_bytes: row.read,
        mem_bytes: mem(row),
    };
    let Some(each) = segment_bytes.filter(|&b| b > 0 && row.read > b) else {
        return Ok(vec![whole]);
    };
    // Cut at checkpoints once a segment has read `each` bytes.
    let row_at = |seq: u64| rows.iter().rposition(|r| r.seq <= seq).map(|i| &rows[i]);
    let mut cuts: Vec<&Row> = Vec::new();
    let mut last_read = 0;
    for cp in logs.checkpoints(vm)? {
        match row_at(cp.seq) {
            Some(r) if r.seq == cp.seq && r.seq < row.seq && r.read - last_read >= each => {
                last_read = r.read;
                cuts.push(r);
            }
            _ => {}
        }
    }
    if cuts.is_empty() {
        return Ok(vec![whole]);
    }
    let mut jobs = Vec::with_capacity(cuts.len() + 1);
    let mut from: Option<&Row> = None;
    for end in cuts.into_iter().chain(std::iter::once(row)) {
        // A segment reads its records and writes the checkpoint's map (about
        // one block per block it maps).
        let base_read = from.map_or(0, |f| f.read);
        let map_bytes = from.map_or(0, |f| f.blocks.min(f.disk / 4096) * 4096);
        jobs.push(JobSpec {
            vm: vm.to_string(),
            from_checkpoint: from.map(|f| f.seq),
            until_seq: end.seq,
            disk_bytes: end.disk,
            read_bytes: end.read - base_read + map_bytes,
            mem_bytes: mem(end),
        });
        from = Some(end);
    }
    Ok(jobs)
}

impl WorkerInfo {
    /// Jobs this worker runs side by side under `limits`.
    fn lanes(&self, limits: &Limits) -> usize {
        self.cores.min(limits.max_cpu.unwrap_or(u32::MAX)).max(1) as usize
    }

    /// Why this worker cannot take `job` under `limits` (None: it can).
    pub fn refuses(&self, job: &JobSpec, limits: &Limits) -> Option<String> {
        if let Some(label) = &limits.only_label {
            if !self.labels.contains(label) {
                return Some(format!("{} lacks label '{label}'", self.id));
            }
        }
        let mem = self.mem_bytes.min(limits.max_mem.unwrap_or(u64::MAX));
        if job.mem_bytes > mem {
            return Some(format!(
                "{} has {mem} bytes of memory for jobs, the job needs {}",
                self.id, job.mem_bytes
            ));
        }
        if job.disk_bytes > self.free_disk_bytes {
            return Some(format!(
                "{} has {} bytes of free disk, the job writes a {}-byte disk",
                self.id, self.free_disk_bytes, job.disk_bytes
            ));
        }
        None
    }

    /// Seconds `job` is expected to take here.
    pub fn expected_secs(&self, job: &JobSpec) -> f64 {
        JOB_FIXED_SECS + job.read_bytes as f64 / self.write_bytes_per_sec.max(1) as f64
    }
}

/// Places `jobs` on `workers` (see the module doc).
pub fn place(jobs: &[JobSpec], workers: &[WorkerInfo], limits: &Limits) -> Placement {
    let mut order: Vec<usize> = (0..jobs.len()).collect();
    // Longest first: the big jobs set the end time, the small ones fill in.
    order.sort_by(|&a, &b| jobs[b].read_bytes.cmp(&jobs[a].read_bytes).then(a.cmp(&b)));
    // Per worker, when each lane is next free.
    let mut lanes: Vec<Vec<f64>> = workers.iter().map(|w| vec![0.0; w.lanes(limits)]).collect();
    let mut placement = Placement::default();
    for j in order {
        let job = &jobs[j];
        let mut best: Option<(f64, usize, usize)> = None;
        let mut reasons = Vec::new();
        for (w, worker) in workers.iter().enumerate() {
            if let Some(why) = worker.refuses(job, limits) {
                reasons.push(why);
                continue;
            }
            let (lane, free_at) = lanes[w]
                .iter()
                .copied()
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .expect("at least one lane");
            let done = free_at + worker.expected_secs(job);
            if best.is_none_or(|(d, _, _)| done < d) {
                best = Some((done, w, lane));
            }
        }
        match best {
            Some((done, w, lane)) => {
                lanes[w][lane] = done;
                placement.assigned.push((j, w));
            }
            None if workers.is_empty() => placement.unplaceable.push((j, "no workers".into())),
            None => placement.unplaceable.push((j, reasons.join("; "))),
        }
    }
    placement.expected_secs = lanes
        .iter()
        .map(|l| l.iter().copied().fold(0.0, f64::max))
        .collect();
    placement
}
