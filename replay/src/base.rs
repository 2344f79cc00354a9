//! Where a replay starts: an empty disk (the log carries its own base), or
//! a given image that must be a state the log passed through.
//!
//! For an image, its state checksum is compared with the log's barriers:
//! the replay starts after the latest barrier (at or before the target)
//! whose checksum equals the image's. So the original image starts after
//! the log's base, and an image replayed earlier to seq B starts after B
//! (a nearer base means less to replay). An image that matches no barrier
//! is refused: the log cannot say what it holds.
//!
//! An empty start uses the log's nearest temporal checkpoint at or before
//! the target when there is one (`changelog::checkpoints`): its block map
//! is written into the new disk and the replay starts after its barrier,
//! so it reads only the log since. A checkpoint is used only once its map
//! hashes to its barrier's checksum and the log's record at that seq is
//! that barrier; otherwise an earlier one, or the log's beginning.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use std::os::unix::fs::FileExt;

use changelog::checkpoints::{self, Checkpoint};
use changelog::disk_state::DiskState;
use changelog::log::RecordKind;
use changelog::LogBackend;
use introspection::tap::parse_base_mark;
use store::{ObjectBackend, ObjectId, BLOCK_SIZE};

use crate::ReplayError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An all-zero disk of the size the log's base mark records.
    Empty,
    Image(PathBuf),
    /// The disk as the log's checkpoint at this seq maps it (a segment of
    /// a long log, verified on its own: fleet replay).
    Checkpoint(u64),
}

impl FromStr for Base {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty --base: use 'empty' or an image path".into()),
            "empty" => Ok(Base::Empty),
            other => match other.strip_prefix("checkpoint=") {
                Some(n) => n.parse().map(Base::Checkpoint).map_err(|_| {
                    format!(
                        "'{other}': checkpoint=N takes a seq (`vmm log checkpoints` lists them)"
                    )
                }),
                None => Ok(Base::Image(PathBuf::from(other))),
            },
        }
    }
}

/// Where a prepared replay starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Start {
    /// The first record to apply.
    pub from_seq: u64,
    /// The checkpoint the disk was built from, if one was.
    pub checkpoint: Option<u64>,
}

/// Writes the base into `out` (a new file) and says where replay starts;
/// `objects` holds the blocks of checkpoints, used unless `checkpoints`
/// is false.
pub fn prepare(
    logs: &dyn LogBackend,
    objects: &dyn ObjectBackend,
    vm: &str,
    base: &Base,
    until: u64,
    out: &Path,
    checkpoints: bool,
) -> Result<Start, ReplayError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::Image { path, source }
    };
    match base {
        Base::Checkpoint(seq) => {
            let cp = logs
                .checkpoints(vm)?
                .into_iter()
                .find(|c| c.seq == *seq)
                .ok_or_else(|| ReplayError::NoCheckpoint {
                    vm: vm.to_string(),
                    seq: *seq,
                    why: "the log has no checkpoint there".into(),
                })?;
            if cp.seq > until {
                return Err(ReplayError::NoCheckpoint {
                    vm: vm.to_string(),
                    seq: *seq,
                    why: format!("it lies after the target, seq {until}"),
                });
            }
            from_checkpoint(logs, objects, vm, &cp, until, out).map_err(
                |CheckpointUnusable { why, .. }| ReplayError::NoCheckpoint {
                    vm: vm.to_string(),
                    seq: *seq,
                    why,
                },
            )?;
            Ok(Start {
                from_seq: cp.seq + 1,
                checkpoint: Some(cp.seq),
            })
        }
        Base::Empty if checkpoints => {
            for cp in logs
                .checkpoints(vm)?
                .iter()
                .rev()
                .filter(|c| c.seq <= until)
            {
                match from_checkpoint(logs, objects, vm, cp, until, out) {
                    Ok(()) => {
                        return Ok(Start {
                            from_seq: cp.seq + 1,
                            checkpoint: Some(cp.seq),
                        })
                    }
                    // Records removed by retention are the log's state,
                    // not damage: the error says so if nothing serves.
                    Err(CheckpointUnusable { trimmed: true, .. }) => {}
                    Err(CheckpointUnusable { why, .. }) => {
                        tracing::warn!("checkpoint at seq {} of VM {vm} not used: {why}", cp.seq)
                    }
                }
            }
            prepare(logs, objects, vm, base, until, out, false)
        }
        Base::Empty => {
            let mut size = None;
            for (i, record) in logs.records(vm, 1)?.enumerate() {
                let record = record?;
                if i == 0 && record.seq > 1 {
                    return Err(ReplayError::Trimmed {
                        vm: vm.to_string(),
                        first_seq: record.seq,
                        location: logs.location(),
                    });
                }
                if let RecordKind::Mark { name } = &record.kind {
                    if let Some(bytes) = parse_base_mark(name) {
                        size = Some(bytes);
                        break;
                    }
                }
            }
            let size = size.ok_or(ReplayError::NoBaseSize)?;
            File::create(out)
                .and_then(|f| f.set_len(size))
                .map_err(io(out))?;
            Ok(Start {
                from_seq: 1,
                checkpoint: None,
            })
        }
        Base::Image(image) => {
            std::fs::copy(image, out).map_err(io(image))?;
            let checksum = DiskState::from_image(out)
                .map_err(|e| ReplayError::ImageState {
                    path: image.clone(),
                    reason: e.to_string(),
                })?
                .checksum();
            let mut start = None;
            for record in logs.records(vm, 1)? {
                let record = record?;
                if record.seq > until {
                    break;
                }
                if let RecordKind::Barrier { disk_checksum, .. } = record.kind {
                    if disk_checksum == checksum {
                        start = Some(record.seq + 1);
                    }
                }
            }
            start
                .map(|from_seq| Start {
                    from_seq,
                    checkpoint: None,
                })
                .ok_or_else(|| ReplayError::BaseNotInLog(image.clone()))
        }
    }
}

/// Why a checkpoint was passed over; `trimmed`: the records after it that
/// the target needs were removed by retention.
struct CheckpointUnusable {
    why: String,
    trimmed: bool,
}

/// Writes checkpoint `cp`'s disk into `out` (a new file).
fn from_checkpoint(
    logs: &dyn LogBackend,
    objects: &dyn ObjectBackend,
    vm: &str,
    cp: &Checkpoint,
    until: u64,
    out: &Path,
) -> Result<(), CheckpointUnusable> {
    let no = |why: String| CheckpointUnusable {
        why,
        trimmed: false,
    };
    let record = logs
        .records(vm, cp.seq)
        .map_err(|e| no(e.to_string()))?
        .next()
        .transpose()
        .map_err(|e| no(e.to_string()))?;
    match record {
        Some(r) if r.seq == cp.seq => match r.kind {
            RecordKind::Barrier { disk_checksum, .. } if disk_checksum == cp.disk_checksum => {}
            _ => return Err(no("the log's record there is not its barrier".into())),
        },
        // Retention removed the barrier itself but nothing after it: the
        // map (checked against the barrier's checksum below) stands in.
        Some(r) if r.seq == cp.seq + 1 => {}
        // The target is the checkpoint itself, whose records retention
        // removed (`store retain` keeps such checkpoints as the old
        // history's restore points): its map alone is the disk there.
        Some(r) if r.seq > cp.seq && cp.seq == until => {}
        Some(r) => {
            return Err(CheckpointUnusable {
                why: format!(
                    "the log's records {}..{} were removed (retention)",
                    cp.seq + 1,
                    r.seq - 1
                ),
                trimmed: true,
            })
        }
        None => return Err(no("the log has no record at or after its seq".into())),
    }
    let state = checkpoints::load(cp, objects).map_err(|e| no(e.to_string()))?;
    let file = File::create(out).map_err(|e| no(format!("{}: {e}", out.display())))?;
    file.set_len(state.num_blocks() * BLOCK_SIZE as u64)
        .map_err(|e| no(format!("{}: {e}", out.display())))?;
    let blocks: Vec<(u64, ObjectId)> = state
        .iter_nonzero()
        .map(|(b, h)| (b, ObjectId(*h)))
        .collect();
    // In batches: a backend across a network answers each in one wait.
    for batch in blocks.chunks(256) {
        let ids: Vec<ObjectId> = batch.iter().map(|(_, id)| *id).collect();
        let data = objects
            .get_many(&ids)
            .map_err(|e| no(format!("blocks {}..: {e}", batch[0].0)))?;
        for ((block, _), data) in batch.iter().zip(data) {
            file.write_all_at(&data, block * BLOCK_SIZE as u64)
                .map_err(|e| no(format!("{}: {e}", out.display())))?;
        }
    }
    Ok(())
}
