//! Snapshot capture while the guest runs: dirty-tracking pre-copy.
//!
//! A pre-copy snapshot stops the VM three times, briefly: to begin (the
//! dirty log is reset, or turned on, so it holds every write from then
//! on), between rounds (a dirty-log read), and at the end. Meanwhile a
//! worker thread captures memory from the running guest: first it hashes
//! and stores every page (a full snapshot) or the pages dirtied since the
//! parent (an incremental one), then, round after round, it copies the
//! pages the guest wrote during the previous round into memory
//! ([`snapshot::pages::StagedPages`], the newest copy per page). A copy
//! round is several times faster than hashing, so the dirty set shrinks
//! even for a guest that writes memory faster than it can be hashed (a
//! memtest over 1 GiB does); the price is host memory for one copy of each
//! page written during the rounds. Pages are read into private buffers
//! before anything looks at them ([`snapshot::LiveMemory`]): a page the
//! guest tears is in the next dirty set and copied again.
//!
//! When a round leaves few dirty pages ([`FINAL_PAGES`]), stops shrinking,
//! or [`MAX_ROUNDS`] have run, the vCPU thread stops the VM for good:
//! saves vCPU and device state and the disk's barrier, reads the dirty log
//! a last time and copies those pages out (a memcpy, no hashing), then
//! lets the guest run on. The worker hashes and stores the copied pages
//! (the last stop's, and the rounds' copies it did not replace), saves
//! the page lists, syncs the store and writes the manifest; the
//! snapshot is reported (durable) only then. The snapshot is the VM as it
//! was at that last stop: every page the rounds captured and the guest
//! did not write since is still what it was, and every page it wrote is
//! in the last dirty set.
//!
//! Pages a round stored and a later round replaced are in the store but
//! in no manifest: `vmm store gc` frees them. The worker reads guest
//! memory, so it is always joined before the memory goes ([`Drop`]).
//!
//! The worker asks for the vCPU thread's attention by a flag and a
//! signal that interrupts KVM_RUN, repeated until the vCPU thread looked
//! (one signal can land just before KVM_RUN and be lost).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snapshot::pages::count_set;
use snapshot::pages::StagedPages;
use snapshot::{capture, capture_live, LiveMemory, Manifest, PageList, SnapshotDir, SnapshotKind};
use store::ObjectId;

use super::finish::{finish_snapshot, Capture, Layout, PagesList};
use super::{snap_err, Begun, Finished, OnDurable, Outcome, Pending, Timing};
use crate::error::{Result, VmmError};
use crate::machine::{watchdog, Machine};

/// A round that leaves at most this many dirty pages (8 MiB) is the last:
/// they are copied out with the VM stopped, in a few milliseconds.
const FINAL_PAGES: u64 = 2048;
/// Rounds while the guest runs, at most (the first captures everything).
const MAX_ROUNDS: u32 = 8;
/// A round must leave at most this fraction (in quarters) of the previous
/// round's dirty pages, or the guest dirties memory as fast as it is
/// captured and more rounds would not shorten the final stop.
const SHRINK_QUARTERS: u64 = 3;
/// How often the worker repeats its signal while it waits for the vCPU.
const KICK_INTERVAL: Duration = Duration::from_millis(1);

/// What the vCPU thread tells the worker after a round.
enum Step {
    /// Capture these pages again (a dirty bitmap per pre-copied slot).
    Round(Vec<Vec<u64>>),
    /// The VM was stopped and these pages copied out: finish.
    Final(Box<Final>),
    /// Give up (the run ended, or the final stop failed): nothing is saved.
    Abort(String),
}

/// The snapshot's last stop, handed to the worker.
struct Final {
    /// Slots captured whole at the stop (a shared region backed by a
    /// file, which other VMs write behind our dirty log).
    whole: Vec<Capture>,
    manifest: Manifest,
    layout: Layout,
    timing: Timing,
}

/// A pre-copy in progress, as the vCPU thread holds it.
pub(in crate::machine) struct Precopy {
    /// Set by the worker when a round is done.
    ready: Arc<AtomicBool>,
    to_worker: Sender<Step>,
    worker: Option<JoinHandle<Finished>>,
    /// The pre-copied slots' memory (the first slots, in order).
    regions: Vec<LiveMemory>,
    /// Their copies taken by the rounds after the first, and by the last
    /// stop (the worker copies into them between rounds, the vCPU thread
    /// at the last stop, while the worker waits).
    staged: Arc<Mutex<Vec<StagedPages>>>,
    /// Rounds done.
    rounds: u32,
    /// Dirty pages the last round was given (None before the first).
    last_dirty: Option<u64>,
    /// How long the VM was stopped for this snapshot so far.
    paused: Duration,
    started: Instant,
    begun: Begun,
}

impl Precopy {
    /// The flag the run loop watches.
    pub fn ready_flag(&self) -> Arc<AtomicBool> {
        self.ready.clone()
    }

    /// Hands the worker over as the chain's pending snapshot (it reports
    /// to the client itself).
    fn into_pending(mut self) -> Pending {
        let worker = self
            .worker
            .take()
            .expect("a running pre-copy has its worker");
        Pending {
            outcome: Outcome::Running(worker),
            reported: true,
        }
    }
}

impl Drop for Precopy {
    /// The worker reads guest memory: it ends before the memory can go.
    fn drop(&mut self) {
        if let Some(worker) = self.worker.take() {
            let _ = self.to_worker.send(Step::Abort(
                "the VM stopped during the snapshot's pre-copy".into(),
            ));
            let _ = worker.join();
        }
    }
}

impl Machine {
    /// Starts a snapshot that captures memory while the guest runs (module
    /// doc); `on_durable` hears its outcome. Errors before anything was
    /// captured are returned instead, and `on_durable` is not called.
    pub(in crate::machine) fn start_precopy(
        &mut self,
        kind: SnapshotKind,
        on_durable: OnDurable,
    ) -> Result<()> {
        let started = Instant::now();
        let begun = self.begin_snapshot(kind)?;
        watchdog::install_kick_handler();
        let mut regions = Vec::new();
        let mut first = Vec::new();
        for (slot, (host, len)) in self.memory_slots().into_iter().enumerate() {
            // Reading resets both logs: from here on they hold the
            // guest's and the VMM's writes since this instant.
            let dirty = self.dirty_pages(slot, len)?;
            if self.is_shared_file(slot) {
                continue; // captured whole at the last stop
            }
            // SAFETY: the mapping lives as long as the machine, which
            // joins the worker before it lets the memory go (`Drop`).
            regions.push(unsafe { LiveMemory::new(host, len) }.map_err(snap_err)?);
            first.push(match begun.kind {
                SnapshotKind::Incremental => Some(dirty),
                SnapshotKind::Full => None,
            });
        }
        if !self.dirty_log {
            // Turned on clean: it logs every write from now on.
            self.start_dirty_log()?;
        }
        let staged = regions
            .iter()
            .map(|r| StagedPages::new(r.pages()))
            .collect::<std::io::Result<Vec<_>>>()
            .map_err(|e| VmmError::Snapshot(format!("mapping memory for the pre-copy: {e}")))?;
        let staged = Arc::new(Mutex::new(staged));
        let ready = Arc::new(AtomicBool::new(false));
        let (to_worker, steps) = mpsc::channel();
        let job = Job {
            store: begun.store.clone(),
            dir: begun.dir.clone(),
            regions: regions.clone(),
            staged: staged.clone(),
            parent: begun.parent.clone(),
            first,
            ready: ready.clone(),
            // SAFETY: pthread_self has no preconditions.
            vcpu: unsafe { libc::pthread_self() },
        };
        let worker = std::thread::Builder::new()
            .name("precopy".into())
            .spawn(move || {
                let done = job.run(steps);
                on_durable(done.as_ref().map(|(_, info)| info));
                done
            })
            .map_err(|e| VmmError::Snapshot(format!("starting the pre-copy thread: {e}")))?;
        let chain = self.snapshots.as_mut().expect("begin_snapshot checked");
        chain.precopy = Some(Precopy {
            ready,
            to_worker,
            worker: Some(worker),
            regions,
            staged,
            rounds: 0,
            last_dirty: None,
            paused: started.elapsed(),
            started,
            begun,
        });
        tracing::debug!("snapshot: pre-copy started after {:?}", started.elapsed());
        Ok(())
    }

    /// The worker finished a round: reads the dirty log and either starts
    /// another round or stops the VM for the last one.
    pub(in crate::machine) fn precopy_step(&mut self) {
        let stopped = Instant::now();
        let Some(p) = self.snapshots.as_mut().and_then(|c| c.precopy.as_mut()) else {
            return;
        };
        p.ready.store(false, Ordering::SeqCst);
        if p.worker.as_ref().is_none_or(|w| w.is_finished()) {
            // It failed (and told the client): nothing more to do.
            return self.end_precopy();
        }
        p.rounds += 1;
        let lens: Vec<usize> = p.regions.iter().map(|r| r.pages()).collect();
        let dirty = match self.precopy_dirty(&lens) {
            Ok(d) => d,
            Err(e) => return self.abort_precopy(&e.to_string()),
        };
        let count: u64 = dirty.iter().zip(&lens).map(|(d, &n)| count_set(d, n)).sum();
        let Some(p) = self.snapshots.as_mut().and_then(|c| c.precopy.as_mut()) else {
            return;
        };
        let stalled = p
            .last_dirty
            .is_some_and(|last| count * 4 > last * SHRINK_QUARTERS);
        tracing::debug!(
            "snapshot: pre-copy round {} left {count} dirty pages (read in {:?})",
            p.rounds,
            stopped.elapsed()
        );
        if count <= FINAL_PAGES || stalled || p.rounds >= MAX_ROUNDS {
            return self.precopy_final(dirty, stopped);
        }
        p.last_dirty = Some(count);
        p.paused += stopped.elapsed();
        if p.to_worker.send(Step::Round(dirty)).is_err() {
            self.end_precopy();
        }
    }

    /// Ends a pre-copy now, whatever round it is in: the VM stops here
    /// for the last time (before another snapshot, or a pause).
    pub(in crate::machine) fn precopy_now(&mut self) {
        let stopped = Instant::now();
        let Some(p) = self.snapshots.as_ref().and_then(|c| c.precopy.as_ref()) else {
            return;
        };
        if p.worker.as_ref().is_none_or(|w| w.is_finished()) {
            return self.end_precopy();
        }
        let lens: Vec<usize> = p.regions.iter().map(|r| r.pages()).collect();
        match self.precopy_dirty(&lens) {
            Ok(dirty) => self.precopy_final(dirty, stopped),
            Err(e) => self.abort_precopy(&e.to_string()),
        }
    }

    /// Gives a pre-copy up (the run is ending): the client hears `why`.
    pub(in crate::machine) fn abort_precopy(&mut self, why: &str) {
        if let Some(p) = self.snapshots.as_ref().and_then(|c| c.precopy.as_ref()) {
            let _ = p.to_worker.send(Step::Abort(why.to_string()));
        }
        self.end_precopy();
    }

    /// The pre-copy's worker becomes the pending snapshot.
    fn end_precopy(&mut self) {
        if let Some(chain) = self.snapshots.as_mut() {
            if let Some(p) = chain.precopy.take() {
                chain.pending = Some(p.into_pending());
            }
        }
    }

    /// Each pre-copied slot's dirty pages since the last read.
    fn precopy_dirty(&mut self, pages: &[usize]) -> Result<Vec<Vec<u64>>> {
        pages
            .iter()
            .enumerate()
            .map(|(slot, &n)| self.dirty_pages(slot, n * snapshot::PAGE_SIZE))
            .collect()
    }

    /// The last stop (the VM is stopped since `stopped`): state, the last
    /// dirty pages copied out, then the worker finishes behind.
    fn precopy_final(&mut self, dirty: Vec<Vec<u64>>, stopped: Instant) {
        let Some(p) = self.snapshots.as_ref().and_then(|c| c.precopy.as_ref()) else {
            return;
        };
        let id = p.begun.id.clone();
        let frozen = match self.freeze(&id) {
            Ok(f) => f,
            Err(e) => return self.abort_precopy(&e.to_string()),
        };
        let Some(p) = self.snapshots.as_ref().and_then(|c| c.precopy.as_ref()) else {
            return;
        };
        let froze = stopped.elapsed();
        let mut copied = 0;
        {
            let mut staged = p.staged.lock().unwrap_or_else(|e| e.into_inner());
            for (stage, (region, d)) in staged.iter_mut().zip(p.regions.iter().zip(&dirty)) {
                // SAFETY: the vCPU is stopped (this is its thread) and the
                // devices are (`freeze`): nothing writes guest RAM now.
                copied += unsafe { stage.copy_in_stopped(region, d) };
            }
        }
        tracing::debug!(
            "snapshot: last stop: state saved after {froze:?}, {copied} pages copied after {:?}",
            stopped.elapsed()
        );
        let mut whole = Vec::new();
        let slots = self.memory_slots();
        for (slot, &(host, len)) in slots.iter().enumerate().skip(p.regions.len()) {
            // SAFETY: as in `snapshot_then`: a live mapping of `len` bytes,
            // captured as it is at this instant.
            let bytes = unsafe { std::slice::from_raw_parts(host, len) };
            match capture(&p.begun.store, bytes, None, None) {
                Ok((list, s)) => whole.push(Capture::Done(list, s)),
                Err(e) => return self.abort_precopy(&snap_err(e).to_string()),
            }
            debug_assert!(self.is_shared_file(slot));
        }
        let parent = p.begun.parent.as_ref().map(|(id, _)| id.clone());
        let timing = Timing {
            started: p.started,
            pause_us: (p.paused + stopped.elapsed()).as_micros() as u64,
            disk_hash_us: frozen.disk_hash_us,
            rounds: p.rounds,
        };
        let manifest = self.manifest(&p.begun.config, &id, parent, p.begun.kind, frozen);
        let step = Step::Final(Box::new(Final {
            whole,
            manifest,
            layout: self.region_layout(),
            timing,
        }));
        let _ = p.to_worker.send(step);
        tracing::debug!("snapshot: VM resumes, pre-copy done");
        self.end_precopy();
    }
}

/// What the worker thread owns.
struct Job {
    store: Arc<store::Store>,
    dir: SnapshotDir,
    regions: Vec<LiveMemory>,
    staged: Arc<Mutex<Vec<StagedPages>>>,
    parent: Option<PagesList>,
    /// The first round's pages per region (None: all of them).
    first: Vec<Option<Vec<u64>>>,
    ready: Arc<AtomicBool>,
    vcpu: libc::pthread_t,
}

impl Job {
    /// Rounds until the vCPU thread sends the last stop, then finishes the
    /// snapshot (durable when this returns Ok).
    fn run(self, steps: mpsc::Receiver<Step>) -> Finished {
        let parents: Vec<Option<(PageList, snapshot::PagesRef)>> = match &self.parent {
            Some((_, lists)) => lists.iter().cloned().map(Some).collect(),
            None => vec![None; self.regions.len()],
        };
        let mut ids: Vec<Vec<ObjectId>> = self
            .regions
            .iter()
            .zip(&parents)
            .map(|(r, p)| match p {
                Some((list, _)) => list.ids().to_vec(),
                None => vec![ObjectId::ZERO_BLOCK; r.pages()],
            })
            .collect();
        let mut before = vec![snapshot::CaptureStats::default(); self.regions.len()];
        // The first round hashes and stores; the later ones only copy.
        for (r, region) in self.regions.iter().enumerate() {
            match capture_live(&self.store, region, self.first[r].as_deref(), &mut ids[r]) {
                Ok(s) => {
                    before[r].hashed_pages += s.hashed_pages;
                    before[r].new_objects += s.new_objects;
                    before[r].new_objects_bytes += s.new_objects_bytes;
                }
                Err(e) => {
                    // The vCPU thread looks at its next exit and finds
                    // this thread finished.
                    self.ready.store(true, Ordering::SeqCst);
                    return Err(snap_err(e));
                }
            }
        }
        loop {
            match self.wait(&steps) {
                Step::Round(dirty) => {
                    let mut staged = self.staged.lock().unwrap_or_else(|e| e.into_inner());
                    for ((stage, region), d) in staged.iter_mut().zip(&self.regions).zip(&dirty) {
                        stage.copy_in(region, d);
                    }
                }
                Step::Abort(why) => {
                    return Err(VmmError::Snapshot(format!("{why}; nothing was saved")))
                }
                Step::Final(last) => {
                    let Final {
                        whole,
                        manifest,
                        layout,
                        timing,
                    } = *last;
                    let staged =
                        std::mem::take(&mut *self.staged.lock().unwrap_or_else(|e| e.into_inner()));
                    let mut captures: Vec<Capture> = ids
                        .into_iter()
                        .zip(parents)
                        .zip(staged)
                        .zip(before)
                        .map(|(((base, parent), staged), before)| Capture::Staged {
                            base,
                            parent,
                            staged,
                            before,
                        })
                        .collect();
                    captures.extend(whole);
                    let id = manifest.id.clone();
                    let kind = manifest.kind;
                    let (lists, stats) =
                        finish_snapshot(&self.dir, &self.store, manifest, captures, &layout)?;
                    return timing.info(&self.dir, id, kind, stats, lists);
                }
            }
        }
    }

    /// Tells the vCPU thread a round is done and waits for its answer.
    fn wait(&self, steps: &mpsc::Receiver<Step>) -> Step {
        self.ready.store(true, Ordering::SeqCst);
        loop {
            if self.ready.load(Ordering::SeqCst) {
                // SAFETY: the vCPU thread outlives this thread: it joins it
                // before leaving the run (`Drop`).
                unsafe { libc::pthread_kill(self.vcpu, vmm_sys_util::signal::SIGRTMIN()) };
            }
            match steps.recv_timeout(KICK_INTERVAL) {
                Ok(step) => return step,
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    return Step::Abort("the VM stopped during the snapshot's pre-copy".into())
                }
            }
        }
    }
}
