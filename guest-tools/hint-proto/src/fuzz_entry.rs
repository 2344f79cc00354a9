//! The one function the coverage-guided fuzz target (`fuzz/`, run with
//! `cargo fuzz`) and the corpus replay test (`tests/fuzz_corpus.rs`) both
//! call, so that CI replays every saved fuzz input through exactly the code
//! the fuzzer explored. It panics when a property breaks; an `Err` from the
//! decoder is a normal outcome for garbage.

use crate::{decode, DecodeError, StreamParser, MAX_MESSAGE};

/// Checks, for arbitrary bytes `data`:
/// - [`decode`] never panics; a decoded message re-encodes to exactly the
///   bytes it was decoded from; `Incomplete { need }` asks for more than
///   was given;
/// - a [`StreamParser`] fed `data` whole and fed it in small chunks (the
///   chunk size taken from the first byte) reports the same messages and
///   the same number of errors, and after `resync` holds nothing.
pub fn hint_stream(data: &[u8]) {
    match decode(data) {
        Ok((hint, n)) => {
            let mut out = [0u8; MAX_MESSAGE];
            let m = hint.encode(&mut out).expect("a decoded hint re-encodes");
            assert_eq!(&out[..m], &data[..n], "re-encoding differs");
        }
        Err(DecodeError::Incomplete { need }) => assert!(need > data.len()),
        Err(_) => {}
    }
    let chunk = data.first().map_or(1, |&b| usize::from(b % 61) + 1);
    let whole = run_stream(data, data.len().max(1));
    let chunked = run_stream(data, chunk);
    assert_eq!(whole, chunked, "chunking changed what the parser reported");
}

/// Feeds `data` in `chunk`-byte pieces, then drains what is held with
/// `resync`. Returns (messages, errors, CRC of the messages' bytes).
fn run_stream(data: &[u8], chunk: usize) -> (u64, u64, u32) {
    let mut p = StreamParser::<MAX_MESSAGE>::new();
    let mut crc = crc32fast::Hasher::new();
    let mut counts = (0u64, 0u64);
    let mut out = [0u8; MAX_MESSAGE];
    let mut on_msg = |m: Result<crate::Hint<'_>, DecodeError>| match m {
        Ok(h) => {
            let n = h.encode(&mut out).expect("a parsed hint re-encodes");
            crc.update(&out[..n]);
            counts.0 += 1;
        }
        Err(_) => counts.1 += 1,
    };
    for piece in data.chunks(chunk) {
        p.feed(piece, &mut on_msg);
    }
    while p.resync() > 0 {
        while let Some(m) = p.next_message() {
            on_msg(m);
        }
    }
    assert_eq!(p.buffered(), 0, "resync left bytes held");
    let stats = p.stats();
    assert_eq!((stats.messages, stats.errors), counts, "stats disagree");
    (counts.0, counts.1, crc.finalize())
}
