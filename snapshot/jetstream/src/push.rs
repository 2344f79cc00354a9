//! Replicating a local record directory into a cluster (`vmm log push`):
//! each VM's log from where the cluster's copy ends, every block a pushed
//! write names before the record that names it (so the cluster's log never
//! names an object the cluster lacks), in batches that end at barriers.
//!
//! A cluster copy that is not a prefix of the local log (another log under
//! the same VM name, or a log that diverged) is refused, never merged.
use changelog::log::{wire, LogError, RecordKind};
use changelog::{Hlc, LogAppend, LogBackend, RecordDir};
use serde::Serialize;
use store::{ObjectBackend, ObjectId, Store, StoreError};
use thiserror::Error;

use crate::{Remote, RemoteAppend};

/// Records sent per append batch at most (a barrier ends a batch sooner).
const BATCH_RECORDS: usize = 4096;

#[derive(Debug, Error)]
pub enum PushError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the log of VM '{vm}' at {remote} is not a copy of the local one (record seq {seq} differs, or the cluster has records the local log lacks): push it under another record set name")]
    Diverged {
        vm: String,
        remote: String,
        seq: u64,
    },
}

/// What pushing one VM's log did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PushReport {
    pub vm: String,
    /// The cluster's last seq before the push.
    pub remote_before: u64,
    pub records_sent: u64,
    /// Blocks the pushed writes name (not counting all-zero ones).
    pub blocks: u64,
    /// Of those, blocks the cluster did not have yet.
    pub new_blocks: u64,
    /// The last seq now in the cluster.
    pub remote_after: u64,
    /// Temporal checkpoints sent (their maps with them).
    pub checkpoints_sent: u64,
}

/// Pushes `vm`'s log in `dir` to `remote` (see the module doc).
pub fn push_log(
    dir: &RecordDir,
    store: &Store,
    vm: &str,
    remote: &Remote,
) -> Result<PushReport, PushError> {
    let diverged = |seq| PushError::Diverged {
        vm: vm.to_string(),
        remote: remote.url().to_string(),
        seq,
    };
    let remote_last = LogBackend::last_seq(remote, vm)?;
    let local_last = LogBackend::last_seq(dir, vm)?;
    if remote_last > local_last {
        return Err(diverged(local_last + 1));
    }
    if remote_last > 0 {
        // The cluster's last record must be the local one, byte for byte.
        let theirs = remote.records(vm, remote_last)?.next().transpose()?;
        let ours = dir.records(vm, remote_last)?.next().transpose()?;
        if theirs.is_none() || theirs.map(|r| wire::encode(&r)) != ours.map(|r| wire::encode(&r)) {
            return Err(diverged(remote_last));
        }
    }
    let mut out = remote.appender(vm)?;
    push_from(dir, store, vm, remote, &mut out, &|_| false)
}

/// Pushes the records of `vm`'s local log after `out`'s last seq (and the
/// blocks they name) through `out`, a writer kept from an earlier push:
/// no read of the cluster, so a recording's barriers cost only the
/// acknowledged writes. Blocks for which `acknowledged` says true are
/// known to be in the cluster already (sent ahead by a
/// [`crate::PutPipeline`]) and are not read or sent again.
pub fn push_from(
    dir: &RecordDir,
    store: &Store,
    vm: &str,
    remote: &Remote,
    out: &mut RemoteAppend,
    acknowledged: &dyn Fn(&ObjectId) -> bool,
) -> Result<PushReport, PushError> {
    let remote_last = out.last_seq();
    let diverged = |seq| PushError::Diverged {
        vm: vm.to_string(),
        remote: remote.url().to_string(),
        seq,
    };
    let mut report = PushReport {
        vm: vm.to_string(),
        remote_before: remote_last,
        remote_after: remote_last,
        ..PushReport::default()
    };
    // Records keep their HLC stamps: the cluster's copy orders exactly as
    // the local log (and merges with other hosts' logs the same way).
    let mut batch: Vec<(Hlc, RecordKind)> = Vec::new();
    let mut blocks: Vec<ObjectId> = Vec::new();
    let first = remote_last + 1;
    let mut records = (first..).zip(dir.records(vm, first)?).peekable();
    while let Some((expected, record)) = records.next() {
        let record = record?;
        if record.seq != expected {
            // A declared gap in the local log: the cluster's seqs follow
            // its writer, so a gap cannot be copied faithfully.
            return Err(diverged(record.seq));
        }
        if let RecordKind::BlockWrite { blocks: b, .. } = &record.kind {
            blocks.extend(
                b.iter()
                    .map(|h| ObjectId(*h))
                    .filter(|id| id.zero_len().is_none() && !acknowledged(id)),
            );
        }
        // A barrier's metrics record (right after it) travels with it: one
        // round trip per barrier, as before metrics existed.
        let next_is_metrics = matches!(
            records.peek(),
            Some((_, Ok(r))) if matches!(r.kind, RecordKind::Metrics { .. })
        );
        let ends_batch = match record.kind {
            RecordKind::Barrier { .. } => !next_is_metrics,
            RecordKind::Metrics { .. } => true,
            _ => false,
        };
        batch.push((record.hlc(), record.kind));
        if ends_batch || batch.len() >= BATCH_RECORDS {
            send(store, remote, out, &mut batch, &mut blocks, &mut report)?;
        }
    }
    send(store, remote, out, &mut batch, &mut blocks, &mut report)?;
    report.remote_after = out.last_seq();
    report.checkpoints_sent = push_checkpoints(dir, store, vm, remote, out)?;
    Ok(report)
}

/// Sends the local checkpoints of `vm` the cluster lacks and whose
/// barrier it has, each map before the entry that names it.
fn push_checkpoints(
    dir: &RecordDir,
    store: &Store,
    vm: &str,
    remote: &Remote,
    out: &mut RemoteAppend,
) -> Result<u64, PushError> {
    let mut sent = 0;
    for cp in dir.checkpoints(vm)? {
        if cp.seq <= out.last_checkpoint() || cp.seq > out.last_seq() {
            continue;
        }
        let ids: Vec<ObjectId> = cp.chunks.iter().map(|(_, id)| *id).collect();
        let data: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| store.get(id))
            .collect::<Result<_, _>>()?;
        let items: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        remote.put_hashed(&items, &ids)?;
        out.add_checkpoint(&cp)?;
        sent += 1;
    }
    Ok(sent)
}

/// Blocks first, then the records that name them.
fn send(
    store: &Store,
    remote: &Remote,
    out: &mut dyn LogAppend,
    batch: &mut Vec<(Hlc, RecordKind)>,
    blocks: &mut Vec<ObjectId>,
    report: &mut PushReport,
) -> Result<(), PushError> {
    if batch.is_empty() {
        return Ok(());
    }
    blocks.sort_unstable();
    blocks.dedup();
    let data: Vec<Vec<u8>> = blocks
        .iter()
        .map(|id| store.get(id))
        .collect::<Result<_, _>>()?;
    let items: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
    let put = remote.put_hashed(&items, blocks)?;
    report.blocks += blocks.len() as u64;
    report.new_blocks += put.new_objects;
    for (hlc, kind) in batch.drain(..) {
        out.append_stamped(hlc, kind)?;
        report.records_sent += 1;
    }
    out.sync()?;
    blocks.clear();
    Ok(())
}
