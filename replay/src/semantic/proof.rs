//! The block-level proof: the file's state decoded from the disk that the
//! block-level replay rebuilds, at the same barrier the semantic fold
//! stopped at.
//!
//! The disk is rebuilt from the log's own base to the last barrier the
//! point includes (every barrier checksum verified on the way, as in any
//! replay), into a scratch image. The file is then found and read the way
//! the recording host found it: the guest's hints from the log placed in a
//! fresh [`Lifter`]'s file table, which also says whether the file is at a
//! consistent point there (an SQLite rollback journal that is hot is not;
//! a WAL's committed frames are applied). If it is not, or its bytes there
//! do not decode (the recording host then logged a decode error and kept
//! its last good state), the proof falls back to the last barrier at which
//! the log lifted changes of the file — the fold holds the same state
//! there, as nothing was lifted after it — and says so. The decoder reads
//! the bytes as a diff against an empty file (all inserts), folded into a
//! [`State`] like any stream.
use std::collections::BTreeSet;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use changelog::recording::RecordDir;
use hint_proto::Role;
use introspection::decode::{self, sqlite::apply_wal, SchemaHints};
use introspection::lift::{FileInfo, Lifter};
use introspection::semantic::Format;

use super::state::State;
use super::stream::VmStream;
use super::SemanticError;
use crate::{base, engine, Base, Control, ReplayError, Step};

/// The file table as the recording host had it just before record `seq`.
pub fn lifter_at(stream: &VmStream, disk_bytes: u64, seq: u64) -> Lifter {
    let mut lifter = Lifter::new(disk_bytes);
    for (_, message) in stream.hints.iter().take_while(|(s, _)| *s < seq) {
        // A hint the host refused changed nothing there either.
        if let Ok((hint, used)) = hint_proto::decode(message) {
            if used == message.len() {
                let _ = lifter.table.apply(&hint);
            }
        }
    }
    lifter
}

/// The main file named `path` in a file table.
pub fn main_file(lifter: &Lifter, path: &str) -> Option<(u32, FileInfo)> {
    lifter
        .table
        .files()
        .filter(|(_, f)| f.path == path && f.role == Role::Main)
        .map(|(id, f)| (*id, f.clone()))
        .last()
}

/// The file's bytes on `image` at barrier `seq`, WAL applied.
struct Version {
    bytes: Vec<u8>,
    format: Format,
    schema: SchemaHints,
}

/// What the disk holds of the file at a barrier.
enum AtBarrier {
    /// The guest had not named the file (yet, or any more): no rows.
    Absent,
    /// Not at a consistent point (a hot rollback journal).
    Inconsistent,
    Present(Version),
}

fn read_version(
    stream: &VmStream,
    disk_bytes: u64,
    file: &str,
    image: &Path,
    seq: u64,
) -> Result<AtBarrier, SemanticError> {
    let mut lifter = lifter_at(stream, disk_bytes, seq);
    let Some((id, info)) = main_file(&lifter, file) else {
        return Ok(AtBarrier::Absent);
    };
    if info.extents.is_empty() || !info.exists {
        return Ok(AtBarrier::Absent);
    }
    let disk = File::open(image).map_err(|source| SemanticError::Io {
        path: image.to_path_buf(),
        source,
    })?;
    let mut read = |offset: u64, len: usize| {
        let mut buf = vec![0u8; len];
        disk.read_exact_at(&mut buf, offset).map(|()| buf)
    };
    let versions = lifter.versions(&BTreeSet::new(), &BTreeSet::from([id]), &mut read);
    let Some(v) = versions.into_iter().find(|v| v.id == id) else {
        return Ok(AtBarrier::Inconsistent);
    };
    let bad = |reason: String| SemanticError::Decode {
        file: file.to_string(),
        seq,
        reason,
    };
    let got = v.bytes.map_err(bad)?;
    let bytes = match &got.wal {
        Some(wal) => apply_wal(&got.bytes, wal).map_err(|e| bad(format!("WAL: {e}")))?,
        None => got.bytes.to_vec(),
    };
    Ok(AtBarrier::Present(Version {
        bytes,
        format: v.format,
        schema: v.schema,
    }))
}

/// The state the disk holds, and the barrier it was read at.
pub struct Decoded {
    pub barrier: u64,
    pub state: State<'static>,
    /// The proof fell back from this barrier (the last), where the file
    /// was not consistent or not decodable (why), to `barrier`.
    pub fell_back_from: Option<(u64, String)>,
}

/// Removes the scratch image however the proof ends.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Rebuilds `stream.vm`'s disk into `scratch` up to the stream's last
/// barrier and decodes `file` there (see the module doc). None when the
/// point includes no barrier.
pub fn decode_from_disk(
    dir: &RecordDir,
    stream: &VmStream,
    file: &str,
    scratch: &Path,
    cancel: Option<&dyn Fn() -> bool>,
    progress: bool,
) -> Result<Option<Decoded>, SemanticError> {
    let Some(last) = stream.last_barrier() else {
        return Ok(None);
    };
    // The last barrier at which the log lifted changes of the file.
    let lifted = stream.changes.iter().map(|c| c.seq).max();
    let _guard = Scratch(scratch.to_path_buf());
    // From the beginning, not a checkpoint: the replay must pass the
    // barrier of the last lift, which may lie before any checkpoint.
    let store = dir.open_store().map_err(ReplayError::from)?;
    let from = base::prepare(dir, &store, &stream.vm, &Base::Empty, last, scratch, false)?.from_seq;
    let disk_bytes = match stream.disk_bytes {
        Some(n) => n,
        None => std::fs::metadata(scratch)
            .map_err(|source| SemanticError::Io {
                path: scratch.to_path_buf(),
                source,
            })?
            .len(),
    };
    // The version at the last lift, read as the replay passes it, in case
    // the file is not consistent at the last barrier.
    let mut at_lift: Option<Result<AtBarrier, SemanticError>> = None;
    let mut observer = |step: &Step| {
        if let Step::Barrier { seq, .. } = step {
            if Some(*seq) == lifted && *seq < last {
                at_lift = Some(read_version(stream, disk_bytes, file, scratch, *seq));
            }
        }
        Control::Continue
    };
    engine::replay(
        dir,
        &stream.vm,
        scratch,
        engine::Options {
            from_seq: from,
            until_seq: last,
            observer: Some(&mut observer),
            cancel,
            progress,
            ..engine::Options::default()
        },
    )?;
    let decode_at = |found: AtBarrier, seq: u64| match found {
        AtBarrier::Present(v) => decode::diff(v.format, &[], &v.bytes, &v.schema)
            .map(|changes| State::from_decoded(v.format, changes))
            .map_err(|e| SemanticError::Decode {
                file: file.to_string(),
                seq,
                reason: e.to_string(),
            }),
        AtBarrier::Absent => Ok(State::new()),
        AtBarrier::Inconsistent => Err(SemanticError::NeverConsistent {
            file: file.to_string(),
            seq,
        }),
    };
    let at_last = read_version(stream, disk_bytes, file, scratch, last)?;
    let (barrier, state, fell_back_from) = match decode_at(at_last, last) {
        Ok(state) => (last, state, None),
        Err(e @ (SemanticError::NeverConsistent { .. } | SemanticError::Decode { .. })) => {
            match (lifted, at_lift) {
                (Some(seq), Some(found)) => {
                    let why = match &e {
                        SemanticError::Decode { reason, .. } => {
                            format!("could not be decoded ({reason})")
                        }
                        _ => "was not at a consistent point".to_string(),
                    };
                    (seq, decode_at(found?, seq)?, Some((last, why)))
                }
                _ => return Err(e),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(Some(Decoded {
        barrier,
        state,
        fell_back_from,
    }))
}
