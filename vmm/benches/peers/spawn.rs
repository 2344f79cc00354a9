//! Timing a VMM process (ours or QEMU) from spawn to its events: the first
//! byte of the guest's serial console, the console's end and the process
//! exit; and the commands of both peers.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const VMM: &str = env!("CARGO_BIN_EXE_vmm");

/// One timed run.
pub struct Timed {
    /// Wall clock at spawn (to compare with timestamps the VMM reports).
    pub spawned: SystemTime,
    pub first_byte: Option<Duration>,
    pub exit: Duration,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Spawns `cmd` (stdin closed, stdout and stderr captured) and times it.
pub fn time(cmd: &mut Command) -> Timed {
    let (spawned, start, child) = spawn(cmd);
    wait(spawned, start, child)
}

/// Spawns `cmd` for [`wait`] (so a caller can act on the running VM).
pub fn spawn(cmd: &mut Command) -> (SystemTime, Instant, Child) {
    let spawned = SystemTime::now();
    let start = Instant::now();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {cmd:?}: {e}"));
    (spawned, start, child)
}

/// Times a child spawned by [`spawn`] to its first output byte and exit.
pub fn wait(spawned: SystemTime, start: Instant, mut child: Child) -> Timed {
    // stderr on its own thread: a VMM blocked on a full stderr pipe would
    // never finish its stdout.
    let mut err = child.stderr.take().expect("piped");
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let mut out = child.stdout.take().expect("piped");
    let mut byte = [0u8; 1];
    let first_byte = match out.read(&mut byte) {
        Ok(1) => Some(start.elapsed()),
        _ => None,
    };
    let mut rest = Vec::new();
    let _ = out.read_to_end(&mut rest);
    let status = child.wait().expect("wait");
    let exit = start.elapsed();
    let mut stdout =
        String::from_utf8_lossy(&byte[..usize::from(first_byte.is_some())]).into_owned();
    stdout.push_str(&String::from_utf8_lossy(&rest));
    Timed {
        spawned,
        first_byte,
        exit,
        status,
        stdout,
        stderr: err.join().unwrap_or_default(),
    }
}

/// The microguest ELF vmm/build.rs built beside our binary (the same bytes
/// `vmm` embeds), for QEMU's `-kernel`.
pub fn microguest_elf() -> PathBuf {
    let bin = PathBuf::from(VMM);
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("microguest/x86_64-unknown-linux-gnu/release/microguest")
}

/// `qemu-system-x86_64` on PATH, if installed.
pub fn find_qemu() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("qemu-system-x86_64"))
        .find(|p| p.is_file())
}

/// QEMU with the machine DESIGN.md measured side by side with the
/// microguest: microvm without PIT/PIC/RTC/ACPI/option ROMs, modern
/// virtio-mmio, the debug-exit port at 0xf4 (our exit port), COM1 on
/// stdout. The default CPU model: `-cpu host` aborts on MSR 0x10a here.
/// Guest exit status N becomes QEMU's (N << 1) | 1.
pub fn qemu(qemu: &Path, elf: &Path, mem_mib: u64, append: &str) -> Command {
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-accel",
        "kvm",
        "-M",
        "microvm,x-option-roms=off,pit=off,pic=off,isa-serial=on,rtc=off,acpi=off",
        "-global",
        "virtio-mmio.force-legacy=false",
        "-device",
        "isa-debug-exit,iobase=0xf4,iosize=4",
        "-nodefaults",
        "-nographic",
        "-serial",
        "stdio",
        "-m",
    ]);
    cmd.arg(format!("{mem_mib}M"));
    cmd.arg("-kernel").arg(elf).args(["-append", append]);
    cmd
}

/// QEMU's exit status for guest status `code` (isa-debug-exit).
pub fn qemu_status(code: i32) -> i32 {
    (code << 1) | 1
}

/// `vmm ARGS`.
pub fn vmm(args: &[&str]) -> Command {
    let mut cmd = Command::new(VMM);
    cmd.args(args);
    cmd
}

/// Panics with both streams unless the run exited `want`.
pub fn check(t: &Timed, want: i32, what: &str) {
    assert_eq!(
        t.status.code(),
        Some(want),
        "{what}: exit {:?}\nstdout: {}\nstderr: {}",
        t.status,
        t.stdout,
        t.stderr
    );
}

pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A fresh all-zero disk image of `mib` MiB.
pub fn zero_image(path: &Path, mib: u64) {
    let _ = std::fs::remove_file(path);
    std::fs::File::create(path)
        .and_then(|f| f.set_len(mib << 20))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
