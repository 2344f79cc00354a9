//! Round trips of every message kind, the limits, and the encoders' errors.
mod common;

use hint_proto::*;

fn roundtrip(buf: &[u8], n: usize) -> Hint<'_> {
    let (h, used) = decode(&buf[..n]).expect("decodes");
    assert_eq!(used, n);
    // Re-encoding the decoded message gives the same bytes.
    let mut again = vec![0u8; MAX_MESSAGE];
    let m = h.encode(&mut again).unwrap();
    assert_eq!(&again[..m], &buf[..n]);
    h
}

#[test]
fn file_roundtrip_all_formats_and_roles() {
    let mut buf = [0u8; 512];
    for format in [Format::Sqlite, Format::Json, Format::Kv, Format::LevelDb] {
        for role in [Role::Main, Role::Journal, Role::Wal, Role::Part] {
            let n = encode_file(7, 3, format, role, "/data/é.db", &mut buf).unwrap();
            assert_eq!(n, HEADER_LEN + 10 + "/data/é.db".len() + TRAILER_LEN);
            let h = roundtrip(&buf, n);
            assert_eq!(
                h,
                Hint::File {
                    file_id: 7,
                    main_id: 3,
                    format,
                    role,
                    path: "/data/é.db"
                }
            );
            assert_eq!((h.file_id(), h.kind()), (7, kind::FILE));
        }
    }
    let long = "x".repeat(MAX_PATH);
    let n = encode_file(1, 1, Format::Kv, Role::Main, &long, &mut buf).unwrap();
    assert!(matches!(roundtrip(&buf, n), Hint::File { path, .. } if path == long));
}

#[test]
fn extents_roundtrip_including_empty_and_max() {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = encode_extents(9, &[], &mut buf).unwrap();
    match roundtrip(&buf, n) {
        Hint::Extents {
            file_id: 9,
            extents,
        } => assert!(extents.is_empty() && extents.iter().count() == 0),
        h => panic!("{h:?}"),
    }
    let max: Vec<Extent> = (0..MAX_EXTENTS as u64)
        .map(|i| Extent {
            file_offset: i * 4096,
            sector: 100 + i * 8,
            len: 4096,
        })
        .collect();
    let n = encode_extents(4, &max, &mut buf).unwrap();
    match roundtrip(&buf, n) {
        Hint::Extents {
            file_id: 4,
            extents,
        } => {
            assert_eq!(extents.len(), MAX_EXTENTS);
            assert_eq!(extents.iter().collect::<Vec<_>>(), max);
            assert_eq!(extents.get(5), Some(max[5]));
            assert_eq!(extents.get(MAX_EXTENTS), None);
            assert_eq!(extents.total_len(), 4096 * MAX_EXTENTS as u64);
            assert_eq!(extents.into_iter().len(), MAX_EXTENTS);
        }
        h => panic!("{h:?}"),
    }
    // The largest legal values.
    let edge = [Extent {
        file_offset: u64::MAX - 1,
        sector: u64::MAX / 512 - 1,
        len: 1,
    }];
    let n = encode_extents(1, &edge, &mut buf).unwrap();
    assert!(
        matches!(roundtrip(&buf, n), Hint::Extents { extents, .. } if extents.get(0) == Some(edge[0]))
    );
}

#[test]
fn size_schema_forget_roundtrip() {
    let mut buf = vec![0u8; MAX_MESSAGE];
    for (size, exists) in [(0, false), (0, true), (u64::MAX, true)] {
        let n = encode_size(2, size, exists, &mut buf).unwrap();
        assert_eq!(
            roundtrip(&buf, n),
            Hint::Size {
                file_id: 2,
                size,
                exists
            }
        );
    }
    for text in ["", "t=a,b;u=c", "/records:id", &"s".repeat(MAX_SCHEMA)] {
        let n = encode_schema(3, text, &mut buf).unwrap();
        assert_eq!(roundtrip(&buf, n), Hint::Schema { file_id: 3, text });
    }
    let n = encode_forget(u32::MAX, &mut buf).unwrap();
    assert_eq!(roundtrip(&buf, n), Hint::Forget { file_id: u32::MAX });
}

#[test]
fn wire_bytes_are_pinned() {
    // Forget(0x01020304): the documented layout, byte for byte.
    let mut buf = [0u8; 16];
    let n = encode_forget(0x0102_0304, &mut buf).unwrap();
    let body = [b'V', b'H', 1, 5, 4, 0, 0, 0, 4, 3, 2, 1];
    assert_eq!(&buf[..12], &body);
    assert_eq!(&buf[12..16], &crc32fast::hash(&body).to_le_bytes());
    assert_eq!(n, 16);
    // Size: file_id, size u64, exists u8.
    let n = encode_size(1, 0x10, true, &mut buf[..]).unwrap_err();
    assert_eq!(n, EncodeError::BufferTooSmall { need: 25 });
}

#[test]
fn decode_takes_one_message_from_a_stream() {
    let s = common::sample_stream();
    let all = common::decode_all(&s);
    assert_eq!(all.len(), common::SAMPLE_COUNT);
    assert!(all[0].contains("/data/app.db"));
}

#[test]
fn encode_errors() {
    let mut small = [0u8; 20];
    let mut big = vec![0u8; MAX_MESSAGE];
    assert_eq!(
        encode_file(1, 1, Format::Json, Role::Main, "/a/long/path", &mut small),
        Err(EncodeError::BufferTooSmall {
            need: 8 + 10 + 12 + 4
        })
    );
    assert_eq!(
        encode_forget(1, &mut [0u8; 15]),
        Err(EncodeError::BufferTooSmall { need: 16 })
    );
    let long = "p".repeat(MAX_PATH + 1);
    assert_eq!(
        encode_file(1, 1, Format::Json, Role::Main, &long, &mut big),
        Err(EncodeError::TooLong("path"))
    );
    assert_eq!(
        encode_file(1, 1, Format::Json, Role::Main, "", &mut big),
        Err(EncodeError::Invalid("empty path"))
    );
    let schema = "s".repeat(MAX_SCHEMA + 1);
    assert_eq!(
        encode_schema(1, &schema, &mut big),
        Err(EncodeError::TooLong("schema"))
    );
    let e = Extent {
        file_offset: 0,
        sector: 0,
        len: 1,
    };
    let many = vec![e; MAX_EXTENTS + 1];
    assert_eq!(
        encode_extents(1, &many, &mut big),
        Err(EncodeError::TooLong("extents"))
    );
    for bad in [
        Extent { len: 0, ..e },
        Extent {
            file_offset: u64::MAX,
            ..e
        },
        Extent {
            sector: u64::MAX / 512 + 1,
            ..e
        },
        Extent {
            sector: u64::MAX / 512,
            len: 512,
            ..e
        },
    ] {
        assert!(
            matches!(
                encode_extents(1, &[bad], &mut big),
                Err(EncodeError::Invalid(_))
            ),
            "{bad:?}"
        );
    }
    assert!(matches!(
        encode_size(1, 5, false, &mut big),
        Err(EncodeError::Invalid(_))
    ));
    // Errors display as one clear line.
    let text = format!("{}", EncodeError::BufferTooSmall { need: 9 });
    assert_eq!(text, "hint encode buffer too small: 9 bytes needed");
}

#[test]
fn format_and_role_names() {
    for f in [Format::Sqlite, Format::Json, Format::Kv, Format::LevelDb] {
        assert_eq!(Format::from_name(f.name()), Some(f));
        assert_eq!(Format::from_u8(f as u8), Some(f));
        assert_eq!(f.to_string(), f.name());
    }
    for r in [Role::Main, Role::Journal, Role::Wal, Role::Part] {
        assert_eq!(Role::from_u8(r as u8), Some(r));
    }
    assert_eq!(
        (Format::from_u8(0), Format::from_u8(5), Role::from_u8(5)),
        (None, None, None)
    );
    assert_eq!(Format::from_name("SQLITE"), None);
}
