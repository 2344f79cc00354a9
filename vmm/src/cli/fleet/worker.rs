//! `vmm worker`: a host's share of fleet replay. It advertises what it has
//! (every second, in the fleet's worker bucket), takes the jobs placed on
//! it from its queue, runs each as a child `vmm replay` or `vmm drill`
//! (one per core at once), and reports each job's start and outcome.
//!
//! A job leaves the queue only once its outcome is stored. A worker that
//! dies mid-job stops advertising; the coordinator gives its jobs to
//! another worker (the children die with it: parent-death signal). On
//! SIGINT/SIGTERM the worker stops its children, advertises that it
//! stopped (so its jobs are re-placed at once), and exits.
use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jetstream::{Job, JobInbox, Nats, WorkQueue};
use replay::fleet::wire::{Advert, Event, Order, Task, WorkerState};
use replay::fleet::{Outcome, WorkerInfo};
use serde_json::Value;
use vmm::shutdown;

use super::super::{Cli, CliError};
use super::{WorkerArgs, CLUSTER_TIMEOUT, HEARTBEAT};

/// One job running in a child process.
struct Running {
    order: Order,
    job: Job,
    child: Child,
    started: Instant,
    /// The child's stdout (its JSON report) and stderr.
    out: PathBuf,
    err: PathBuf,
    /// The replayed disk, for replay jobs.
    disk: Option<PathBuf>,
}

pub fn worker(cli: &Cli, args: &WorkerArgs) -> Result<i32, CliError> {
    let id = match &args.id {
        Some(id) => id.clone(),
        None => default_id(),
    };
    let work_dir = match &args.work_dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("vmm-worker-{id}")),
    };
    std::fs::create_dir_all(&work_dir).map_err(|e| {
        CliError::new(format!(
            "cannot create the work directory {}: {e}",
            work_dir.display()
        ))
    })?;
    let info = super::capacity::measure(&id, &work_dir, &args.label, &args.overrides())?;
    let (nats, queue, inbox) = join_fleet(args, &id)?;
    let cleared = queue.clear_jobs(&id).map_err(CliError::from_display)?;
    if cleared > 0 {
        tracing::warn!("dropped {cleared} job(s) left queued for an earlier worker '{id}'; their coordinator places them again");
    }
    eprintln!(
        "worker {id}: {} cores, {} MiB memory, {} MiB free disk, {} MiB/s disk writes; fleet '{}' at {}",
        info.cores,
        info.mem_bytes >> 20,
        info.free_disk_bytes >> 20,
        info.write_bytes_per_sec >> 20,
        args.fleet,
        args.cluster
    );

    let running_count = Arc::new(AtomicU32::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let beat = heartbeat(
        queue_clone(&nats, args)?,
        info.clone(),
        running_count.clone(),
        stop.clone(),
    );

    let lanes = info.cores.max(1) as usize;
    let mut running: Vec<Running> = Vec::new();
    let result = serve(
        cli,
        &queue,
        &inbox,
        &info,
        &work_dir,
        lanes,
        &mut running,
        &running_count,
    );

    // Stop: children first (their jobs will be placed again), then say so.
    stop.store(true, Ordering::SeqCst);
    for r in &mut running {
        let _ = r.child.kill();
        let _ = r.child.wait();
        cleanup(r);
    }
    let _ = beat.join();
    let stopped = Advert {
        info,
        state: WorkerState::Stopped,
        running: 0,
    };
    let _ = queue.advertise(
        &id,
        &serde_json::to_vec(&stopped).expect("adverts serialize"),
    );
    result?;
    Ok(shutdown::requested().map_or(0, shutdown::exit_status))
}

/// How long a starting worker keeps trying to reach its fleet's queues
/// (a cluster still electing its leaders, say) before it gives up.
const JOIN_PATIENCE: Duration = Duration::from_secs(60);

/// Connects to the cluster and attaches to the fleet's queues. A worker is
/// a daemon that may start before its cluster is ready: failures are
/// retried (with a warning) for [`JOIN_PATIENCE`]; a refused id is final.
fn join_fleet(args: &WorkerArgs, id: &str) -> Result<(Nats, WorkQueue, JobInbox), CliError> {
    let deadline = Instant::now() + JOIN_PATIENCE;
    loop {
        let attempt = (|| {
            let nats = Nats::connect(&args.cluster.servers, CLUSTER_TIMEOUT)
                .map_err(CliError::from_display)?;
            let queue = nats
                .work_queue(&args.fleet, args.replicas)
                .map_err(CliError::from_display)?;
            Ok::<_, CliError>((nats, queue))
        })();
        match attempt {
            Ok((nats, queue)) => {
                let inbox = attach(&queue, id)?;
                return Ok((nats, queue, inbox));
            }
            Err(e) if Instant::now() < deadline && shutdown::requested().is_none() => {
                tracing::warn!(
                    "worker {id}: the fleet's queues are not reachable yet ({}); retrying",
                    e.message
                );
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => return Err(e),
        }
    }
}

/// The host name and process id, as a name the queues accept.
fn default_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host: String = host
        .trim()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!(
        "{}-{}",
        if host.is_empty() { "host" } else { &host },
        std::process::id()
    )
}

/// Attaches to the worker's queue, refusing an id that a live worker
/// uses: its advert says ready and still moves over two heartbeats.
fn attach(queue: &WorkQueue, id: &str) -> Result<JobInbox, CliError> {
    let advert = |queue: &WorkQueue| -> Result<Option<u64>, CliError> {
        let adverts = queue.adverts().map_err(CliError::from_display)?;
        Ok(adverts.into_iter().find(|a| a.worker == id).and_then(|a| {
            let ad: Advert = serde_json::from_slice(&a.data).ok()?;
            (ad.state == WorkerState::Ready).then_some(a.revision)
        }))
    };
    if let Some(first) = advert(queue)? {
        std::thread::sleep(HEARTBEAT * 2 + Duration::from_millis(200));
        if advert(queue)?.is_some_and(|now| now != first) {
            return Err(CliError::new(format!(
                "a live worker already uses the id '{id}'; pass another --id"
            )));
        }
    }
    queue.inbox(id).map_err(CliError::from_display)
}

/// A second handle on the queues for the heartbeat thread.
fn queue_clone(nats: &Nats, args: &WorkerArgs) -> Result<WorkQueue, CliError> {
    nats.work_queue(&args.fleet, args.replicas)
        .map_err(CliError::from_display)
}

/// Advertises `info` every [`HEARTBEAT`] until `stop`.
fn heartbeat(
    queue: WorkQueue,
    info: WorkerInfo,
    running: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) && shutdown::requested().is_none() {
            let advert = Advert {
                info: info.clone(),
                state: WorkerState::Ready,
                running: running.load(Ordering::SeqCst),
            };
            let bytes = serde_json::to_vec(&advert).expect("adverts serialize");
            if let Err(e) = queue.advertise(&info.id, &bytes) {
                tracing::warn!("heartbeat not stored: {e}");
            }
            let until = Instant::now() + HEARTBEAT;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    })
}

#[allow(clippy::too_many_arguments)]
fn serve(
    cli: &Cli,
    queue: &WorkQueue,
    inbox: &JobInbox,
    info: &WorkerInfo,
    work_dir: &Path,
    lanes: usize,
    running: &mut Vec<Running>,
    running_count: &AtomicU32,
) -> Result<(), CliError> {
    while shutdown::requested().is_none() {
        // Finished children first: their lanes are free again.
        let mut i = 0;
        while i < running.len() {
            match running[i].child.try_wait() {
                Ok(Some(status)) => {
                    let r = running.swap_remove(i);
                    finish(queue, inbox, info, r, status.code())?;
                }
                Ok(None) => i += 1,
                Err(e) => return Err(CliError::new(format!("cannot wait for a job: {e}"))),
            }
        }
        running_count.store(running.len() as u32, Ordering::SeqCst);
        if running.len() >= lanes {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        }
        let wait = if running.is_empty() { 500 } else { 20 };
        let Some(job) = inbox
            .next(Duration::from_millis(wait))
            .map_err(CliError::from_display)?
        else {
            continue;
        };
        let order: Order = match serde_json::from_slice(&job.data) {
            Ok(order) => order,
            Err(e) => {
                // Not ours to run: drop it so it does not block the queue.
                tracing::warn!("dropped a malformed job: {e}");
                inbox.done(&job).map_err(CliError::from_display)?;
                continue;
            }
        };
        let started = Event::Started {
            job: order.job,
            attempt: order.attempt,
            worker: info.id.clone(),
        };
        publish(queue, &order.run, &started)?;
        eprintln!(
            "worker {}: started job {} (VM {}, attempt {})",
            info.id, order.job, order.spec.vm, order.attempt
        );
        running.push(spawn(cli, work_dir, order, job)?);
        running_count.store(running.len() as u32, Ordering::SeqCst);
    }
    Ok(())
}

fn publish(queue: &WorkQueue, run: &str, event: &Event) -> Result<(), CliError> {
    let bytes = serde_json::to_vec(event).expect("events serialize");
    queue
        .publish_event(run, &bytes)
        .map_err(CliError::from_display)
}

/// Starts the child that runs `order`.
fn spawn(cli: &Cli, work_dir: &Path, order: Order, job: Job) -> Result<Running, CliError> {
    let stem = format!("{}-{}-{}", order.run, order.job, order.attempt);
    let out = work_dir.join(format!("{stem}.out"));
    let err = work_dir.join(format!("{stem}.err"));
    let exe = std::env::current_exe()
        .map_err(|e| CliError::new(format!("cannot find this program to run a job: {e}")))?;
    let mut cmd = Command::new(exe);
    cmd.arg("--kvm").arg(&cli.kvm);
    let point = format!("seq={}", order.spec.until_seq);
    let mut disk = None;
    match &order.task {
        Task::Replay => {
            let path = work_dir.join(format!("{stem}.img"));
            cmd.args(["replay", "--log", &order.source, "--vm", &order.spec.vm])
                .args(["--until", &point, "--force", "--json", "--out"])
                .arg(&path);
            if let Some(cp) = order.spec.from_checkpoint {
                cmd.arg("--base").arg(format!("checkpoint={cp}"));
            }
            disk = Some(path);
        }
        Task::Drill { check } => {
            cmd.args(["drill", "--log", &order.source, "--vm", &order.spec.vm])
                .args(["--at", &point, "--check", check, "--json"]);
        }
    }
    let open = |p: &Path| {
        File::create(p).map_err(|e| CliError::new(format!("cannot create {}: {e}", p.display())))
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::from(open(&out)?))
        .stderr(Stdio::from(open(&err)?));
    // SAFETY: prctl is async-signal-safe; between fork and exec it only
    // asks the kernel to kill the child when this worker dies, so a killed
    // worker leaves no job running behind its back.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start a job: {e}")))?;
    Ok(Running {
        order,
        job,
        child,
        started: Instant::now(),
        out,
        err,
        disk,
    })
}

/// Reports a finished child's outcome and takes its job off the queue.
fn finish(
    queue: &WorkQueue,
    inbox: &JobInbox,
    info: &WorkerInfo,
    r: Running,
    code: Option<i32>,
) -> Result<(), CliError> {
    let outcome = outcome(&r, code);
    eprintln!(
        "worker {}: job {} (VM {}) {} in {:.2}s",
        info.id,
        r.order.job,
        r.order.spec.vm,
        if outcome.pass { "passed" } else { "failed" },
        outcome.secs
    );
    let done = Event::Done {
        job: r.order.job,
        attempt: r.order.attempt,
        worker: info.id.clone(),
        outcome,
    };
    publish(queue, &r.order.run, &done)?;
    inbox.done(&r.job).map_err(CliError::from_display)?;
    cleanup(&r);
    Ok(())
}

/// What the child's report and exit status say.
fn outcome(r: &Running, code: Option<i32>) -> Outcome {
    let secs = r.started.elapsed().as_secs_f64();
    let report: Option<Value> = std::fs::read_to_string(&r.out).ok().and_then(|text| {
        text.lines()
            .last()
            .and_then(|l| serde_json::from_str(l).ok())
    });
    let stderr = std::fs::read_to_string(&r.err).unwrap_or_default();
    let checksum = report
        .as_ref()
        .and_then(|v| v.get("checksum"))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let verified = |key: &str| {
        report
            .as_ref()
            .and_then(|v| v.get(key))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let pass = code == Some(0)
        && match r.order.task {
            Task::Replay => verified("verified"),
            Task::Drill { .. } => verified("pass"),
        };
    let detail = if pass {
        String::new()
    } else {
        let why = report
            .as_ref()
            .and_then(|v| v.get("error"))
            .and_then(Value::as_str)
            .map(str::to_string)
            .or_else(|| stderr.lines().last().map(str::to_string))
            .unwrap_or_default();
        format!(
            "exit status {}: {why}",
            code.map_or("none".into(), |c| c.to_string())
        )
    };
    Outcome {
        pass,
        checksum,
        secs,
        bytes: r.order.spec.read_bytes,
        detail,
    }
}

fn cleanup(r: &Running) {
    for p in [Some(&r.out), Some(&r.err), r.disk.as_ref()]
        .into_iter()
        .flatten()
    {
        let _ = std::fs::remove_file(p);
    }
}
