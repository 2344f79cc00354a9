//! A checkpoint of a log's disk state, so that opening a long log does not
//! replay every record's hashes again.
//!
//! `DIR/logs/<vm>/state.ckpt`, written when a tap closes (temp file, then
//! rename; it is derived data and never trusted blindly):
//! ```text
//! version 2 (written): magic "VMMCKPT2" | seq u64 | num_blocks u64 |
//!     count u64 | checksum [32] |
//!     count x (block u64 | hash [32]) | crc32 of everything before it
//! version 1 (still read): magic "VMMCKPT1" | seq u64 | num_blocks u64 |
//!     count u64 | count x (block u64 | hash [32]) | crc32
//! ```
//! `seq` is a barrier of the log. A checkpoint is used only if it decodes,
//! its CRC matches, and the log's record `seq` is a barrier whose disk
//! checksum equals the checkpoint state's; otherwise the log is scanned.
//!
//! Version 2 carries the state's checksum, covered by the same CRC as the
//! table: loading it skips recomputing one BLAKE3 per block (about 25 ms
//! for a fully written 1 GiB disk), which is what lets a recorder open in
//! a few ms (`introspection/src/tap/fast_open.rs`). Version 1 files are
//! read by recomputing the checksum, as before.
use std::path::Path;

use crate::disk_state::DiskState;
use crate::log::{LogReader, RecordKind};

const MAGIC: &[u8; 8] = b"VMMCKPT2";
const MAGIC_V1: &[u8; 8] = b"VMMCKPT1";
const FILE: &str = "state.ckpt";
/// Bytes before the table: magic, seq, num_blocks, count, checksum (v2).
const HEAD: usize = 64;
const HEAD_V1: usize = 32;

/// Writes the state at barrier `seq` (best effort: a failure only costs a
/// scan at the next open).
pub fn save(log_dir: &Path, seq: u64, state: &DiskState) {
    let mut out = Vec::with_capacity(HEAD + state.nonzero_blocks() * 40 + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&state.num_blocks().to_le_bytes());
    out.extend_from_slice(&(state.nonzero_blocks() as u64).to_le_bytes());
    out.extend_from_slice(&state.checksum());
    for (block, hash) in state.iter_nonzero() {
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(hash);
    }
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    let tmp = log_dir.join(format!("{FILE}.tmp"));
    if std::fs::write(&tmp, &out).is_err() || std::fs::rename(&tmp, log_dir.join(FILE)).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

/// The checkpointed state and its barrier seq, if the checkpoint is valid
/// for this log and a disk of `num_blocks` blocks.
pub fn load(log_dir: &Path, reader: &LogReader, num_blocks: u64) -> Option<(u64, DiskState)> {
    let bytes = std::fs::read(log_dir.join(FILE)).ok()?;
    let (seq, state) = decode(&bytes, num_blocks)?;
    let record = reader.iter_from(seq).ok()?.next()?.ok()?;
    match record.kind {
        RecordKind::Barrier { disk_checksum, .. }
            if record.seq == seq && disk_checksum == state.checksum() =>
        {
            Some((seq, state))
        }
        _ => None,
    }
}

/// Decodes a checkpoint file of either version (CRC checked).
fn decode(bytes: &[u8], num_blocks: u64) -> Option<(u64, DiskState)> {
    let head = match bytes.get(..8)? {
        m if m == MAGIC => HEAD,
        m if m == MAGIC_V1 => HEAD_V1,
        _ => return None,
    };
    if bytes.len() < head + 4 {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let u64_at = |at: usize| u64::from_le_bytes(body[at..at + 8].try_into().expect("8 bytes"));
    let (seq, count) = (u64_at(8), u64_at(24));
    if body.len() as u64 != (head as u64).checked_add(count.checked_mul(40)?)? {
        return None;
    }
    let num_blocks = num_blocks.max(u64_at(16));
    let entries = body[head..].chunks_exact(40).map(|entry| {
        let block = u64::from_le_bytes(entry[..8].try_into().expect("8 bytes"));
        (block, <[u8; 32]>::try_from(&entry[8..]).expect("32 bytes"))
    });
    if head == HEAD {
        let checksum = body[32..64].try_into().expect("32 bytes");
        return Some((seq, DiskState::from_saved(num_blocks, entries, checksum)?));
    }
    let mut state = DiskState::zeroed(num_blocks);
    for (block, hash) in entries {
        state.apply_write(block, hash).ok()?;
    }
    Some((seq, state))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::{BarrierKind, LogWriter};

    #[test]
    fn a_checkpoint_is_used_only_when_it_matches_its_barrier() {
        let dir = tempfile::tempdir().unwrap();
        let log_dir = dir.path().join("vm");
        let mut state = DiskState::zeroed(64);
        let (mut log, _) = LogWriter::open(&log_dir, "vm").unwrap();
        let hashes = vec![[7u8; 32], [9u8; 32]];
        log.append(RecordKind::BlockWrite {
            sector: 8,
            len: 8192,
            blocks: hashes.clone(),
        })
        .unwrap();
        state.apply_block_write(8, &hashes).unwrap();
        let seq = log
            .append(RecordKind::Barrier {
                kind: BarrierKind::Flush,
                disk_checksum: state.checksum(),
            })
            .unwrap();
        log.append(RecordKind::Mark {
            name: "after".into(),
        })
        .unwrap();
        log.close().unwrap();

        save(&log_dir, seq, &state);
        let reader = LogReader::open(&log_dir).unwrap();
        let (got_seq, got) = load(&log_dir, &reader, 64).expect("a valid checkpoint");
        assert_eq!(got_seq, seq);
        assert_eq!(got.checksum(), state.checksum());

        // Pointing at a record that is not that barrier: refused.
        save(&log_dir, seq + 1, &state);
        assert!(load(&log_dir, &reader, 64).is_none());
        // A state that does not match the barrier: refused.
        let mut other = state.clone();
        other.apply_write(0, [1u8; 32]).unwrap();
        save(&log_dir, seq, &other);
        assert!(load(&log_dir, &reader, 64).is_none());
        // Damaged bytes: refused.
        save(&log_dir, seq, &state);
        let path = log_dir.join(FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&path, bytes).unwrap();
        assert!(load(&log_dir, &reader, 64).is_none());
        // A version 1 file (written before checksums were saved) still loads.
        let mut v1 = Vec::new();
        v1.extend_from_slice(MAGIC_V1);
        v1.extend_from_slice(&seq.to_le_bytes());
        v1.extend_from_slice(&64u64.to_le_bytes());
        v1.extend_from_slice(&(state.nonzero_blocks() as u64).to_le_bytes());
        for (block, hash) in state.iter_nonzero() {
            v1.extend_from_slice(&block.to_le_bytes());
            v1.extend_from_slice(hash);
        }
        v1.extend_from_slice(&crc32fast::hash(&v1).to_le_bytes());
        std::fs::write(&path, &v1).unwrap();
        let (_, got) = load(&log_dir, &reader, 64).expect("a version 1 checkpoint");
        assert_eq!(got.checksum(), state.checksum());
    }
}
