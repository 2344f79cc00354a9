//! The functions the coverage-guided fuzz targets (`introspection/fuzz`,
//! run with `cargo fuzz`) and the corpus replay test
//! (`tests/fuzz_corpus.rs`) share, so that CI replays every saved fuzz input
//! through exactly the code the fuzzer explored.
//!
//! Each takes arbitrary bytes, decodes them and panics only when a
//! property breaks (a decoder returning `Err` on garbage is the normal
//! outcome). The first byte selects a mode; the rest is split into the
//! decoder's inputs, so that one flat input drives the two-version diffs.
//! Limits are [`FUZZ_LIMITS`]: small enough that no input can run the
//! fuzzer out of memory, large enough never to bind on inputs of a few KiB.

use super::{json, kv, leveldb, sqlite, DecodeLimits, Decoder, SchemaHints};

/// The decode budget of every fuzz run.
pub const FUZZ_LIMITS: DecodeLimits = DecodeLimits { budget_mib: 32 };

/// `data` split at the little-endian `u16` at its start (taken modulo the
/// length of the rest).
fn split_u16(data: &[u8]) -> (&[u8], &[u8]) {
    match data {
        [lo, hi, rest @ ..] => {
            let at = usize::from(u16::from_le_bytes([*lo, *hi])) % (rest.len() + 1);
            rest.split_at(at)
        }
        _ => (&[], data),
    }
}

/// A decoder's diff of a version with itself: no changes.
fn assert_self_diff_empty(d: &dyn Decoder, v: &[u8], hints: &SchemaHints) {
    if let Ok(c) = d.diff_with(v, v, hints, &FUZZ_LIMITS) {
        assert!(c.is_empty(), "a version differs from itself: {c:?}");
    }
}

/// SQLite images. Mode `data[0] % 3`: 0 one image diffed against no file;
/// 1 an image and a WAL (split by [`split_u16`]) applied, then decoded;
/// 2 two images diffed. Bit 2 of `data[0]` adds a key-column hint
/// (`t` keyed by `a`). A decodable image diffs empty against itself.
pub fn sqlite(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let mut hints = SchemaHints::default();
    if flags & 4 != 0 {
        hints.key_columns.insert("t".into(), vec!["a".into()]);
    }
    let d = &sqlite::SqliteDecoder;
    match flags % 3 {
        0 => {
            if d.diff_with(&[], rest, &hints, &FUZZ_LIMITS).is_ok() {
                assert_self_diff_empty(d, rest, &hints);
            }
        }
        1 => {
            let (db, wal) = split_u16(rest);
            if let Ok(img) = sqlite::apply_wal(db, wal) {
                let _ = d.diff_with(&[], &img, &hints, &FUZZ_LIMITS);
            }
        }
        _ => {
            let (old, new) = split_u16(rest);
            let _ = d.diff_with(old, new, &hints, &FUZZ_LIMITS);
        }
    }
}

/// JSON documents: `data[1..]` split at its first `0xFF` byte (never valid
/// in UTF-8) into old and new (no `0xFF`: old is blank). `data[0] % 3`
/// picks the hints: none, records at `/r`, records at `/r` keyed by `k`.
/// Checks: the parser accepts exactly what `serde_json` accepts (except
/// nesting beyond serde_json's 128 levels and numbers beyond a double,
/// which serde_json refuses), and a document diffs empty against itself.
pub fn json(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let (old, new) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (&[][..], rest),
    };
    let mut hints = SchemaHints::default();
    if flags % 3 >= 1 {
        hints.json_record_path = Some("/r".into());
    }
    if flags % 3 == 2 {
        hints.json_record_key = Some("k".into());
    }
    let d = &json::JsonDecoder;
    let ours_old = d.diff_with(old, old, &SchemaHints::default(), &FUZZ_LIMITS);
    let ours_new = d.diff_with(new, new, &SchemaHints::default(), &FUZZ_LIMITS);
    for (doc, ours) in [(old, &ours_old), (new, &ours_new)] {
        if let Ok(c) = ours {
            assert!(c.is_empty(), "a document differs from itself: {c:?}");
        }
        agrees_with_serde_json(doc, ours.is_ok());
    }
    if ours_old.is_ok() && ours_new.is_ok() {
        let _ = d.diff_with(old, new, &hints, &FUZZ_LIMITS);
        assert_self_diff_empty(d, new, &hints);
    }
}

/// Panics when `serde_json` and the decoder disagree on whether `doc`
/// (trailing NULs stripped, blank = no document) is valid JSON.
fn agrees_with_serde_json(doc: &[u8], ours_ok: bool) {
    let end = doc.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    let doc = &doc[..end];
    if doc.iter().all(u8::is_ascii_whitespace) {
        assert!(ours_ok, "a blank document was refused");
        return;
    }
    match serde_json::from_slice::<serde_json::Value>(doc) {
        Ok(_) => assert!(ours_ok, "serde_json accepts what the decoder refuses"),
        Err(e) => {
            let why = e.to_string();
            let serde_only = why.contains("recursion limit") || why.contains("out of range");
            assert!(
                !ours_ok || serde_only,
                "the decoder accepts what serde_json refuses: {why}"
            );
        }
    }
}

/// `VMMKV001` logs: `data[1..]` split by [`split_u16`] into old and new.
/// Checks: the valid prefix of a log re-encodes byte for byte from its
/// parsed records, the diff agrees with the replayed maps (one change per
/// key whose value differs), and a log diffs empty against itself.
pub fn kv(data: &[u8]) {
    let Some((_, rest)) = data.split_first() else {
        return;
    };
    let (old, new) = split_u16(rest);
    let hints = SchemaHints::default();
    for v in [old, new] {
        if let Ok(log) = kv::parse(v) {
            reencodes(v, &log);
        }
        assert_self_diff_empty(&kv::KvDecoder, v, &hints);
    }
    let diff = kv::KvDecoder.diff_with(old, new, &hints, &FUZZ_LIMITS);
    if let (Ok(a), Ok(b)) = (kv::replay(old), kv::replay(new)) {
        let changed = a
            .iter()
            .filter(|(k, v)| b.get(*k) != Some(v))
            .chain(b.iter().filter(|(k, _)| !a.contains_key(*k)))
            .count();
        let diff = diff.expect("both logs parse, so they diff");
        assert_eq!(diff.len(), changed, "diff disagrees with the replayed maps");
    }
}

fn reencodes(data: &[u8], log: &kv::Log<'_>) {
    if log.end == 0 {
        return;
    }
    let mut out = vec![0u8; log.end];
    out[..kv::HEADER_LEN].copy_from_slice(&kv::encode_header(log.generation));
    let mut at = kv::HEADER_LEN;
    for e in &log.entries {
        let n = match *e {
            kv::Entry::Put(k, v) => kv::encode_put(&mut out[at..], k, v),
            kv::Entry::Delete(k) => kv::encode_delete(&mut out[at..], k),
        };
        at += n.expect("a parsed record fits where it was parsed from");
    }
    assert_eq!(at, log.end);
    assert_eq!(out, &data[..log.end], "a parsed log re-encodes differently");
}

/// LevelDB: a bundle of a database directory or a lone write-ahead log.
/// Mode `data[0] % 2`: 0 one input diffed against no database (and, when
/// it decodes, against itself: no changes); 1 two inputs split by
/// [`split_u16`] diffed.
pub fn leveldb(data: &[u8]) {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let d = &leveldb::LevelDbDecoder;
    let hints = SchemaHints::default();
    if flags % 2 == 0 {
        if d.diff_with(&[], rest, &hints, &FUZZ_LIMITS).is_ok() {
            assert_self_diff_empty(d, rest, &hints);
        }
    } else {
        let (old, new) = split_u16(rest);
        let _ = d.diff_with(old, new, &hints, &FUZZ_LIMITS);
    }
}
