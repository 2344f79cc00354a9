//! Application-level replay: an application file's rows, documents or keys
//! at a point of the recorded history, rebuilt from the semantic change log
//! and proved against the block-level replay.
//!
//! - [`change`] and [`row`]: a change and its rows in the compact form the
//!   fold holds, read from the log's JSON records without `Value` trees.
//! - [`stream`]: reading one VM's changes of a file (and its hints and
//!   barriers) up to a point; selections; what-if filters; merging several
//!   VMs' streams by time with their conflicting keys.
//! - [`state`]: the fold ([`State::apply`]) and the canonical BLAKE3
//!   checksum of a row set.
//! - [`proof`]: the same file decoded from the disk that the block-level
//!   replay rebuilds at the same barrier.
//! - [`output`]: a real SQLite database, the JSON document or the
//!   key-value map, written atomically.
//!
//! [`replay_semantic`] does all of it. The stream is taken as given (the
//! fold does not second-guess the lifter); the proof is what says whether
//! it is right. A selective (one table or key range), what-if (changes
//! dropped) or merged (several VMs) replay is not a recorded history, so
//! it is labelled as such and has no block-level proof.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use changelog::log::LogError;
use changelog::recording::RecordDir;
use introspection::semantic::{Format, Op};
use serde::Serialize;
use store::hex;
use thiserror::Error;

use crate::{Point, ReplayError};

pub mod change;
mod data;
#[cfg(test)]
mod fold_tests;
pub mod output;
pub mod proof;
mod reshape;
pub mod row;
pub mod state;
pub mod stream;
#[cfg(test)]
mod tests;

pub use change::Lifted;
pub use row::Row;
pub use state::{AnomalyKind, Applied, Key, State};
pub use stream::{ChangeFilter, Conflict, KeyRange, Selection, VmStream, SCHEMA};

#[derive(Debug, Error)]
pub enum SemanticError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error("{path}: {source}", path = .path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: SQLite: {reason}", path = .path.display())]
    Sqlite { path: PathBuf, reason: String },
    #[error("no log of VM '{vm}' in {}; `vmm changes {} --json` lists the VMs that have changes", .dir.display(), .dir.display())]
    NoSuchVm { vm: String, dir: PathBuf },
    #[error("no VM named")]
    NoVm,
    #[error("the log of {vm} has no changes of and no hint for a file named '{file}'; `vmm changes DIR` lists the files that have changes")]
    NoSuchFile { file: String, vm: String },
    #[error("'{file}' is not at a consistent point at barrier seq {seq} and the log has no earlier lift of it to prove against")]
    NeverConsistent { file: String, seq: u64 },
    #[error("cannot decode '{file}' from the replayed disk at barrier seq {seq}: {reason}")]
    Decode {
        file: String,
        seq: u64,
        reason: String,
    },
    #[error("'{file}' has changes of several formats ({0} and {1}) in the selected logs", .formats.0, .formats.1)]
    MixedFormats {
        file: String,
        formats: (Format, Format),
    },
    #[error("the semantic log and the disk disagree for '{}' at barrier seq {}: the log's changes give state {} ({} rows), the disk decodes to {} ({} rows); {} was not written", .0.file, .0.proof.barrier.unwrap_or(0), .0.checksum, .0.rows, .0.proof.disk_checksum.as_deref().unwrap_or("-"), .0.proof.disk_rows.unwrap_or(0), .0.out.display())]
    Mismatch(Box<SemanticReport>),
    #[error("{path}: the written file does not hold the replayed state: {reason}; it was not kept", path = .path.display())]
    OutputMismatch { path: PathBuf, reason: String },
    #[error("replay cancelled before it finished; the output was not written")]
    Cancelled,
}

/// What to replay.
pub struct Request<'a> {
    /// One VM, or several whose streams are merged by time.
    pub vms: Vec<String>,
    /// The file as the guest named it.
    pub file: String,
    pub point: Point,
    pub selection: Selection,
    /// What-if: changes to leave out.
    pub drop: Vec<ChangeFilter>,
    /// The new file to write.
    pub out: PathBuf,
    pub cancel: Option<&'a dyn Fn() -> bool>,
    pub progress: bool,
}

/// How the fold state was checked against the disk.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ProofReport {
    /// `verified`, `mismatch`, `skipped` or `no_barrier`.
    pub status: String,
    /// The barrier at which the disk was decoded.
    pub barrier: Option<u64>,
    /// The checksum and rows of the state decoded from the disk.
    pub disk_checksum: Option<String>,
    pub disk_rows: Option<u64>,
    /// Why it was skipped, or where it fell back from.
    pub note: Option<String>,
    /// On a mismatch: the first rows that differ.
    pub differences: Vec<state::Difference>,
}

/// One VM's part of a replay.
#[derive(Clone, Debug, Serialize)]
pub struct VmReport {
    pub vm: String,
    pub until_seq: u64,
    pub last_barrier: Option<u64>,
    pub changes_read: u64,
    pub decode_errors: u64,
    pub unreadable_records: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SemanticReport {
    pub file: String,
    pub format: Format,
    pub until: String,
    pub vms: Vec<VmReport>,
    pub changes_applied: u64,
    /// Changes outside the selection.
    pub changes_unselected: u64,
    /// Changes a what-if filter dropped.
    pub changes_dropped: u64,
    /// Changes that left the state as it was (e.g. a clone's same insert).
    pub changes_unchanged: u64,
    /// Changes that did not fit the state folded so far, by kind.
    pub anomalies: BTreeMap<AnomalyKind, u64>,
    /// Rows per collection.
    pub collections: BTreeMap<String, u64>,
    pub rows: u64,
    /// BLAKE3 of the canonical row set (hex).
    pub checksum: String,
    /// False for selective, what-if and merged replays.
    pub recorded_history: bool,
    /// Why this is not the recorded history.
    pub labels: Vec<String>,
    pub proof: ProofReport,
    /// Keys more than one VM changed differently (merges only).
    pub conflicts: Vec<Conflict>,
    pub out: PathBuf,
}

/// The fold of a stream: the state and what applying it did.
#[derive(Debug, Default)]
pub struct Fold<'a> {
    pub state: State<'a>,
    pub applied: u64,
    pub unselected: u64,
    pub dropped: u64,
    pub unchanged: u64,
    pub anomalies: BTreeMap<AnomalyKind, u64>,
}

/// Folds `changes` in order, keeping the selected ones not dropped. The
/// state borrows the rows from `changes`.
pub fn fold<'a>(
    changes: impl IntoIterator<Item = &'a Lifted>,
    selection: &Selection,
    drop: &[ChangeFilter],
) -> Fold<'a> {
    let mut f = Fold::default();
    let changes: Vec<&Lifted> = changes.into_iter().collect();
    for (collection, inserts) in count_inserts(&changes) {
        f.state.reserve(collection, inserts);
    }
    for batch in changes.chunks(state::BATCH) {
        f.state.prefetch(batch);
        for &c in batch {
            fold_one(&mut f, c, selection, drop);
        }
    }
    f.state.prune();
    f
}

/// Applies `c` to `f` unless the selection or a what-if filter leaves it
/// out, and counts what it did.
fn fold_one<'a>(f: &mut Fold<'a>, c: &'a Lifted, selection: &Selection, drop: &[ChangeFilter]) {
    if !selection.keeps(c) {
        f.unselected += 1;
        return;
    }
    if drop.iter().any(|d| d.matches(c)) {
        f.dropped += 1;
        return;
    }
    f.applied += 1;
    match f.state.apply(c) {
        Applied::Changed => {}
        Applied::Unchanged => f.unchanged += 1,
        Applied::Anomaly(kind) => *f.anomalies.entry(kind).or_default() += 1,
    }
}

/// How many inserts each collection of `changes` has (at most as many rows
/// as it will hold), in a list: a file has a few collections, and a change
/// mostly belongs to the same one as the change before it.
fn count_inserts<'c>(changes: &[&'c Lifted]) -> Vec<(&'c str, usize)> {
    let mut counts: Vec<(&str, usize)> = Vec::new();
    let mut last = 0;
    for c in changes.iter().filter(|c| c.op == Op::Insert) {
        // Collection names are interned while reading: mostly the same str.
        let same = |n: &str| std::ptr::eq(n, &*c.collection) || n == &*c.collection;
        if counts.get(last).is_none_or(|(n, _)| !same(n)) {
            last = match counts.iter().position(|(n, _)| same(n)) {
                Some(i) => i,
                None => {
                    counts.push((&*c.collection, 0));
                    counts.len() - 1
                }
            };
        }
        counts[last].1 += 1;
    }
    counts
}

/// Rebuilds `req.file` at `req.point` from the semantic log, proves it
/// against the block-level replay when it is the recorded history, and
/// writes it to `req.out` (atomically). A proof that fails is
/// [`SemanticError::Mismatch`] and nothing is written.
pub fn replay_semantic(
    dir: &RecordDir,
    req: &Request<'_>,
) -> Result<SemanticReport, SemanticError> {
    if req.vms.is_empty() {
        return Err(SemanticError::NoVm);
    }
    let cancelled = || req.cancel.is_some_and(|c| c());
    let mut streams = Vec::new();
    for vm in &req.vms {
        streams.push(VmStream::read(dir, vm, &req.file, &req.point)?);
    }
    // The format, and the schema hints the output needs, from the first
    // VM's hints (or, without one, from its events).
    let first = &streams[0];
    let disk_bytes = first.disk_bytes.unwrap_or(u64::MAX);
    let hinted = proof::main_file(
        &proof::lifter_at(first, disk_bytes, first.until_seq + 1),
        &req.file,
    )
    .or_else(|| proof::main_file(&proof::lifter_at(first, disk_bytes, u64::MAX), &req.file));
    let mut format = hinted.as_ref().map(|(_, f)| f.format).or(first.format);
    for s in &streams {
        match (format, s.format) {
            (Some(a), Some(b)) if a != b => {
                return Err(SemanticError::MixedFormats {
                    file: req.file.clone(),
                    formats: (a, b),
                })
            }
            (None, b) => format = b,
            _ => {}
        }
    }
    let format = format.ok_or_else(|| SemanticError::NoSuchFile {
        file: req.file.clone(),
        vm: first.vm.clone(),
    })?;
    let schema = hinted.map(|(_, f)| f.schema).unwrap_or_default();
    let vms: Vec<VmReport> = streams
        .iter()
        .map(|s| VmReport {
            vm: s.vm.clone(),
            until_seq: s.until_seq,
            last_barrier: s.last_barrier(),
            changes_read: s.changes.len() as u64,
            decode_errors: s.decode_errors.len() as u64,
            unreadable_records: s.unreadable,
        })
        .collect();
    let mut labels = Vec::new();
    if let Some(t) = &req.selection.table {
        labels.push(format!("selective: only table/collection '{t}'"));
    }
    if let Some(k) = &req.selection.keys {
        labels.push(format!("selective: only keys {}..{}", k.first, k.last));
    }
    if !req.drop.is_empty() {
        labels.push(format!(
            "what-if: changes matching {} dropped",
            describe(&req.drop)
        ));
    }
    if streams.len() > 1 {
        labels.push(format!(
            "merged: the streams of {} in time order",
            req.vms.join(", ")
        ));
    }
    let recorded_history = labels.is_empty();
    let tmp = crate::temp_path(&req.out);
    // The block-level side of the proof first: it needs the stream's lift
    // points, which the fold consumes.
    let decoded = if recorded_history {
        let scratch = tmp.with_extension("disk");
        match proof::decode_from_disk(
            dir,
            &streams[0],
            &req.file,
            &scratch,
            req.cancel,
            req.progress,
        ) {
            Err(SemanticError::Replay(ReplayError::Cancelled)) => {
                return Err(SemanticError::Cancelled)
            }
            other => Some(other?),
        }
    } else {
        None
    };
    let (changes, conflicts) = if streams.len() > 1 {
        stream::merge(
            streams
                .iter_mut()
                .map(|s| (s.vm.clone(), std::mem::take(&mut s.changes)))
                .collect(),
        )
    } else {
        (std::mem::take(&mut streams[0].changes), Vec::new())
    };
    let folded = fold(&changes, &req.selection, &req.drop);
    if cancelled() {
        return Err(SemanticError::Cancelled);
    }
    let mut report = SemanticReport {
        file: req.file.clone(),
        format,
        until: req.point.to_string(),
        vms,
        changes_applied: folded.applied,
        changes_unselected: folded.unselected,
        changes_dropped: folded.dropped,
        changes_unchanged: folded.unchanged,
        anomalies: folded.anomalies.clone(),
        collections: folded
            .state
            .collections
            .iter()
            .map(|(n, r)| (n.clone(), r.len() as u64))
            .collect(),
        rows: folded.state.rows(),
        checksum: hex::encode(&folded.state.checksum()),
        recorded_history,
        labels,
        proof: ProofReport::default(),
        conflicts,
        out: req.out.clone(),
    };
    match decoded {
        None => {
            report.proof.status = "skipped".into();
            report.proof.note = Some(
                "not the recorded history, so there is no disk state to prove it against".into(),
            );
        }
        Some(None) => {
            report.proof.status = "no_barrier".into();
            report.proof.note = Some(
                "the point includes no barrier: there is no disk state to compare with".into(),
            );
        }
        Some(Some(d)) => {
            let sum = hex::encode(&d.state.checksum());
            report.proof.barrier = Some(d.barrier);
            report.proof.disk_rows = Some(d.state.rows());
            report.proof.note = d.fell_back_from.map(|(b, why)| {
                format!(
                    "'{}' {why} at barrier seq {b}; proved at seq {}, where the log last lifted it",
                    req.file, d.barrier
                )
            });
            let ok = sum == report.checksum;
            report.proof.disk_checksum = Some(sum);
            report.proof.status = if ok { "verified" } else { "mismatch" }.into();
            if !ok {
                report.proof.differences = folded.state.differences(&d.state, 5);
                return Err(SemanticError::Mismatch(Box::new(report)));
            }
        }
    }
    if cancelled() {
        return Err(SemanticError::Cancelled);
    }
    let result = output::write(&folded.state, format, &schema, &tmp)
        .and_then(|()| output::verify(&folded.state, format, &schema, &tmp))
        .and_then(|()| {
            std::fs::rename(&tmp, &req.out).map_err(|source| SemanticError::Io {
                path: req.out.clone(),
                source,
            })
        });
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result?;
    sync_parent(&req.out);
    Ok(report)
}

fn sync_parent(path: &Path) {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let _ = std::fs::File::open(parent).and_then(|d| d.sync_all());
    }
}

fn describe(filters: &[ChangeFilter]) -> String {
    filters
        .iter()
        .map(|f| match f {
            ChangeFilter::Seq { first, last } => format!("seq={first}..{last}"),
            ChangeFilter::Key(k) => format!("key={}..{}", k.first, k.last),
            ChangeFilter::Table(t) => format!("table={t}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}
