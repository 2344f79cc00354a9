//! The 100-byte database header (fileformat2 §1.3).

use crate::decode::{bad, DecodeError};

/// `"SQLite format 3\0"`.
pub const MAGIC: &[u8; 16] = b"SQLite format 3\0";
/// Size of the database header at the start of page 1.
pub const HEADER_LEN: usize = 100;

/// How TEXT values are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TextEncoding {
    Utf8,
    Utf16le,
    Utf16be,
}

impl TextEncoding {
    /// Text bytes as a `String` (invalid sequences become U+FFFD).
    pub fn decode(self, bytes: &[u8]) -> String {
        match self {
            TextEncoding::Utf8 => String::from_utf8_lossy(bytes).into_owned(),
            TextEncoding::Utf16le | TextEncoding::Utf16be => {
                let units = bytes.chunks_exact(2).map(|c| match self {
                    TextEncoding::Utf16le => u16::from_le_bytes([c[0], c[1]]),
                    _ => u16::from_be_bytes([c[0], c[1]]),
                });
                char::decode_utf16(units)
                    .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
                    .collect()
            }
        }
    }
}

/// The fields of the database header that decoding needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Header {
    /// Page size in bytes (512..=65536, a power of two).
    pub page_size: u32,
    /// Bytes reserved at the end of each page (e.g. for encryption nonces).
    pub reserved: u8,
    /// `page_size - reserved`, at least 480.
    pub usable_size: u32,
    /// 1 = legacy (rollback journal), 2 = WAL.
    pub write_version: u8,
    pub read_version: u8,
    pub change_counter: u32,
    /// The in-header database size; valid only when nonzero and
    /// `change_counter == version_valid_for`.
    pub header_page_count: u32,
    pub version_valid_for: u32,
    /// Pages the database has: the in-header size when valid, else the
    /// input length divided by the page size.
    pub page_count: u32,
    pub freelist_trunk: u32,
    pub freelist_count: u32,
    pub schema_cookie: u32,
    pub schema_format: u32,
    pub text_encoding: TextEncoding,
}

pub(crate) fn be16(b: &[u8], at: usize) -> Option<u16> {
    let s = b.get(at..at.checked_add(2)?)?;
    Some(u16::from_be_bytes([s[0], s[1]]))
}

pub(crate) fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Decode a page-size field: 1 means 65536; otherwise a power of two in
/// 512..=32768 (`allow_64k_literal` also accepts 65536 written as is, as the
/// 32-bit WAL header does).
pub(crate) fn page_size_field(v: u32, allow_64k_literal: bool) -> Option<u32> {
    match v {
        1 => Some(65536),
        65536 if allow_64k_literal => Some(65536),
        512..=32768 if v.is_power_of_two() => Some(v),
        _ => None,
    }
}

impl Header {
    /// Parse and validate the header of a database image of `data.len()`
    /// bytes.
    pub fn parse(data: &[u8]) -> Result<Header, DecodeError> {
        if data.len() < HEADER_LEN {
            return bad("sqlite: file shorter than the 100-byte header");
        }
        if &data[..16] != MAGIC {
            return bad("sqlite: bad magic (not an SQLite 3 database)");
        }
        let raw_ps = be16(data, 16).unwrap_or(0) as u32;
        let Some(page_size) = page_size_field(raw_ps, false) else {
            return bad(format!("sqlite: invalid page size {raw_ps}"));
        };
        let (write_version, read_version) = (data[18], data[19]);
        if !(1..=2).contains(&write_version) || !(1..=2).contains(&read_version) {
            return bad(format!(
                "sqlite: unsupported file format versions {write_version}/{read_version}"
            ));
        }
        let reserved = data[20];
        let usable_size = page_size - reserved as u32;
        if usable_size < 480 {
            return bad(format!("sqlite: usable page size {usable_size} below 480"));
        }
        if data[21] != 64 || data[22] != 32 || data[23] != 32 {
            return bad("sqlite: bad payload fractions");
        }
        let f = |at| be32(data, at).unwrap_or(0);
        let change_counter = f(24);
        let header_page_count = f(28);
        let version_valid_for = f(92);
        let page_count = if header_page_count != 0 && change_counter == version_valid_for {
            header_page_count
        } else {
            u32::try_from(data.len() / page_size as usize).unwrap_or(u32::MAX)
        };
        let text_encoding = match f(56) {
            0 | 1 => TextEncoding::Utf8,
            2 => TextEncoding::Utf16le,
            3 => TextEncoding::Utf16be,
            e => return bad(format!("sqlite: unknown text encoding {e}")),
        };
        Ok(Header {
            page_size,
            reserved,
            usable_size,
            write_version,
            read_version,
            change_counter,
            header_page_count,
            version_valid_for,
            page_count,
            freelist_trunk: f(32),
            freelist_count: f(36),
            schema_cookie: f(40),
            schema_format: f(44),
            text_encoding,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_encodings() {
        assert_eq!(page_size_field(1, false), Some(65536));
        assert_eq!(page_size_field(4096, false), Some(4096));
        assert_eq!(page_size_field(65536, true), Some(65536));
        assert_eq!(page_size_field(65536, false), None);
        assert_eq!(page_size_field(1000, false), None);
        assert_eq!(page_size_field(256, false), None);
    }

    #[test]
    fn utf16_text() {
        assert_eq!(TextEncoding::Utf16le.decode(&[b'h', 0, b'i', 0]), "hi");
        assert_eq!(TextEncoding::Utf16be.decode(&[0, b'h', 0, b'i']), "hi");
        assert!(Header::parse(&[0u8; 100]).is_err());
    }
}
