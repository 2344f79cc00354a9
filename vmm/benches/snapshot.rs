//! Snapshot benchmark, ratios against baselines measured in the same run:
//! `cargo bench -p vmm --bench snapshot`.
//!
//! - full snapshot of a 1 GiB guest (pause time) vs a memcpy of its memory;
//! - incremental snapshot at ~1 % dirty vs the full one;
//! - restore to ready-to-run of a 256 MiB guest with ~100 MiB in use, vs a
//!   memcpy of 256 MiB;
//! - store bytes for 16 VMs snapshotted from one image vs one VM;
//! - `vmm restore` as a process, lazy vs eager memory, at 256 MiB and 1 GiB
//!   with ~86 % of memory non-zero: process start -> guest running (the
//!   vCPU's first entry, from `--stats`) and start -> the guest's output
//!   after it read all its memory (memtest's final checksum); ratios
//!   against eager in the same run. Only this part: `-- restore`.
//! - a full snapshot of a running 1 GiB guest (memtest over all of it)
//!   through the control socket, pre-copied while the guest runs vs
//!   `--stop-the-world` (the capture before pre-copy existed): VM pause,
//!   time until durable, pre-copy rounds; medians, runs alternating.
//!   Only this part: `-- pause`.
use std::hint::black_box;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use snapshot::SnapshotKind;
use vmm::machine::{RestoreConfig, SnapshotConfig};
use vmm::{Machine, SerialOutput, VmConfig};

fn memcpy_ms(bytes: usize) -> f64 {
    let src = vec![1u8; bytes];
    let mut dst = vec![0u8; bytes];
    dst.copy_from_slice(&src); // fault the pages in first: time the copy only
    let t = Instant::now();
    dst.copy_from_slice(&src);
    black_box(&dst);
    t.elapsed().as_secs_f64() * 1e3
}

fn run(dir: &std::path::Path, mem_mib: u64, cmdline: &str, vm: &str) -> vmm::RunOutcome {
    let config = VmConfig {
        cmdline: cmdline.into(),
        mem_mib,
        serial: SerialOutput::Capture(Arc::new(Mutex::new(Vec::new()))),
        timeout: Some(Duration::from_secs(300)),
        snapshot: Some(SnapshotConfig {
            dir: dir.to_path_buf(),
            vm_id: vm.into(),
        }),
        ..VmConfig::default()
    };
    Machine::build(&config)
        .and_then(|mut m| m.run())
        .expect("the VM runs")
}

fn store_bytes(dir: &std::path::Path) -> u64 {
    store::Store::open(dir.join("store"))
        .unwrap()
        .stats()
        .stored_bytes
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    if std::env::args().any(|a| a == "restore") {
        lazy_vs_eager(tmp.path());
        return;
    }
    if std::env::args().any(|a| a == "pause") {
        running_pause(tmp.path());
        return;
    }
    println!("snapshot benchmark (one run; VM pause = capture time on the vCPU thread)");

    // 1 GiB guest; memtest touches 20968 pages (82 MiB), then 1/8 of them
    // (2621 pages = 1 % of the guest) between the two snapshots.
    let dir = tmp.path().join("big");
    let out = run(
        &dir,
        1024,
        "workload=memtest pages=20968 iters=3 snap_every=1 seed=1",
        "big",
    );
    let copy = memcpy_ms(1 << 30);
    let full = out
        .snapshots
        .iter()
        .find(|s| s.kind == SnapshotKind::Full)
        .unwrap();
    let inc = out
        .snapshots
        .iter()
        .find(|s| s.kind == SnapshotKind::Incremental)
        .unwrap();
    let (full_ms, inc_ms) = (full.pause_us as f64 / 1e3, inc.pause_us as f64 / 1e3);
    println!("{:<46} {:>9} {:>10}", "", "ms", "ratio");
    println!(
        "{:<46} {:>9.1} {:>10}",
        "memcpy of 1 GiB (baseline)", copy, "1.00"
    );
    println!(
        "{:<46} {:>9.1} {:>9.2}x",
        "full snapshot, 1 GiB guest (pause)",
        full_ms,
        full_ms / copy
    );
    println!(
        "{:<46} {:>9.1} {:>9.3}x",
        format!(
            "incremental, {} dirty pages ({:.1} %)",
            inc.stats.hashed_pages,
            100.0 * inc.stats.hashed_pages as f64 / inc.stats.pages as f64
        ),
        inc_ms,
        inc_ms / full_ms
    );
    println!(
        "goal: incremental at most 5 % of full: {}; pause at most 10 ms: {}",
        if inc_ms / full_ms <= 0.05 {
            "met"
        } else {
            "NOT met"
        },
        if inc_ms <= 10.0 { "met" } else { "NOT met" }
    );

    // Restore of a 256 MiB guest with ~100 MiB of non-zero pages.
    let dir = tmp.path().join("mid");
    let out = run(
        &dir,
        256,
        "workload=memtest pages=25600 iters=9 snap_every=8 seed=2",
        "mid",
    );
    let id = out.snapshots[0].id.clone();
    let mut best = f64::MAX;
    for _ in 0..3 {
        let config = RestoreConfig {
            kvm_path: "/dev/kvm".into(),
            dir: dir.clone(),
            id: id.clone(),
            disks: None,
            serial: SerialOutput::Capture(Arc::new(Mutex::new(Vec::new()))),
            timeout: Some(Duration::from_secs(60)),
            record: None,
            snapshot: None,
            api_sock: None,
            force: false,
            memory: vmm::machine::MemoryMode::Eager,
            counters: Default::default(),
        };
        let t = Instant::now();
        let machine = Machine::restore(&config).expect("restores");
        best = best.min(t.elapsed().as_secs_f64() * 1e3);
        drop(machine);
    }
    let copy256 = memcpy_ms(256 << 20);
    println!(
        "{:<46} {:>9.1} {:>10}",
        "memcpy of 256 MiB (baseline)", copy256, "1.00"
    );
    println!(
        "{:<46} {:>9.1} {:>9.2}x",
        "restore 256 MiB guest to ready (best of 3)",
        best,
        best / copy256
    );
    println!(
        "goal: restore at most 10 ms: {}",
        if best <= 10.0 { "met" } else { "NOT met" }
    );

    lazy_vs_eager(tmp.path());
    running_pause(tmp.path());

    // 16 VMs from one image, one store.
    let dir = tmp.path().join("clones");
    run(
        &dir,
        128,
        "workload=memtest pages=4096 iters=9 snap_every=8 seed=3",
        "vm0",
    );
    let one = store_bytes(&dir);
    for i in 1..16 {
        run(
            &dir,
            128,
            "workload=memtest pages=4096 iters=9 snap_every=8 seed=3",
            &format!("vm{i}"),
        );
    }
    let sixteen = store_bytes(&dir);
    println!(
        "store for 16 VMs vs 1: {} vs {} bytes = {:.3}x (goal at most 1.2x: {})",
        sixteen,
        one,
        sixteen as f64 / one as f64,
        if sixteen as f64 / one as f64 <= 1.2 {
            "met"
        } else {
            "NOT met"
        }
    );
}

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
/// Restores per mode and size (alternating lazy and eager); medians.
const RESTORES: usize = 5;

/// One `vmm restore` process: start -> vCPU entered, start -> first
/// output byte (the guest's checksum of all its memory), start -> exit.
struct Restored {
    running: f64,
    output: f64,
    exit: f64,
    /// The guest's line, to check both modes agree.
    line: String,
}

fn restore_process(snap: &std::path::Path, mode: &str) -> Restored {
    let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    let start = Instant::now();
    let mut child = Command::new(VMM)
        .arg("restore")
        .arg(snap)
        .args(["--memory", mode, "--stats", "--vm-id", "bench"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm restore");
    let mut out = child.stdout.take().unwrap();
    let mut byte = [0u8; 1];
    assert_eq!(out.read(&mut byte).unwrap(), 1, "the guest printed nothing");
    let output = start.elapsed().as_secs_f64() * 1e3;
    let mut line = vec![byte[0]];
    out.read_to_end(&mut line).unwrap();
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    let status = child.wait().unwrap();
    let exit = start.elapsed().as_secs_f64() * 1e3;
    assert!(
        status.success(),
        "vmm restore --memory {mode}: {status}\n{err}"
    );
    let stats: serde_json::Value = err
        .lines()
        .find_map(|l| serde_json::from_str(l).ok())
        .expect("--stats line");
    let vcpu_us = stats["vcpu_start_unix_us"].as_u64().unwrap();
    let running = (vcpu_us as f64 - wall.as_micros() as f64) / 1e3;
    let line = String::from_utf8_lossy(&line)
        .lines()
        .next()
        .unwrap_or_default()
        .to_string();
    Restored {
        running,
        output,
        exit,
        line,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Lazy vs eager `vmm restore` at 256 MiB and 1 GiB.
fn lazy_vs_eager(tmp: &std::path::Path) {
    println!("restore as a process, lazy vs eager memory (median of {RESTORES}, alternating)");
    println!(
        "{:<44} {:>10} {:>10} {:>8}",
        "", "lazy ms", "eager ms", "ratio"
    );
    let mut goal = true;
    for mem_mib in [256u64, 1024] {
        // memtest's region starts at 16 MiB: fill the rest. 16 iterations
        // write 2x its pages at random (~86 % non-zero) before the
        // snapshot; after it one more iteration and the checksum of all.
        let pages = (mem_mib - 16) * 256;
        let dir = tmp.join(format!("restore{mem_mib}"));
        let out = run(
            &dir,
            mem_mib,
            &format!("workload=memtest pages={pages} iters=17 snap_every=16 seed=4"),
            "bench",
        );
        let snap = out.snapshots[0].path.clone();
        let (mut lazy, mut eager) = (Vec::new(), Vec::new());
        for _ in 0..RESTORES {
            lazy.push(restore_process(&snap, "lazy"));
            eager.push(restore_process(&snap, "eager"));
        }
        assert!(
            lazy.iter().chain(&eager).all(|r| r.line == eager[0].line),
            "lazy and eager restores disagree"
        );
        let row = |what: &str, f: &dyn Fn(&Restored) -> f64| {
            let l = median(lazy.iter().map(f).collect());
            let e = median(eager.iter().map(f).collect());
            println!(
                "{:<44} {:>10.1} {:>10.1} {:>7.3}x",
                format!("{mem_mib} MiB: {what}"),
                l,
                e,
                l / e
            );
            l
        };
        let running = row("start -> guest running", &|r| r.running);
        row("start -> output after reading all memory", &|r| r.output);
        row("start -> exit", &|r| r.exit);
        goal &= running <= 10.0;
    }
    println!(
        "goal: lazy start -> guest running at most 10 ms at 256 MiB and 1 GiB: {}",
        if goal { "met" } else { "NOT met" }
    );
}

/// Snapshots per mode for [`running_pause`].
const PAUSE_RUNS: usize = 3;

/// One full snapshot of a running 1 GiB memtest through the control
/// socket, 2 s after the process holds 1000 MiB (every page touched);
/// `extra`:
/// more `snapshot create` arguments. The answer (pause_us, durable_us,
/// rounds).
fn socket_snapshot(tmp: &std::path::Path, extra: &[&str]) -> serde_json::Value {
    let dir = tmp.join("running");
    let _ = std::fs::remove_dir_all(&dir);
    let sock = tmp.join("running.sock");
    let mut child = Command::new(VMM)
        .args(["run", "--mem-mib", "1040", "--snapshots"])
        .arg(&dir)
        .arg("--api-sock")
        .arg(&sock)
        .args(["--cmdline", "workload=memtest pages=262144 iters=100000"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn vmm run");
    let rss_mib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", child.id()))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024)
    };
    let t = Instant::now();
    while rss_mib() < 1000 {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "the guest never touched its memory"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Huge pages are resident long before memtest has written every 4 KiB
    // page of them (~99 % after 40 iterations).
    std::thread::sleep(Duration::from_secs(2));
    let out = Command::new(VMM)
        .args(["snapshot", "create", "--json", "--api-sock"])
        .arg(&sock)
        .args(extra)
        .output()
        .expect("vmm snapshot create");
    // SIGTERM: the run stops cleanly (exit 143).
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(
        out.status.success(),
        "snapshot create {extra:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(status.code(), Some(143), "vmm run ended {status}");
    serde_json::from_slice(&out.stdout).expect("a JSON answer")
}

/// Pre-copy vs stop-the-world for a running 1 GiB guest.
fn running_pause(tmp: &std::path::Path) {
    println!(
        "full snapshot of a running 1 GiB guest (memtest over all of it), control socket, median of {PAUSE_RUNS}, alternating"
    );
    let (mut pre, mut stw) = (Vec::new(), Vec::new());
    for _ in 0..PAUSE_RUNS {
        pre.push(socket_snapshot(tmp, &[]));
        stw.push(socket_snapshot(tmp, &["--stop-the-world"]));
    }
    let med = |v: &[serde_json::Value], k: &str| {
        median(v.iter().map(|a| a[k].as_f64().unwrap()).collect())
    };
    println!(
        "{:<30} {:>10} {:>14} {:>7} {:>14}",
        "", "pause ms", "durable ms", "rounds", "hashed pages"
    );
    for (what, v) in [("pre-copy", &pre), ("stop-the-world (before)", &stw)] {
        println!(
            "{:<30} {:>10.1} {:>14.1} {:>7} {:>14}",
            what,
            med(v, "pause_us") / 1e3,
            med(v, "durable_us") / 1e3,
            med(v, "rounds"),
            med(v, "hashed_pages")
        );
    }
    let ratio = med(&pre, "pause_us") / med(&stw, "pause_us");
    println!(
        "pause pre-copy / stop-the-world: {ratio:.3}x; goal at most 0.1x: {}",
        if ratio <= 0.1 { "met" } else { "NOT met" }
    );
}
