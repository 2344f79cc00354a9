//! A second process, a signal or a wrong path never loses or overwrites
//! data: disk images are locked while attached, `vmm replay --out` refuses
//! what it must not replace, SIGINT/SIGTERM stop `run` and `replay`
//! cleanly, stale control sockets are replaced, usage errors exit 64.
mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use common::{
    assert_one_line_error, blank_disk, run_recorded, stderr, stdout, vmm, BlkWrites, VMM,
};

const W: BlkWrites = BlkWrites {
    seed: 3,
    writes: 200,
    max_blocks: 4,
    flush_every: 5,
    dup_every: 0,
};

/// A `vmm` in the background, killed if the test fails. Its console is
/// kept open (a closed pipe would kill it on the next guest output).
struct Vm(Child, Option<BufReader<ChildStdout>>);

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Vm {
    /// Starts `vmm ARGS`.
    fn spawn(args: &[&str]) -> Vm {
        let mut child = Command::new(VMM)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("vmm starts");
        let console = BufReader::new(child.stdout.take().unwrap());
        Vm(child, Some(console))
    }

    /// Starts `vmm run ARGS` and waits until the guest prints its first
    /// line (so the machine is built and its disks are locked).
    fn start(args: &[&str]) -> Vm {
        let mut vm = Vm::spawn(&[&["run"], args].concat());
        let mut line = String::new();
        vm.1.as_mut().unwrap().read_line(&mut line).unwrap();
        assert!(!line.is_empty(), "the guest printed nothing");
        vm
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        assert_eq!(unsafe { libc::kill(self.0.id() as i32, signal) }, 0);
    }

    /// Waits for the exit (at most 60 s) and returns the status and stderr.
    fn wait(mut self) -> (Option<i32>, String) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "vmm did not stop");
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut err = String::new();
        let _ = std::io::Read::read_to_string(&mut self.0.stderr.take().unwrap(), &mut err);
        (self.0.wait().unwrap().code(), err)
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A file's bytes and modification time, to show it was not touched.
fn fingerprint(path: &Path) -> (Vec<u8>, SystemTime) {
    (
        std::fs::read(path).unwrap(),
        std::fs::metadata(path).unwrap().modified().unwrap(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// Temporary replay outputs (`.NAME.partial-PID`) left in `dir`.
fn partials(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains(".partial-"))
        .collect()
}

#[test]
fn a_second_vmm_is_refused_an_attached_image_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank_disk(dir.path(), "disk.img", 4);
    std::fs::write(&img, vec![7u8; 4 << 20]).unwrap();
    let before = fingerprint(&img);
    let first = Vm::start(&["--disk", s(&img), "--cmdline", "workload=spin"]);

    for disk in [s(&img).to_string(), format!("{},ro", s(&img))] {
        let out = vmm(&[
            "run",
            "--disk",
            &disk,
            "--cmdline",
            "workload=blk-writes seed=1 writes=10",
        ]);
        let holder = format!("in use by pid {} (vmm run --disk", first.pid());
        assert_one_line_error(&out, 125, &holder);
        assert!(stderr(&out).contains("disk.img"), "{}", stderr(&out));
    }
    assert_eq!(
        fingerprint(&img),
        before,
        "the refused VMM touched the image"
    );
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait().0, Some(143));

    // Readers share: two read-only attachments at once are fine.
    let reader = Vm::start(&[
        "--disk",
        &format!("{},ro", s(&img)),
        "--cmdline",
        "workload=spin",
    ]);
    let out = vmm(&["run", "--disk", &format!("{},ro", s(&img))]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    drop(reader);
    // The lock dies with its process, however it ends (SIGKILL here).
    let out = vmm(&["run", "--disk", s(&img)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn replay_out_refuses_existing_files_the_store_and_live_disks() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "vm0", &W.cmdline(), &[]);
    let replay = |out: &Path, extra: &[&str]| {
        let mut args = vec!["replay", "--log", s(&rec), "--out", s(out)];
        args.extend_from_slice(extra);
        vmm(&args)
    };
    let then = dir.path().join("then.img");
    let out = replay(&then, &[]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // An existing file needs --force.
    let before = fingerprint(&then);
    std::thread::sleep(Duration::from_millis(20));
    assert_one_line_error(&replay(&then, &[]), 125, "already exists; pass --force");
    assert_eq!(fingerprint(&then), before);
    assert_eq!(replay(&then, &["--force"]).status.code(), Some(0));

    // The store's own files, or anything else in the record directory,
    // are never an output, --force or not.
    let pack = rec.join("store/packs/00000000.pack");
    let pack_before = fingerprint(&pack);
    let out = replay(&pack, &["--force"]);
    assert_one_line_error(&out, 125, "inside the record directory");
    assert_eq!(fingerprint(&pack), pack_before);
    let out = replay(&rec.join("logs/vm0/new.img"), &[]);
    assert_one_line_error(&out, 125, "inside the record directory");
    assert!(!rec.join("logs/vm0/new.img").exists());

    // A disk a running VM has attached is not replaced, even with --force.
    let vm = Vm::start(&["--disk", s(&then), "--cmdline", "workload=spin"]);
    let live = fingerprint(&then);
    let out = replay(&then, &["--force"]);
    assert_one_line_error(&out, 125, &format!("in use by pid {}", vm.pid()));
    // Nor is it read as a --base while a VM may write it.
    let other = dir.path().join("other.img");
    let out = vmm(&[
        "replay",
        "--log",
        s(&rec),
        "--base",
        s(&then),
        "--out",
        s(&other),
    ]);
    assert_one_line_error(&out, 125, "--base");
    assert!(!other.exists());
    drop(vm);
    assert_eq!(fingerprint(&then), live);
    // A drill keeps its disk under the same rules.
    let out = vmm(&["drill", "--log", s(&rec), "--at", "end", "--keep", s(&then)]);
    assert_one_line_error(&out, 125, "--keep");
    assert_eq!(fingerprint(&then), live);
    assert!(partials(dir.path()).is_empty());
}

#[test]
fn sigterm_stops_a_recorded_run_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 8);
    let rec = dir.path().join("rec");
    let sock = dir.path().join("vm.sock");
    let endless = BlkWrites {
        writes: 100_000_000,
        ..W
    };
    let vm = Vm::spawn(&[
        "run",
        "--disk",
        s(&disk),
        "--record",
        s(&rec),
        "--api-sock",
        s(&sock),
        "--cmdline",
        &endless.cmdline(),
    ]);
    wait_for("the control socket", || sock.exists());
    // Let the guest get some writes and flushes in.
    std::thread::sleep(Duration::from_millis(300));
    vm.signal(libc::SIGTERM);
    let (code, err) = vm.wait();
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("stopped on SIGTERM"), "{err}");
    assert!(err.contains("vmm: recorded "), "no summary: {err}");
    assert!(!sock.exists(), "the control socket was left behind");

    let show = vmm(&["log", "show", s(&rec), "--json"]);
    // The log ends with a barrier (and the metrics record that follows
    // every guest barrier).
    let last: serde_json::Value = stdout(&show)
        .lines()
        .rev()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["type"] != "metrics")
        .unwrap();
    assert_eq!(last["type"], "barrier", "last record: {last}");
    let writes = stdout(&show).matches("\"block_write\"").count();
    assert!(writes > 0, "the guest wrote nothing before the signal");
    let verify = vmm(&["log", "verify", s(&rec)]);
    assert_eq!(verify.status.code(), Some(0), "{}", stdout(&verify));

    // The next run with the same socket starts.
    let out = vmm(&["run", "--api-sock", s(&sock)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_restored_vm_locks_its_disk_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let img = blank_disk(dir.path(), "disk.img", 4);
    let snaps = dir.path().join("snaps");
    let sock = dir.path().join("vm.sock");
    let vm = Vm::start(&[
        "--disk",
        s(&img),
        "--snapshots",
        s(&snaps),
        "--api-sock",
        s(&sock),
        "--cmdline",
        "workload=spin",
    ]);
    wait_for("the control socket", || sock.exists());
    let out = vmm(&["snapshot", "create", "--api-sock", s(&sock)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let snap = stdout(&out).trim().to_string();
    vm.signal(libc::SIGTERM);
    assert_eq!(vm.wait().0, Some(143));

    let mut restored = Vm::spawn(&["restore", &snap]);
    wait_for("the restored VM to lock its disk", || {
        if let Some(status) = restored.0.try_wait().unwrap() {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut restored.0.stderr.take().unwrap(), &mut err);
            panic!("restore ended early ({status}): {err}");
        }
        // (A probing VMM would hold a lock of its own: look, don't touch.)
        std::fs::read_dir(format!("/proc/{}/fd", restored.pid()))
            .unwrap()
            .any(|fd| std::fs::read_link(fd.unwrap().path()).is_ok_and(|p| p == img))
    });
    // Past the open, the lock: the restore then checks and loads memory.
    std::thread::sleep(Duration::from_millis(100));
    let out = vmm(&["run", "--disk", s(&img)]);
    assert_one_line_error(
        &out,
        125,
        &format!("in use by pid {} (vmm restore", restored.pid()),
    );
    restored.signal(libc::SIGTERM);
    let (code, err) = restored.wait();
    assert_eq!(code, Some(143), "{err}");
    assert!(err.contains("stopped on SIGTERM"), "{err}");

    // A snapshot directory is no place for a replay's output either.
    let out = vmm(&[
        "replay",
        "--log",
        s(&snaps),
        "--out",
        s(&snaps.join("x.img")),
    ]);
    assert_one_line_error(&out, 125, "inside the record directory");
}

#[test]
fn stale_control_sockets_are_replaced_and_live_ones_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let vm = Vm::start(&["--api-sock", s(&sock), "--cmdline", "workload=spin"]);
    wait_for("the control socket", || sock.exists());
    let out = vmm(&["run", "--api-sock", s(&sock)]);
    assert_one_line_error(
        &out,
        125,
        &format!("in use by a running VMM (pid {}", vm.pid()),
    );
    vm.signal(libc::SIGKILL);
    let _ = vm.wait();
    assert!(sock.exists(), "SIGKILL leaves the socket behind");

    let out = vmm(&["run", "--api-sock", s(&sock)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("replaced the stale control socket"));
    assert!(!sock.exists());
}

#[test]
fn a_paused_vm_stops_on_sigint() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let vm = Vm::start(&["--api-sock", s(&sock), "--cmdline", "workload=spin"]);
    wait_for("the control socket", || sock.exists());
    let out = vmm(&["pause", "--api-sock", s(&sock)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    vm.signal(libc::SIGINT);
    let (code, err) = vm.wait();
    assert_eq!(code, Some(130), "{err}");
    assert!(!sock.exists());
}

#[test]
fn two_vmms_starting_on_one_socket_path_take_turns() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("vm.sock");
    let args = ["run", "--api-sock", s(&sock), "--cmdline", "workload=spin"];
    let mut vms = [Vm::spawn(&args), Vm::spawn(&args)];
    let mut refused = None;
    wait_for("one of them to be refused", || {
        refused = vms
            .iter_mut()
            .position(|vm| vm.0.try_wait().unwrap().is_some());
        refused.is_some()
    });
    let [a, b] = vms;
    let (loser, winner) = if refused == Some(0) { (a, b) } else { (b, a) };
    let (code, err) = loser.wait();
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("in use by a running VMM"), "{err}");
    std::thread::sleep(Duration::from_millis(100));
    winner.signal(libc::SIGTERM);
    assert_eq!(winner.wait().0, Some(143));
}

#[test]
fn sigint_during_a_replay_leaves_no_temporary_file() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 4);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "vm0", &W.cmdline(), &[]);
    let out = dir.path().join("then.img");
    // Played back 1000x slower than recorded: long enough to interrupt.
    let replay = Vm::spawn(&[
        "replay",
        "--log",
        s(&rec),
        "--out",
        s(&out),
        "--speed",
        "0.001",
    ]);
    wait_for("the temporary output", || !partials(dir.path()).is_empty());
    replay.signal(libc::SIGINT);
    let (code, err) = replay.wait();
    assert_eq!(code, Some(130), "{err}");
    assert!(err.contains("stopped on SIGINT"), "{err}");
    assert!(partials(dir.path()).is_empty(), "a temporary file was left");
    assert!(!out.exists());
}

#[test]
fn usage_errors_exit_64_and_help_exits_0() {
    for args in [&["run", "--no-such-flag"][..], &["replay"], &[]] {
        let out = vmm(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
    for args in [&["--help"][..], &["--version"], &["run", "--help"]] {
        let out = vmm(args);
        assert_eq!(out.status.code(), Some(0), "{args:?}");
    }
    let help = stdout(&vmm(&["--help"]));
    for code in ["64 ", "122 ", "124 ", "125 ", "126 ", "130/143"] {
        assert!(help.contains(code), "--help lacks exit status {code}");
    }
}
