//! Temporal checkpoints: a VM disk's block map at a barrier, kept in the
//! content store, so a replay to any point starts from the nearest one at
//! or before it instead of from the beginning of the log.
//!
//! A checkpoint costs only its map: the blocks it names are in the store
//! already (every write put them there). Not to be confused with
//! `checkpoint` (singular, `state.ckpt`), the block tap's cache of the
//! state at the log's last barrier for its next open.
//!
//! Formats (documented here, next to the code):
//! - The map is split by disk range: chunk `k` lists the non-zero blocks
//!   of blocks `[k * RANGE_BLOCKS, (k + 1) * RANGE_BLOCKS)`, as
//!   `magic "VMMCMAP1" | count u32 | count x (block u64 | hash [32])`,
//!   little-endian, blocks ascending. Each chunk is an object in the store
//!   (at most 640 KiB: below a cluster's 1 MiB message limit), so ranges
//!   that did not change between two checkpoints are stored once.
//! - The checkpoints of a local log are lines of `logs/<vm>/checkpoints`,
//!   each `<JSON of Checkpoint>\t<crc32 of the JSON, 8 hex digits>\n`,
//!   appended and fsynced. A line that does not check out is skipped (a
//!   torn last line after a crash, say): checkpoints are derived data, the
//!   log stays the truth, and a checkpoint is used only after its map
//!   loads and hashes to the checksum of the barrier it claims.
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use serde::{Deserialize, Serialize};
use store::{ObjectBackend, ObjectId, StoreError, BLOCK_SIZE};

use crate::disk_state::DiskState;

/// Blocks per map chunk (64 MiB of disk).
pub const RANGE_BLOCKS: u64 = 16384;
const MAP_MAGIC: &[u8; 8] = b"VMMCMAP1";
const ENTRY: usize = 40;
/// The local index's file name in a VM's log directory.
pub const FILE: &str = "checkpoints";

/// One checkpoint of a VM's disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The barrier it was taken at.
    pub seq: u64,
    pub ts_ns: u64,
    /// The disk's state checksum at that barrier (the barrier's own).
    #[serde(with = "store::hex::hash")]
    pub disk_checksum: [u8; 32],
    pub num_blocks: u64,
    /// (range index, map chunk object) of every range with a non-zero
    /// block, ascending.
    pub chunks: Vec<(u64, ObjectId)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("checkpoint at seq {seq}: map chunk {chunk} is malformed ({why})")]
    BadChunk {
        seq: u64,
        chunk: String,
        why: String,
    },
    #[error("checkpoint at seq {seq}: its map hashes to {actual}, not the barrier's checksum {expected}")]
    Mismatch {
        seq: u64,
        expected: String,
        actual: String,
    },
    #[error("cannot write checkpoint index {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The map chunks of `state`: (range index, bytes).
fn encode_map(state: &DiskState) -> Vec<(u64, Vec<u8>)> {
    let mut entries: Vec<(u64, [u8; 32])> = state.iter_nonzero().map(|(b, h)| (b, *h)).collect();
    entries.sort_unstable_by_key(|e| e.0);
    let mut chunks = Vec::new();
    let mut i = 0;
    while i < entries.len() {
        let range = entries[i].0 / RANGE_BLOCKS;
        let end = entries[i..]
            .iter()
            .position(|e| e.0 / RANGE_BLOCKS != range)
            .map_or(entries.len(), |n| i + n);
        let mut bytes = Vec::with_capacity(12 + (end - i) * ENTRY);
        bytes.extend_from_slice(MAP_MAGIC);
        bytes.extend_from_slice(&((end - i) as u32).to_le_bytes());
        for (block, hash) in &entries[i..end] {
            bytes.extend_from_slice(&block.to_le_bytes());
            bytes.extend_from_slice(hash);
        }
        chunks.push((range, bytes));
        i = end;
    }
    chunks
}

/// Stores `state`'s map (the barrier `seq` at `ts_ns`) in `objects` and
/// returns the checkpoint naming it. The caller makes `objects` durable
/// before it records the checkpoint anywhere.
pub fn save(
    state: &DiskState,
    seq: u64,
    ts_ns: u64,
    objects: &dyn ObjectBackend,
) -> Result<Checkpoint, CheckpointError> {
    let encoded = encode_map(state);
    let ids: Vec<ObjectId> = encoded.iter().map(|(_, b)| ObjectId::of(b)).collect();
    let items: Vec<&[u8]> = encoded.iter().map(|(_, b)| b.as_slice()).collect();
    objects.put_hashed(&items, &ids)?;
    Ok(Checkpoint {
        seq,
        ts_ns,
        disk_checksum: state.checksum(),
        num_blocks: state.num_blocks(),
        chunks: encoded.iter().map(|(r, _)| *r).zip(ids).collect(),
    })
}

/// The disk state `cp` names, read from `objects` and checked against the
/// barrier's checksum.
pub fn load(cp: &Checkpoint, objects: &dyn ObjectBackend) -> Result<DiskState, CheckpointError> {
    let mut state = DiskState::zeroed(cp.num_blocks);
    for (range, id) in &cp.chunks {
        let bytes = objects.get(id)?;
        let bad = |why: String| CheckpointError::BadChunk {
            seq: cp.seq,
            chunk: id.to_hex(),
            why,
        };
        if bytes.len() < 12 || &bytes[..8] != MAP_MAGIC {
            return Err(bad("no map header".into()));
        }
        let count = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        if bytes.len() != 12 + count * ENTRY {
            return Err(bad(format!("{} bytes for {count} entries", bytes.len())));
        }
        for entry in bytes[12..].chunks_exact(ENTRY) {
            let block = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
            if block / RANGE_BLOCKS != *range || block >= cp.num_blocks {
                return Err(bad(format!("block {block} outside range {range}")));
            }
            let hash: [u8; 32] = entry[8..].try_into().expect("32 bytes");
            state
                .apply_block_write(block * (BLOCK_SIZE as u64 / 512), &[hash])
                .map_err(|e| bad(e.to_string()))?;
        }
    }
    let actual = state.checksum();
    if actual != cp.disk_checksum {
        return Err(CheckpointError::Mismatch {
            seq: cp.seq,
            expected: store::hex::encode(&cp.disk_checksum),
            actual: store::hex::encode(&actual),
        });
    }
    Ok(state)
}

/// Appends `cp` to the index in `log_dir` (durably).
pub fn append_local(log_dir: &Path, cp: &Checkpoint) -> Result<(), CheckpointError> {
    let path = log_dir.join(FILE);
    let io = |source| CheckpointError::Io {
        path: path.display().to_string(),
        source,
    };
    let json = serde_json::to_string(cp).expect("checkpoints serialize");
    let line = format!("{json}\t{:08x}\n", crc32fast::hash(json.as_bytes()));
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(io)?;
    f.write_all(line.as_bytes()).map_err(io)?;
    f.sync_all().map_err(io)
}

/// Replaces the index in `log_dir` by `list` (temp file, fsync, rename,
/// fsync of the directory): a crash leaves the old index or the new one.
pub fn rewrite_local(log_dir: &Path, list: &[Checkpoint]) -> Result<(), CheckpointError> {
    let path = log_dir.join(FILE);
    let tmp = log_dir.join(format!("{FILE}.tmp"));
    let io = |p: &Path| {
        let path = p.display().to_string();
        move |source| CheckpointError::Io { path, source }
    };
    let mut text = String::new();
    for cp in list {
        let json = serde_json::to_string(cp).expect("checkpoints serialize");
        text.push_str(&format!(
            "{json}\t{:08x}\n",
            crc32fast::hash(json.as_bytes())
        ));
    }
    let mut f = File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    File::open(log_dir)
        .and_then(|d| d.sync_all())
        .map_err(io(log_dir))
}

/// The checkpoints of a local index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalCheckpoints {
    /// By seq, one per seq.
    pub list: Vec<Checkpoint>,
    /// Lines that did not check out (a torn last line after a crash, say),
    /// 1-based: skipped.
    pub skipped_lines: Vec<usize>,
}

/// The checkpoints in `log_dir`'s index (none if there is no index).
pub fn read_local(log_dir: &Path) -> LocalCheckpoints {
    let mut out = LocalCheckpoints::default();
    let Ok(text) = std::fs::read_to_string(log_dir.join(FILE)) else {
        return out;
    };
    for (n, line) in text.lines().enumerate() {
        let parsed = line.rsplit_once('\t').and_then(|(json, crc)| {
            let ok = u32::from_str_radix(crc, 16).ok() == Some(crc32fast::hash(json.as_bytes()));
            ok.then(|| serde_json::from_str::<Checkpoint>(json).ok())
                .flatten()
        });
        match parsed {
            Some(cp) => out.list.push(cp),
            None => out.skipped_lines.push(n + 1),
        }
    }
    out.list.sort_by_key(|c| c.seq);
    out.list.dedup_by_key(|c| c.seq);
    out
}

#[cfg(test)]
mod tests;
