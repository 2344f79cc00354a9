//! The fleet's transport: workers that advertise themselves, a work queue
//! per worker, and a feed of what the workers did.
//!
//! Format, for fleet `<F>` (all file storage, `replicas` copies, our
//! marker in each description):
//! - KV bucket `vmm-fleet-<F>-workers`: key = worker id, value = what the
//!   worker advertises (bytes the caller encodes). A worker puts it again
//!   every heartbeat; the revision moving is what tells a watcher it lives.
//! - Stream `vmm-fleet-<F>-jobs` (work-queue retention): subject
//!   `vmm-fleet.<F>.job.<worker>` holds the jobs placed on that worker. A
//!   job leaves the stream when the worker acknowledges it, which it does
//!   once it has published the job's outcome. One durable consumer
//!   `worker-<worker>` per subject; a worker restarted under the same id
//!   attaches to it again (and first clears what an earlier process left).
//! - Stream `vmm-fleet-<F>-events` (limits retention, kept a day): subject
//!   `vmm-fleet.<F>.event.<run>` holds the events of one fleet run (job
//!   started, job done), read by the run's coordinator from the beginning.
//!
//! Who runs what, and when a job is given to another worker, is decided
//! above this module (`replay::fleet`); here are only the queues.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::{self, kv, stream};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::conn::{description, open_or_create, Conn, Nats};
use crate::error::{check_name, Error, Result};

/// How long events of a fleet run are kept.
const EVENTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);
/// How long a worker may hold a job before the stream offers it again
/// (only to the same worker: its subject is its own). Longer than any
/// job; a dead worker's jobs are re-placed by the coordinator, not by this.
const JOB_ACK_WAIT: Duration = Duration::from_secs(6 * 3600);

/// The queues of one fleet.
pub struct WorkQueue {
    conn: Arc<Conn>,
    fleet: String,
    workers: kv::Store,
    jobs: stream::Stream,
    events: stream::Stream,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("fleet", &self.fleet)
            .field("urls", &self.conn.urls)
            .finish()
    }
}

impl Nats {
    /// Opens fleet `fleet`'s queues, creating them with `replicas` copies
    /// if absent; ones without our marker are refused ([`Error::NotOurs`]).
    pub fn work_queue(&self, fleet: &str, replicas: usize) -> Result<WorkQueue> {
        check_name("fleet name", fleet)?;
        let workers = self.kv_bucket(
            "fleet worker bucket",
            "fleet-workers",
            &format!("vmm-fleet-{fleet}-workers"),
            replicas,
        )?;
        let js = &self.conn.js;
        let timeout = self.conn.timeout;
        let replicas = replicas.max(1);
        let jobs_name = format!("vmm-fleet-{fleet}-jobs");
        let events_name = format!("vmm-fleet-{fleet}-events");
        let (jobs, events) = self.conn.block_on(async {
            let jobs = open_or_create(js, timeout, "fleet job stream", &jobs_name, || async {
                js.create_stream(stream::Config {
                    name: jobs_name.clone(),
                    description: Some(description("fleet-jobs")),
                    subjects: vec![format!("vmm-fleet.{fleet}.job.*")],
                    retention: stream::RetentionPolicy::WorkQueue,
                    storage: stream::StorageType::File,
                    num_replicas: replicas,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| Error::js("stream create", &jobs_name, e))
            })
            .await?;
            let events =
                open_or_create(js, timeout, "fleet event stream", &events_name, || async {
                    js.create_stream(stream::Config {
                        name: events_name.clone(),
                        description: Some(description("fleet-events")),
                        subjects: vec![format!("vmm-fleet.{fleet}.event.*")],
                        storage: stream::StorageType::File,
                        num_replicas: replicas,
                        max_age: EVENTS_MAX_AGE,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                    .map_err(|e| Error::js("stream create", &events_name, e))
                })
                .await?;
            Ok::<_, Error>((jobs, events))
        })?;
        Ok(WorkQueue {
            conn: self.conn.clone(),
            fleet: fleet.to_string(),
            workers,
            jobs,
            events,
        })
    }
}

/// One worker's advertisement as last seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Advert {
    pub worker: String,
    /// Moves with every put: a watcher that sees it move knows the worker
    /// is alive, whatever the clocks of the two hosts say.
    pub revision: u64,
    pub data: Vec<u8>,
}

impl WorkQueue {
    pub fn fleet(&self) -> &str {
        &self.fleet
    }

    /// Puts `worker`'s advertisement (its heartbeat).
    pub fn advertise(&self, worker: &str, data: &[u8]) -> Result<()> {
        check_name("worker id", worker)?;
        self.conn
            .block_on(self.workers.put(worker, Bytes::copy_from_slice(data)))
            .map(drop)
            .map_err(|e| Error::js("worker advertise", worker, e))
    }

    /// Every worker's last advertisement, by id.
    pub fn adverts(&self) -> Result<Vec<Advert>> {
        let bucket = format!("vmm-fleet-{}-workers", self.fleet);
        self.conn.block_on(async {
            let mut keys = self
                .workers
                .keys()
                .await
                .map_err(|e| Error::js("worker list", &bucket, e))?;
            let mut names = Vec::new();
            while let Some(k) = keys.next().await {
                names.push(k.map_err(|e| Error::js("worker list", &bucket, e))?);
            }
            names.sort();
            let mut adverts = Vec::with_capacity(names.len());
            for worker in names {
                let entry = self
                    .workers
                    .entry(worker.clone())
                    .await
                    .map_err(|e| Error::js("worker read", &worker, e))?;
                if let Some(entry) = entry.filter(|e| e.operation == kv::Operation::Put) {
                    adverts.push(Advert {
                        worker,
                        revision: entry.revision,
                        data: entry.value.to_vec(),
                    });
                }
            }
            Ok(adverts)
        })
    }

    fn job_subject(&self, worker: &str) -> String {
        format!("vmm-fleet.{}.job.{worker}", self.fleet)
    }

    fn event_subject(&self, run: &str) -> String {
        format!("vmm-fleet.{}.event.{run}", self.fleet)
    }

    /// Queues a job for `worker`; returns once the cluster stored it.
    pub fn send_job(&self, worker: &str, data: &[u8]) -> Result<()> {
        check_name("worker id", worker)?;
        self.publish(self.job_subject(worker), data, "job send")
    }

    /// Publishes an event of fleet run `run`; returns once stored.
    pub fn publish_event(&self, run: &str, data: &[u8]) -> Result<()> {
        check_name("fleet run id", run)?;
        self.publish(self.event_subject(run), data, "event publish")
    }

    fn publish(&self, subject: String, data: &[u8], op: &'static str) -> Result<()> {
        let js = &self.conn.js;
        self.conn.block_on(async {
            js.publish(subject.clone(), Bytes::copy_from_slice(data))
                .await
                .map_err(|e| Error::js(op, &subject, e))?
                .await
                .map(drop)
                .map_err(|e| Error::js(op, &subject, e))
        })
    }

    /// Removes every job queued for `worker`: a worker that starts has no
    /// job in hand, so whatever waits there was placed on an earlier
    /// process of that id and has been (or will be) placed again.
    pub fn clear_jobs(&self, worker: &str) -> Result<u64> {
        check_name("worker id", worker)?;
        let subject = self.job_subject(worker);
        self.conn
            .block_on(self.jobs.purge().filter(subject.clone()).into_future())
            .map(|r| r.purged)
            .map_err(|e| Error::js("job purge", &subject, e))
    }

    /// Attaches to `worker`'s queue to take its jobs. Two live processes
    /// with one id would share it: the caller checks the adverts first.
    pub fn inbox(&self, worker: &str) -> Result<JobInbox> {
        check_name("worker id", worker)?;
        let subject = self.job_subject(worker);
        let consumer = self.conn.block_on(async {
            self.jobs
                .create_consumer(pull::Config {
                    // Durable: a long job leaves the queue unread for a
                    // while, which would let an ephemeral consumer lapse.
                    durable_name: Some(format!("worker-{worker}")),
                    filter_subject: subject.clone(),
                    ack_policy: AckPolicy::Explicit,
                    ack_wait: JOB_ACK_WAIT,
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::js("job consumer create", &subject, e))
        })?;
        Ok(JobInbox {
            conn: self.conn.clone(),
            subject,
            consumer,
        })
    }

    /// Reads fleet run `run`'s events from its first.
    pub fn events(&self, run: &str) -> Result<EventFeed> {
        check_name("fleet run id", run)?;
        let subject = self.event_subject(run);
        let consumer = self.conn.block_on(async {
            self.events
                .create_consumer(pull::Config {
                    filter_subject: subject.clone(),
                    deliver_policy: DeliverPolicy::All,
                    ack_policy: AckPolicy::None,
                    inactive_threshold: Duration::from_secs(600),
                    ..Default::default()
                })
                .await
                .map_err(|e| Error::js("event consumer create", &subject, e))
        })?;
        Ok(EventFeed {
            conn: self.conn.clone(),
            subject,
            consumer,
        })
    }
}

/// A worker's queue.
pub struct JobInbox {
    conn: Arc<Conn>,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

/// A job taken from an inbox; [`JobInbox::done`] removes it from the queue.
pub struct Job {
    pub data: Vec<u8>,
    message: jetstream::Message,
}

impl JobInbox {
    /// The next job, waiting up to `wait`; None if none came.
    pub fn next(&self, wait: Duration) -> Result<Option<Job>> {
        let mut got = next_messages(&self.conn, &self.consumer, &self.subject, 1, wait)?;
        Ok(got.pop().map(|message| Job {
            data: message.payload.to_vec(),
            message,
        }))
    }

    /// Acknowledges `job`: it leaves the queue.
    pub fn done(&self, job: &Job) -> Result<()> {
        self.conn
            .block_on(job.message.ack())
            .map_err(|e| Error::JetStream {
                op: "job ack",
                target: self.subject.clone(),
                source: e,
            })
    }
}

/// The events of one fleet run, in the order they were stored.
pub struct EventFeed {
    conn: Arc<Conn>,
    subject: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

impl EventFeed {
    /// The events that arrive within `wait` (at most 256), in order.
    pub fn next(&self, wait: Duration) -> Result<Vec<Vec<u8>>> {
        let got = next_messages(&self.conn, &self.consumer, &self.subject, 256, wait)?;
        Ok(got.into_iter().map(|m| m.payload.to_vec()).collect())
    }
}

/// Up to `max` messages of `consumer`, waiting up to `wait` for the first.
fn next_messages(
    conn: &Conn,
    consumer: &jetstream::consumer::Consumer<pull::Config>,
    subject: &str,
    max: usize,
    wait: Duration,
) -> Result<Vec<jetstream::Message>> {
    // The server needs a moment to answer an expiring pull; below that it
    // is a no-wait pull.
    let wait = wait.max(Duration::from_millis(10));
    conn.block_on(async {
        let mut batch = consumer
            .batch()
            .max_messages(max)
            .expires(wait)
            .messages()
            .await
            .map_err(|e| Error::js("pull", subject, e))?;
        let mut out = Vec::new();
        while let Some(message) = batch.next().await {
            out.push(message.map_err(|e| Error::JetStream {
                op: "pull",
                target: subject.to_string(),
                source: e,
            })?);
        }
        Ok(out)
    })
}
