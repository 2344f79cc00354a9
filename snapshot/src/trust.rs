//! Checking every referenced object of a record directory, and saying what
//! a damaged store can still replay (`vmm store verify|repair`,
//! `vmm log verify --deep`).
//!
//! Pass 1 walks the references ([`crate::refs::walk`]) and collects the
//! distinct objects; they are then checked in parallel (scoped threads,
//! one per core, a progress bar on stderr). Only when something is bad,
//! pass 2 walks again to name who needs each bad object and, per log, the
//! first seq that needs one and the last barrier before it.
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use store::{ObjectCheck, ObjectId, Store, StoreError};

use crate::refs::{walk, Referrer, Scope, Unreadable, Visit, WalkError};

/// Seqs listed per log for one bad object (the count says how many more).
const MAX_SEQS: usize = 20;

/// Objects a worker takes at a time.
const BATCH: usize = 256;

/// What was checked and what is bad.
#[derive(Debug, Clone, Serialize)]
pub struct TrustReport {
    /// Whether objects were read and BLAKE3-checked (else: in the index,
    /// with their pack bytes present).
    pub deep: bool,
    /// Distinct objects checked.
    pub objects_checked: u64,
    /// Logs walked.
    pub logs: Vec<LogTrust>,
    /// Snapshots walked.
    pub snapshots: u64,
    /// Snapshot ids that cannot be restored (unreadable, or needing a bad
    /// object).
    pub broken_snapshots: Vec<String>,
    /// Bad or missing objects and who needs them.
    pub bad_objects: Vec<BadObject>,
    /// Logs or snapshots that could not be read through.
    pub unreadable: Vec<Unreadable>,
}

/// How far one log replays.
#[derive(Debug, Clone, Serialize)]
pub struct LogTrust {
    pub vm: String,
    /// The first seq that needs a bad object (`None`: the whole log is
    /// replayable).
    pub first_bad_seq: Option<u64>,
    /// The object that seq needs.
    pub first_bad_object: Option<String>,
    /// The last barrier before `first_bad_seq` (or the log's last barrier):
    /// `vmm replay --until seq=N` works up to here.
    pub replayable_to_barrier: Option<u64>,
}

/// One bad object.
#[derive(Debug, Clone, Serialize)]
pub struct BadObject {
    pub id: String,
    /// `missing` or `damaged`.
    pub state: &'static str,
    pub detail: String,
    /// Per log: the first seqs that need it, and how many do.
    pub logs: Vec<LogRefs>,
    pub snapshots: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct LogRefs {
    pub vm: String,
    pub seqs: Vec<u64>,
    pub count: u64,
}

impl TrustReport {
    pub fn is_ok(&self) -> bool {
        self.bad_objects.is_empty()
            && self.broken_snapshots.is_empty()
            && self.unreadable.is_empty()
    }

    /// One line per log: how far it replays.
    pub fn log_lines(&self) -> Vec<String> {
        self.logs
            .iter()
            .map(|l| {
                let upto = l
                    .replayable_to_barrier
                    .map_or("no barrier".to_string(), |b| format!("barrier seq {b}"));
                match (l.first_bad_seq, &l.first_bad_object) {
                    (Some(seq), Some(obj)) => format!(
                        "log {}: replayable up to {upto}; seq {seq} needs missing object {obj}",
                        l.vm
                    ),
                    _ => format!("log {}: fully replayable (last {upto})", l.vm),
                }
            })
            .collect()
    }

    /// One line per bad object.
    pub fn bad_lines(&self) -> Vec<String> {
        self.bad_objects
            .iter()
            .map(|b| {
                let mut who: Vec<String> = b
                    .logs
                    .iter()
                    .map(|l| {
                        let seqs: Vec<String> = l.seqs.iter().map(|s| s.to_string()).collect();
                        let more = l.count.saturating_sub(l.seqs.len() as u64);
                        let more = if more > 0 {
                            format!(" (+{more} more)")
                        } else {
                            String::new()
                        };
                        format!("log {} seq {}{more}", l.vm, seqs.join(", "))
                    })
                    .collect();
                who.extend(b.snapshots.iter().map(|s| format!("snapshot {s}")));
                format!(
                    "{} object {}: {}; needed by {}",
                    b.state,
                    b.id,
                    b.detail,
                    who.join("; ")
                )
            })
            .collect()
    }
}

/// Why a check could not run.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    #[error("{0}")]
    Walk(#[from] WalkError),
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// Checks every object `root` references within `scope` (see the module
/// doc). `progress` draws a bar on stderr (when it is a terminal).
pub fn check(
    root: &Path,
    store: &Store,
    scope: &Scope,
    deep: bool,
    progress: bool,
) -> Result<TrustReport, TrustError> {
    let mut ids: HashSet<ObjectId> = HashSet::new();
    let mut last_barrier: HashMap<String, u64> = HashMap::new();
    let summary = walk(root, store, scope, false, |v| match v {
        Visit::Object(id, _) => {
            ids.insert(id);
        }
        Visit::Barrier { vm, seq } => {
            last_barrier.insert(vm.to_string(), seq);
        }
    })?;
    let ids: Vec<ObjectId> = ids.into_iter().collect();
    let bad = check_all(store, &ids, deep, progress)?;

    let mut report = TrustReport {
        deep,
        objects_checked: ids.len() as u64,
        logs: summary
            .logs
            .iter()
            .map(|vm| LogTrust {
                vm: vm.clone(),
                first_bad_seq: None,
                first_bad_object: None,
                replayable_to_barrier: last_barrier.get(vm).copied(),
            })
            .collect(),
        snapshots: summary.snapshots,
        broken_snapshots: summary
            .unreadable
            .iter()
            .filter_map(|u| u.snapshot.clone())
            .collect(),
        bad_objects: Vec::new(),
        unreadable: summary.unreadable,
    };
    if bad.is_empty() {
        return Ok(report);
    }
    attribute(root, store, scope, bad, &mut report)?;
    Ok(report)
}

/// Pass 2: who needs each bad object, and how far each log replays.
fn attribute(
    root: &Path,
    store: &Store,
    scope: &Scope,
    bad: HashMap<ObjectId, ObjectCheck>,
    report: &mut TrustReport,
) -> Result<(), TrustError> {
    #[derive(Default)]
    struct Who {
        logs: Vec<LogRefs>,
        snapshots: Vec<String>,
    }
    let mut who: HashMap<ObjectId, Who> = HashMap::new();
    /// Per log: the last barrier so far, and the first bad seq and object
    /// once found.
    type Progress = (Option<u64>, Option<(u64, ObjectId)>);
    let mut logs: HashMap<String, Progress> = HashMap::new();
    walk(root, store, scope, false, |v| match v {
        Visit::Barrier { vm, seq } => {
            let e = logs.entry(vm.to_string()).or_default();
            if e.1.is_none() {
                e.0 = Some(seq);
            }
        }
        Visit::Object(id, referrer) if bad.contains_key(&id) => {
            let w = who.entry(id).or_default();
            match referrer {
                Referrer::Log { vm, seq } => {
                    let e = logs.entry(vm.to_string()).or_default();
                    e.1.get_or_insert((seq, id));
                    match w.logs.iter_mut().find(|l| l.vm == vm) {
                        Some(l) => {
                            if l.seqs.len() < MAX_SEQS && l.seqs.last() != Some(&seq) {
                                l.seqs.push(seq);
                            }
                            l.count += 1;
                        }
                        None => w.logs.push(LogRefs {
                            vm: vm.to_string(),
                            seqs: vec![seq],
                            count: 1,
                        }),
                    }
                }
                Referrer::Snapshot { id: snap } => {
                    if !w.snapshots.iter().any(|s| s == snap) {
                        w.snapshots.push(snap.to_string());
                    }
                }
                // A replay passes over a checkpoint whose map is bad: the
                // log still replays; the object is listed as bad.
                Referrer::Checkpoint { .. } => {}
            }
        }
        Visit::Object(..) => {}
    })?;
    for l in &mut report.logs {
        if let Some((barrier, Some((seq, id)))) = logs.get(&l.vm) {
            l.first_bad_seq = Some(*seq);
            l.first_bad_object = Some(id.to_string());
            l.replayable_to_barrier = *barrier;
        }
    }
    let mut bad: Vec<(ObjectId, ObjectCheck)> = bad.into_iter().collect();
    bad.sort_by_key(|(id, _)| who.get(id).and_then(|w| w.logs.first().map(|l| l.seqs[0])));
    for (id, state) in bad {
        let w = who.remove(&id).unwrap_or_default();
        for s in &w.snapshots {
            if !report.broken_snapshots.contains(s) {
                report.broken_snapshots.push(s.clone());
            }
        }
        let (state, detail) = match state {
            ObjectCheck::Missing => ("missing", "not in the store's index".to_string()),
            ObjectCheck::Damaged(d) => ("damaged", d),
            ObjectCheck::Ok => continue,
        };
        report.bad_objects.push(BadObject {
            id: id.to_string(),
            state,
            detail,
            logs: w.logs,
            snapshots: w.snapshots,
        });
    }
    Ok(())
}

/// Checks `ids` on every core; returns the bad ones.
fn check_all(
    store: &Store,
    ids: &[ObjectId],
    deep: bool,
    progress: bool,
) -> Result<HashMap<ObjectId, ObjectCheck>, StoreError> {
    let bar = if progress {
        let bar =
            ProgressBar::with_draw_target(Some(ids.len() as u64), ProgressDrawTarget::stderr());
        bar.set_style(
            ProgressStyle::with_template(
                "checking {bar:40} {pos}/{len} objects ({per_sec}, eta {eta})",
            )
            .expect("static template"),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let threads = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .min(8);
    let next = AtomicUsize::new(0);
    let bad = Mutex::new(HashMap::new());
    let first_error: Mutex<Option<StoreError>> = Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| loop {
                let start = next.fetch_add(BATCH, Ordering::Relaxed);
                if start >= ids.len() || first_error.lock().expect("no panics").is_some() {
                    return;
                }
                let end = (start + BATCH).min(ids.len());
                for id in &ids[start..end] {
                    match store.check(id, deep) {
                        Ok(ObjectCheck::Ok) => {}
                        Ok(c) => {
                            bad.lock().expect("no panics").insert(*id, c);
                        }
                        Err(e) => {
                            first_error.lock().expect("no panics").get_or_insert(e);
                            return;
                        }
                    }
                }
                bar.inc((end - start) as u64);
            });
        }
    });
    bar.finish_and_clear();
    if let Some(e) = first_error.into_inner().expect("no panics") {
        return Err(e);
    }
    Ok(bad.into_inner().expect("no panics"))
}
