//! Every `DecodeError` path, with frames built by hand (valid CRC unless the
//! test is about the CRC).
mod common;

use hint_proto::*;

fn raw(version: u8, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut v = vec![b'V', b'H', version, kind];
    v.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    v.extend_from_slice(payload);
    let crc = crc32fast::hash(&v);
    v.extend_from_slice(&crc.to_le_bytes());
    v
}

fn err(buf: &[u8]) -> DecodeError {
    decode(buf).expect_err("must be rejected")
}

fn malformed(kind: u8, payload: &[u8]) -> &'static str {
    match err(&raw(VERSION, kind, payload)) {
        DecodeError::Malformed(why) => why,
        e => panic!("expected Malformed, got {e:?}"),
    }
}

fn file_payload(format: u8, role: u8, path: &[u8]) -> Vec<u8> {
    let mut p = vec![1, 0, 0, 0, 1, 0, 0, 0, format, role];
    p.extend_from_slice(path);
    p
}

fn extent_bytes(file_offset: u64, sector: u64, len: u64) -> Vec<u8> {
    let mut p = vec![1, 0, 0, 0];
    for x in [file_offset, sector, len] {
        p.extend_from_slice(&x.to_le_bytes());
    }
    p
}

#[test]
fn incomplete() {
    let min = HEADER_LEN + TRAILER_LEN;
    assert_eq!(err(b""), DecodeError::Incomplete { need: min });
    assert_eq!(err(b"V"), DecodeError::Incomplete { need: min });
    assert_eq!(
        err(b"VH\x01\x05\x04\x00\x00"),
        DecodeError::Incomplete { need: min }
    );
    let msg = raw(VERSION, kind::FORGET, &[1, 2, 3, 4]);
    for cut in HEADER_LEN..msg.len() {
        assert_eq!(
            err(&msg[..cut]),
            DecodeError::Incomplete { need: 16 },
            "cut {cut}"
        );
    }
}

#[test]
fn bad_magic_even_on_a_partial_header() {
    for b in [
        &b"X"[..],
        b"VX",
        b"HV\x01\x05\x04\x00\x00\x00",
        b"vh\x01\x05\x04\x00\x00\x00\x01\x02\x03\x04",
    ] {
        assert_eq!(err(b), DecodeError::BadMagic, "{b:?}");
    }
}

#[test]
fn unsupported_version() {
    assert_eq!(err(b"VH\x02"), DecodeError::UnsupportedVersion(2));
    assert_eq!(
        err(&raw(0, kind::FORGET, &[0; 4])),
        DecodeError::UnsupportedVersion(0)
    );
    assert_eq!(
        err(&raw(255, kind::FORGET, &[0; 4])),
        DecodeError::UnsupportedVersion(255)
    );
}

#[test]
fn unknown_kind_is_reported_after_the_crc() {
    for k in [0u8, 6, 200, 255] {
        assert_eq!(err(&raw(VERSION, k, &[0; 4])), DecodeError::UnknownKind(k));
        assert_eq!(err(&raw(VERSION, k, &[])), DecodeError::UnknownKind(k));
    }
    let mut bad = raw(VERSION, 9, &[0; 4]);
    bad[8] ^= 1;
    assert_eq!(err(&bad), DecodeError::BadCrc);
}

#[test]
fn too_large() {
    for len in [MAX_PAYLOAD as u32 + 1, u32::MAX] {
        let mut b = vec![b'V', b'H', VERSION, kind::SCHEMA];
        b.extend_from_slice(&len.to_le_bytes());
        assert_eq!(err(&b), DecodeError::TooLarge { len: len as usize });
    }
    // Exactly MAX_PAYLOAD is framed fine; the schema inside is too long.
    let mut p = vec![0u8; 4];
    p.resize(MAX_PAYLOAD, b'a');
    assert_eq!(
        err(&raw(VERSION, kind::SCHEMA, &p)),
        DecodeError::Malformed("schema longer than MAX_SCHEMA")
    );
}

#[test]
fn bad_crc_anywhere() {
    let good = common::sample_stream();
    let (_, n) = decode(&good).unwrap();
    // Flip each bit after the version byte's header checks: kind, length
    // (kept small), payload and trailer.
    for byte in [3usize, 8, 12, n - 5, n - 4, n - 1] {
        for bit in 0..8 {
            let mut b = good[..n].to_vec();
            b[byte] ^= 1 << bit;
            assert_eq!(err(&b), DecodeError::BadCrc, "byte {byte} bit {bit}");
        }
    }
}

#[test]
fn malformed_file() {
    assert_eq!(
        malformed(kind::FILE, &[1, 0, 0]),
        "payload shorter than a file id"
    );
    assert_eq!(
        malformed(kind::FILE, &[1, 0, 0, 0, 1, 0, 0, 0, 1]),
        "file message shorter than its fixed fields"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(0, 1, b"/a")),
        "unknown file format"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(5, 1, b"/a")),
        "unknown file format"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(1, 0, b"/a")),
        "unknown file role"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(1, 5, b"/a")),
        "unknown file role"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(1, 1, b"")),
        "empty path"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(1, 1, &[b'a'; MAX_PATH + 1])),
        "path longer than MAX_PATH"
    );
    assert_eq!(
        malformed(kind::FILE, &file_payload(1, 1, b"/a\xff")),
        "path is not UTF-8"
    );
}

#[test]
fn malformed_extents() {
    assert_eq!(
        malformed(kind::EXTENTS, &[]),
        "payload shorter than a file id"
    );
    assert_eq!(
        malformed(kind::EXTENTS, &[1, 0, 0, 0, 9]),
        "extents payload is not a whole number of extents"
    );
    let mut many = vec![1, 0, 0, 0];
    for i in 0..=MAX_EXTENTS as u64 {
        many.extend_from_slice(&extent_bytes(i, 1, 1)[4..]);
    }
    assert_eq!(
        malformed(kind::EXTENTS, &many),
        "more than MAX_EXTENTS extents"
    );
    assert_eq!(
        malformed(kind::EXTENTS, &extent_bytes(0, 0, 0)),
        "zero-length extent"
    );
    assert_eq!(
        malformed(kind::EXTENTS, &extent_bytes(u64::MAX, 0, 1)),
        "extent file_offset + len overflows"
    );
    assert_eq!(
        malformed(kind::EXTENTS, &extent_bytes(0, u64::MAX / 512 + 1, 1)),
        "extent sector * 512 + len overflows"
    );
    assert_eq!(
        malformed(kind::EXTENTS, &extent_bytes(0, u64::MAX / 512, 512)),
        "extent sector * 512 + len overflows"
    );
    // One bad extent after good ones spoils the message.
    let mut p = extent_bytes(0, 8, 4096);
    p.extend_from_slice(&extent_bytes(4096, 16, 0)[4..]);
    assert_eq!(malformed(kind::EXTENTS, &p), "zero-length extent");
}

#[test]
fn malformed_size_schema_forget() {
    assert_eq!(
        malformed(kind::SIZE, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
        "size payload is not 13 bytes"
    );
    assert_eq!(
        malformed(kind::SIZE, &[1; 14]),
        "size payload is not 13 bytes"
    );
    assert_eq!(
        malformed(kind::SIZE, &[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]),
        "exists flag is not 0 or 1"
    );
    assert_eq!(
        malformed(kind::SIZE, &[1, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]),
        "nonzero size of a file that does not exist"
    );
    assert_eq!(
        malformed(kind::SCHEMA, &[1, 0]),
        "payload shorter than a file id"
    );
    let mut p = vec![1, 0, 0, 0];
    p.resize(4 + MAX_SCHEMA + 1, b'x');
    assert_eq!(malformed(kind::SCHEMA, &p), "schema longer than MAX_SCHEMA");
    assert_eq!(
        malformed(kind::SCHEMA, &[1, 0, 0, 0, 0xc3]),
        "schema is not UTF-8"
    );
    assert_eq!(
        malformed(kind::FORGET, &[1, 0, 0, 0, 0]),
        "forget payload is not 4 bytes"
    );
    assert_eq!(
        malformed(kind::FORGET, &[]),
        "payload shorter than a file id"
    );
}

#[test]
fn errors_display_one_clear_line() {
    let all = [
        DecodeError::Incomplete { need: 12 },
        DecodeError::BadMagic,
        DecodeError::UnsupportedVersion(9),
        DecodeError::UnknownKind(42),
        DecodeError::TooLarge { len: 70000 },
        DecodeError::BadCrc,
        DecodeError::Malformed("empty path"),
    ];
    for e in all {
        let s = e.to_string();
        assert!(!s.is_empty() && !s.contains('\n'), "{s}");
        let _: &dyn core::error::Error = &e;
    }
    assert_eq!(
        DecodeError::TooLarge { len: 70000 }.to_string(),
        "hint payload of 70000 bytes is too large (limit 61440)"
    );
    assert_eq!(
        DecodeError::Malformed("empty path").to_string(),
        "malformed hint message: empty path"
    );
}
