//! Per-step provenance of semantic changes: which code derived a change
//! from which blocks, and a hash of what it produced, so that
//! `vmm verify-change` can derive it again from the stored blocks and
//! check every hash.
//!
//! A step is one decode: one main file, at one barrier, diffed against its
//! previous good version (its base). Every change of the step carries a
//! [`Provenance`]:
//!
//! - `decoder`, `version`: the decoder's name and version hash
//!   (`decode::registry`);
//! - `reads`: the blocks the step read for the new version: how many, and
//!   the [`reads_hash`] over their disk block numbers and content hashes
//!   (the store keys), in read order. The blocks are those covering the
//!   bytes of the file the decoder got: the main file, and for SQLite its
//!   WAL, for LevelDB every file of the bundle (a rollback journal's
//!   header, read only to decide whether to lift at all, is not an input);
//! - `base`: the previous version the step diffed against: the barrier
//!   whose disk it was read from (absent when that disk is not in this log:
//!   a restored snapshot's) and its `reads`. No `base`: diffed against
//!   nothing (the file's first decode);
//! - `output`: [`change_hash`] of this change, `step`: [`step_hash`] over
//!   the output hashes of all the step's changes in order (so a change
//!   dropped from or added to the log is seen, not only a changed one).
//!
//! Why a hash of the blocks and not the list: a step reads the whole file,
//! often hundreds of blocks, and a barrier's step yields up to thousands
//! of changes; the list is derivable from the log (the hints place the
//! file, the block writes say what each block held), which is what
//! `verify-change` does, printing it. JSON form: the `provenance` member
//! of a change (absent in logs recorded before it; readers need nothing).
use serde::{Deserialize, Serialize};

use crate::decode::registry::DecoderSpec;
use crate::semantic::Change;

/// Hash context of [`reads_hash`].
const READS_CONTEXT: &str = "vmm provenance blocks read v1";
/// Hash context of [`change_hash`].
const CHANGE_CONTEXT: &str = "vmm provenance change v1";
/// Hash context of [`step_hash`].
const STEP_CONTEXT: &str = "vmm provenance step v1";

/// A disk block a step read: its number and its content hash (store key).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRead {
    pub block: u64,
    #[serde(with = "store::hex::hash")]
    pub hash: [u8; 32],
}

/// The blocks one version was read from, summarized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reads {
    pub blocks: u64,
    pub hash: String,
}

/// BLAKE3 (derived key) over each block's number (u64 LE) and hash.
pub fn reads_hash(reads: &[BlockRead]) -> Reads {
    let mut h = blake3::Hasher::new_derive_key(READS_CONTEXT);
    for r in reads {
        h.update(&r.block.to_le_bytes());
        h.update(&r.hash);
    }
    Reads {
        blocks: reads.len() as u64,
        hash: h.finalize().to_hex().to_string(),
    }
}

/// The version a step diffed against.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Base {
    /// The barrier whose disk it was read from; absent when not in this
    /// log (a restored snapshot's disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    pub reads: Reads,
}

/// How one change was derived (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Provenance {
    pub decoder: String,
    pub version: String,
    pub reads: Reads,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<Base>,
    pub output: String,
    pub step: String,
}

/// BLAKE3 (derived key) of a change's JSON (collection, key, op, before,
/// after as serialized in the log).
pub fn change_hash(c: &Change) -> String {
    // Streamed into the hasher through a small buffer (serde_json writes
    // a few bytes at a time): no copy of the whole JSON is kept.
    let mut h = blake3::Hasher::new_derive_key(CHANGE_CONTEXT);
    {
        let mut w = std::io::BufWriter::with_capacity(1024, &mut h);
        serde_json::to_writer(&mut w, c).expect("changes serialize");
        std::io::Write::flush(&mut w).expect("hashing does not fail");
    }
    h.finalize().to_hex().to_string()
}

/// BLAKE3 (derived key) over a step's change hashes, in order.
pub fn step_hash<'a>(outputs: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = blake3::Hasher::new_derive_key(STEP_CONTEXT);
    for o in outputs {
        h.update(o.as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// A step's inputs, before its outputs are known.
#[derive(Clone, Debug)]
pub struct StepInputs {
    pub decoder: &'static DecoderSpec,
    pub reads: Reads,
    pub base: Option<Base>,
}

impl StepInputs {
    /// Each change's provenance, in order.
    pub fn provenance(&self, changes: &[Change]) -> Vec<Provenance> {
        let outputs: Vec<String> = changes.iter().map(change_hash).collect();
        let step = step_hash(outputs.iter().map(String::as_str));
        outputs
            .into_iter()
            .map(|output| Provenance {
                decoder: self.decoder.name.to_string(),
                version: self.decoder.version().to_string(),
                reads: self.reads.clone(),
                base: self.base.clone(),
                output,
                step: step.clone(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::semantic::Op;

    #[test]
    fn hashes_cover_what_they_claim() {
        let a = BlockRead {
            block: 1,
            hash: [7; 32],
        };
        let b = BlockRead { block: 2, ..a };
        let r = reads_hash(&[a, b]);
        assert_eq!(r.blocks, 2);
        assert_ne!(r, reads_hash(&[b, a]), "order counts");
        assert_ne!(
            r.hash,
            reads_hash(&[a, BlockRead { hash: [8; 32], ..b }]).hash
        );
        let c = Change {
            collection: "t".into(),
            key: "1".into(),
            op: Op::Insert,
            before: None,
            after: Some(serde_json::json!({"x": 1.1})),
        };
        let back: Change = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(
            change_hash(&c),
            change_hash(&back),
            "survives the log's JSON"
        );
        let mut d = c.clone();
        d.after = Some(serde_json::json!({"x": 1.2}));
        assert_ne!(change_hash(&c), change_hash(&d));
        let one = step_hash([change_hash(&c).as_str()]);
        assert_ne!(
            one,
            step_hash([change_hash(&c).as_str(), change_hash(&d).as_str()])
        );
    }
}
