//! The messages of fleet replay, as JSON on the fleet's queues (the
//! transport is `jetstream::WorkQueue`; this is what travels on it).
//!
//! - [`Advert`]: what a worker puts in the worker bucket every heartbeat.
//! - [`Order`]: one attempt of one job, queued for the worker it was
//!   placed on.
//! - [`Event`]: what a worker reports about an order (started, done).
//!
//! Every message names its fleet run and the job's attempt, so a late or
//! repeated answer can be told from the current one (see [`super::Ledger`]).
use serde::{Deserialize, Serialize};

use super::{JobSpec, Outcome, WorkerInfo};

/// A worker's state as it advertises it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerState {
    /// Takes jobs.
    Ready,
    /// Stopping (a signal): takes no more jobs; what it held is given back.
    Stopped,
}

/// A worker's heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Advert {
    pub info: WorkerInfo,
    pub state: WorkerState,
    /// Jobs running on it now.
    pub running: u32,
}

/// What a job does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Task {
    /// Rebuild the disk to the job's seq (verified), checksum it, drop it.
    Replay,
    /// A disaster-recovery drill at the job's seq: restore, boot, check.
    Drill {
        /// The guest command line that checks the disk, or `auto`.
        check: String,
    },
}

/// One attempt of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub run: String,
    pub job: usize,
    pub attempt: u64,
    /// The record set the VM's log is in (`nats://HOST:PORT[,...]/NAME`).
    pub source: String,
    pub task: Task,
    pub spec: JobSpec,
}

/// A worker's report about an order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "event")]
pub enum Event {
    Started {
        job: usize,
        attempt: u64,
        worker: String,
    },
    Done {
        job: usize,
        attempt: u64,
        worker: String,
        outcome: Outcome,
    },
}
