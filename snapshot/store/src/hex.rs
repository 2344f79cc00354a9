//! Lowercase hex for 32-byte hashes: in text (reports, errors) and in serde
//! (`--json` output), where a `[u8; 32]` would otherwise become 32 numbers.

/// Lowercase hex of `bytes`.
pub fn encode(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 0x0f)] as char);
    }
    s
}

/// Parses exactly 64 hex digits (either case) into 32 bytes.
pub fn decode32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// `#[serde(with = "crate::hex::hash")]` for a `[u8; 32]`.
pub mod hash {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let s = String::deserialize(d)?;
        super::decode32(&s).ok_or_else(|| D::Error::custom("expected 64 hex digits"))
    }
}

/// `#[serde(with = "crate::hex::hashes")]` for a `Vec<[u8; 32]>`.
pub mod hashes {
    use serde::{de::Error, ser::SerializeSeq, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
        let mut seq = s.serialize_seq(Some(v.len()))?;
        for h in v {
            seq.serialize_element(&super::encode(h))?;
        }
        seq.end()
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<[u8; 32]>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|s| super::decode32(s).ok_or_else(|| D::Error::custom("expected 64 hex digits")))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn roundtrip() {
        let mut h = [0u8; 32];
        for (i, b) in h.iter_mut().enumerate() {
            *b = (i as u8).wrapping_mul(37);
        }
        let s = super::encode(&h);
        assert_eq!(s.len(), 64);
        assert!(s.starts_with("00254a6f"));
        assert_eq!(super::decode32(&s), Some(h));
        assert_eq!(super::decode32(&s.to_uppercase()), Some(h));
        assert_eq!(super::decode32(&s[1..]), None);
        assert_eq!(super::decode32(&s.replace('a', "g")), None);
    }
}

/// Serde helper: a byte vector as one lowercase hex string.
pub mod bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        if text.len() % 2 != 0 {
            return Err(serde::de::Error::custom("odd-length hex"));
        }
        (0..text.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&text[i..i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(serde::de::Error::custom)
    }
}
