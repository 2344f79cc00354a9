//! The LevelDB `MANIFEST-NNNNNN` file: which table files are live.
//!
//! # Format (google/leveldb doc/impl.md, db/version_edit.cc)
//!
//! The MANIFEST is a log-format file (see `log.rs`) whose records are
//! version edits; replaying them in order gives the current version. The
//! file `CURRENT` holds the name of the current MANIFEST and a newline.
//!
//! ```text
//! edit  := field*
//! field := 1 comparator: varstring
//!        | 2 log number: varint64      (older logs are obsolete)
//!        | 3 next file number: varint64
//!        | 4 last sequence: varint64
//!        | 5 compact pointer: level varint32, internal key varstring
//!        | 6 deleted file: level varint32, file number varint64
//!        | 7 new file: level varint32, number varint64, size varint64,
//!                      smallest internal key varstring, largest varstring
//!        | 9 prev log number: varint64
//! ```
//!
//! (Tags are varint32; 8 was a large-value reference, never written.)

use std::collections::BTreeMap;

use crate::decode::DecodeError;

use super::coding::{length_prefixed, varint32, varint64};
use super::log::LogReader;

/// Levels LevelDB uses.
pub const NUM_LEVELS: u32 = 7;
/// The only key order this decoder knows (its state does not depend on
/// order, but another comparator means another application's format).
pub const BYTEWISE: &[u8] = b"leveldb.BytewiseComparator";

/// The version a MANIFEST describes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Manifest {
    pub comparator: Option<Vec<u8>>,
    /// Logs numbered below this hold nothing the tables lack.
    pub log_number: u64,
    /// A log still needed from before a compaction (0: none).
    pub prev_log_number: u64,
    pub next_file: u64,
    pub last_sequence: u64,
    /// Live table files: number -> (level, size in bytes).
    pub files: BTreeMap<u64, (u32, u64)>,
}

/// Replays the version edits of a MANIFEST file.
pub fn parse(data: &[u8]) -> Result<Manifest, DecodeError> {
    let mut m = Manifest::default();
    for rec in LogReader::new(data) {
        let rec = rec.map_err(|e| e.context("MANIFEST"))?;
        apply_edit(&mut m, &rec.data).map_err(|why| {
            DecodeError::new(format!(
                "leveldb MANIFEST: version edit at offset {}: {why}",
                rec.offset
            ))
        })?;
    }
    Ok(m)
}

fn apply_edit(m: &mut Manifest, e: &[u8]) -> Result<(), &'static str> {
    let mut at = 0;
    let level = |at: &mut usize| match varint32(e, at) {
        Some(l) if l < NUM_LEVELS => Ok(l),
        Some(_) => Err("level out of range"),
        None => Err("truncated level"),
    };
    while at < e.len() {
        let tag = varint32(e, &mut at).ok_or("truncated tag")?;
        let num = |at: &mut usize| varint64(e, at).ok_or("truncated number");
        match tag {
            1 => {
                let c = length_prefixed(e, &mut at).ok_or("truncated comparator")?;
                if c != BYTEWISE {
                    return Err("not the bytewise comparator");
                }
                m.comparator = Some(c.to_vec());
            }
            2 => m.log_number = num(&mut at)?,
            3 => m.next_file = num(&mut at)?,
            4 => m.last_sequence = num(&mut at)?,
            5 => {
                level(&mut at)?;
                length_prefixed(e, &mut at).ok_or("truncated compact pointer")?;
            }
            6 => {
                level(&mut at)?;
                let n = num(&mut at)?;
                m.files.remove(&n);
            }
            7 => {
                let l = level(&mut at)?;
                let n = num(&mut at)?;
                let size = num(&mut at)?;
                length_prefixed(e, &mut at).ok_or("truncated smallest key")?;
                length_prefixed(e, &mut at).ok_or("truncated largest key")?;
                m.files.insert(n, (l, size));
            }
            9 => m.prev_log_number = num(&mut at)?,
            _ => return Err("unknown field tag"),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::leveldb::coding::put_varint;
    use crate::decode::leveldb::log::append_record;

    #[test]
    fn replays_edits() {
        let mut e1 = Vec::new();
        e1.push(1);
        put_varint(&mut e1, BYTEWISE.len() as u64);
        e1.extend_from_slice(BYTEWISE);
        for (tag, v) in [(2u64, 3u64), (3, 9), (4, 100)] {
            put_varint(&mut e1, tag);
            put_varint(&mut e1, v);
        }
        for n in [5u64, 6] {
            e1.extend_from_slice(&[7, 0]);
            put_varint(&mut e1, n);
            e1.extend_from_slice(&[200, 1, 1, b'a', 1, b'z']);
        }
        let e2 = [6u8, 0, 5];
        let mut file = Vec::new();
        append_record(&mut file, &e1);
        append_record(&mut file, &e2);
        let m = parse(&file).unwrap();
        assert_eq!((m.log_number, m.next_file, m.last_sequence), (3, 9, 100));
        assert_eq!(m.files.keys().copied().collect::<Vec<_>>(), [6]);
        assert_eq!(m.files[&6], (0, 200));
        let mut bad = file.clone();
        let mut e3 = Vec::new();
        append_record(&mut e3, &[7, 9]);
        bad.extend_from_slice(&e3);
        assert!(parse(&bad)
            .unwrap_err()
            .reason
            .contains("level out of range"));
    }
}
