//! Snapshots as points of a change log: `vmm replay --base
//! DIR/snapshots/ID.snap` starts a replay at a snapshot's barrier, and
//! `vmm restore DIR --at POINT` picks the snapshot to restore by a point
//! of its VM's log.
//!
//! A recorded VM's snapshot names the barrier its disk was at (the
//! manifest's disk position: the log's VM id, the seq and the disk state
//! checksum). Before the snapshot is trusted as a start, that barrier must
//! be in the log with that checksum: a snapshot of another log (or of a
//! log since rewritten) is refused rather than replayed from.
use std::path::{Path, PathBuf};

use changelog::log::RecordKind;
use changelog::LogBackend;
use replay::{Base, Point};
use snapshot::{DiskPosition, SnapshotDir};

use super::CliError;

/// A replay base chosen by a snapshot.
#[derive(Debug)]
pub struct SnapshotBase {
    pub id: String,
    /// The snapshot's barrier.
    pub seq: u64,
    /// Where the replay starts (the checkpoint taken with the snapshot, or
    /// the nearest earlier state when there is none).
    pub base: Base,
    /// The VM whose log is replayed.
    pub vm: String,
}

/// Whether `path` names a snapshot file (`DIR/snapshots/ID.snap`, as
/// `vmm snapshot list` prints it) rather than a disk image.
pub fn is_snapshot_path(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "snap")
        && path
            .parent()
            .and_then(Path::file_name)
            .is_some_and(|n| n == "snapshots")
}

/// The base of `vmm replay --base SNAP`: the disk as of snapshot `path`'s
/// barrier, checked against the log, for a replay of `vm` (if given) to
/// `until`.
pub fn replay_base(
    path: &Path,
    logs: &dyn LogBackend,
    vm: &Option<String>,
    until: &Point,
    checkpoints: bool,
) -> Result<SnapshotBase, CliError> {
    let (dir, id) = super::snapshot::split_snapshot_path(path)?;
    let position = disk_position(&dir, &id)?;
    if let Some(vm) = vm {
        if *vm != position.log_vm_id {
            return Err(CliError::new(format!(
                "--base {}: snapshot {id} is of VM {}, not --vm {vm}",
                path.display(),
                position.log_vm_id
            )));
        }
    }
    let vm = position.log_vm_id.clone();
    check_barrier(logs, &id, &position)?;
    let target = until.resolve(logs, &vm).map_err(CliError::from_display)?;
    if target < position.seq {
        return Err(CliError::new(format!(
            "--until {until} is seq {target} of VM {vm}, before snapshot {id}'s barrier (seq {}): a snapshot base replays forward only; use --base empty",
            position.seq
        )));
    }
    let has_checkpoint = checkpoints
        && logs
            .checkpoints(&vm)
            .map_err(CliError::from_display)?
            .iter()
            .any(|c| c.seq == position.seq);
    let base = if has_checkpoint {
        Base::Checkpoint(position.seq)
    } else {
        eprintln!(
            "vmm: the log has no checkpoint at snapshot {id}'s barrier (seq {}): the replay starts from the log's nearest checkpoint or its beginning",
            position.seq
        );
        Base::Empty
    };
    Ok(SnapshotBase {
        id,
        seq: position.seq,
        base,
        vm,
    })
}

/// The snapshot `vmm restore DIR --at POINT` restores: of VM `vm` (if
/// given; else the only VM with recorded snapshots in `dir`), the latest
/// whose barrier is at or before `point` in the log at `logs`.
pub fn choose_at(
    dir: &Path,
    logs: &dyn LogBackend,
    vm: &Option<String>,
    point: &Point,
) -> Result<String, CliError> {
    let snapshots = SnapshotDir::open_existing(dir).map_err(CliError::from_display)?;
    let mut candidates = Vec::new();
    for id in snapshots.ids().map_err(CliError::from_display)? {
        let manifest = snapshots.read(&id).map_err(CliError::from_display)?;
        if let Some(position) = manifest.disk {
            candidates.push((id, manifest.created_ns, position));
        }
    }
    let mut vms: Vec<&str> = candidates
        .iter()
        .map(|(_, _, p)| p.log_vm_id.as_str())
        .collect();
    vms.sort_unstable();
    vms.dedup();
    let vm = match (vm, vms.as_slice()) {
        (Some(vm), _) => vm.clone(),
        (None, [one]) => one.to_string(),
        (None, []) => {
            return Err(CliError::new(format!(
                "{} has no snapshots of a recorded VM (taken with `vmm run --record`): --at needs one whose barrier is in the log",
                dir.display()
            )))
        }
        (None, many) => {
            return Err(CliError::new(format!(
                "{} has snapshots of VMs {}: say whose with --from-vm ID",
                dir.display(),
                many.join(", ")
            )))
        }
    };
    let target = point.resolve(logs, &vm).map_err(CliError::from_display)?;
    let chosen = candidates
        .iter()
        .filter(|(_, _, p)| p.log_vm_id == vm && p.seq <= target)
        .max_by_key(|(_, created, p)| (p.seq, *created));
    let Some((id, _, position)) = chosen else {
        let first = candidates
            .iter()
            .filter(|(_, _, p)| p.log_vm_id == vm)
            .map(|(_, _, p)| p.seq)
            .min();
        return Err(CliError::new(match first {
            Some(first) => format!(
                "no snapshot of VM {vm} at or before {point} (seq {target}): its first is at seq {first}"
            ),
            None => format!("{} has no snapshots of VM {vm}", dir.display()),
        }));
    };
    check_barrier(logs, id, position)?;
    eprintln!(
        "restoring snapshot {id} of VM {vm}: its barrier (seq {}) is the latest at or before {point} (seq {target})",
        position.seq
    );
    Ok(id.clone())
}

fn disk_position(dir: &PathBuf, id: &str) -> Result<DiskPosition, CliError> {
    let manifest = SnapshotDir::open_existing(dir)
        .and_then(|d| d.read(id))
        .map_err(CliError::from_display)?;
    manifest.disk.ok_or_else(|| {
        CliError::new(format!(
            "snapshot {id} has no recorded disk (its VM ran without --record): no barrier of a log to start from"
        ))
    })
}

/// The log's record at the snapshot's seq must be a barrier with the
/// snapshot's disk checksum.
fn check_barrier(logs: &dyn LogBackend, id: &str, position: &DiskPosition) -> Result<(), CliError> {
    let vm = &position.log_vm_id;
    let record = logs
        .records(vm, position.seq)
        .map_err(CliError::from_display)?
        .next()
        .transpose()
        .map_err(CliError::from_display)?;
    let found = match record {
        Some(r) if r.seq == position.seq => match r.kind {
            RecordKind::Barrier { disk_checksum, .. } if disk_checksum == position.checksum => {
                return Ok(())
            }
            RecordKind::Barrier { disk_checksum, .. } => format!(
                "a barrier with checksum {}",
                store::hex::encode(&disk_checksum)
            ),
            _ => "a record that is not a barrier".to_string(),
        },
        _ => "no record".to_string(),
    };
    Err(CliError::new(format!(
        "snapshot {id} was taken at seq {} of VM {vm} (disk checksum {}), but the log at {} has {found} there: it is not this snapshot's log",
        position.seq,
        store::hex::encode(&position.checksum),
        logs.location()
    )))
}
