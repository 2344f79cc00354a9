//! Following jobs to the end: each job is done exactly once, whatever the
//! workers do (die mid-job, answer late, answer twice).
//!
//! A job is pending, running one attempt on one worker, or done. A result
//! counts only for the job's current attempt: a worker that was declared
//! dead and answers afterwards is ignored, as is a second answer.
use serde::{Deserialize, Serialize};

/// What one job's replay gave.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    pub pass: bool,
    /// The replayed disk's state checksum (hex).
    pub checksum: String,
    pub secs: f64,
    pub bytes: u64,
    /// Why it failed, or a note.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq)]
enum State {
    Pending,
    Running { worker: String, attempt: u64 },
    Done { worker: String, outcome: Outcome },
}

#[derive(Debug, Clone)]
pub struct Ledger {
    jobs: Vec<State>,
    /// Attempts started, over all jobs (each attempt gets its own number).
    attempts: u64,
    /// Jobs given back after their worker died.
    pub requeued: u64,
}

impl Ledger {
    pub fn new(jobs: usize) -> Ledger {
        Ledger {
            jobs: vec![State::Pending; jobs],
            attempts: 0,
            requeued: 0,
        }
    }

    /// Jobs waiting for a worker.
    pub fn pending(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&j| self.jobs[j] == State::Pending)
            .collect()
    }

    /// Starts `job` on `worker`; returns the attempt to answer with, or
    /// None if the job is not pending.
    pub fn start(&mut self, job: usize, worker: &str) -> Option<u64> {
        if self.jobs.get(job)? != &State::Pending {
            return None;
        }
        self.attempts += 1;
        self.jobs[job] = State::Running {
            worker: worker.to_string(),
            attempt: self.attempts,
        };
        Some(self.attempts)
    }

    /// Records `attempt`'s outcome; false (and nothing changes) when the
    /// attempt is not the job's current one.
    pub fn finish(&mut self, job: usize, attempt: u64, outcome: Outcome) -> bool {
        let Some(State::Running { worker, attempt: a }) = self.jobs.get(job) else {
            return false;
        };
        if *a != attempt {
            return false;
        }
        let worker = worker.clone();
        self.jobs[job] = State::Done { worker, outcome };
        true
    }

    /// `worker` is gone: its running jobs go back to pending. Returns them.
    pub fn worker_died(&mut self, worker: &str) -> Vec<usize> {
        let mut back = Vec::new();
        for (j, state) in self.jobs.iter_mut().enumerate() {
            if matches!(state, State::Running { worker: w, .. } if w == worker) {
                *state = State::Pending;
                back.push(j);
            }
        }
        self.requeued += back.len() as u64;
        back
    }

    /// The workers that hold running jobs, each once.
    pub fn holders(&self) -> Vec<String> {
        let mut w: Vec<String> = self
            .jobs
            .iter()
            .filter_map(|s| match s {
                State::Running { worker, .. } => Some(worker.clone()),
                _ => None,
            })
            .collect();
        w.sort();
        w.dedup();
        w
    }

    /// Jobs done so far.
    pub fn done(&self) -> usize {
        self.jobs
            .iter()
            .filter(|s| matches!(s, State::Done { .. }))
            .count()
    }

    pub fn is_complete(&self) -> bool {
        self.jobs.iter().all(|s| matches!(s, State::Done { .. }))
    }

    /// Each finished job: (job, worker, outcome), by job.
    pub fn results(&self) -> Vec<(usize, &str, &Outcome)> {
        self.jobs
            .iter()
            .enumerate()
            .filter_map(|(j, s)| match s {
                State::Done { worker, outcome } => Some((j, worker.as_str(), outcome)),
                _ => None,
            })
            .collect()
    }
}
