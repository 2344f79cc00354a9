//! Lifting a recorded log again, from the stored blocks: with another
//! decoder (what-if), with two to compare them, and for one recorded step
//! to check its provenance (`relift/verify.rs`).
//!
//! A [`Walk`] reads a VM's log in order and keeps what the recorder had
//! at each record: the disk's block map (every `BlockWrite`'s block
//! hashes; each barrier's checksum is checked against it), the guest's
//! file table (its `Hint`s, a refused one changing nothing, as live) and
//! the blocks written and files hinted since the last barrier. At each
//! barrier it reads the versions of the files the recorder would have
//! lifted there, their bytes from the content store through the block map
//! (the store checks each block against its BLAKE3), the same way the
//! tap reads them from the image.
//!
//! A relift treats the log as one history: a later run's first decode of
//! a file is diffed against the last state relifted before it, which is
//! what the recorder does when the disk did not change between runs. Logs
//! of restored VMs, whose files came from a snapshot and not from hints
//! in the log, relift nothing until the guest hints again.
use std::collections::{BTreeSet, HashMap};

use changelog::disk_state::{DiskState, ZERO_BLOCK_HASH};
use changelog::log::{LogError, RecordKind};
use changelog::{Hlc, LogBackend};
use store::{ObjectBackend, ObjectId, StoreError};
use thiserror::Error;

use crate::decode::registry::DecoderSpec;
use crate::decode::DecodeLimits;
use crate::lift::{Differ, Lifted, Lifter, SemanticEvent, Version};
use crate::semantic::{DecodeErrorEvent, SemanticChange};
use crate::tap::parse_base_mark;

pub mod verify;

pub use verify::{verify_change, StepCheck, VerifyError};

/// The disk block, in the u64 of disk offsets.
const BLOCK: u64 = store::BLOCK_SIZE as u64;

#[derive(Debug, Error)]
pub enum ReliftError {
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("the log of {vm} has no base mark recording its disk size (`vmm:base bytes=N`): it cannot be relifted")]
    NoBase { vm: String },
    #[error("the log of {vm} at seq {seq}: {reason}")]
    Disk {
        vm: String,
        seq: u64,
        reason: String,
    },
    #[error("the log of {vm}: barrier seq {seq}'s disk checksum does not match the block writes before it: the log is damaged (`vmm log verify` says more)")]
    Checksum { vm: String, seq: u64 },
}

/// A block read from the store that failed: which, and why.
#[derive(Debug, Clone)]
pub struct BadBlock {
    pub block: u64,
    pub hash: [u8; 32],
    pub reason: String,
}

/// Reads disk bytes through a block map, the blocks' contents from the
/// store, each object at most once (cached), remembering the first block
/// that could not be read.
pub struct StoreReader<'a> {
    store: &'a dyn ObjectBackend,
    cache: HashMap<[u8; 32], Vec<u8>>,
    pub failed: Option<BadBlock>,
}

impl<'a> StoreReader<'a> {
    pub fn new(store: &'a dyn ObjectBackend) -> Self {
        StoreReader {
            store,
            cache: HashMap::new(),
            failed: None,
        }
    }

    /// Block `hash`'s content (the store checks it against the hash).
    fn block(&mut self, b: u64, hash: [u8; 32]) -> std::io::Result<&[u8]> {
        if !self.cache.contains_key(&hash) {
            let data = self.store.get(&ObjectId(hash)).map_err(|e: StoreError| {
                self.failed.get_or_insert(BadBlock {
                    block: b,
                    hash,
                    reason: e.to_string(),
                });
                std::io::Error::other(format!("block {b}: {e}"))
            })?;
            if data.len() != BLOCK as usize {
                let reason = format!("the store holds {} bytes for it", data.len());
                self.failed.get_or_insert(BadBlock {
                    block: b,
                    hash,
                    reason: reason.clone(),
                });
                return Err(std::io::Error::other(format!("block {b}: {reason}")));
            }
            self.cache.insert(hash, data);
        }
        Ok(&self.cache[&hash])
    }

    /// `len` bytes at byte `offset` of the disk `state` describes.
    pub fn read(&mut self, state: &DiskState, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(len);
        let end = offset + len as u64;
        let mut pos = offset;
        while pos < end {
            let b = pos / BLOCK;
            let within = (pos % BLOCK) as usize;
            let n = (BLOCK as usize - within).min((end - pos) as usize);
            match state.block_hash(b) {
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        format!("block {b} is past the end of the disk"),
                    ))
                }
                Some(h) if h == ZERO_BLOCK_HASH => out.resize(out.len() + n, 0),
                Some(h) => out.extend_from_slice(&self.block(b, h)?[within..within + n]),
            }
            pos += n as u64;
        }
        Ok(out)
    }
}

/// What the recorder had after each record of a VM's log.
pub struct Walk {
    pub vm: String,
    pub state: Option<DiskState>,
    pub lifter: Lifter,
    written: BTreeSet<u64>,
    hinted: BTreeSet<u32>,
}

/// A barrier the walk passed.
pub struct Barrier {
    pub seq: u64,
    pub hlc: Hlc,
}

impl Walk {
    pub fn new(vm: &str) -> Self {
        Walk {
            vm: vm.to_string(),
            state: None,
            lifter: Lifter::new(0),
            written: BTreeSet::new(),
            hinted: BTreeSet::new(),
        }
    }

    /// Applies one record; a barrier is returned (its checksum checked).
    pub fn apply(&mut self, record: changelog::Record) -> Result<Option<Barrier>, ReliftError> {
        let seq = record.seq;
        let hlc = record.hlc();
        match record.kind {
            RecordKind::Mark { name } => {
                if let (Some(bytes), None) = (parse_base_mark(&name), &self.state) {
                    self.state = Some(DiskState::zeroed(bytes.div_ceil(BLOCK)));
                    self.lifter = Lifter::new(bytes);
                }
            }
            RecordKind::BlockWrite { sector, blocks, .. } => {
                let state = self.state.as_mut().ok_or_else(|| ReliftError::NoBase {
                    vm: self.vm.clone(),
                })?;
                state
                    .apply_block_write(sector, &blocks)
                    .map_err(|e| ReliftError::Disk {
                        vm: self.vm.clone(),
                        seq,
                        reason: e.to_string(),
                    })?;
                // As the tap: writes count only once a file is hinted.
                if self.lifter.table.files().next().is_some() {
                    let first = sector * 512 / BLOCK;
                    self.written.extend(first..first + blocks.len() as u64);
                }
            }
            RecordKind::Hint { message } => {
                if let Ok((hint, used)) = hint_proto::decode(&message) {
                    if used == message.len() {
                        let id = hint.file_id();
                        if self.lifter.table.apply(&hint).is_ok() {
                            self.hinted.insert(id);
                        }
                    }
                }
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                let state = self.state.as_ref().ok_or_else(|| ReliftError::NoBase {
                    vm: self.vm.clone(),
                })?;
                if state.checksum() != disk_checksum {
                    return Err(ReliftError::Checksum {
                        vm: self.vm.clone(),
                        seq,
                    });
                }
                return Ok(Some(Barrier { seq, hlc }));
            }
            _ => {}
        }
        Ok(None)
    }

    /// The versions the recorder lifted at barrier `seq`, read through
    /// `reader`, their block hashes filled in.
    pub fn versions(&mut self, seq: u64, reader: &mut StoreReader<'_>) -> Vec<Version> {
        let Some(state) = self.state.as_ref() else {
            return Vec::new();
        };
        let mut read = |offset: u64, len: usize| reader.read(state, offset, len);
        let mut versions = self.lifter.versions(&self.written, &self.hinted, &mut read);
        self.written.clear();
        self.hinted.clear();
        for v in &mut versions {
            v.fill_reads(Some(seq), &|b| state.block_hash(b));
        }
        versions
    }
}

/// The events a differ found at barrier `b`, as the recorder logs them.
fn events(vm: &str, b: &Barrier, lifted: Vec<Lifted>) -> Vec<SemanticEvent> {
    let mut out = Vec::new();
    for item in lifted {
        match item {
            Lifted::Changes {
                file,
                format,
                changes,
                provenance,
            } => out.extend(changes.into_iter().zip(provenance).map(|(c, p)| {
                let mut change =
                    SemanticChange::from_change(vm, b.seq, b.hlc.physical_ns, &file, format, c);
                change.hlc = Some(b.hlc);
                change.provenance = Some(Box::new(p));
                SemanticEvent::Change(change)
            })),
            Lifted::Error {
                file,
                format,
                reason,
            } => out.push(SemanticEvent::DecodeError(DecodeErrorEvent {
                vm: vm.to_string(),
                seq: b.seq,
                ts_ns: b.hlc.physical_ns,
                hlc: Some(b.hlc),
                file,
                format,
                reason,
            })),
        }
    }
    out
}

/// The semantic events of `vm`'s log lifted again with each of
/// `decoders` (one list per decoder), from the stored blocks.
pub fn relift(
    logs: &dyn LogBackend,
    store: &dyn ObjectBackend,
    vm: &str,
    decoders: &[&'static DecoderSpec],
    limits: DecodeLimits,
) -> Result<Vec<Vec<SemanticEvent>>, ReliftError> {
    let mut walk = Walk::new(vm);
    let mut reader = StoreReader::new(store);
    let mut differs: Vec<Differ> = decoders
        .iter()
        .map(|d| Differ::with_decoder(d, limits))
        .collect();
    let mut out = vec![Vec::new(); decoders.len()];
    for record in logs.records(vm, 1)? {
        let Some(barrier) = walk.apply(record?)? else {
            continue;
        };
        let versions = walk.versions(barrier.seq, &mut reader);
        if versions.is_empty() {
            continue;
        }
        for (differ, events_out) in differs.iter_mut().zip(out.iter_mut()) {
            events_out.extend(events(vm, &barrier, differ.diff(versions.clone())));
        }
    }
    if walk.state.is_none() {
        return Err(ReliftError::NoBase { vm: vm.to_string() });
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
