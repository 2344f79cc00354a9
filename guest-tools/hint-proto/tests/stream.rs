//! The stream parser: arbitrary chunk splits, resynchronisation after garbage
//! and corrupt messages, bounded buffers.
mod common;

use common::{decode_all, sample_stream, Rng, SAMPLE_COUNT};
use hint_proto::*;

type Parser = StreamParser<MAX_MESSAGE>;

/// Feeds `chunks` and collects messages (as Debug text) and errors.
fn run<const N: usize>(
    p: &mut StreamParser<N>,
    chunks: &[&[u8]],
) -> (Vec<String>, Vec<DecodeError>) {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for c in chunks {
        p.feed(c, |m| match m {
            Ok(h) => ok.push(format!("{h:?}")),
            Err(e) => bad.push(e),
        });
    }
    (ok, bad)
}

fn split_random<'a>(rng: &mut Rng, mut b: &'a [u8]) -> Vec<&'a [u8]> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let n = 1 + rng.below(b.len().min(40));
        v.push(&b[..n]);
        b = &b[n..];
    }
    v
}

#[test]
fn every_two_way_split_and_byte_by_byte() {
    let s = sample_stream();
    let want = decode_all(&s);
    assert_eq!(want.len(), SAMPLE_COUNT);
    for cut in 0..=s.len() {
        let mut p = Parser::new();
        let (ok, bad) = run(&mut p, &[&s[..cut], &s[cut..]]);
        assert_eq!((ok, bad), (want.clone(), vec![]), "cut {cut}");
        assert_eq!(p.buffered(), 0);
    }
    let bytes: Vec<&[u8]> = s.chunks(1).collect();
    let mut p = Parser::new();
    assert_eq!(run(&mut p, &bytes), (want, vec![]));
    assert_eq!(
        p.stats(),
        StreamStats {
            messages: SAMPLE_COUNT as u64,
            errors: 0,
            skipped_bytes: 0
        }
    );
}

#[test]
fn random_chunkings_of_a_long_stream() {
    let one = sample_stream();
    let s: Vec<u8> = one.iter().copied().cycle().take(one.len() * 50).collect();
    let want = decode_all(&s);
    let mut rng = Rng::new(1);
    for _ in 0..200 {
        let mut p = Parser::new();
        assert_eq!(
            run(&mut p, &split_random(&mut rng, &s)),
            (want.clone(), vec![])
        );
    }
}

#[test]
fn resync_after_garbage_before_between_and_after() {
    let s = sample_stream();
    let want = decode_all(&s);
    let (first, _) = decode(&s).unwrap();
    let n1 = first.encode(&mut [0u8; 512]).unwrap();
    // Garbage with magic look-alikes: a lone V, VV, VH + bad version, VH with a bad CRC.
    let garbage: &[u8] =
        b"hello V VV VH\x07 VH\x01\x05\x04\x00\x00\x00\x01\x02\x03\x04\xde\xad\xbe\xef junk V";
    let mut stream = garbage.to_vec();
    stream.extend_from_slice(&s[..n1]);
    stream.extend_from_slice(garbage);
    stream.extend_from_slice(&s[n1..]);
    stream.extend_from_slice(b"trailing V");
    let mut rng = Rng::new(2);
    let mut first_errors = None;
    for round in 0..300 {
        let mut p = Parser::new();
        let chunks = if round == 0 {
            vec![&stream[..]]
        } else {
            split_random(&mut rng, &stream)
        };
        let (ok, bad) = run(&mut p, &chunks);
        assert_eq!(ok, want, "round {round}");
        assert!(!bad.is_empty());
        // A run of garbage is one error however it is chunked.
        assert_eq!(
            first_errors.get_or_insert_with(|| bad.clone()),
            &bad,
            "round {round}"
        );
        assert!(bad.iter().all(|e| matches!(
            e,
            DecodeError::BadMagic | DecodeError::UnsupportedVersion(_) | DecodeError::BadCrc
        )));
        // Only the trailing lone 'V' (a possible magic start) is still held.
        assert_eq!(p.buffered(), 1);
        assert_eq!(p.resync(), 1);
        assert_eq!(p.buffered(), 0);
        let st = p.stats();
        assert_eq!(st.messages, SAMPLE_COUNT as u64);
        assert_eq!(
            st.skipped_bytes as usize,
            2 * garbage.len() + b"trailing V".len()
        );
    }
}

#[test]
fn corrupt_message_loses_only_itself() {
    let s = sample_stream();
    let want = decode_all(&s);
    let (_, n1) = decode(&s).unwrap();
    let mut bad = s.clone();
    bad[n1 + 10] ^= 0x40; // inside the second message's payload
    let mut p = Parser::new();
    let (ok, errs) = run(&mut p, &[&bad]);
    assert_eq!(errs, vec![DecodeError::BadCrc]);
    assert_eq!(ok.len(), SAMPLE_COUNT - 1);
    assert_eq!(ok[0], want[0]);
    assert_eq!(ok[1..], want[2..]);
}

#[test]
fn truncated_message_then_valid_ones() {
    // A message cut short (its sender died) followed by whole messages: its
    // length swallows them until enough bytes arrive; the CRC then fails and
    // the parser finds them again.
    let s = sample_stream();
    let want = decode_all(&s);
    let mut buf = [0u8; 64];
    let n = encode_schema(5, "t=a", &mut buf).unwrap();
    let mut stream = buf[..n - 3].to_vec();
    stream.extend_from_slice(&s);
    let mut p = Parser::new();
    let (ok, errs) = run(&mut p, &[&stream]);
    assert_eq!(errs, vec![DecodeError::BadCrc]);
    assert_eq!(ok, want);
    // With an idle stream and a stalled candidate, `resync` gives up on it.
    let mut p = Parser::new();
    let (ok, _) = run(&mut p, &[&buf[..n - 3]]);
    assert!(ok.is_empty() && p.buffered() == n - 3);
    p.resync();
    assert_eq!(p.buffered(), 0);
    assert_eq!(run(&mut p, &[&s]).0, want);
}

#[test]
fn well_framed_bad_messages_are_skipped_whole() {
    // An unknown-kind frame whose payload holds a whole valid message: the
    // inner message must not surface.
    let s = sample_stream();
    let (_, n1) = decode(&s).unwrap();
    let mut frame = vec![b'V', b'H', VERSION, 77];
    frame.extend_from_slice(&(n1 as u32).to_le_bytes());
    frame.extend_from_slice(&s[..n1]);
    let crc = crc32fast::hash(&frame);
    frame.extend_from_slice(&crc.to_le_bytes());
    let mut malformed = vec![0u8; 64];
    let m = encode_forget(1, &mut malformed).unwrap();
    malformed.truncate(m);
    malformed[4] = 5; // payload_len 5 ...
    malformed.insert(12, 0); // ... with an extra byte, CRC recomputed
    let crc = crc32fast::hash(&malformed[..13]);
    malformed[13..17].copy_from_slice(&crc.to_le_bytes());
    let mut stream = frame.clone();
    stream.extend_from_slice(&malformed);
    stream.extend_from_slice(&s[n1..]);
    let mut p = Parser::new();
    let (ok, errs) = run(&mut p, &[&stream]);
    assert_eq!(
        errs,
        vec![
            DecodeError::UnknownKind(77),
            DecodeError::Malformed("forget payload is not 4 bytes")
        ]
    );
    assert_eq!(ok, decode_all(&s[n1..]));
    assert_eq!(
        p.stats().skipped_bytes as usize,
        frame.len() + malformed.len()
    );
}

#[test]
fn small_buffer_reports_big_messages_and_goes_on() {
    let mut buf = vec![0u8; 1024];
    let n = encode_schema(1, &"x".repeat(200), &mut buf).unwrap();
    let mut stream = buf[..n].to_vec();
    let m = encode_forget(9, &mut buf).unwrap();
    stream.extend_from_slice(&buf[..m]);
    let mut p = StreamParser::<64>::new();
    let (ok, errs) = run(&mut p, &[&stream]);
    assert_eq!(errs, vec![DecodeError::TooLarge { len: n - 12 }]);
    assert_eq!(ok, vec![format!("{:?}", Hint::Forget { file_id: 9 })]);
    // push never takes more than the buffer holds.
    let mut p = StreamParser::<16>::new();
    assert_eq!(p.push(&[0u8; 40]), 16);
    assert_eq!(p.push(&[0u8; 1]), 0);
    assert!(matches!(p.next_message(), Some(Err(DecodeError::BadMagic))));
    assert_eq!(p.buffered(), 0);
    p.clear();
}
