//! `vmm verify-change`: one recorded step re-derived from the stored
//! blocks, every hash of its provenance checked (`crate::provenance`).
//!
//! For each file with changes lifted at barrier `seq` (or the one named):
//! 1. the step's recorded provenance names a decoder of this build with
//!    the same version hash (else the code that lifted it is not here);
//! 2. the log is walked to the step's base and to `seq` ([`Walk`]: block
//!    map and file table as the recorder had them, barrier checksums
//!    checked); at each, the file's blocks are read from the store, which
//!    checks each against its BLAKE3, and their numbers and hashes must
//!    hash to the recorded `reads` (the base's and the step's own);
//! 3. the decoder diffs the two versions again: the output hash of each
//!    re-derived change, and the step hash over all of them, must equal
//!    the recorded ones, and each recorded change, as stored, must hash to
//!    its recorded output hash (a record altered after lifting fails).
use changelog::LogBackend;
use store::ObjectBackend;
use thiserror::Error;

use super::{BadBlock, ReliftError, StoreReader, Walk};
use crate::decode::registry::{self, DecoderSpec};
use crate::decode::DecodeLimits;
use crate::lift::{Lifter, SemanticEvent};
use crate::provenance::{reads_hash, step_hash, BlockRead, Provenance, Reads};
use crate::semantic::SemanticChange;

/// Why a step could not be verified, or did not verify.
#[derive(Debug, Error)]
pub enum VerifyError {
    #[error(transparent)]
    Relift(#[from] ReliftError),
    #[error(transparent)]
    Log(#[from] changelog::LogError),
    #[error("no change of {what} was lifted at seq {seq} in the log of {vm}; `vmm changes` shows each change's seq")]
    NoChange { vm: String, seq: u64, what: String },
    #[error("{file} at seq {seq}: its changes carry no provenance (recorded before provenance was): nothing to check them against")]
    NoProvenance { file: String, seq: u64 },
    #[error("{file} at seq {seq}: lifted by {recorded}, which this build does not have ({have}): re-deriving with other code would check nothing")]
    OtherDecoder {
        file: String,
        seq: u64,
        recorded: String,
        have: String,
    },
    #[error("{file} at seq {seq}: its base is a restored snapshot's disk, which is not in this log: the step cannot be re-derived from the log")]
    BaseNotInLog { file: String, seq: u64 },
    #[error("{file} at seq {seq}: the changes of one step disagree on their provenance (the log was altered)")]
    MixedStep { file: String, seq: u64 },
    #[error("{file} at seq {at}: block {} (store object {}) cannot be read: {}; the change's input does not re-derive", .bad.block, store::hex::encode(&.bad.hash), .bad.reason)]
    BadBlock {
        file: String,
        at: u64,
        bad: BadBlock,
    },
    #[error("{file} at seq {at}: cannot read it from the log's disk there: {reason}")]
    Unreadable {
        file: String,
        at: u64,
        reason: String,
    },
    #[error("{file} at seq {at}: its {blocks} blocks in the log hash to {got}, the provenance recorded {want} ({want_blocks} blocks): the blocks the log names are not the ones the decoder read")]
    ReadsDiffer {
        file: String,
        at: u64,
        blocks: u64,
        got: String,
        want: String,
        want_blocks: u64,
    },
    #[error("{file} at seq {seq}: the decoder fails on the re-read blocks: {reason}")]
    Decode {
        file: String,
        seq: u64,
        reason: String,
    },
    #[error("{file} at seq {seq}: {what}")]
    OutputDiffers {
        file: String,
        seq: u64,
        what: String,
    },
}

/// One verified step: what was checked.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepCheck {
    pub vm: String,
    pub seq: u64,
    pub file: String,
    pub decoder: String,
    pub version: String,
    /// The blocks of the new version, as re-read (numbers and hashes).
    pub reads: Vec<BlockRead>,
    pub reads_hash: String,
    pub base_seq: Option<u64>,
    pub base_blocks: u64,
    pub changes: usize,
    pub step: String,
}

/// The recorded step of one file: its changes and their provenance.
struct Recorded {
    file: String,
    changes: Vec<(SemanticChange, Provenance)>,
}

/// A file's version at a position of the walk: its image as the decoder
/// reads it, and the blocks read.
struct Read {
    image: std::sync::Arc<Vec<u8>>,
    reads: Vec<BlockRead>,
}

/// Reads `file` at the walk's current position, checking its blocks.
fn read_at(
    walk: &Walk,
    reader: &mut StoreReader<'_>,
    decoder: &DecoderSpec,
    file: &str,
    at: u64,
    want: &Reads,
) -> Result<Read, VerifyError> {
    let unreadable = |reason: String| VerifyError::Unreadable {
        file: file.to_string(),
        at,
        reason,
    };
    let state = walk
        .state
        .as_ref()
        .ok_or_else(|| unreadable("no base mark before it".into()))?;
    let Some(id) = walk
        .lifter
        .table
        .files()
        .filter(|(_, f)| f.path == file && f.role == hint_proto::Role::Main)
        .map(|(id, _)| *id)
        .last()
    else {
        return Err(unreadable("no hint names the file there".into()));
    };
    let mut lifter = Lifter::restored(walk.lifter.table.clone());
    reader.failed = None;
    let mut read = |offset: u64, len: usize| reader.read(state, offset, len);
    let version = lifter.version_with(id, &mut read);
    if let Some(bad) = reader.failed.take() {
        return Err(VerifyError::BadBlock {
            file: file.to_string(),
            at,
            bad,
        });
    }
    let mut version = version.ok_or_else(|| unreadable("no hint names the file there".into()))?;
    version.fill_reads(Some(at), &|b| state.block_hash(b));
    let bytes = version.bytes.map_err(unreadable)?;
    let got = reads_hash(&bytes.reads);
    if got.hash != want.hash || got.blocks != want.blocks {
        return Err(VerifyError::ReadsDiffer {
            file: file.to_string(),
            at,
            blocks: got.blocks,
            got: got.hash,
            want: want.hash.clone(),
            want_blocks: want.blocks,
        });
    }
    let image = decoder
        .image(&bytes.bytes, bytes.wal.as_deref().map(|w| w.as_slice()))
        .map_err(unreadable)?;
    Ok(Read {
        image,
        reads: bytes.reads,
    })
}

/// The recorded steps at `seq` of `vm` (of `file` only, if given).
fn recorded_steps(
    logs: &dyn LogBackend,
    vm: &str,
    seq: u64,
    file: Option<&str>,
) -> Result<Vec<Recorded>, VerifyError> {
    let mut steps: Vec<Recorded> = Vec::new();
    for record in logs.records(vm, seq)? {
        let record = record?;
        let changelog::RecordKind::Semantic { json } = record.kind else {
            continue;
        };
        let Ok(SemanticEvent::Change(c)) = serde_json::from_str::<SemanticEvent>(&json) else {
            continue;
        };
        if c.seq != seq || file.is_some_and(|f| f != c.file) {
            continue;
        }
        let Some(p) = c.provenance.as_deref().cloned() else {
            return Err(VerifyError::NoProvenance { file: c.file, seq });
        };
        match steps.iter_mut().find(|s| s.file == c.file) {
            Some(s) => s.changes.push((c, p)),
            None => steps.push(Recorded {
                file: c.file.clone(),
                changes: vec![(c, p)],
            }),
        }
    }
    if steps.is_empty() {
        return Err(VerifyError::NoChange {
            vm: vm.to_string(),
            seq,
            what: file.map_or("any file".to_string(), |f| format!("'{f}'")),
        });
    }
    Ok(steps)
}

/// Re-derives the step(s) lifted at barrier `seq` of `vm` (see the module
/// doc); the first failure is the error.
pub fn verify_change(
    logs: &dyn LogBackend,
    store: &dyn ObjectBackend,
    vm: &str,
    seq: u64,
    file: Option<&str>,
    limits: DecodeLimits,
) -> Result<Vec<StepCheck>, VerifyError> {
    let steps = recorded_steps(logs, vm, seq, file)?;
    steps
        .iter()
        .map(|s| verify_step(logs, store, vm, seq, s, limits))
        .collect()
}

fn verify_step(
    logs: &dyn LogBackend,
    store: &dyn ObjectBackend,
    vm: &str,
    seq: u64,
    step: &Recorded,
    limits: DecodeLimits,
) -> Result<StepCheck, VerifyError> {
    let file = step.file.clone();
    let p = &step.changes[0].1;
    let same = |q: &Provenance| {
        q.decoder == p.decoder
            && q.version == p.version
            && q.reads == p.reads
            && q.base == p.base
            && q.step == p.step
    };
    if !step.changes.iter().all(|(_, q)| same(q)) {
        return Err(VerifyError::MixedStep { file, seq });
    }
    let decoder = match registry::find(&p.decoder) {
        Some(d) if d.version() == p.version => d,
        other => {
            return Err(VerifyError::OtherDecoder {
                file,
                seq,
                recorded: format!("{}@{}", p.decoder, p.version),
                have: other.map_or("no decoder of that name".into(), |d| d.id()),
            })
        }
    };
    let base_seq = match &p.base {
        Some(b) => Some(b.seq.ok_or(VerifyError::BaseNotInLog {
            file: file.clone(),
            seq,
        })?),
        None => None,
    };
    // Walk to the base, read it, walk on to the step, read it.
    let mut walk = Walk::new(vm);
    let mut reader = StoreReader::new(store);
    let mut old: Option<Read> = None;
    let mut new: Option<Read> = None;
    let mut records = logs.records(vm, 1)?.peekable();
    while new.is_none() {
        let next_seq = match records.peek() {
            Some(Ok(r)) => Some(r.seq),
            Some(Err(_)) => {
                let e = records
                    .next()
                    .expect("peeked")
                    .expect_err("peeked an error");
                return Err(e.into());
            }
            None => None,
        };
        let passed = |at: u64| next_seq.is_none_or(|n| n > at);
        if let (Some(at), None, Some(b)) = (base_seq, &old, &p.base) {
            if passed(at) {
                old = Some(read_at(&walk, &mut reader, decoder, &file, at, &b.reads)?);
            }
        }
        if passed(seq) && (base_seq.is_none() || old.is_some()) {
            new = Some(read_at(&walk, &mut reader, decoder, &file, seq, &p.reads)?);
            break;
        }
        let Some(record) = records.next() else {
            break;
        };
        walk.apply(record?)?;
    }
    let new = new.ok_or_else(|| VerifyError::Unreadable {
        file: file.clone(),
        at: seq,
        reason: "the log ends before it".into(),
    })?;
    let old_image = old.as_ref().map_or(&[][..], |o| o.image.as_slice());
    let hints = walk
        .lifter
        .table
        .files()
        .find(|(_, f)| f.path == file && f.role == hint_proto::Role::Main)
        .map(|(_, f)| f.schema.clone())
        .unwrap_or_default();
    let changes = decoder
        .diff(old_image, &new.image, &hints, &limits)
        .map_err(|e| VerifyError::Decode {
            file: file.clone(),
            seq,
            reason: e.to_string(),
        })?;
    let outputs: Vec<String> = changes.iter().map(crate::provenance::change_hash).collect();
    let differs = |what: String| VerifyError::OutputDiffers {
        file: file.clone(),
        seq,
        what,
    };
    for (c, q) in &step.changes {
        let stored = crate::provenance::change_hash(&c.change());
        if stored != q.output {
            return Err(differs(format!(
                "the change {}[{}] as stored hashes to {stored}, its provenance recorded {}: the record was altered after lifting",
                c.collection, c.key, q.output
            )));
        }
        if !outputs.contains(&q.output) {
            return Err(differs(format!(
                "the change {}[{}] ({}) is not among the {} the decoder re-derives",
                c.collection,
                c.key,
                c.op,
                changes.len()
            )));
        }
    }
    let step_again = step_hash(outputs.iter().map(String::as_str));
    if step_again != p.step || changes.len() != step.changes.len() {
        return Err(differs(format!(
            "the decoder re-derives {} changes (step hash {step_again}), the log holds {} (step hash {})",
            changes.len(),
            step.changes.len(),
            p.step
        )));
    }
    Ok(StepCheck {
        vm: vm.to_string(),
        seq,
        file,
        decoder: decoder.name.to_string(),
        version: decoder.version().to_string(),
        reads_hash: p.reads.hash.clone(),
        reads: new.reads,
        base_seq,
        base_blocks: old.map_or(0, |o| o.reads.len() as u64),
        changes: changes.len(),
        step: p.step.clone(),
    })
}
