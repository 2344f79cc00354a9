//! Shared test helpers: a directory on a filesystem with FIEMAP, and the hint
//! stream decoded into owned values.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use hint_proto::{decode, Extent, Format, Hint, Role};
use tempfile::TempDir;

/// A decoded hint, owned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Msg {
    File {
        id: u32,
        main: u32,
        format: Format,
        role: Role,
        path: String,
    },
    Extents {
        id: u32,
        extents: Vec<Extent>,
    },
    Size {
        id: u32,
        size: u64,
        exists: bool,
    },
    Schema {
        id: u32,
        text: String,
    },
    Forget {
        id: u32,
    },
}

/// Decodes a whole hint stream (it must hold only valid messages).
pub fn decode_stream(mut b: &[u8]) -> Vec<Msg> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let (h, n) = decode(b).expect("the agent writes valid hints");
        v.push(match h {
            Hint::File {
                file_id,
                main_id,
                format,
                role,
                path,
            } => Msg::File {
                id: file_id,
                main: main_id,
                format,
                role,
                path: path.into(),
            },
            Hint::Extents { file_id, extents } => Msg::Extents {
                id: file_id,
                extents: extents.iter().collect(),
            },
            Hint::Size {
                file_id,
                size,
                exists,
            } => Msg::Size {
                id: file_id,
                size,
                exists,
            },
            Hint::Schema { file_id, text } => Msg::Schema {
                id: file_id,
                text: text.into(),
            },
            Hint::Forget { file_id } => Msg::Forget { id: file_id },
        });
        b = &b[n..];
    }
    v
}

/// A temporary directory whose filesystem answers FIEMAP (the system temp
/// dir, else the crate's target dir), or `None` with a message saying why
/// the test is skipped.
pub fn fiemap_dir() -> Option<TempDir> {
    let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target");
    for base in [std::env::temp_dir(), target] {
        let Ok(dir) = tempfile::tempdir_in(&base) else {
            continue;
        };
        let probe = dir.path().join("probe");
        std::fs::write(&probe, vec![1u8; 8192]).unwrap();
        match vmm_agent::fiemap::fiemap(&std::fs::File::open(&probe).unwrap()) {
            Ok(_) => return Some(dir),
            Err(e) => eprintln!("{}: no FIEMAP here ({e}); trying elsewhere", base.display()),
        }
    }
    eprintln!("SKIPPED: no directory with FIEMAP support (tmpfs?): /tmp and target/ both lack it");
    None
}

/// Writes `len` bytes of a pattern that differs per 512-byte block and syncs.
pub fn write_pattern(path: &Path, len: usize, seed: u8) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i / 512) as u8 ^ (i as u8).wrapping_mul(31) ^ seed)
        .collect();
    std::fs::write(path, &data).unwrap();
    std::fs::File::open(path).unwrap().sync_all().unwrap();
}

/// Sum of extent lengths; checks the extents cover [0, size) without gaps.
pub fn check_covers(extents: &[Extent], size: u64) -> u64 {
    let mut sorted = extents.to_vec();
    sorted.sort_by_key(|e| e.file_offset);
    let mut end = 0;
    for e in &sorted {
        assert!(e.file_offset <= end, "gap before {e:?}");
        end = end.max(e.file_offset + e.len);
    }
    assert!(end >= size, "extents end at {end}, file is {size} bytes");
    sorted.iter().map(|e| e.len).sum()
}
