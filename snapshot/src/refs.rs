//! Every store object a record directory references, and who references
//! it: the one walk behind `vmm store gc` (its mark), `vmm store verify`,
//! `vmm store repair` and `vmm log verify --deep`.
//!
//! Snapshots are walked by [`crate::gc::walk_snapshots`] (page-list
//! chunks, then pages), change logs here (each block a write names, in
//! seq order, with the barriers between them so that callers can tell how
//! far a log replays; then the map chunks of the log's checkpoints, and
//! in a log whose oldest records were removed, the blocks of their maps).
use std::path::Path;

use crate::gc::{collect_marked, CollectReport, GcError};
use crate::{ManifestError, SnapshotDir};
use changelog::checkpoints;
use changelog::log::{LogError, LogReader, RecordKind};
use changelog::recording::RecordDir;
use store::{ObjectId, Store};

/// Who needs an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Referrer<'a> {
    /// A block write of VM `vm`'s change log.
    Log { vm: &'a str, seq: u64 },
    /// A snapshot's page list (chunk or page).
    Snapshot { id: &'a str },
    /// A map chunk of VM `vm`'s temporal checkpoint at `seq` (derived
    /// data: without it a replay starts from an earlier checkpoint).
    Checkpoint { vm: &'a str, seq: u64 },
}

/// One step of [`walk`].
#[derive(Debug, Clone, Copy)]
pub enum Visit<'a> {
    /// `referrer` needs this object (zero blocks are never visited).
    Object(ObjectId, Referrer<'a>),
    /// A barrier (flush/FUA) of `vm`'s log: the disk state at it is whole.
    Barrier { vm: &'a str, seq: u64 },
}

/// What the walk covers.
#[derive(Debug, Clone, Default)]
pub struct Scope {
    /// Only this VM's log (default: every log).
    pub vm: Option<String>,
    /// Leave the snapshots out.
    pub logs_only: bool,
}

/// A log or snapshot the walk could not read through (lenient walks only).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Unreadable {
    /// `log VM` or `snapshot ID`.
    pub what: String,
    /// The snapshot id, for snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    pub error: String,
}

/// What [`walk`] went through.
#[derive(Debug, Clone, Default)]
pub struct WalkSummary {
    /// The logs walked (VM ids).
    pub logs: Vec<String>,
    /// Snapshots walked.
    pub snapshots: u64,
    /// What could not be read (lenient walks).
    pub unreadable: Vec<Unreadable>,
}

/// Why a strict walk stopped.
#[derive(Debug, thiserror::Error)]
pub enum WalkError {
    #[error("{0}")]
    Snapshot(#[from] ManifestError),
    #[error("the change log of VM '{vm}' cannot be read: {source}")]
    Log {
        vm: String,
        #[source]
        source: LogError,
    },
    #[error("cannot list the logs in {dir}: {source}")]
    List {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// Walks everything `root` (a record or snapshot directory) references.
/// `strict` stops at the first unreadable snapshot or log (garbage
/// collection must not go on without it); otherwise those are listed in
/// the summary and the walk goes on.
pub fn walk(
    root: &Path,
    store: &Store,
    scope: &Scope,
    strict: bool,
    mut visit: impl FnMut(Visit<'_>),
) -> Result<WalkSummary, WalkError> {
    let rec = RecordDir::new(root);
    let mut summary = WalkSummary::default();
    let all = rec.vm_ids().map_err(|source| WalkError::List {
        dir: rec.logs_dir().display().to_string(),
        source,
    })?;
    summary.logs = match &scope.vm {
        Some(vm) => all.into_iter().filter(|v| v == vm).collect(),
        None => all,
    };
    for vm in &summary.logs {
        if let Err(source) = walk_log(&rec, store, vm, &mut visit) {
            if strict {
                return Err(WalkError::Log {
                    vm: vm.clone(),
                    source,
                });
            }
            summary.unreadable.push(Unreadable {
                what: format!("log {vm}"),
                snapshot: None,
                error: source.to_string(),
            });
        }
    }
    if scope.logs_only || !rec.snapshots_dir().is_dir() {
        return Ok(summary);
    }
    let dir = SnapshotDir::open(root)?;
    let mut unreadable = Vec::new();
    summary.snapshots = crate::gc::walk_snapshots(
        &dir,
        store,
        |id, object| visit(Visit::Object(object, Referrer::Snapshot { id })),
        |id, e| {
            if strict {
                return Err(e);
            }
            unreadable.push(Unreadable {
                what: format!("snapshot {id}"),
                snapshot: Some(id.to_string()),
                error: e.to_string(),
            });
            Ok(())
        },
    )?;
    summary.unreadable.extend(unreadable);
    Ok(summary)
}

fn walk_log(
    rec: &RecordDir,
    store: &Store,
    vm: &str,
    visit: &mut impl FnMut(Visit<'_>),
) -> Result<(), LogError> {
    let reader = LogReader::open(rec.log_dir(vm))?;
    let trimmed = reader.is_trimmed();
    for record in reader.iter()? {
        let record = record?;
        match record.kind {
            RecordKind::BlockWrite { blocks, .. } => {
                for b in blocks {
                    let id = ObjectId(b);
                    if !id.is_zero_block() {
                        visit(Visit::Object(
                            id,
                            Referrer::Log {
                                vm,
                                seq: record.seq,
                            },
                        ));
                    }
                }
            }
            RecordKind::Barrier { .. } => visit(Visit::Barrier {
                vm,
                seq: record.seq,
            }),
            _ => {}
        }
    }
    for cp in checkpoints::read_local(&rec.log_dir(vm)).list {
        for (_, id) in &cp.chunks {
            visit(Visit::Object(*id, Referrer::Checkpoint { vm, seq: cp.seq }));
        }
        // Once old records are gone (`store retain`), a checkpoint's map
        // may be all that names a block: its blocks are its own to keep.
        // A map that does not load names no block here; verify reports
        // its chunk.
        if trimmed {
            if let Ok(state) = checkpoints::load(&cp, store) {
                for (_, hash) in state.iter_nonzero() {
                    visit(Visit::Object(
                        ObjectId(*hash),
                        Referrer::Checkpoint { vm, seq: cp.seq },
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Collects the store of the record directory `root` (`vmm store gc`):
/// marks every object its logs and snapshots reference, by the same walk
/// as verify, then compacts the store to them
/// ([`crate::gc::collect_marked`]). A log or snapshot that cannot be read
/// stops the collection before anything is deleted. Returns what was done
/// and how many logs were marked.
pub fn collect_garbage(root: &Path, store: &Store) -> Result<(CollectReport, usize), GcError> {
    let mut logs = 0;
    let report = collect_marked(store, |live| {
        let summary = walk(root, store, &Scope::default(), true, |v| {
            if let Visit::Object(id, _) = v {
                live.insert(id);
            }
        })
        .map_err(|e| match e {
            WalkError::Snapshot(e) => GcError::Snapshot(e),
            other => GcError::Extra(Box::new(other)),
        })?;
        logs = summary.logs.len();
        Ok(summary.snapshots)
    })?;
    Ok((report, logs))
}
