//! The manifest file format.
//!
//! ```text
//! 0..8     magic        b"VMMSNAP\0"
//! 8..12    version      u32 = 2 (FORMAT_VERSION); 1 is still read
//! 12..20   body_len     u64
//! 20..24   body_crc     u32  crc32 (IEEE, crc32fast) of the body
//! 24..28   header_crc   u32  crc32 of bytes 0..24
//! 28..     body         body_len bytes; nothing may follow it
//! ```
//!
//! All integers little-endian. The CRCs frame (they catch torn and damaged
//! files); identity of memory contents is the BLAKE3 ids inside.
//!
//! **Body (version 2)**: the [`Manifest`] serialized with `postcard` 1.x,
//! not compressed. Postcard was chosen over bincode because its wire format
//! is specified and frozen for 1.x (so a file stays readable by any build
//! using postcard 1), it is compact (LEB128 varints for integers), and it
//! is well kept. Its layout follows the Rust structs in declaration order:
//! unsigned integers as varints (`u8` and byte arrays as raw bytes),
//! strings and `Vec`s as a varint length then the items, `Option` as a
//! 0/1 byte then the value, enums as a varint variant index (`Full` = 0,
//! `Incremental` = 1), maps as a length then key/value pairs. Object ids
//! and the disk checksum are 32 raw bytes each. Manifests are a few KiB
//! (about 2 KiB of chunk ids per GiB of memory, which do not compress), so
//! zstd would add a dependency on the body's reader for little gain.
//!
//! Postcard is not self-describing: **any change to the structs changes
//! the format**. Adding, removing or reordering a field needs
//! `FORMAT_VERSION` bumped and a decoder for the old version kept here.
//! Readers refuse other versions with
//! [`ManifestError::UnsupportedVersion`], naming both versions.
//!
//! **Version history.** 1: every field up to `annotations`. 2: adds
//! `guest_files` (an `Option`, after `annotations`): the guest's hinted
//! files. A version 1 body decodes as [`ManifestV1`] and becomes a
//! [`Manifest`] with `guest_files: None` (the VM's hints are unknown).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{
    DiskPosition, Manifest, ManifestError, MemoryRegion, Result, SharedRegion, SnapshotKind,
    SnapshotStats, StateBlob,
};

/// First bytes of every manifest file.
pub const MAGIC: [u8; 8] = *b"VMMSNAP\0";
/// The body version this build writes (and the newest it reads).
pub const FORMAT_VERSION: u32 = 2;
/// The oldest body version this build reads.
pub const OLDEST_VERSION: u32 = 1;

/// The version 1 body: [`Manifest`] without `guest_files`.
#[derive(Deserialize)]
#[cfg_attr(test, derive(serde::Serialize))]
pub(crate) struct ManifestV1 {
    id: String,
    parent: Option<String>,
    created_ns: u64,
    vm_id: String,
    kind: SnapshotKind,
    state: Vec<StateBlob>,
    memory: Vec<MemoryRegion>,
    shared: Vec<SharedRegion>,
    disk: Option<DiskPosition>,
    stats: SnapshotStats,
    annotations: BTreeMap<String, String>,
}

impl From<ManifestV1> for Manifest {
    fn from(m: ManifestV1) -> Manifest {
        Manifest {
            id: m.id,
            parent: m.parent,
            created_ns: m.created_ns,
            vm_id: m.vm_id,
            kind: m.kind,
            state: m.state,
            memory: m.memory,
            shared: m.shared,
            disk: m.disk,
            stats: m.stats,
            annotations: m.annotations,
            guest_files: None,
        }
    }
}
/// Header length.
pub const HEADER_LEN: usize = 28;

/// The file bytes of `m`.
pub fn encode(m: &Manifest) -> Result<Vec<u8>> {
    encode_version(m, FORMAT_VERSION)
}

/// The file bytes of `m` with `version` in the header (tests write other
/// versions with it).
pub(crate) fn encode_version(m: &Manifest, version: u32) -> Result<Vec<u8>> {
    let body = postcard::to_stdvec(m).map_err(|e| ManifestError::Encode {
        id: m.id.clone(),
        detail: e.to_string(),
    })?;
    Ok(frame(&body, version))
}

/// The file bytes of `m` as a version 1 manifest (what older builds
/// wrote), for the tests of reading it.
#[cfg(test)]
pub(crate) fn encode_v1(m: &Manifest) -> Vec<u8> {
    let v1 = ManifestV1 {
        id: m.id.clone(),
        parent: m.parent.clone(),
        created_ns: m.created_ns,
        vm_id: m.vm_id.clone(),
        kind: m.kind,
        state: m.state.clone(),
        memory: m.memory.clone(),
        shared: m.shared.clone(),
        disk: m.disk.clone(),
        stats: m.stats,
        annotations: m.annotations.clone(),
    };
    frame(&postcard::to_stdvec(&v1).expect("encodes"), 1)
}

/// Header + `body`.
fn frame(body: &[u8], version: u32) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(body).to_le_bytes());
    let hcrc = crc32fast::hash(&out);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(body);
    out
}

/// Decodes the bytes of manifest file `path` (the path is for messages).
///
/// Checks in this order: magic, header length, header CRC, version, body
/// length, body CRC, body decoding, no trailing bytes.
pub fn decode(bytes: &[u8], path: &Path) -> Result<Manifest> {
    let len = bytes.len() as u64;
    let head = &bytes[..bytes.len().min(MAGIC.len())];
    if head != &MAGIC[..head.len()] || bytes.is_empty() {
        return Err(ManifestError::NotASnapshot {
            path: path.to_path_buf(),
            found: String::from_utf8_lossy(head).into_owned(),
        });
    }
    if bytes.len() < HEADER_LEN {
        return Err(ManifestError::Truncated {
            path: path.to_path_buf(),
            len,
            what: "header",
            needed: HEADER_LEN as u64,
        });
    }
    let corrupt = |detail: String| ManifestError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let header_crc = crc32fast::hash(&bytes[..24]);
    if header_crc != u32_at(24) {
        return Err(corrupt(format!(
            "header CRC mismatch (stored {:#010x}, computed {header_crc:#010x})",
            u32_at(24)
        )));
    }
    let version = u32_at(8);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(ManifestError::UnsupportedVersion {
            path: path.to_path_buf(),
            found: version,
            supported: FORMAT_VERSION,
        });
    }
    let body_len = u64::from_le_bytes(bytes[12..20].try_into().expect("8 bytes"));
    let have = len - HEADER_LEN as u64;
    if have < body_len {
        return Err(ManifestError::Truncated {
            path: path.to_path_buf(),
            len,
            what: "body",
            needed: HEADER_LEN as u64 + body_len,
        });
    }
    if have > body_len {
        return Err(corrupt(format!(
            "{} bytes follow the {body_len}-byte body",
            have - body_len
        )));
    }
    let body = &bytes[HEADER_LEN..];
    let body_crc = crc32fast::hash(body);
    if body_crc != u32_at(20) {
        return Err(corrupt(format!(
            "body CRC mismatch (stored {:#010x}, computed {body_crc:#010x})",
            u32_at(20)
        )));
    }
    let undecodable = |e: postcard::Error| {
        corrupt(format!(
            "the body passes its CRC but does not decode as a version {version} \
             manifest ({e}); it was written by a build with a different manifest layout \
             under the same version"
        ))
    };
    let (m, rest) = if version == 1 {
        let (m, rest) = postcard::take_from_bytes::<ManifestV1>(body).map_err(undecodable)?;
        (Manifest::from(m), rest)
    } else {
        postcard::take_from_bytes::<Manifest>(body).map_err(undecodable)?
    };
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} bytes of the body are left over after the manifest",
            rest.len()
        )));
    }
    Ok(m)
}
