//! `vmm fleet replay|drill`: one job per VM, placed on the live workers
//! that can take it, followed to the end.
//!
//! The coordinator plans from the record set's own logs
//! (`replay::fleet::plan`), waits for workers, places the jobs
//! (`replay::fleet::place`) and queues each on its worker. It then reads
//! the run's events: a result counts once, for the job's current attempt
//! (`replay::fleet::Ledger`). A worker that stops advertising (killed,
//! host gone) or says it stopped has its unfinished jobs placed again on
//! the workers still alive. A job no live worker can take is reported as
//! failed with why, never dropped.
use std::time::{Duration, Instant};

use changelog::LogBackend;
use indicatif::{ProgressBar, ProgressStyle};
use jetstream::{EventFeed, Nats, Remote, WorkQueue};
use replay::fleet::wire::{Advert, Event, Order, Task};
use replay::fleet::{self, JobSpec, Ledger, Limits, Outcome, Roster, WorkerInfo};
use serde::Serialize;
use vmm::shutdown;

use super::super::CliError;
use super::{FleetArgs, CLUSTER_TIMEOUT};

/// One job's line of the report.
#[derive(Debug, Serialize)]
struct JobReport {
    vm: String,
    /// The checkpoint a segment job started from (None: the log's start).
    from_checkpoint: Option<u64>,
    until_seq: u64,
    worker: String,
    secs: f64,
    bytes: u64,
    checksum: String,
    pass: bool,
    detail: String,
}

#[derive(Debug, Serialize)]
struct Report {
    run: String,
    task: &'static str,
    jobs: Vec<JobReport>,
    passed: usize,
    failed: usize,
    /// Jobs placed again after their worker died or stopped.
    requeued: u64,
    workers: Vec<String>,
    secs: f64,
}

/// The plan of a dry run: each job's needs and where it would go.
#[derive(Debug, Serialize)]
struct Plan<'a> {
    jobs: &'a [JobSpec],
    workers: &'a [WorkerInfo],
    /// (VM, worker) in start order.
    placement: Vec<(String, String)>,
    unplaceable: Vec<(String, String)>,
    expected_secs: Vec<f64>,
}

pub fn fleet_run(args: &FleetArgs, task: Task) -> Result<i32, CliError> {
    let started = Instant::now();
    let remote =
        Remote::open_existing(&args.cluster, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
    let vms = select_vms(&remote, &args.vms)?;
    // Drills boot the VM on the disk at the point: one job per VM. A
    // replay of a long log is split into segments between checkpoints.
    let segment = match task {
        Task::Replay => Some(args.segment_mib << 20),
        Task::Drill { .. } => None,
    };
    let jobs = fleet::plan(&remote, &vms, &args.at, segment).map_err(CliError::from_display)?;
    let limits = Limits {
        max_cpu: args.max_cpu,
        max_mem: args.max_mem.map(|m| m.as_u64()),
        only_label: args.only_workers.clone(),
    };
    let nats =
        Nats::connect(&args.cluster.servers, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
    let queue = nats
        .work_queue(&args.fleet, args.replicas)
        .map_err(CliError::from_display)?;
    let mut roster = Roster::new(Duration::from_secs_f64(args.worker_timeout));
    let workers = wait_for_workers(&queue, &mut roster, args)?;

    if args.dry_run {
        let placement = fleet::place(&jobs, &workers, &limits);
        let plan = Plan {
            jobs: &jobs,
            workers: &workers,
            placement: placement
                .assigned
                .iter()
                .map(|&(j, w)| (jobs[j].vm.clone(), workers[w].id.clone()))
                .collect(),
            unplaceable: placement
                .unplaceable
                .iter()
                .map(|(j, why)| (jobs[*j].vm.clone(), why.clone()))
                .collect(),
            expected_secs: placement.expected_secs,
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&plan).expect("plans serialize")
        );
        return Ok(0);
    }

    let run = format!("{:x}-{}", store::clock::now_ns(), std::process::id());
    let feed = queue.events(&run).map_err(CliError::from_display)?;
    let mut c = Coordinator {
        queue: &queue,
        run: run.clone(),
        source: args.cluster.to_string(),
        task: task.clone(),
        jobs: &jobs,
        limits: &limits,
        ledger: Ledger::new(jobs.len()),
        progress: progress(jobs.len() as u64, args.json),
    };
    c.place(&workers, &(0..jobs.len()).collect::<Vec<_>>())?;
    let timeout = args.timeout.map(Duration::from_secs_f64);
    let interrupted = c.follow(&feed, &mut roster, args, started, timeout)?;
    c.progress.finish_and_clear();

    let report = c.report(task_name(&task), started);
    print(&report, args.json);
    if let Some(signal) = interrupted {
        return Ok(shutdown::exit_status(signal));
    }
    Ok(if report.failed == 0 {
        0
    } else {
        vmm::error::exit::CHECK_FAILED
    })
}

fn task_name(task: &Task) -> &'static str {
    match task {
        Task::Replay => "replay",
        Task::Drill { .. } => "drill",
    }
}

/// The record set's VMs whose ids match `pattern`, sorted.
fn select_vms(remote: &Remote, pattern: &str) -> Result<Vec<String>, CliError> {
    let glob = glob::Pattern::new(pattern)
        .map_err(|e| CliError::new(format!("--vms '{pattern}' is not a glob pattern: {e}")))?;
    let mut vms: Vec<String> = remote
        .vm_ids()
        .map_err(CliError::from_display)?
        .into_iter()
        .filter(|vm| glob.matches(vm))
        .collect();
    vms.sort();
    if vms.is_empty() {
        return Err(CliError::new(format!(
            "no VM of {} matches --vms '{pattern}'; `vmm log show {}` lists them",
            remote.location(),
            remote.location()
        )));
    }
    Ok(vms)
}

fn read_adverts(queue: &WorkQueue, roster: &mut Roster) -> Result<(), CliError> {
    let adverts = queue.adverts().map_err(CliError::from_display)?;
    let parsed =
        adverts
            .into_iter()
            .filter_map(|a| match serde_json::from_slice::<Advert>(&a.data) {
                Ok(ad) => Some((a.worker, a.revision, ad)),
                Err(e) => {
                    tracing::warn!("ignored the malformed advert of worker '{}': {e}", a.worker);
                    None
                }
            });
    roster.update(Instant::now(), parsed);
    Ok(())
}

/// Waits until at least `--min-workers` are alive and every advertising
/// worker had a heartbeat's time to show it lives; returns the live ones.
fn wait_for_workers(
    queue: &WorkQueue,
    roster: &mut Roster,
    args: &FleetArgs,
) -> Result<Vec<WorkerInfo>, CliError> {
    let began = Instant::now();
    let deadline = began + Duration::from_secs_f64(args.wait_workers);
    // A live worker's revision moves within one heartbeat (plus the time
    // to read the bucket).
    let settle = super::HEARTBEAT + Duration::from_millis(500);
    loop {
        read_adverts(queue, roster)?;
        let live = roster.live(Instant::now());
        let now = Instant::now();
        // Enough, and every advertising worker is known alive or dead (a
        // dead one's advert never moves: wait `settle` at most for it).
        if live.len() >= args.min_workers.max(1) && (!roster.undecided() || now >= began + settle) {
            return Ok(live);
        }
        if now >= deadline {
            return Err(CliError::new(format!(
                "{} live worker(s) in fleet '{}' after {}s, {} needed; start some with `vmm worker --cluster {}`",
                live.len(),
                args.fleet,
                args.wait_workers,
                args.min_workers.max(1),
                jetstream::ClusterUrl { servers: args.cluster.servers.clone() }
            )));
        }
        if shutdown::requested().is_some() {
            return Err(CliError::new("stopped while waiting for workers"));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn progress(jobs: u64, json: bool) -> ProgressBar {
    if json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(jobs);
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30}] {pos}/{len} jobs {msg}")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar
}

struct Coordinator<'a> {
    queue: &'a WorkQueue,
    run: String,
    source: String,
    task: Task,
    jobs: &'a [JobSpec],
    limits: &'a Limits,
    ledger: Ledger,
    progress: ProgressBar,
}

impl Coordinator<'_> {
    /// Places `pending` jobs on `workers` and queues each; a job none of
    /// them can take is finished as failed with why.
    fn place(&mut self, workers: &[WorkerInfo], pending: &[usize]) -> Result<(), CliError> {
        let subset: Vec<JobSpec> = pending.iter().map(|&j| self.jobs[j].clone()).collect();
        let placement = fleet::place(&subset, workers, self.limits);
        for (i, why) in placement.unplaceable {
            let j = pending[i];
            let attempt = self.ledger.start(j, "-").expect("the job is pending");
            let outcome = Outcome {
                pass: false,
                checksum: String::new(),
                secs: 0.0,
                bytes: 0,
                detail: format!("no live worker can take it: {why}"),
            };
            self.ledger.finish(j, attempt, outcome);
            self.progress.inc(1);
        }
        for (i, w) in placement.assigned {
            let j = pending[i];
            let worker = &workers[w].id;
            let attempt = self.ledger.start(j, worker).expect("the job is pending");
            let order = Order {
                run: self.run.clone(),
                job: j,
                attempt,
                source: self.source.clone(),
                task: self.task.clone(),
                spec: self.jobs[j].clone(),
            };
            let bytes = serde_json::to_vec(&order).expect("orders serialize");
            self.queue
                .send_job(worker, &bytes)
                .map_err(CliError::from_display)?;
        }
        Ok(())
    }

    /// Reads events and watches the workers until every job is done, the
    /// timeout passes, or a signal comes (returned).
    fn follow(
        &mut self,
        feed: &EventFeed,
        roster: &mut Roster,
        args: &FleetArgs,
        started: Instant,
        timeout: Option<Duration>,
    ) -> Result<Option<i32>, CliError> {
        let mut last_roster = Instant::now();
        let mut no_worker_since: Option<Instant> = None;
        while !self.ledger.is_complete() {
            if let Some(signal) = shutdown::requested() {
                return Ok(Some(signal));
            }
            if timeout.is_some_and(|t| started.elapsed() > t) {
                return Err(CliError {
                    message: format!(
                        "the fleet run did not finish within --timeout {}s ({} of {} jobs done)",
                        args.timeout.unwrap_or_default(),
                        self.ledger.done(),
                        self.jobs.len()
                    ),
                    status: vmm::error::exit::TIMEOUT,
                    registers: None,
                });
            }
            for event in feed
                .next(Duration::from_millis(300))
                .map_err(CliError::from_display)?
            {
                self.take(&event);
            }
            if last_roster.elapsed() < Duration::from_millis(500) {
                continue;
            }
            last_roster = Instant::now();
            read_adverts(self.queue, roster)?;
            let now = Instant::now();
            for worker in self.ledger.holders() {
                if roster.gone(&worker, now) {
                    let back = self.ledger.worker_died(&worker);
                    self.progress.println(format!(
                        "worker {worker} is gone: {} job(s) placed again",
                        back.len()
                    ));
                    tracing::info!("worker {worker} is gone; jobs {back:?} go back");
                }
            }
            let pending = self.ledger.pending();
            if pending.is_empty() {
                no_worker_since = None;
                continue;
            }
            let live = roster.live(now);
            if live.is_empty() {
                // Wait a while for a worker to come (back) before giving up.
                let since = *no_worker_since.get_or_insert(now);
                if now.duration_since(since).as_secs_f64() > args.wait_workers {
                    let workers: Vec<WorkerInfo> = Vec::new();
                    self.place(&workers, &pending)?;
                }
                continue;
            }
            no_worker_since = None;
            self.place(&live, &pending)?;
        }
        Ok(None)
    }

    fn take(&mut self, event: &[u8]) {
        let event: Event = match serde_json::from_slice(event) {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("ignored a malformed event: {e}");
                return;
            }
        };
        match event {
            Event::Started { job, worker, .. } => {
                if let Some(spec) = self.jobs.get(job) {
                    self.progress
                        .set_message(format!("{} on {worker}", spec.vm));
                }
            }
            Event::Done {
                job,
                attempt,
                worker,
                outcome,
            } => {
                if self.ledger.finish(job, attempt, outcome) {
                    self.progress.inc(1);
                } else {
                    tracing::info!(
                        "ignored a late result of job {job} attempt {attempt} from {worker}"
                    );
                }
            }
        }
    }

    fn report(&self, task: &'static str, started: Instant) -> Report {
        let mut jobs = Vec::new();
        let mut workers = Vec::new();
        for (j, worker, o) in self.ledger.results() {
            let spec = &self.jobs[j];
            if worker != "-" && !workers.iter().any(|w| w == worker) {
                workers.push(worker.to_string());
            }
            jobs.push(JobReport {
                vm: spec.vm.clone(),
                from_checkpoint: spec.from_checkpoint,
                until_seq: spec.until_seq,
                worker: worker.to_string(),
                secs: o.secs,
                bytes: o.bytes,
                checksum: o.checksum.clone(),
                pass: o.pass,
                detail: o.detail.clone(),
            });
        }
        workers.sort();
        let passed = jobs.iter().filter(|j| j.pass).count();
        Report {
            run: self.run.clone(),
            task,
            failed: jobs.len() - passed,
            passed,
            jobs,
            requeued: self.ledger.requeued,
            workers,
            secs: started.elapsed().as_secs_f64(),
        }
    }
}

fn print(report: &Report, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(report).expect("reports serialize")
        );
        return;
    }
    println!("fleet {} (run {})", report.task, report.run);
    println!(
        "  {:<16} {:>12} {:<20} {:>8} {:>12}  {:<16} result",
        "VM", "seq", "worker", "secs", "bytes", "checksum"
    );
    for j in &report.jobs {
        let sum: String = j.checksum.chars().take(16).collect();
        let seqs = match j.from_checkpoint {
            Some(c) => format!("{c}..{}", j.until_seq),
            None => j.until_seq.to_string(),
        };
        println!(
            "  {:<16} {:>12} {:<20} {:>8.2} {:>12}  {:<16} {}{}",
            j.vm,
            seqs,
            j.worker,
            j.secs,
            j.bytes,
            sum,
            if j.pass { "PASS" } else { "FAIL" },
            if j.detail.is_empty() {
                String::new()
            } else {
                format!(" ({})", j.detail)
            }
        );
    }
    println!(
        "  total: {} job(s), {} passed, {} failed, {} placed again, on {} worker(s), {:.2}s",
        report.jobs.len(),
        report.passed,
        report.failed,
        report.requeued,
        report.workers.len(),
        report.secs
    );
}
