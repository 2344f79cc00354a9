//! The Linux stack for real on this host: `vmm disk serve` exposes an ext4
//! image (made by `mke2fs -d`) through FUSE, the host kernel loop-mounts it
//! and plays the guest's part, Python's sqlite3 writes a database, and the
//! real `vmm-agent` (or no agent: `--watch`) tells the recorder where the
//! file is. `vmm changes` must then show exactly the rows Python wrote.
//!
//! Needs root, /dev/fuse, a free loop device, mke2fs and python3: each
//! test prints why and passes without checking when one is missing (CI
//! runs as root with all of them, `.ci/run` installs e2fsprogs).
mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{changes_json, VMM};

/// Why this host cannot run the stack, if it cannot.
fn missing_prerequisite() -> Option<String> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some("not root (FUSE mounts and loop devices need it)".into());
    }
    if !Path::new("/dev/fuse").exists() {
        return Some("no /dev/fuse".into());
    }
    if !Path::new("/dev/loop-control").exists() {
        return Some("no /dev/loop-control (no loop devices)".into());
    }
    for tool in ["mke2fs", "losetup", "python3"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success());
        if !found {
            return Some(format!("{tool} is not installed"));
        }
    }
    None
}

macro_rules! require_stack {
    () => {
        if let Some(why) = missing_prerequisite() {
            eprintln!("SKIPPED: the Linux stack cannot run here: {why}");
            return;
        }
    };
}

/// The vmm-agent binary of this workspace (built on demand).
fn agent_bin() -> PathBuf {
    let target = Path::new(VMM).parent().expect("target/debug");
    let bin = target.join("vmm-agent");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "vmm-agent"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building vmm-agent failed");
    }
    bin
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().expect("command runs");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A served, loop-mounted ext4 image; torn down on drop whatever happened.
struct Stack {
    dir: tempfile::TempDir,
    serve: Option<Child>,
    loop_dev: Option<String>,
    mounted: bool,
}

struct Stopped {
    /// Holds the record directory (`rec`).
    _dir: tempfile::TempDir,
    rec: PathBuf,
    status: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Stack {
    /// Makes an ext4 image of `mib` MiB from a directory holding
    /// /var/lib/app (`mke2fs -d`), serves it with `serve_args` and mounts it.
    fn start(serve_args: &[&str]) -> Self {
        Self::start_image(serve_args, |dir| {
            let root = dir.join("root");
            std::fs::create_dir_all(root.join("var/lib/app")).unwrap();
            std::fs::write(root.join("var/lib/app/README"), "app data\n").unwrap();
            let img = dir.join("fs.img");
            run(Command::new("mke2fs")
                .args(["-q", "-F", "-t", "ext4", "-b", "4096", "-d"])
                .arg(&root)
                .arg(&img)
                .arg("64M"));
            (img, true)
        })
    }

    fn start_image(serve_args: &[&str], make: impl FnOnce(&Path) -> (PathBuf, bool)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (img, mount) = make(dir.path());
        let at = dir.path().join("served");
        std::fs::create_dir_all(&at).unwrap();
        std::fs::create_dir_all(dir.path().join("fs")).unwrap();
        let serve = Command::new(VMM)
            .args(["disk", "serve", "--disk"])
            .arg(&img)
            .arg("--record")
            .arg(dir.path().join("rec"))
            .arg("--at")
            .arg(&at)
            .args(serve_args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stack = Stack {
            dir,
            serve: Some(serve),
            loop_dev: None,
            mounted: false,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !at.join("disk").exists() {
            assert!(Instant::now() < deadline, "vmm disk serve did not mount");
            std::thread::sleep(Duration::from_millis(50));
        }
        let dev = run(Command::new("losetup")
            .args(["-f", "--show"])
            .arg(at.join("disk")));
        stack.loop_dev = Some(dev.clone());
        if mount {
            run(Command::new("mount").arg(&dev).arg(stack.fs()));
            stack.mounted = true;
        }
        stack
    }

    fn fs(&self) -> PathBuf {
        self.dir.path().join("fs")
    }

    fn rec(&self) -> PathBuf {
        self.dir.path().join("rec")
    }

    fn db(&self) -> PathBuf {
        self.fs().join("var/lib/app/app.db")
    }

    /// Runs Python with `DB` bound to the database's host path.
    fn python(&self, code: &str) {
        let script = format!(
            "import sqlite3, os\nDB = {:?}\n{code}\n",
            self.db().to_str().unwrap()
        );
        run(Command::new("python3").args(["-c", &script]));
    }

    /// `vmm-agent --once` for the database, hints to the served stream.
    fn agent(&self, extra: &[&str]) {
        let spec = format!("{}:sqlite", self.db().display());
        run(Command::new(agent_bin())
            .arg("--port")
            .arg(self.dir.path().join("served/hints"))
            .args(["--file", &spec, "--once"])
            .args(extra));
    }

    /// Unmounts, detaches, stops the server with SIGINT.
    fn stop(mut self) -> Stopped {
        self.teardown_mounts();
        let child = self.serve.take().expect("running");
        // SAFETY: a plain kill of our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        let out = child.wait_with_output().unwrap();
        let rec = self.rec();
        Stopped {
            _dir: std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap()),
            rec,
            status: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn teardown_mounts(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(self.fs()).status();
            self.mounted = false;
        }
        if let Some(dev) = self.loop_dev.take() {
            let _ = Command::new("losetup").args(["-d", &dev]).status();
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.teardown_mounts();
        if let Some(mut child) = self.serve.take() {
            // SAFETY: a plain kill of our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
            let _ = child.wait();
        }
    }
}

/// (op, table, key) of every change event; panics on decode errors.
fn rows(rec: &Path) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for e in changes_json(rec, &[]) {
        assert_eq!(e["event"], "change", "unexpected event {e}");
        if e["collection"] == "sqlite_schema" {
            continue;
        }
        out.push((
            e["op"].as_str().unwrap().to_string(),
            e["collection"].as_str().unwrap().to_string(),
            e["key"].as_str().unwrap().to_string(),
        ));
    }
    out.sort();
    out
}

fn expected(
    inserted: impl IntoIterator<Item = u32>,
    updated: &[u32],
    deleted: &[u32],
) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = inserted
        .into_iter()
        .map(|k| ("insert".to_string(), "items".to_string(), k.to_string()))
        .chain(
            updated
                .iter()
                .map(|k| ("update".into(), "items".into(), k.to_string())),
        )
        .chain(
            deleted
                .iter()
                .map(|k| ("delete".into(), "items".into(), k.to_string())),
        )
        .collect();
    out.sort();
    out
}

const CREATE: &str = "c = sqlite3.connect(DB)\nc.execute('create table items(id integer primary key, name text, qty int)')\nc.commit()";
const INSERT: &str = "c = sqlite3.connect(DB)\nc.executemany('insert into items values(?,?,?)', [(i, 'item-%d' % i * 8, i) for i in range(1, 301)])\nc.commit()";
const CHANGE: &str = "c = sqlite3.connect(DB)\nc.execute('update items set qty = 99 where id <= 5')\nc.execute('delete from items where id between 10 and 12')\nc.execute(\"insert into items values (1000, 'late', 1)\")\nc.commit()";

fn expected_rows() -> Vec<(String, String, String)> {
    expected((1..=300).chain([1000]), &[1, 2, 3, 4, 5], &[10, 11, 12])
}

#[test]
fn agent_hints_from_real_fiemap_decode_pythons_rows() {
    require_stack!();
    let stack = Stack::start(&[]);
    stack.python(CREATE);
    stack.agent(&["--sector-offset", "0"]);
    stack.python(INSERT);
    stack.agent(&["--sector-offset", "0"]);
    stack.python(CHANGE);
    stack.agent(&["--sector-offset", "0"]);
    let stopped = stop_checked(stack);
    assert!(stopped.stderr.contains("serving"), "{}", stopped.stderr);
    assert_eq!(rows(&stopped.rec), expected_rows());
}

/// Stops the stack and checks the clean SIGINT exit.
fn stop_checked(stack: Stack) -> Stopped {
    let stopped = stack.stop();
    assert_eq!(
        stopped.status,
        Some(130),
        "{}\n{}",
        stopped.stdout,
        stopped.stderr
    );
    assert!(
        stopped.stdout.contains("stopped on SIGINT"),
        "{}",
        stopped.stdout
    );
    stopped
}

#[test]
fn watched_files_decode_without_an_agent() {
    require_stack!();
    let stack = Stack::start(&["--watch", "/var/lib/app/*.db:sqlite"]);
    stack.python(CREATE);
    stack.python(INSERT);
    stack.python(CHANGE);
    let stopped = stop_checked(stack);
    assert_eq!(rows(&stopped.rec), expected_rows());
    assert!(stopped.stdout.contains("(0 failed)"), "{}", stopped.stdout);
}

/// The database is replaced whole (written to a temporary file, renamed
/// over): each version lives in new blocks. Every version must be decoded
/// from its own block map, so the changes are exactly the differences
/// between consecutive versions, with no decode error and no phantom row.
#[test]
fn a_rewritten_file_is_remapped_never_decoded_from_a_mix() {
    require_stack!();
    let stack = Stack::start(&["--watch", "/var/lib/app/*.db:auto"]);
    let mut expected_rows = Vec::new();
    let mut before: BTreeSet<u32> = BTreeSet::new();
    for (round, (lo, hi)) in [(1u32, 200u32), (101, 400), (350, 500)]
        .into_iter()
        .enumerate()
    {
        stack.python(&format!(
            "tmp = DB + '.new'\n\
             c = sqlite3.connect(tmp)\n\
             c.execute('create table items(id integer primary key, name text, qty int)')\n\
             c.executemany('insert into items values(?,?,?)', [(i, 'v-%d' % i * 10, i) for i in range({lo}, {hi} + 1)])\n\
             c.commit(); c.close()\n\
             os.rename(tmp, DB)\n\
             d = os.open(os.path.dirname(DB), os.O_RDONLY); os.fsync(d); os.close(d)"
        ));
        let now: BTreeSet<u32> = (lo..=hi).collect();
        for k in now.difference(&before) {
            expected_rows.push(("insert".to_string(), "items".to_string(), k.to_string()));
        }
        for k in before.difference(&now) {
            expected_rows.push(("delete".to_string(), "items".to_string(), k.to_string()));
        }
        if round == 0 {
            assert!(stack.db().exists());
        }
        before = now;
    }
    let stopped = stop_checked(stack);
    expected_rows.sort();
    let got = rows(&stopped.rec);
    assert!(
        got == expected_rows,
        "{} changes, expected {}; first: {:?}",
        got.len(),
        expected_rows.len(),
        got.iter().take(5).collect::<Vec<_>>()
    );
}

/// An agent whose extents are off (a wrong --sector-offset) is
/// cross-checked against the filesystem's own map and reported.
#[test]
fn agent_hints_that_disagree_with_the_filesystem_are_reported() {
    require_stack!();
    let stack = Stack::start(&["--watch", "/var/lib/app/*.db:sqlite"]);
    stack.python(CREATE);
    stack.python(INSERT);
    stack.agent(&["--sector-offset", "8"]);
    stack.python(CHANGE);
    let stopped = stop_checked(stack);
    assert!(
        stopped.stderr.contains("disagrees with the filesystem"),
        "{}",
        stopped.stderr
    );
    assert!(
        !stopped.stdout.contains(" 0 hint disagreements"),
        "{}",
        stopped.stdout
    );
}

/// A disk that holds no ext4 (here: no filesystem at all, written raw
/// through the loop device) is reported once and recorded block by block.
#[test]
fn a_disk_without_ext4_is_reported_once_and_recorded_at_block_level() {
    require_stack!();
    let stack = Stack::start_image(&["--watch", "/var/lib/app/*.db:sqlite"], |dir| {
        let img = dir.join("raw.img");
        std::fs::write(&img, vec![0u8; 4 << 20]).unwrap();
        (img, false)
    });
    let dev = stack.loop_dev.clone().unwrap();
    for i in 0..3 {
        run(Command::new("dd")
            .args([
                "if=/dev/urandom",
                &format!("of={dev}"),
                "bs=4096",
                "count=4",
            ])
            .arg(format!("seek={}", i * 10))
            .args(["oflag=direct", "conv=fsync", "status=none"]));
    }
    let stopped = stop_checked(stack);
    assert_eq!(
        stopped
            .stderr
            .matches("agentless mapping: the disk holds no ext4")
            .count(),
        1,
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stdout.contains("0 semantic changes"),
        "{}",
        stopped.stdout
    );
    let log = common::vmm(&["log", "verify", stopped.rec.to_str().unwrap()]);
    assert_eq!(log.status.code(), Some(0), "{}", common::stderr(&log));
    let show = common::stdout(&common::vmm(&[
        "log",
        "show",
        stopped.rec.to_str().unwrap(),
    ]));
    assert!(show.matches("write  sector").count() >= 3, "{show}");
}

/// Bad input fails before anything is mounted, with one line naming it
/// (no root needed).
#[test]
fn bad_input_is_refused_with_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let missing = d.join("missing.img");
    let out = common::vmm(&[
        "disk",
        "serve",
        "--disk",
        missing.to_str().unwrap(),
        "--record",
        d.join("rec").to_str().unwrap(),
        "--at",
        d.to_str().unwrap(),
    ]);
    common::assert_one_line_error(&out, 125, "missing.img");
    let img = d.join("fs.img");
    std::fs::write(&img, vec![0u8; 1 << 20]).unwrap();
    let out = common::vmm(&[
        "disk",
        "serve",
        "--disk",
        img.to_str().unwrap(),
        "--record",
        d.join("rec").to_str().unwrap(),
        "--at",
        d.join("nowhere").to_str().unwrap(),
    ]);
    common::assert_one_line_error(&out, 125, "nowhere");
    for bad in ["var/lib/x.db:sqlite", "/x.db:csv", "/a/*/x.db:sqlite"] {
        let out = common::vmm(&[
            "disk",
            "serve",
            "--disk",
            img.to_str().unwrap(),
            "--record",
            "r",
            "--at",
            "m",
            "--watch",
            bad,
        ]);
        assert_eq!(
            out.status.code(),
            Some(64),
            "{bad}: {}",
            common::stderr(&out)
        );
    }
}
