//! Recording that fails at run time: the store's disk fills up. The guest
//! gets I/O errors, `vmm run` exits 122, the log stays verifiable, and once
//! there is space again the next recording picks up and replays exactly.
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// A tmpfs mounted for one test, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (as `mount -o size=` takes it) at `dir`, or
    /// says why it cannot (not root, no mount).
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        // SAFETY: geteuid has no arguments and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Err("not running as root".into());
        }
        std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !out.status.success() {
            return Err(format!("mount failed: {}", stderr_of(&out)));
        }
        Ok(Tmpfs(dir.to_path_buf()))
    }

    fn resize(&self, size: &str) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.0)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", stderr_of(&out));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn run(disk: &Path, rec: &Path, w: &BlkWrites) -> std::process::Output {
    vmm(&[
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--vm-id",
        "vm0",
        "--cmdline",
        &w.cmdline(),
    ])
}

fn verify_ok(rec: &Path) {
    let out = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).starts_with("vm0: OK: "), "{}", stdout(&out));
}

#[test]
fn a_full_store_fails_the_recording_and_the_log_stays_replayable() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let fs = match Tmpfs::mount(&rec, "3m") {
        Ok(fs) => fs,
        Err(why) => {
            println!("SKIPPED a_full_store_fails_the_recording...: needs a tmpfs mount ({why})");
            return;
        }
    };
    // The disk image lives outside the small filesystem; only the record
    // directory (store and log) fills up. Random content: nothing dedups
    // or compresses, so about 5 MiB of writes cannot fit in 3 MiB.
    let disk = blank_disk(dir.path(), "disk.img", 16);
    let w = BlkWrites {
        seed: 77,
        writes: 150,
        max_blocks: 16,
        flush_every: 4,
        dup_every: 0,
    };
    let out = run(&disk, &rec, &w);
    let (out_text, err_text) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(122), "{out_text}{err_text}");
    // The guest saw the I/O error (its workload says which request failed).
    assert!(
        out_text.contains("blk-writes: write") || out_text.contains("blk-writes: flush failed"),
        "{out_text}"
    );
    assert!(out_text.contains("failed"), "{out_text}");
    // One line says what failed and where the log ends, and the exit error
    // repeats it; nothing else is reported at error level.
    let lines: Vec<&str> = err_text
        .lines()
        .filter(|l| l.contains("recording failed"))
        .collect();
    assert_eq!(lines.len(), 2, "{err_text}");
    for line in &lines {
        assert!(line.contains("No space left on device"), "{err_text}");
        assert!(line.contains("the guest now gets I/O errors"), "{err_text}");
        assert!(line.contains("the log ends at barrier seq "), "{err_text}");
    }
    assert!(
        lines[1].starts_with("error: recording failed: store: "),
        "{err_text}"
    );
    // What the log holds is whole and every block it names is stored.
    verify_ok(&rec);

    // Room again: the next recording rebases what the failed run left on
    // the image, records, and the log replays to the disk byte for byte.
    fs.resize("64m");
    let again = BlkWrites {
        seed: 78,
        writes: 40,
        ..w
    };
    let out = run(&disk, &rec, &again);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("as a new base"),
        "the image differs from the failed log: {}",
        stderr(&out)
    );
    verify_ok(&rec);
    let replayed = dir.path().join("replayed.img");
    let out = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        replayed.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(
        std::fs::read(&replayed).unwrap() == std::fs::read(&disk).unwrap(),
        "the replayed disk differs from the recorded one"
    );
}
