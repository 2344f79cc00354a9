//! Agentless mapping on ext4 images made by `mke2fs -d` (no root, no
//! mount): the map must name exactly the blocks holding each file, a tap
//! watching the files must decode them with no hint from a guest, and bad
//! disks (not ext4, damaged) must be reported without a panic.
//!
//! Needs `mke2fs` (e2fsprogs; `.ci/run` installs it): without it each test
//! prints why and checks nothing.
mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use changelog::log::BarrierKind;
use changelog::recording::RecordDir;
use common::rng::Rng;
use hint_proto::{Format as WireFormat, Role};
use introspection::fsmap::{map_ext4, parse_watch, MapError};
use introspection::lift::SemanticEvent;
use introspection::BlockTap;

fn have_mke2fs() -> bool {
    let ok = Command::new("mke2fs").arg("-V").output().is_ok();
    if !ok {
        eprintln!("SKIPPED: mke2fs (e2fsprogs) is not installed");
    }
    ok
}

/// An ext4 image of `mib` MiB holding the tree at `root`.
fn mke2fs(root: &Path, img: &Path, mib: u64) {
    let out = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(root)
        .arg(img)
        .arg(format!("{mib}M"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory tree with an SQLite database of `rows` rows, a JSON
/// document and a text file under /var/lib/app.
fn tree(dir: &Path, rows: u32) -> PathBuf {
    let root = dir.join("root");
    let app = root.join("var/lib/app");
    std::fs::create_dir_all(&app).unwrap();
    let db = rusqlite::Connection::open(app.join("app.db")).unwrap();
    db.execute_batch("create table items(id integer primary key, name text)")
        .unwrap();
    for i in 1..=rows {
        db.execute(
            "insert into items values (?1, ?2)",
            rusqlite::params![i, format!("item-{i}").repeat(20)],
        )
        .unwrap();
    }
    drop(db);
    std::fs::write(app.join("doc.json"), r#"{"rows":[{"id":1}]}"#).unwrap();
    std::fs::write(app.join("notes.txt"), "not a database\n").unwrap();
    root
}

fn read_mapped(img: &File, extents: &[(u64, u64, u64)], size: u64) -> Vec<u8> {
    let mut out = vec![0u8; size as usize];
    for &(file_off, disk, len) in extents {
        let len = len.min(size.saturating_sub(file_off));
        img.read_exact_at(&mut out[file_off as usize..(file_off + len) as usize], disk)
            .unwrap();
    }
    out
}

#[test]
fn the_map_of_each_watched_file_holds_exactly_its_bytes() {
    if !have_mke2fs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 2000);
    let img = dir.path().join("fs.img");
    mke2fs(&root, &img, 32);
    let file = File::open(&img).unwrap();
    let watches = [
        parse_watch("/var/lib/app/*:auto").unwrap(),
        parse_watch("/var/lib/app/doc.json:json").unwrap(),
        parse_watch("/var/lib/nothing/*.db:sqlite").unwrap(),
    ];
    let mapped = map_ext4(&file, 32 << 20, &watches).unwrap();
    let paths: Vec<(&str, Role, bool)> = mapped
        .iter()
        .map(|m| (m.path.as_str(), m.role, m.exists))
        .collect();
    // The database by its header (the text file is not one), its absent
    // siblings, and the JSON file by name.
    assert_eq!(
        paths,
        [
            ("/var/lib/app/app.db", Role::Main, true),
            ("/var/lib/app/app.db-journal", Role::Journal, false),
            ("/var/lib/app/app.db-wal", Role::Wal, false),
            ("/var/lib/app/doc.json", Role::Main, true),
        ]
    );
    for m in mapped.iter().filter(|m| m.exists) {
        let host = root.join(m.path.trim_start_matches('/'));
        let want = std::fs::read(&host).unwrap();
        assert_eq!(m.size, want.len() as u64, "{}", m.path);
        assert_eq!(read_mapped(&file, &m.extents, m.size), want, "{}", m.path);
    }
    assert_eq!(mapped[0].format, WireFormat::Sqlite);
    assert_eq!(mapped[3].format, WireFormat::Json);
}

#[test]
fn a_tap_watching_an_ext4_disk_decodes_its_database_without_hints() {
    if !have_mke2fs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 50);
    let img = dir.path().join("fs.img");
    mke2fs(&root, &img, 16);
    let rec = RecordDir::new(dir.path().join("rec"));
    let (mut tap, _) = BlockTap::open(&rec, "vm", &img).unwrap();
    tap.set_watches(vec![parse_watch("/var/lib/app/*.db:sqlite").unwrap()]);
    tap.barrier(BarrierKind::Flush).unwrap();
    let stats = tap.close().unwrap();
    assert_eq!((stats.mappings, stats.map_failures), (1, 0));
    let events = semantic_events(&rec);
    let inserts = events
        .iter()
        .filter(|e| matches!(e, SemanticEvent::Change(c) if c.collection == "items"))
        .count();
    assert_eq!(inserts, 50, "{events:?}");
    assert!(events
        .iter()
        .all(|e| matches!(e, SemanticEvent::Change(c) if c.file == "/var/lib/app/app.db")));
}

fn semantic_events(rec: &RecordDir) -> Vec<SemanticEvent> {
    let reader = changelog::log::LogReader::open(rec.log_dir("vm")).unwrap();
    let mut out = Vec::new();
    for r in reader.iter().unwrap() {
        if let changelog::log::RecordKind::Semantic { json } = r.unwrap().kind {
            out.push(serde_json::from_str(&json).unwrap());
        }
    }
    out
}

#[test]
fn a_disk_without_ext4_is_an_error_not_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    let img = dir.path().join("zero.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let watches = [parse_watch("/a/*.db:sqlite").unwrap()];
    let err = map_ext4(&File::open(&img).unwrap(), 1 << 20, &watches).unwrap_err();
    assert!(matches!(err, MapError::NotExt4(_)), "{err}");
    // A tap on it counts the failure at every barrier after writes and
    // goes on recording blocks.
    let rec = RecordDir::new(dir.path().join("rec"));
    let (mut tap, _) = BlockTap::open(&rec, "vm", &img).unwrap();
    tap.set_watches(watches.to_vec());
    for i in 0..3u64 {
        tap.record_write(i * 4096, [7u8; 4096]).unwrap();
        tap.barrier(BarrierKind::Flush).unwrap();
    }
    let stats = tap.close().unwrap();
    assert_eq!(
        (stats.map_failures, stats.mappings, stats.blocks),
        (3, 0, 3)
    );
}

/// Damage anywhere in the metadata (superblock, group descriptors, inode
/// table, directories, journal): the mapper answers an error or a map that
/// stays inside the disk, and never panics.
#[test]
fn damaged_ext4_never_panics_and_maps_stay_inside_the_disk() {
    if !have_mke2fs() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = tree(dir.path(), 300);
    let clean = dir.path().join("clean.img");
    mke2fs(&root, &clean, 8);
    let pristine = std::fs::read(&clean).unwrap();
    let disk = pristine.len() as u64;
    let watches = [parse_watch("/var/lib/app/*:auto").unwrap()];
    let mut rng = Rng::new(14);
    let img = dir.path().join("damaged.img");
    let (mut errors, mut maps) = (0, 0);
    for round in 0..60 {
        let mut bytes = pristine.clone();
        // The first 2 MiB hold the metadata of an 8 MiB image.
        for _ in 0..1 + round % 8 {
            let at = rng.below(2 << 20) as usize;
            let n = 1 + rng.below(64) as usize;
            let junk = rng.bytes(n);
            bytes[at..at + n].copy_from_slice(&junk);
        }
        std::fs::write(&img, &bytes).unwrap();
        match map_ext4(&File::open(&img).unwrap(), disk, &watches) {
            Err(_) => errors += 1,
            Ok(files) => {
                maps += 1;
                for f in files {
                    for (_, at, len) in f.extents {
                        assert!(at + len <= disk, "{}: extent past the disk", f.path);
                    }
                }
            }
        }
    }
    eprintln!("60 damaged images: {errors} errors, {maps} maps");
}
