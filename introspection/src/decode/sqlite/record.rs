//! The record format (fileformat2 §2.1): a header of serial types, then the
//! values.

use serde_json::Value;

use super::btree::varint;
use super::header::TextEncoding;
use crate::decode::{bad, blob_value, DecodeError};

/// One value of a record, borrowing the payload.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Val<'a> {
    Null,
    Int(i64),
    Real(f64),
    Text(&'a [u8]),
    Blob(&'a [u8]),
}

/// Bytes a value of serial type `t` takes in the body, or `None` for the
/// reserved types 10 and 11.
#[inline]
fn content_len(t: u64) -> Option<u64> {
    Some(match t {
        0 | 8 | 9 => 0,
        1 => 1,
        2 => 2,
        3 => 3,
        4 => 4,
        5 => 6,
        6 | 7 => 8,
        10 | 11 => return None,
        n => (n - 12) / 2,
    })
}

#[inline]
fn be_int(b: &[u8]) -> i64 {
    // Sign-extend a 1..=8 byte big-endian two's-complement integer.
    let mut v: i64 = if b[0] & 0x80 != 0 { -1 } else { 0 };
    for &c in b {
        v = (v << 8) | c as i64;
    }
    v
}

/// Decode `payload` into `out` (cleared first). No allocation beyond `out`'s
/// growth; values borrow the payload.
pub fn decode_record<'a>(payload: &'a [u8], out: &mut Vec<Val<'a>>) -> Result<(), DecodeError> {
    out.clear();
    let Some((hs, n)) = varint(payload, 0) else {
        return bad("sqlite: record header size truncated");
    };
    if hs < n as u64 || hs > payload.len() as u64 {
        return bad(format!("sqlite: record header size {hs} out of bounds"));
    }
    let hs = hs as usize;
    let mut hp = n;
    let mut body = hs;
    while hp < hs {
        let Some((t, tn)) = varint(&payload[..hs], hp) else {
            return bad("sqlite: record serial type truncated");
        };
        hp += tn;
        let Some(len) = content_len(t) else {
            return bad(format!("sqlite: reserved serial type {t}"));
        };
        if len > (payload.len() - body) as u64 {
            return bad("sqlite: record value past the end of its payload");
        }
        let v = &payload[body..body + len as usize];
        body += len as usize;
        out.push(match t {
            0 => Val::Null,
            1..=6 => Val::Int(be_int(v)),
            7 => Val::Real(f64::from_bits(u64::from_be_bytes(
                v.try_into().unwrap_or([0; 8]),
            ))),
            8 => Val::Int(0),
            9 => Val::Int(1),
            t if t % 2 == 0 => Val::Blob(v),
            _ => Val::Text(v),
        });
    }
    Ok(())
}

/// A finite real as a JSON number; the infinities as strings.
pub fn real_value(f: f64) -> Value {
    match serde_json::Number::from_f64(f) {
        Some(n) => Value::Number(n),
        None if f.is_nan() => Value::Null,
        None if f > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

impl Val<'_> {
    /// The JSON form: integers and reals as numbers, text as a string,
    /// blobs as `{"$blob": "<hex>"}`.
    pub fn to_json(self, enc: TextEncoding) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Int(i) => Value::from(i),
            Val::Real(f) => real_value(f),
            Val::Text(t) => Value::String(enc.decode(t)),
            Val::Blob(b) => blob_value(b),
        }
    }

    /// Bytes the value occupies (for budgets).
    pub fn byte_len(self) -> usize {
        match self {
            Val::Text(b) | Val::Blob(b) => b.len(),
            _ => 8,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serial_types() {
        // header: size 8, types NULL, int8, int16 (-2), 0, 1, text "hi", blob [7]
        let p = [
            8u8, 0, 1, 2, 8, 9, 17, 14, // header
            5, 0xff, 0xfe, b'h', b'i', 7,
        ];
        let mut v = Vec::new();
        decode_record(&p, &mut v).unwrap();
        assert_eq!(
            v,
            vec![
                Val::Null,
                Val::Int(5),
                Val::Int(-2),
                Val::Int(0),
                Val::Int(1),
                Val::Text(b"hi"),
                Val::Blob(&[7])
            ]
        );
        let mut f = vec![2u8, 7];
        f.extend_from_slice(&1.5f64.to_be_bytes());
        decode_record(&f, &mut v).unwrap();
        assert_eq!(v, vec![Val::Real(1.5)]);
        let mut i48 = vec![2u8, 5];
        i48.extend_from_slice(&[0x80, 0, 0, 0, 0, 0]);
        decode_record(&i48, &mut v).unwrap();
        assert_eq!(v, vec![Val::Int(-(1i64 << 47))]);
        assert!(decode_record(&[2, 10], &mut v).is_err());
        assert!(decode_record(&[2, 6, 1], &mut v).is_err());
        assert!(decode_record(&[9], &mut v).is_err());
    }
}
