//! Tests of the content store.

mod basic;
mod crash;
mod gc;
mod multiproc;
mod repair;
mod snap;

use super::ObjectId;

/// Deterministic test object `n` of `len` bytes: compressible when `n` is
/// even (text-like), incompressible (BLAKE3 XOF output) when odd.
pub(super) fn object(seed: u64, n: u64, len: usize) -> Vec<u8> {
    if n % 2 == 0 {
        let line = format!("seed {seed} object {n}: the quick brown fox jumps over it\n");
        line.bytes().cycle().take(len).collect()
    } else {
        let mut h = blake3::Hasher::new();
        h.update(&seed.to_le_bytes());
        h.update(&n.to_le_bytes());
        let mut out = vec![0u8; len];
        h.finalize_xof().fill(&mut out);
        out
    }
}

/// Number of OBJECT records in the index file, by id.
pub(super) fn object_records(dir: &std::path::Path) -> std::collections::HashMap<ObjectId, usize> {
    let bytes = std::fs::read(dir.join("index.log")).unwrap();
    let mut out = std::collections::HashMap::new();
    for rec in bytes[64..].chunks_exact(64) {
        if let Ok(super::format::Record::Object { id, .. }) =
            super::format::Record::decode(rec.try_into().unwrap())
        {
            *out.entry(id).or_insert(0) += 1;
        }
    }
    out
}
