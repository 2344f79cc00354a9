//! How the lifter hands a whole LevelDB directory to the decoder, whose
//! interface takes one byte string per version: a bundle of named files.
//!
//! # Format (in memory only, never stored; integers little-endian)
//!
//! ```text
//! bundle := magic "VMMLDB01" | name_len u32 | name (the database path)
//!           | count u32 | file{count}
//! file   := name_len u32 | name (base name, e.g. "000005.ldb")
//!           | len u64 | bytes[len]
//! ```
//!
//! Input without the magic is not a bundle: the decoder then reads it as
//! one write-ahead log file (see `super`).

use crate::decode::DecodeError;

use super::coding::{fixed32, fixed64};

/// The bundle magic.
pub const BUNDLE_MAGIC: &[u8; 8] = b"VMMLDB01";

/// A decoded bundle, borrowing its bytes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Bundle<'a> {
    /// The database (directory) path.
    pub name: &'a str,
    /// (base name, bytes) of each file.
    pub files: Vec<(&'a str, &'a [u8])>,
}

/// Encodes a bundle.
pub fn encode(name: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let total: usize = files.iter().map(|(n, b)| 12 + n.len() + b.len()).sum();
    let mut out = Vec::with_capacity(16 + name.len() + total);
    out.extend_from_slice(BUNDLE_MAGIC);
    out.extend_from_slice(&(name.len() as u32).to_le_bytes());
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(&(files.len() as u32).to_le_bytes());
    for (n, b) in files {
        out.extend_from_slice(&(n.len() as u32).to_le_bytes());
        out.extend_from_slice(n.as_bytes());
        out.extend_from_slice(&(b.len() as u64).to_le_bytes());
        out.extend_from_slice(b);
    }
    out
}

/// The bundle of a database directory on this host: its regular files
/// (sorted by name), named by `dir` as given.
pub fn read_dir(dir: &std::path::Path) -> std::io::Result<Vec<u8>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            let name = entry.file_name().to_string_lossy().into_owned();
            files.push((name, std::fs::read(entry.path())?));
        }
    }
    files.sort();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(n, b)| (n.as_str(), b.as_slice()))
        .collect();
    Ok(encode(&dir.to_string_lossy(), &refs))
}

/// True when `data` starts with the bundle magic.
pub fn is_bundle(data: &[u8]) -> bool {
    data.starts_with(BUNDLE_MAGIC)
}

/// Decodes a bundle (the caller checked [`is_bundle`]).
pub fn decode(data: &[u8]) -> Result<Bundle<'_>, DecodeError> {
    let bad = || DecodeError::new("leveldb bundle: truncated or malformed");
    let mut at = BUNDLE_MAGIC.len();
    let string = |at: &mut usize| -> Result<&str, DecodeError> {
        let n = fixed32(data, *at).ok_or_else(bad)? as usize;
        let s = data
            .get(*at + 4..(*at + 4).checked_add(n).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        *at += 4 + n;
        std::str::from_utf8(s).map_err(|_| bad())
    };
    let name = string(&mut at)?;
    let count = fixed32(data, at).ok_or_else(bad)?;
    at += 4;
    let mut files = Vec::new();
    for _ in 0..count {
        let fname = string(&mut at)?;
        let len = usize::try_from(fixed64(data, at).ok_or_else(bad)?).map_err(|_| bad())?;
        at += 8;
        let bytes = data
            .get(at..at.checked_add(len).ok_or_else(bad)?)
            .ok_or_else(bad)?;
        at += len;
        files.push((fname, bytes));
    }
    if at != data.len() {
        return Err(bad());
    }
    Ok(Bundle { name, files })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_truncation() {
        let b = encode(
            "/db",
            &[("CURRENT", b"MANIFEST-000002\n"), ("000003.log", &[1, 2])],
        );
        let d = decode(&b).unwrap();
        assert_eq!(d.name, "/db");
        assert_eq!(d.files[1], ("000003.log", &[1u8, 2][..]));
        for cut in 8..b.len() {
            assert!(decode(&b[..cut]).is_err());
        }
    }
}
