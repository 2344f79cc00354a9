//! The decoder. Every length is checked before it is used, so hostile input
//! yields a [`DecodeError`], never a panic or an out-of-bounds read.

use crate::{
    kind, DecodeError, Extent, Extents, Format, Hint, Role, HEADER_LEN, MAGIC, MAX_EXTENTS,
    MAX_PATH, MAX_PAYLOAD, MAX_SCHEMA, TRAILER_LEN, VERSION,
};

/// A checked message frame: its kind, payload and total length.
pub(crate) struct Frame<'a> {
    pub kind: u8,
    pub payload: &'a [u8],
    pub total: usize,
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Checks the header of the message at the start of `buf` (partially if it is
/// short) and returns its total length.
fn frame_len(buf: &[u8]) -> Result<usize, DecodeError> {
    if buf.iter().zip(MAGIC.iter()).any(|(a, b)| a != b) {
        return Err(DecodeError::BadMagic);
    }
    if let Some(&v) = buf.get(2) {
        if v != VERSION {
            return Err(DecodeError::UnsupportedVersion(v));
        }
    }
    let Some(len) = u32_at(buf, 4) else {
        return Err(DecodeError::Incomplete {
            need: HEADER_LEN + TRAILER_LEN,
        });
    };
    let len = usize::try_from(len).unwrap_or(usize::MAX);
    if len > MAX_PAYLOAD {
        return Err(DecodeError::TooLarge { len });
    }
    Ok(HEADER_LEN + len + TRAILER_LEN)
}

/// Checks header, completeness and CRC.
pub(crate) fn frame(buf: &[u8]) -> Result<Frame<'_>, DecodeError> {
    let total = frame_len(buf)?;
    let Some(msg) = buf.get(..total) else {
        return Err(DecodeError::Incomplete { need: total });
    };
    let body_len = total - TRAILER_LEN;
    let (body, trailer) = msg.split_at(body_len);
    if u32_at(trailer, 0) != Some(crc32fast::hash(body)) {
        return Err(DecodeError::BadCrc);
    }
    Ok(Frame {
        kind: body[3],
        payload: &body[HEADER_LEN..],
        total,
    })
}

/// Decodes one message from the start of `buf`; returns it and the number of
/// bytes it took. See the crate docs for the order of the checks.
pub fn decode(buf: &[u8]) -> Result<(Hint<'_>, usize), DecodeError> {
    let f = frame(buf)?;
    Ok((payload(f.kind, f.payload)?, f.total))
}

fn text<'a>(b: &'a [u8], what: &'static str) -> Result<&'a str, DecodeError> {
    core::str::from_utf8(b).map_err(|_| DecodeError::Malformed(what))
}

/// Parses a payload of `kind` (after the CRC has been checked).
pub(crate) fn payload(kind: u8, p: &[u8]) -> Result<Hint<'_>, DecodeError> {
    use DecodeError::Malformed;
    if !(kind::FILE..=kind::FORGET).contains(&kind) {
        return Err(DecodeError::UnknownKind(kind));
    }
    let file_id = u32_at(p, 0).ok_or(Malformed("payload shorter than a file id"))?;
    let rest = p.get(4..).unwrap_or_default();
    match kind {
        kind::FILE => {
            let (fixed, path) = (rest.get(..6), rest.get(6..));
            let (Some(fixed), Some(path)) = (fixed, path) else {
                return Err(Malformed("file message shorter than its fixed fields"));
            };
            let main_id = u32_at(fixed, 0).ok_or(Malformed("file message truncated"))?;
            let format = Format::from_u8(fixed[4]).ok_or(Malformed("unknown file format"))?;
            let role = Role::from_u8(fixed[5]).ok_or(Malformed("unknown file role"))?;
            if path.is_empty() {
                return Err(Malformed("empty path"));
            }
            if path.len() > MAX_PATH {
                return Err(Malformed("path longer than MAX_PATH"));
            }
            let path = text(path, "path is not UTF-8")?;
            Ok(Hint::File {
                file_id,
                main_id,
                format,
                role,
                path,
            })
        }
        kind::EXTENTS => {
            if rest.len() % Extent::WIRE_LEN != 0 {
                return Err(Malformed(
                    "extents payload is not a whole number of extents",
                ));
            }
            if rest.len() / Extent::WIRE_LEN > MAX_EXTENTS {
                return Err(Malformed("more than MAX_EXTENTS extents"));
            }
            let extents = Extents::from_validated(rest);
            if let Some(why) = extents.iter().find_map(|e| e.problem()) {
                return Err(Malformed(why));
            }
            Ok(Hint::Extents { file_id, extents })
        }
        kind::SIZE => {
            if rest.len() != 9 {
                return Err(Malformed("size payload is not 13 bytes"));
            }
            let size = u64_at(rest, 0).ok_or(Malformed("size message truncated"))?;
            let exists = match rest[8] {
                0 => false,
                1 => true,
                _ => return Err(Malformed("exists flag is not 0 or 1")),
            };
            if !exists && size != 0 {
                return Err(Malformed("nonzero size of a file that does not exist"));
            }
            Ok(Hint::Size {
                file_id,
                size,
                exists,
            })
        }
        kind::SCHEMA => {
            if rest.len() > MAX_SCHEMA {
                return Err(Malformed("schema longer than MAX_SCHEMA"));
            }
            Ok(Hint::Schema {
                file_id,
                text: text(rest, "schema is not UTF-8")?,
            })
        }
        kind::FORGET => {
            if !rest.is_empty() {
                return Err(Malformed("forget payload is not 4 bytes"));
            }
            Ok(Hint::Forget { file_id })
        }
        k => Err(DecodeError::UnknownKind(k)),
    }
}
