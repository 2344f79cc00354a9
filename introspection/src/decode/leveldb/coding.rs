//! LevelDB's primitive encodings, all bounds-checked: little-endian fixed
//! integers, base-128 varints (low 7 bits first, high bit = "more"),
//! length-prefixed byte strings (varint32 length + bytes) and the masked
//! CRC32C that log records and table blocks carry.
//!
//! A CRC is masked before it is stored so that a CRC computed over bytes
//! that themselves hold CRCs stays well distributed:
//! `mask(c) = rotate_right(c, 15) + 0xa282ead8` (wrapping).

const MASK_DELTA: u32 = 0xa282_ead8;

/// The masked CRC32C of the concatenation of `parts`.
pub fn masked_crc(parts: &[&[u8]]) -> u32 {
    let crc = parts.iter().fold(0u32, |c, p| crc32c::crc32c_append(c, p));
    crc.rotate_right(15).wrapping_add(MASK_DELTA)
}

/// Reads a little-endian u32 at `at`.
pub fn fixed32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(s.try_into().ok()?))
}

/// Reads a little-endian u64 at `at`.
pub fn fixed64(b: &[u8], at: usize) -> Option<u64> {
    let s = b.get(at..at.checked_add(8)?)?;
    Some(u64::from_le_bytes(s.try_into().ok()?))
}

/// Reads a varint of at most `max_bytes` bytes at `*at`, advancing `*at`.
fn varint(b: &[u8], at: &mut usize, max_bytes: usize) -> Option<u64> {
    let mut v = 0u64;
    for i in 0..max_bytes {
        let byte = *b.get(*at + i)?;
        v |= u64::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            *at += i + 1;
            return Some(v);
        }
    }
    None
}

/// A varint32 (at most 5 bytes, value must fit in 32 bits).
pub fn varint32(b: &[u8], at: &mut usize) -> Option<u32> {
    let mut p = *at;
    let v = u32::try_from(varint(b, &mut p, 5)?).ok()?;
    *at = p;
    Some(v)
}

/// A varint64 (at most 10 bytes).
pub fn varint64(b: &[u8], at: &mut usize) -> Option<u64> {
    varint(b, at, 10)
}

/// A varint32 length followed by that many bytes.
pub fn length_prefixed<'a>(b: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let mut p = *at;
    let len = varint32(b, &mut p)? as usize;
    let s = b.get(p..p.checked_add(len)?)?;
    *at = p + len;
    Some(s)
}

/// Appends `v` as a varint (used by the tests' and the bench's writers).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_bounds() {
        let mut buf = Vec::new();
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            buf.clear();
            put_varint(&mut buf, v);
            let mut at = 0;
            assert_eq!(varint64(&buf, &mut at), Some(v));
            assert_eq!(at, buf.len());
            let mut at = 0;
            assert_eq!(varint32(&buf, &mut at).is_some(), v <= u32::MAX as u64);
        }
        // Truncated varint and over-long string.
        assert_eq!(varint64(&[0x80, 0x80], &mut 0), None);
        assert_eq!(length_prefixed(&[5, 1, 2], &mut 0), None);
        assert_eq!(fixed64(&[0; 7], 0), None);
        // The mask is LevelDB's: mask(0) = 0xa282ead8 for crc32c("") = 0.
        assert_eq!(masked_crc(&[]), 0xa282_ead8);
    }
}
