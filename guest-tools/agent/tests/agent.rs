//! The agent against real files: FIEMAP on this machine's filesystem, the hint
//! stream it writes, and change detection.
mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use common::{check_covers, decode_stream, fiemap_dir, write_pattern, Msg};
use hint_proto::{Format, Role};
use vmm_agent::{cli::parse_file_spec, fiemap, Agent, AgentError, FileSpec};

fn spec(s: &str) -> FileSpec {
    parse_file_spec(s).unwrap()
}

fn agent(specs: &[FileSpec]) -> Agent<Vec<u8>> {
    Agent::new(Vec::new(), "test-port".into(), specs, None).unwrap()
}

/// Messages written since `from` bytes.
fn since(a: &Agent<Vec<u8>>, from: usize) -> Vec<Msg> {
    decode_stream(&a.output()[from..])
}

fn extents_of(msgs: &[Msg], id: u32) -> Vec<hint_proto::Extent> {
    msgs.iter()
        .find_map(|m| match m {
            Msg::Extents { id: i, extents } if *i == id => Some(extents.clone()),
            _ => None,
        })
        .expect("an Extents hint")
}

#[test]
fn start_describes_every_file() {
    let Some(dir) = fiemap_dir() else { return };
    let db = dir.path().join("app.db");
    let doc = dir.path().join("doc.json");
    write_pattern(&db, 3 * 4096 + 100, 1);
    write_pattern(&doc, 5000, 2);
    let (dbp, docp) = (
        fs::canonicalize(&db).unwrap(),
        fs::canonicalize(&doc).unwrap(),
    );
    let (dbs, docs) = (dbp.to_str().unwrap(), docp.to_str().unwrap());
    let mut a = agent(&[
        spec(&format!("{dbs}:sqlite:users=id")),
        spec(&format!("{docs}:json:/records:id")),
    ]);
    let n = a.poll().unwrap();
    let msgs = decode_stream(a.output());
    assert_eq!(n, msgs.len());
    let file = |id, main, format, role, path: String| Msg::File {
        id,
        main,
        format,
        role,
        path,
    };
    assert_eq!(
        msgs[..6],
        [
            file(1, 1, Format::Sqlite, Role::Main, dbs.into()),
            Msg::Schema {
                id: 1,
                text: "users=id".into()
            },
            file(
                2,
                1,
                Format::Sqlite,
                Role::Journal,
                format!("{dbs}-journal")
            ),
            file(3, 1, Format::Sqlite, Role::Wal, format!("{dbs}-wal")),
            file(4, 4, Format::Json, Role::Main, docs.into()),
            Msg::Schema {
                id: 4,
                text: "/records:id".into()
            },
        ]
    );
    let rest = &msgs[6..];
    let size = 3 * 4096 + 100;
    let total = check_covers(&extents_of(rest, 1), size);
    assert!(total >= size.div_ceil(4096) * 4096, "{total}");
    assert!(rest.contains(&Msg::Size {
        id: 1,
        size,
        exists: true
    }));
    for id in [2, 3] {
        assert!(extents_of(rest, id).is_empty());
        assert!(rest.contains(&Msg::Size {
            id,
            size: 0,
            exists: false
        }));
    }
    check_covers(&extents_of(rest, 4), 5000);
    assert!(rest.contains(&Msg::Size {
        id: 4,
        size: 5000,
        exists: true
    }));
    assert_eq!(rest.len(), 8);
    assert!(a.take_warnings().is_empty());
    // Nothing changed: nothing sent.
    assert_eq!(a.poll().unwrap(), 0);
}

#[test]
fn extents_point_at_the_files_bytes_on_the_disk() {
    let Some(dir) = fiemap_dir() else { return };
    let path = dir.path().join("data.bin");
    let size = 256 * 1024 + 777;
    write_pattern(&path, size, 7);
    let file = fs::File::open(&path).unwrap();
    let dev = fs::metadata(&path).unwrap().dev_id();
    let raw = fiemap::fiemap(&file).unwrap();
    let m = fiemap::classify(&raw, fiemap::device_start_sector(dev).unwrap_or(0));
    assert!(m.unusable.is_empty(), "{:?}", m.unusable);
    check_covers(&m.extents, size as u64);
    // Read the disk itself (root only; a whole-disk filesystem only).
    let sys = format!("/sys/dev/block/{}:{}", libc::major(dev), libc::minor(dev));
    let Some(name) = fs::read_to_string(format!("{sys}/uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_owned))
        })
    else {
        eprintln!("SKIPPED disk check: {sys} unknown");
        return;
    };
    if fs::metadata(format!("{sys}/partition")).is_ok() {
        eprintln!("SKIPPED disk check: /dev/{name} is a partition");
        return;
    }
    let disk = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(format!("/dev/{name}"));
    let disk = match disk {
        Ok(d) => d,
        Err(e) => return eprintln!("SKIPPED disk check: cannot read /dev/{name}: {e}"),
    };
    let want = fs::read(&path).unwrap();
    for e in &m.extents {
        let got = read_direct(&disk, e.sector * 512, e.len as usize);
        let from = e.file_offset as usize;
        let upto = (from + e.len as usize).min(want.len());
        assert_eq!(&got[..upto - from], &want[from..upto], "extent {e:?}");
    }
}

trait DevId {
    fn dev_id(&self) -> u64;
}

impl DevId for fs::Metadata {
    fn dev_id(&self) -> u64 {
        std::os::unix::fs::MetadataExt::dev(self)
    }
}

/// Reads with O_DIRECT (past the device's page cache) into aligned memory.
fn read_direct(disk: &fs::File, offset: u64, len: usize) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    #[repr(C, align(4096))]
    #[derive(Clone, Copy)]
    struct Page([u8; 4096]);
    let mut pages = vec![Page([0; 4096]); len.div_ceil(4096)];
    // SAFETY: `pages` is one contiguous allocation of `pages.len() * 4096` bytes.
    let bytes = unsafe {
        std::slice::from_raw_parts_mut(pages.as_mut_ptr().cast::<u8>(), pages.len() * 4096)
    };
    assert_eq!(offset % 4096, 0, "ext4/xfs extents are block aligned");
    disk.read_exact_at(bytes, offset).unwrap();
    bytes[..len].to_vec()
}

#[test]
fn changes_are_sent_and_only_changes() {
    let Some(dir) = fiemap_dir() else { return };
    let db = dir.path().join("app.db");
    write_pattern(&db, 8192, 1);
    let mut a = agent(&[spec(&format!("{}:sqlite", db.display()))]);
    a.poll().unwrap();
    let mark = a.output().len();
    assert_eq!(a.poll().unwrap(), 0);

    // The database grows: new Extents and Size for it alone.
    let mut f = fs::OpenOptions::new().append(true).open(&db).unwrap();
    f.write_all(&vec![9u8; 100_000]).unwrap();
    drop(f);
    assert_eq!(a.poll().unwrap(), 2);
    let msgs = since(&a, mark);
    let size = 8192 + 100_000;
    assert!(
        matches!(&msgs[0], Msg::Extents { id: 1, extents } if check_covers(extents, size) >= size)
    );
    assert_eq!(
        msgs[1],
        Msg::Size {
            id: 1,
            size,
            exists: true
        }
    );

    // A WAL appears, then goes away.
    let wal = dir.path().join("app.db-wal");
    write_pattern(&wal, 4096 + 32, 3);
    let mark = a.output().len();
    assert_eq!(a.poll().unwrap(), 2);
    let msgs = since(&a, mark);
    assert!(matches!(&msgs[0], Msg::Extents { id: 3, extents } if !extents.is_empty()));
    assert_eq!(
        msgs[1],
        Msg::Size {
            id: 3,
            size: 4096 + 32,
            exists: true
        }
    );
    fs::remove_file(&wal).unwrap();
    let mark = a.output().len();
    assert_eq!(a.poll().unwrap(), 2);
    assert_eq!(
        since(&a, mark),
        [
            Msg::Extents {
                id: 3,
                extents: vec![]
            },
            Msg::Size {
                id: 3,
                size: 0,
                exists: false
            }
        ]
    );

    // Rewritten in place, same size: mapped again, but nothing to say.
    let before = fs::read(&db).unwrap();
    fs::write(&db, vec![5u8; before.len()]).unwrap();
    let _ = a.poll().unwrap();
    let mark = a.output().len();
    assert_eq!(a.poll().unwrap(), 0);
    assert_eq!(a.output().len(), mark);
    // Truncated: a smaller size and fewer blocks.
    fs::File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(1000)
        .unwrap();
    assert!(a.poll().unwrap() >= 1);
    assert!(a.output().ends_with(&size_bytes(1, 1000)));
    assert!(a.take_warnings().is_empty());
}

fn size_bytes(id: u32, size: u64) -> Vec<u8> {
    let mut b = [0u8; 64];
    let n = hint_proto::encode_size(id, size, true, &mut b).unwrap();
    b[..n].to_vec()
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let new = |s: &str| {
        Agent::new(Vec::new(), "p".into(), &[spec(s)], None)
            .err()
            .unwrap()
    };
    let missing = dir.path().join("nope.db");
    let e = new(&format!("{}:sqlite", missing.display()));
    assert!(
        matches!(&e, AgentError::File { source, .. } if source.kind() == std::io::ErrorKind::NotFound),
        "{e}"
    );
    assert!(e.to_string().contains("nope.db"));
    let e = new(&format!("{}:kv", dir.path().display()));
    assert!(matches!(e, AgentError::NotRegular { .. }));
    assert!(e.to_string().ends_with("not a regular file"));
    let twice = dir.path().join("twice.json");
    fs::write(&twice, b"{}").unwrap();
    let specs = [
        spec(&format!("{}:json", twice.display())),
        spec(&format!(
            "{}/../{}/twice.json:kv",
            dir.path().display(),
            dir.path().file_name().unwrap().to_str().unwrap()
        )),
    ];
    let e = Agent::new(Vec::new(), "p".into(), &specs, None)
        .err()
        .unwrap();
    assert!(
        e.to_string().ends_with("twice.json: given more than once"),
        "{e}"
    );
    let deep = dir.path().join("d".repeat(200));
    fs::create_dir(&deep).unwrap();
    let long = deep.join("x".repeat(250 - deep.as_os_str().len().min(249)));
    fs::write(&long, b"x").unwrap();
    assert!(matches!(
        new(&format!("{}:sqlite", long.display())),
        AgentError::PathTooLong { .. }
    ));
}

#[test]
fn tmpfs_has_no_fiemap() {
    let shm = std::path::Path::new("/dev/shm");
    let Ok(dir) = tempfile::tempdir_in(shm) else {
        eprintln!("SKIPPED: no /dev/shm");
        return;
    };
    let f = dir.path().join("a.json");
    fs::write(&f, b"{}").unwrap();
    let mut a = agent(&[spec(&format!("{}:json", f.display()))]);
    match a.poll() {
        Err(e @ AgentError::NoFiemap { .. }) => {
            assert!(e.to_string().contains("does not support FIEMAP"))
        }
        Ok(_) => eprintln!("SKIPPED: /dev/shm answers FIEMAP here (not tmpfs?)"),
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn later_errors_are_warned_once_and_retried() {
    let Some(dir) = fiemap_dir() else { return };
    let db = dir.path().join("app.db");
    write_pattern(&db, 4096, 1);
    let mut a = agent(&[spec(&format!("{}:sqlite", db.display()))]);
    a.poll().unwrap();
    let wal = dir.path().join("app.db-wal");
    fs::create_dir(&wal).unwrap();
    assert_eq!(a.poll().unwrap(), 0);
    let w = a.take_warnings();
    assert_eq!(w.len(), 1);
    assert!(
        w[0].contains("app.db-wal: not a regular file (will retry)"),
        "{w:?}"
    );
    assert_eq!(a.poll().unwrap(), 0);
    assert!(a.take_warnings().is_empty());
    fs::remove_dir(&wal).unwrap();
    write_pattern(&wal, 100, 2);
    assert_eq!(a.poll().unwrap(), 2);
    assert!(a.output().ends_with(&size_bytes(3, 100)));
}
