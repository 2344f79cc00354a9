//! Recording a VM's disk: the glue between the virtio-blk device (which
//! reports completed writes and flushes through its `WriteTap` seam) and
//! the block tap of `introspection`, which turns them into log records and
//! store objects. The machine keeps a handle too, for marks and for the
//! final barrier when the VM ends.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;

use changelog::log::BarrierKind;
use changelog::recording::RecordDir;
use introspection::decode::DecodeLimits;
use introspection::tap::{CheckpointPolicy, TapOpenOptions};
use introspection::tap_recovery::Abandoned;
use introspection::{BlockTap, TapError, TapOpenReport, TapStats};
use snapshot::GuestFile;

use crate::error::{Result, VmmError};
use crate::metrics::{Counters, VmProbe};
use replica::Replica;
pub use replica::ReplicaConfig;

mod error;
pub mod replica;
pub use error::{InvalidVmId, RecorderError};

/// What the recorder answers: [`RecorderError`] says why it could not.
pub type RecordResult<T> = std::result::Result<T, RecorderError>;

/// Where and as whom to record.
#[derive(Debug, Clone)]
pub struct RecordConfig {
    pub dir: PathBuf,
    pub vm_id: String,
    /// Offer the guest the hint channel, so that hinted files are decoded
    /// into semantic changes at every barrier.
    pub decode: bool,
    /// Limits of each decode of a hinted file (`--decode-budget-mib`).
    pub decode_limits: DecodeLimits,
    /// Replicate every barrier to a cluster before the guest's FLUSH
    /// completes (`--replicate`).
    pub replicate: Option<ReplicaConfig>,
    /// When to take temporal checkpoints (`--checkpoint-every`).
    pub checkpoints: CheckpointPolicy,
    /// Hash the whole image at open even when the log's saved state could
    /// be trusted (`--rescan`).
    pub rescan: bool,
    /// Largest log segment in bytes (`--log-segment-kib`; None: 64 MiB).
    pub log_segment_bytes: Option<u64>,
    /// Files to map and decode without an agent (`introspection::fsmap`).
    pub watches: Vec<introspection::fsmap::Watch>,
}

fn open_options(config: &RecordConfig) -> TapOpenOptions {
    TapOpenOptions {
        limits: config.decode_limits,
        rescan: config.rescan,
        segment_max_bytes: config.log_segment_bytes,
    }
}

/// A VM id names a log directory: keep it a plain, short file name.
pub fn check_vm_id(id: &str) -> std::result::Result<(), InvalidVmId> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        && !id.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(InvalidVmId(id.to_string()))
    }
}

/// Requests to the recording thread.
enum Msg {
    /// Completed writes, in guest order: (byte offset, data).
    Writes(Vec<(u64, Vec<u8>)>),
    Barrier(SyncSender<RecordResult<u64>>),
    Mark(String, SyncSender<RecordResult<u64>>),
    /// A hint message from the guest (after the writes before it).
    Hint(Vec<u8>),
    /// A barrier, then a SnapshotTaken record.
    Snapshot(String, SyncSender<RecordResult<SnapshotPoint>>),
    /// A snapshot's hinted files for a restored VM: the files whose state
    /// at the snapshot is unknown come back.
    RestoreFiles(
        Vec<GuestFile>,
        SyncSender<RecordResult<Vec<(String, String)>>>,
    ),
    Close(SyncSender<RecordResult<TapStats>>),
}

/// Where a snapshot was taken in the log.
pub struct SnapshotPoint {
    /// The barrier's seq.
    pub seq: u64,
    /// The disk checksum there.
    pub checksum: [u8; 32],
    /// The guest's hinted files there.
    pub guest_files: Vec<GuestFile>,
}

/// Completed writes (byte offset, data) and their total size.
type WriteBatch = (Vec<(u64, Vec<u8>)>, usize);

/// Writes in flight to the recording thread (each at most 4 MiB).
const QUEUE_DEPTH: usize = 16;

/// One recorded disk. The block tap runs on its own thread: the vCPU hands
/// over each completed write (ownership of its buffer, no copy) and goes
/// on, while the thread hashes, stores and logs it. A flush waits for the
/// thread to drain and make everything durable, which keeps the device's
/// durability contract.
///
/// If storing or logging fails (a full disk, an I/O error), the failure is
/// sticky: the thread drops what it had not stored, cuts the log back to
/// its last durable barrier (so the log names nothing that is not in the
/// store), prints one line saying what failed, and from then on every write
/// and flush of the guest gets an I/O error. [`Recorder::close`] then
/// returns [`VmmError::RecordingFailed`] (exit status 122).
pub struct Recorder {
    tx: Mutex<Option<SyncSender<Msg>>>,
    /// Completed writes not yet handed to the thread, and their bytes.
    batch: Mutex<WriteBatch>,
    worker: Mutex<Option<JoinHandle<()>>>,
    /// The disk image, to make it durable with the final barrier.
    image: File,
    vm_id: String,
    pub open_report: TapOpenReport,
    /// Set once by the recording thread when recording failed: the line
    /// that says what failed and where the log ends.
    failure: Arc<OnceLock<String>>,
}

impl Recorder {
    /// Opens the recording of `image`; its per-step metrics records read
    /// `counters` (and add the recorder's figures to them).
    pub fn open(config: &RecordConfig, image: &Path, counters: Arc<Counters>) -> Result<Arc<Self>> {
        let dir = RecordDir::new(&config.dir);
        std::fs::create_dir_all(dir.root()).map_err(|source| RecorderError::Open {
            path: dir.root().to_path_buf(),
            source,
        })?;
        // The cluster first: an unreachable one fails the run before the
        // log is touched, and its copy is caught up with earlier runs.
        let replica = config
            .replicate
            .as_ref()
            .map(|c| Replica::open(c, &dir, &config.vm_id))
            .transpose()?;
        let (mut tap, open_report) =
            BlockTap::open_with(&dir, &config.vm_id, image, open_options(config))
                .map_err(RecorderError::OpenTap)?;
        tap.set_checkpoint_policy(config.checkpoints);
        tap.set_watches(config.watches.clone());
        tap.set_step_probe(Box::new(VmProbe::new(counters.clone())));
        let log = &open_report.log;
        if log.truncated_bytes > 0 {
            tracing::warn!(
                "log of {} ended in a torn tail (a crash mid-write): cut {} bytes after seq {}: {}",
                config.vm_id,
                log.truncated_bytes,
                log.last_seq,
                log.tail_reason.as_deref().unwrap_or("incomplete frame")
            );
        }
        if open_report.rebased {
            tracing::warn!(
                "disk image {} differs from what the log of {} recorded (changed outside the recorder, or writes a crashed or failed run could not keep): logged {} differing blocks as a new base",
                image.display(),
                config.vm_id,
                open_report.base_blocks
            );
        }
        if let Some(cut) = &open_report.cut {
            tracing::warn!(
                "log of {} ended after a failed or crashed run: {cut}",
                config.vm_id
            );
        }
        if let Some((first, last)) = log.skipped_seqs {
            tracing::warn!(
                "log of {} was not closed cleanly (a crash or a failed recording): it continues at seq {}, skipping seqs {first}..={last}, which may have been handed out",
                config.vm_id,
                last + 1
            );
        }
        let image = File::open(image).map_err(|source| RecorderError::Open {
            path: image.to_path_buf(),
            source,
        })?;
        let (tx, rx) = sync_channel(QUEUE_DEPTH);
        let failure = Arc::new(OnceLock::new());
        let shared = failure.clone();
        let worker = std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                let _clock = counters.recorder_cpu.register();
                run_tap(tap, rx, &shared, replica)
            })
            .map_err(RecorderError::Spawn)?;
        Ok(Arc::new(Self {
            tx: Mutex::new(Some(tx)),
            batch: Mutex::new((Vec::new(), 0)),
            worker: Mutex::new(Some(worker)),
            image,
            vm_id: config.vm_id.clone(),
            open_report,
            failure,
        }))
    }

    /// The line saying what failed, once recording has failed.
    pub fn failure(&self) -> Option<&str> {
        self.failure.get().map(String::as_str)
    }

    fn send(&self, msg: Msg) -> RecordResult<()> {
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner()).clone();
        match tx {
            Some(tx) => tx.send(msg).map_err(|_| RecorderError::ThreadGone),
            None => Err(RecorderError::Closed),
        }
    }

    fn ask<T>(&self, make: impl FnOnce(SyncSender<RecordResult<T>>) -> Msg) -> RecordResult<T> {
        let (reply, answer) = sync_channel(1);
        self.send(make(reply))?;
        answer.recv().map_err(|_| RecorderError::ThreadGone)?
    }

    pub fn vm_id(&self) -> &str {
        &self.vm_id
    }

    /// A consistent point for a snapshot: the image made durable, a
    /// barrier, then a SnapshotTaken record.
    pub fn snapshot_point(&self, id: &str) -> RecordResult<SnapshotPoint> {
        self.send_writes()?;
        self.image.sync_data().map_err(RecorderError::ImageSync)?;
        self.ask(|reply| Msg::Snapshot(id.to_string(), reply))
    }

    /// Takes over the hinted files of the snapshot this VM was restored
    /// from; returns the files whose state is unknown and why.
    pub fn restore_guest_files(
        &self,
        files: Vec<GuestFile>,
    ) -> RecordResult<Vec<(String, String)>> {
        self.ask(|reply| Msg::RestoreFiles(files, reply))
    }

    /// Queues a completed write; hands the batch over once it is large.
    pub fn write(&self, offset: u64, data: Vec<u8>) -> RecordResult<()> {
        if let Some(line) = self.failure() {
            return Err(RecorderError::Failed(line.to_string()));
        }
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.1 += data.len();
            batch.0.push((offset, data));
            batch.1 >= BATCH_BYTES
        };
        if full {
            self.send_writes()?;
        }
        Ok(())
    }

    /// Hands every queued write to the recording thread.
    pub fn send_writes(&self) -> RecordResult<()> {
        let writes = {
            let mut batch = self.batch.lock().unwrap_or_else(|e| e.into_inner());
            batch.1 = 0;
            std::mem::take(&mut batch.0)
        };
        if writes.is_empty() {
            return Ok(());
        }
        self.send(Msg::Writes(writes))
    }

    /// Records a guest hint, after every write before it.
    pub fn hint(&self, message: Vec<u8>) -> RecordResult<()> {
        self.send_writes()?;
        self.send(Msg::Hint(message))
    }

    /// A flush barrier: returns once everything before it is durable.
    pub fn barrier(&self) -> RecordResult<u64> {
        self.send_writes()?;
        self.ask(Msg::Barrier)
    }

    /// Writes a named mark into the log, after every write before it.
    pub fn mark(&self, name: &str) -> RecordResult<u64> {
        self.send_writes()?;
        self.ask(|reply| Msg::Mark(name.to_string(), reply))
    }

    /// Syncs the image, writes a final barrier if anything happened since
    /// the last one, closes the log and stops the thread.
    /// Fails with [`VmmError::RecordingFailed`] if recording failed at any
    /// point of the run.
    pub fn close(&self) -> Result<Option<TapStats>> {
        if self.tx.lock().unwrap_or_else(|e| e.into_inner()).is_none() {
            return Ok(None);
        }
        let handed = self.send_writes();
        let synced = self.image.sync_data().map_err(RecorderError::ImageSync);
        let stats = handed.and(synced).and_then(|()| self.ask(Msg::Close));
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(worker) = self.worker.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = worker.join();
        }
        if let Some(line) = self.failure() {
            return Err(VmmError::RecordingFailed(line.to_string()));
        }
        Ok(Some(stats?))
    }
}

/// The recording thread: applies requests in order. The first failure
/// abandons the tap (see [`Recorder`]) and is the answer to every later
/// request; writes after it are dropped.
fn run_tap(
    tap: BlockTap,
    rx: Receiver<Msg>,
    failure: &OnceLock<String>,
    mut replica: Option<Replica>,
) {
    // A barrier is complete once it is durable here and, when replicating,
    // acknowledged by the cluster.
    let replicated =
        |replica: &mut Option<Replica>, seq: u64| -> std::result::Result<u64, TapError> {
            if let Some(r) = replica.as_mut() {
                r.push()?;
            }
            Ok(seq)
        };
    let mut tap = Some(tap);
    for msg in rx {
        let Some(t) = tap.as_mut() else {
            let failed = || RecorderError::Failed(failure.get().cloned().unwrap_or_default());
            match msg {
                Msg::Writes(_) | Msg::Hint(_) => {}
                Msg::Barrier(reply) | Msg::Mark(_, reply) => {
                    let _ = reply.send(Err(failed()));
                }
                Msg::Snapshot(_, reply) => {
                    let _ = reply.send(Err(failed()));
                }
                Msg::RestoreFiles(_, reply) => {
                    let _ = reply.send(Err(failed()));
                }
                Msg::Close(reply) => {
                    let _ = reply.send(Err(failed()));
                    return;
                }
            }
            continue;
        };
        let failed = match msg {
            Msg::Writes(writes) => writes
                .into_iter()
                .try_for_each(|(offset, data)| match replica.as_mut() {
                    Some(r) => {
                        t.record_write(offset, data.as_slice())?;
                        r.stage(&data)
                    }
                    // The tap keeps the buffer until its blocks are stored.
                    None => t.record_write(offset, data).map(drop),
                })
                .err()
                .map(Arc::new),
            Msg::Hint(message) => t.record_hint(&message).err().map(Arc::new),
            Msg::Barrier(reply) => answer(
                t.barrier(BarrierKind::Flush)
                    .and_then(|seq| replicated(&mut replica, seq)),
                reply,
            ),
            Msg::Mark(name, reply) => answer(t.mark(&name), reply),
            Msg::Snapshot(id, reply) => {
                let r = t
                    .barrier(BarrierKind::Flush)
                    .and_then(|seq| replicated(&mut replica, seq))
                    .and_then(|seq| {
                        let point = SnapshotPoint {
                            seq,
                            checksum: t.checksum(),
                            guest_files: t.guest_files(),
                        };
                        t.snapshot_taken(&id).map(|_| point)
                    });
                answer(r, reply)
            }
            Msg::RestoreFiles(files, reply) => {
                // A saved table that does not fit the disk fails the
                // restore, not the recording.
                let _ = reply.send(t.restore_guest_files(&files).map_err(Into::into));
                None
            }
            Msg::Close(reply) => match t.finish() {
                Ok(()) => {
                    let tap = tap.take().expect("checked above");
                    let last_barrier = tap.last_barrier();
                    let r = tap.close().and_then(|stats| {
                        replicated(&mut replica, 0)?;
                        Ok(stats)
                    });
                    if let Err(e) = &r {
                        // Everything up to the final barrier is durable; the
                        // log is only not sealed (its next open is a crash's).
                        let end = match last_barrier {
                            Some(b) => format!("the log ends at barrier seq {b}"),
                            None => "the log was not sealed".to_string(),
                        };
                        let line = failure_line(e, &end);
                        tracing::error!("{line}");
                        let _ = failure.set(line);
                    }
                    let _ = reply.send(r.map_err(RecorderError::Seal));
                    return;
                }
                Err(e) => {
                    // Abandoned below; the answer is the failure line.
                    let e = Arc::new(e);
                    let _ = reply.send(Err(RecorderError::Tap(e.clone())));
                    Some(e)
                }
            },
        };
        if let Some(e) = failed {
            let line = match tap.take().expect("checked above").abandon() {
                Ok(a) => failure_line(&e, &log_end(&a)),
                Err(e2) => failure_line(
                    &e,
                    &format!("cutting the log back to its last barrier failed too ({e2}); its next open will"),
                ),
            };
            tracing::error!("{line}");
            let _ = failure.set(line);
        }
    }
}

/// Sends a result to its requester; returns the error to make sticky.
fn answer<T>(
    r: std::result::Result<T, TapError>,
    reply: SyncSender<RecordResult<T>>,
) -> Option<Arc<TapError>> {
    match r {
        Ok(v) => {
            let _ = reply.send(Ok(v));
            None
        }
        Err(e) => {
            // The requester learns what failed; everyone after it gets the
            // line printed about it (`RecorderError::Failed`).
            let e = Arc::new(e);
            let _ = reply.send(Err(RecorderError::Tap(e.clone())));
            Some(e)
        }
    }
}

/// The one line printed when recording fails.
fn failure_line(e: &TapError, log_end: &str) -> String {
    let what = match e {
        TapError::Store(_) => format!("store: {e}"),
        _ => e.to_string(),
    };
    format!("recording failed: {what}; the guest now gets I/O errors; {log_end}")
}

fn log_end(a: &Abandoned) -> String {
    let end = match a.last_barrier {
        Some(b) => format!("the log ends at barrier seq {b}"),
        None => format!("the log ends at seq {}", a.last_seq),
    };
    match &a.cut {
        Some(c) => format!(
            "{end} (seqs {}..={} after it were cut, and are never reused)",
            c.seqs.0, c.seqs.1
        ),
        None => end,
    }
}

/// Writes are handed to the recording thread in batches of about this many
/// bytes: one wake-up of the thread per batch, not per 4 KiB request.
const BATCH_BYTES: usize = 1 << 20;

#[cfg(test)]
mod tests {
    use super::check_vm_id;

    #[test]
    fn vm_ids_are_plain_names() {
        for good in ["vm0", "web-1", "a.b_c"] {
            assert!(check_vm_id(good).is_ok(), "{good}");
        }
        for bad in ["", "../x", "a/b", ".hidden", &"x".repeat(65), "sp ace"] {
            assert!(check_vm_id(bad).is_err(), "{bad}");
        }
        assert_eq!(
            check_vm_id("a/b").unwrap_err().to_string(),
            "'a/b' is not a valid VM id: use 1-64 of A-Z a-z 0-9 . _ - (not starting with '.')"
        );
    }
}
