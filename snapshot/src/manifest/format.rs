//! The manifest file format.
//!
//! ```text
//! 0..8     magic        b"VMMSNAP\0"
//! 8..12    version      u32 = 1 (FORMAT_VERSION)
//! 12..20   body_len     u64
//! 20..24   body_crc     u32  crc32 (IEEE, crc32fast) of the body
//! 24..28   header_crc   u32  crc32 of bytes 0..24
//! 28..     body         body_len bytes; nothing may follow it
//! ```
//!
//! All integers little-endian. The CRCs frame (they catch torn and damaged
//! files); identity of memory contents is the BLAKE3 ids inside.
//!
//! **Body (version 1)**: the [`Manifest`] serialized with `postcard` 1.x,
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

use std::path::Path;

use super::{Manifest, ManifestError, Result};

/// First bytes of every manifest file.
pub const MAGIC: [u8; 8] = *b"VMMSNAP\0";
/// The one body version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
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
    let mut out = Vec::with_capacity(HEADER_LEN + body.len());
    out.extend_from_slice(&MAGIC);
    out.extend_from_slice(&version.to_le_bytes());
    out.extend_from_slice(&(body.len() as u64).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
    let hcrc = crc32fast::hash(&out);
    out.extend_from_slice(&hcrc.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
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
    if version != FORMAT_VERSION {
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
    let (m, rest) = postcard::take_from_bytes::<Manifest>(body).map_err(|e| {
        corrupt(format!(
            "the body passes its CRC but does not decode as a version {FORMAT_VERSION} \
             manifest ({e}); it was written by a build with a different manifest layout \
             under the same version"
        ))
    })?;
    if !rest.is_empty() {
        return Err(corrupt(format!(
            "{} bytes of the body are left over after the manifest",
            rest.len()
        )));
    }
    Ok(m)
}
