//! What agentless mapping costs at a barrier, against reading the mapped
//! file, in one run: `cargo bench -p introspection --bench fsmap`.
//!
//! An ext4 image (`mke2fs -d`, 512 MiB) holds an SQLite database of about
//! 16 MiB among 200 other files. Timed, best of 9: the baseline, reading
//! the database's bytes from the image at its extents (what the lifter
//! does at every barrier that touched it, page cache warm), then
//! `fsmap::map_ext4` of `/var/lib/app/*.db:sqlite` (mount in memory with
//! the journal replayed, directory read, extents of the database and its
//! siblings), which runs at every barrier after writes. Prints both and
//! their ratio. Without mke2fs it says so and measures nothing.
mod common;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::process::Command;

use common::best;
use introspection::fsmap::{map_ext4, parse_watch};

fn main() {
    if Command::new("mke2fs").arg("-V").output().is_err() {
        println!("fsmap: mke2fs (e2fsprogs) is not installed; nothing measured");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let app = dir.path().join("root/var/lib/app");
    std::fs::create_dir_all(&app).unwrap();
    for i in 0..200 {
        std::fs::write(app.join(format!("file{i}.txt")), vec![b'x'; 1000 + i * 37]).unwrap();
    }
    let db = rusqlite::Connection::open(app.join("app.db")).unwrap();
    db.execute_batch("create table t(id integer primary key, v blob)")
        .unwrap();
    for i in 0..4000 {
        db.execute(
            "insert into t values (?1, ?2)",
            rusqlite::params![i, vec![7u8; 4000]],
        )
        .unwrap();
    }
    drop(db);
    let img = dir.path().join("fs.img");
    let ok = Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
        .arg(dir.path().join("root"))
        .arg(&img)
        .arg("512M")
        .status()
        .unwrap()
        .success();
    assert!(ok, "mke2fs failed");
    let file = File::open(&img).unwrap();
    let disk = file.metadata().unwrap().len();
    let watches = [parse_watch("/var/lib/app/*.db:sqlite").unwrap()];
    let mapped = map_ext4(&file, disk, &watches).unwrap();
    let main = &mapped[0];
    let mut buf = vec![0u8; main.size as usize];
    let read = best(9, || {
        for &(off, at, len) in &main.extents {
            let len = len.min(main.size - off) as usize;
            file.read_exact_at(&mut buf[off as usize..off as usize + len], at)
                .unwrap();
        }
    });
    let map = best(9, || {
        std::hint::black_box(map_ext4(&file, disk, &watches).unwrap());
    });
    println!(
        "fsmap: {:.1} MiB database in {} extents on a 512 MiB ext4 image",
        main.size as f64 / (1 << 20) as f64,
        main.extents.len()
    );
    println!(
        "  read the file (baseline): {:>8.2} ms",
        read.as_secs_f64() * 1e3
    );
    println!(
        "  map_ext4 at a barrier:    {:>8.2} ms",
        map.as_secs_f64() * 1e3
    );
    println!(
        "  ratio map/read: {:.2}",
        map.as_secs_f64() / read.as_secs_f64()
    );
}
