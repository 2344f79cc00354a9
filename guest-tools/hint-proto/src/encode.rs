//! Encoders: each writes one whole message (header, payload, CRC trailer; see
//! the wire format in the crate docs) to the start of `out` and returns its
//! length. Fields are checked against the same rules the decoder applies, so
//! whatever encodes also decodes.

use crate::{
    kind, EncodeError, Extent, Extents, Format, Role, HEADER_LEN, MAGIC, MAX_EXTENTS, MAX_PATH,
    MAX_PAYLOAD, MAX_SCHEMA, TRAILER_LEN, VERSION,
};

/// Writes header + payload (filled by `fill`) + CRC into `out`.
fn frame(
    kind: u8,
    payload_len: usize,
    out: &mut [u8],
    fill: impl FnOnce(&mut [u8]),
) -> Result<usize, EncodeError> {
    if payload_len > MAX_PAYLOAD {
        return Err(EncodeError::TooLong("payload"));
    }
    let body = HEADER_LEN + payload_len;
    let need = body + TRAILER_LEN;
    let Some(out) = out.get_mut(..need) else {
        return Err(EncodeError::BufferTooSmall { need });
    };
    out[0..2].copy_from_slice(&MAGIC);
    out[2] = VERSION;
    out[3] = kind;
    // payload_len <= MAX_PAYLOAD fits in u32.
    out[4..8].copy_from_slice(&(payload_len as u32).to_le_bytes());
    fill(&mut out[HEADER_LEN..body]);
    let crc = crc32fast::hash(&out[..body]);
    out[body..need].copy_from_slice(&crc.to_le_bytes());
    Ok(need)
}

/// Encodes a File message. `path` must be 1..=[`MAX_PATH`] bytes.
pub fn encode_file(
    file_id: u32,
    main_id: u32,
    format: Format,
    role: Role,
    path: &str,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if path.is_empty() {
        return Err(EncodeError::Invalid("empty path"));
    }
    if path.len() > MAX_PATH {
        return Err(EncodeError::TooLong("path"));
    }
    frame(kind::FILE, 10 + path.len(), out, |p| {
        p[0..4].copy_from_slice(&file_id.to_le_bytes());
        p[4..8].copy_from_slice(&main_id.to_le_bytes());
        p[8] = format as u8;
        p[9] = role as u8;
        p[10..].copy_from_slice(path.as_bytes());
    })
}

/// Encodes an Extents message: at most [`MAX_EXTENTS`] extents, each with
/// `len > 0` and no u64 overflow of `file_offset + len` or `sector * 512 + len`.
pub fn encode_extents(
    file_id: u32,
    extents: &[Extent],
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if extents.len() > MAX_EXTENTS {
        return Err(EncodeError::TooLong("extents"));
    }
    if let Some(why) = extents.iter().find_map(Extent::problem) {
        return Err(EncodeError::Invalid(why));
    }
    frame(
        kind::EXTENTS,
        4 + extents.len() * Extent::WIRE_LEN,
        out,
        |p| {
            p[0..4].copy_from_slice(&file_id.to_le_bytes());
            for (e, w) in extents
                .iter()
                .zip(p[4..].chunks_exact_mut(Extent::WIRE_LEN))
            {
                w[0..8].copy_from_slice(&e.file_offset.to_le_bytes());
                w[8..16].copy_from_slice(&e.sector.to_le_bytes());
                w[16..24].copy_from_slice(&e.len.to_le_bytes());
            }
        },
    )
}

/// Re-encodes decoded (already validated) extents.
pub(crate) fn encode_extents_raw(
    file_id: u32,
    extents: Extents<'_>,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    let raw = extents.as_bytes();
    if raw.len() / Extent::WIRE_LEN > MAX_EXTENTS {
        return Err(EncodeError::TooLong("extents"));
    }
    frame(kind::EXTENTS, 4 + raw.len(), out, |p| {
        p[0..4].copy_from_slice(&file_id.to_le_bytes());
        p[4..].copy_from_slice(raw);
    })
}

/// Encodes a Size message. A file that does not exist must have size 0.
pub fn encode_size(
    file_id: u32,
    size: u64,
    exists: bool,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if !exists && size != 0 {
        return Err(EncodeError::Invalid("size of a file that does not exist"));
    }
    frame(kind::SIZE, 13, out, |p| {
        p[0..4].copy_from_slice(&file_id.to_le_bytes());
        p[4..12].copy_from_slice(&size.to_le_bytes());
        p[12] = u8::from(exists);
    })
}

/// Encodes a Schema message; `text` is at most [`MAX_SCHEMA`] bytes.
pub fn encode_schema(file_id: u32, text: &str, out: &mut [u8]) -> Result<usize, EncodeError> {
    if text.len() > MAX_SCHEMA {
        return Err(EncodeError::TooLong("schema"));
    }
    frame(kind::SCHEMA, 4 + text.len(), out, |p| {
        p[0..4].copy_from_slice(&file_id.to_le_bytes());
        p[4..].copy_from_slice(text.as_bytes());
    })
}

/// Encodes a Forget message.
pub fn encode_forget(file_id: u32, out: &mut [u8]) -> Result<usize, EncodeError> {
    frame(kind::FORGET, 4, out, |p| {
        p.copy_from_slice(&file_id.to_le_bytes())
    })
}
