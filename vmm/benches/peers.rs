//! Peer benchmark: the same microguest under `vmm` and under QEMU's microvm
//! (Debian's `qemu-system-x86`), alternating run by run so that both see
//! the same machine load, with the ratio vmm/QEMU of every figure.
//! `cargo bench -p vmm --bench peers` (not part of `cargo test`); skipped,
//! saying so, when `qemu-system-x86_64` is not installed.
//!
//! What each figure is, on both sides:
//! - boot: process spawn -> first serial byte, and -> process exit
//!   (`workload=hello`);
//! - block writes: `workload=blk-bench` writes 256 MiB (64 KiB requests,
//!   8 per notify) to a fresh zero image; MB/s over the run's wall time
//!   minus that side's hello run (so boot and teardown are not counted);
//! - recording: the same with `vmm --record` (fresh record directory,
//!   so the recorder's first open of the image, which logs its base, is
//!   counted; a second row leaves vmm's machine build out) against QEMU's
//!   `blklogwrites` driver logging every write to a second file;
//! - snapshot pause: a 288 MiB guest running memtest over 256 MiB (all of
//!   it touched) is snapshotted once, fully, 1 s after spawn: vmm through
//!   its control socket (the VM's pause, as it reports it; pre-copied
//!   while the guest runs, and again with `--stop-the-world`), QEMU by QMP
//!   `stop` + `migrate "exec:cat > F"` until completed (its VM is stopped
//!   the whole time); the same with a 1040 MiB guest over 1 GiB, snapshot
//!   once the process holds 1000 MiB (all touched). vmm's rows also print the time until the snapshot was
//!   durable and the pre-copy rounds (`-- snapshot` runs only these);
//! - restore of that snapshot: spawn -> guest running (vmm: the vCPU's
//!   first entry from `--stats`; QEMU: its RESUME event after
//!   `-incoming "exec:cat F"`), and spawn -> memtest's final output (the
//!   guest has by then rewritten its whole region again);
//! - memory-heavy guest: memtest over 256 MiB, 1000 iterations, spawn ->
//!   exit (5 pairs; 3 for the others, 20 for boot).
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[path = "peers/big.rs"]
mod big;
#[path = "peers/qmp.rs"]
mod qmp;
#[path = "peers/spawn.rs"]
mod spawn;

use big::{big_snapshot, wait_for_snapshot_point};
use spawn::{check, median, ms, qemu, qemu_status, vmm, zero_image};

const BOOT_RUNS: usize = 20;
const RUNS: usize = 3;
/// The memory-heavy guest's parity is a close call: more pairs.
const HEAVY_RUNS: usize = 5;
const BLK_MIB: u64 = 256;
const BLK_CMDLINE: &str = "workload=blk-bench mib=256 req_kib=64 batch=8";
/// memtest over 256 MiB needs 16 MiB below its region, and some room.
const MEMTEST_MEM_MIB: u64 = 288;
const MEMTEST_HEAVY: &str = "workload=memtest pages=65536 iters=1000";
/// About 2 s of work: the snapshot at 1 s leaves about 1 s for the restore.
const MEMTEST_SNAP: &str = "workload=memtest pages=65536 iters=400";
const SNAPSHOT_AT: Duration = Duration::from_secs(1);
/// The 1 GiB snapshot: memtest over 1 GiB, snapshotted once the process
/// holds that much memory (every page touched, after ~60 iterations) and
/// still running well after the snapshot.
const BIG_MEM_MIB: u64 = 1040;
const BIG_SNAP: &str = "workload=memtest pages=262144 iters=300";

/// A memtest run to snapshot: guest size, command line, when (after
/// `at`, and once the process's resident memory reaches `rss_mib`).
#[derive(Clone, Copy)]
struct SnapRun {
    mem_mib: u64,
    cmdline: &'static str,
    at: Duration,
    rss_mib: u64,
}

const SMALL: SnapRun = SnapRun {
    mem_mib: MEMTEST_MEM_MIB,
    cmdline: MEMTEST_SNAP,
    at: SNAPSHOT_AT,
    rss_mib: 0,
};
const BIG: SnapRun = SnapRun {
    mem_mib: BIG_MEM_MIB,
    cmdline: BIG_SNAP,
    at: Duration::from_secs(2),
    rss_mib: 1000,
};

/// What vmm's answer to a snapshot said.
struct VmmSnap {
    pause: f64,
    durable: f64,
    rounds: u64,
    path: String,
}
/// QEMU's migration bandwidth for its snapshot: 100 GiB/s, no limit here.
const MIGRATE_BANDWIDTH: u64 = 100 << 30;

/// One figure of both peers; `Err` with the reason when not measured.
struct Row {
    name: &'static str,
    /// "ms" (lower is better) or "MB/s" (higher is better).
    unit: &'static str,
    vmm: Result<f64, String>,
    qemu: Result<f64, String>,
}

fn print(rows: &[Row]) {
    println!("ratio vmm/QEMU: below 1 is vmm faster for ms, slower for MB/s");
    println!(
        "{:<42} {:>12} {:>12} {:>9}",
        "figure (median)", "vmm", "QEMU", "vmm/QEMU"
    );
    for r in rows {
        let cell = |v: &Result<f64, String>| match v {
            Ok(v) => format!("{v:.1} {}", r.unit),
            Err(_) => "-".into(),
        };
        let ratio = match (&r.vmm, &r.qemu) {
            (Ok(a), Ok(b)) if *b > 0.0 => format!("{:.2}", a / b),
            _ => "-".into(),
        };
        println!(
            "{:<42} {:>12} {:>12} {:>9}",
            r.name,
            cell(&r.vmm),
            cell(&r.qemu),
            ratio
        );
        for (who, v) in [("vmm", &r.vmm), ("QEMU", &r.qemu)] {
            if let Err(why) = v {
                println!("    {who}: not measured: {why}");
            }
        }
    }
}

struct Peers {
    qemu: PathBuf,
    elf: PathBuf,
    tmp: tempfile::TempDir,
}

impl Peers {
    fn path(&self, name: &str) -> PathBuf {
        self.tmp.path().join(name)
    }

    fn qemu(&self, mem_mib: u64, append: &str) -> std::process::Command {
        qemu(&self.qemu, &self.elf, mem_mib, append)
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return; // `cargo test --benches` asks for a listing
    }
    let Some(qemu_bin) = spawn::find_qemu() else {
        println!(
            "peers benchmark skipped: qemu-system-x86_64 is not installed (Debian: apt-get install qemu-system-x86)"
        );
        return;
    };
    let elf = spawn::microguest_elf();
    if !elf.is_file() {
        println!(
            "peers benchmark skipped: the microguest ELF {} is missing (vmm/build.rs builds it)",
            elf.display()
        );
        return;
    }
    let p = Peers {
        qemu: qemu_bin,
        elf,
        tmp: tempfile::tempdir().expect("temp dir"),
    };
    println!(
        "peers benchmark: vmm vs {} (microvm), same microguest, runs alternating",
        p.qemu.display()
    );
    let mut rows = Vec::new();
    if std::env::args().any(|a| a == "snapshot") {
        rows.extend(snapshot_restore(&p));
        rows.extend(big_snapshot(&p));
        print(&rows);
        return;
    }
    let (boot_rows, hello) = boot(&p);
    rows.extend(boot_rows);
    rows.extend(blk(&p, &hello, false));
    rows.extend(blk(&p, &hello, true));
    rows.extend(snapshot_restore(&p));
    rows.extend(big_snapshot(&p));
    rows.push(memory_heavy(&p));
    print(&rows);
}

/// Medians of process exit of a hello run, per side (subtracted from the
/// block runs).
struct Hello {
    vmm_exit: f64,
    qemu_exit: f64,
}

fn boot(p: &Peers) -> (Vec<Row>, Hello) {
    let (mut vf, mut ve, mut qf, mut qe) = (vec![], vec![], vec![], vec![]);
    for i in 0..=BOOT_RUNS {
        let v = spawn::time(&mut vmm(&["run"]));
        check(&v, 0, "vmm run");
        let q = spawn::time(&mut p.qemu(128, "workload=hello"));
        check(&q, qemu_status(0), "qemu hello");
        assert!(
            q.stdout.contains("Hello from the microguest"),
            "{}",
            q.stdout
        );
        if i == 0 {
            continue; // warms the page cache for both
        }
        vf.push(ms(v.first_byte.expect("vmm prints")));
        ve.push(ms(v.exit));
        qf.push(ms(q.first_byte.expect("qemu prints")));
        qe.push(ms(q.exit));
    }
    let hello = Hello {
        vmm_exit: median(ve.clone()),
        qemu_exit: median(qe.clone()),
    };
    let rows = vec![
        Row {
            name: "boot: spawn -> first serial byte",
            unit: "ms",
            vmm: Ok(median(vf)),
            qemu: Ok(median(qf)),
        },
        Row {
            name: "boot: spawn -> process exit (hello)",
            unit: "ms",
            vmm: Ok(median(ve)),
            qemu: Ok(median(qe)),
        },
    ];
    (rows, hello)
}

/// Block write throughput, plain or recorded (MB/s, higher is better);
/// recorded, also with vmm's machine build (which opens the recorder:
/// the first open of an image logs its base) left out.
fn blk(p: &Peers, hello: &Hello, record: bool) -> Vec<Row> {
    let img = p.path("blk.img");
    let log = p.path("blk.log");
    let rec = p.path("rec");
    let (mut v, mut v_run, mut q) = (vec![], vec![], vec![]);
    let mbs = |total_ms: f64, base_ms: f64| {
        (BLK_MIB << 20) as f64 / 1e6 / ((total_ms - base_ms).max(0.001) / 1e3)
    };
    for _ in 0..RUNS {
        zero_image(&img, BLK_MIB);
        let _ = std::fs::remove_dir_all(&rec);
        let img_s = img.to_str().unwrap();
        let mut args = vec!["run", "--stats", "--disk", img_s, "--cmdline", BLK_CMDLINE];
        let rec_s = rec.to_str().unwrap().to_string();
        if record {
            args.extend(["--record", &rec_s, "--no-decode"]);
        }
        let t = spawn::time(&mut vmm(&args));
        check(&t, 0, "vmm blk-bench");
        v.push(mbs(ms(t.exit), hello.vmm_exit));
        let build_ms = t
            .stderr
            .lines()
            .last()
            .and_then(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .and_then(|s| s["build_us"].as_f64())
            .map_or(0.0, |us| us / 1e3);
        v_run.push(mbs(ms(t.exit) - build_ms, hello.vmm_exit));

        zero_image(&img, BLK_MIB);
        let mut cmd = p.qemu(128, BLK_CMDLINE);
        if record {
            // The log needs room: its superblock, one sector of header per
            // write and every data sector (sparse, so free until written).
            zero_image(&log, 2 * BLK_MIB + 64);
            cmd.args([
                "-blockdev",
                &format!("driver=file,filename={img_s},node-name=data"),
                "-blockdev",
                &format!("driver=file,filename={},node-name=log", log.display()),
                "-blockdev",
                "driver=blklogwrites,node-name=rec,file=data,log=log",
                "-device",
                "virtio-blk-device,drive=rec",
            ]);
        } else {
            cmd.args([
                "-drive",
                &format!("file={img_s},format=raw,if=none,id=d0"),
                "-device",
                "virtio-blk-device,drive=d0",
            ]);
        }
        let t = spawn::time(&mut cmd);
        check(&t, qemu_status(0), "qemu blk-bench");
        assert!(t.stdout.contains("blk-bench: bytes="), "{}", t.stdout);
        q.push(mbs(ms(t.exit), hello.qemu_exit));
    }
    let q = median(q);
    if !record {
        return vec![Row {
            name: "block writes: 256 MiB, 64 KiB x 8",
            unit: "MB/s",
            vmm: Ok(median(v)),
            qemu: Ok(q),
        }];
    }
    vec![
        Row {
            name: "recording: --record vs blklogwrites",
            unit: "MB/s",
            vmm: Ok(median(v)),
            qemu: Ok(q),
        },
        Row {
            name: "recording, vmm's recorder open left out",
            unit: "MB/s",
            vmm: Ok(median(v_run)),
            qemu: Ok(q),
        },
    ]
}

/// vmm: a memtest run with a control socket, fully snapshotted at
/// `run.at` (`extra`: more `snapshot create` arguments).
fn vmm_snapshot(p: &Peers, dir: &Path, run: SnapRun, extra: &[&str]) -> Result<VmmSnap, String> {
    let sock = p.path("vmm.sock");
    let _ = std::fs::remove_dir_all(dir);
    let mem = run.mem_mib.to_string();
    let (spawned, start, child) = spawn::spawn(&mut vmm(&[
        "run",
        "--mem-mib",
        &mem,
        "--snapshots",
        dir.to_str().unwrap(),
        "--api-sock",
        sock.to_str().unwrap(),
        "--cmdline",
        run.cmdline,
    ]));
    wait_for_snapshot_point(run, start, child.id());
    let mut args = vec![
        "snapshot",
        "create",
        "--api-sock",
        sock.to_str().unwrap(),
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = vmm(&args).output().map_err(|e| e.to_string())?;
    let ran = spawn::wait(spawned, start, child);
    check(&ran, 0, "vmm memtest (snapshotted)");
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).map_err(|e| {
        format!(
            "snapshot create answered {:?} ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    let us = |k: &str| answer[k].as_f64().ok_or(format!("no {k} in {answer}"));
    Ok(VmmSnap {
        pause: us("pause_us")? / 1e3,
        durable: us("durable_us")? / 1e3,
        rounds: answer["rounds"].as_u64().unwrap_or(0),
        path: answer["path"].as_str().ok_or("no path")?.to_string(),
    })
}

/// QEMU: the same run, stopped and migrated to `file` over QMP at
/// `run.at`; the pause (ms: stop -> migration completed).
fn qemu_snapshot(p: &Peers, file: &Path, run: SnapRun) -> Result<f64, String> {
    let sock = p.path("qmp.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = p.qemu(run.mem_mib, run.cmdline);
    cmd.args(["-global", "migration.store-global-state=off", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()));
    let (spawned, start, mut child) = spawn::spawn(&mut cmd);
    let pid = child.id();
    let result = (|| {
        let mut qmp =
            qmp::Qmp::connect(&sock, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        // QEMU caps migration at 128 MiB/s by default (made for live
        // migration over a network); a snapshot to a local file is not.
        qmp.execute(
            "migrate-set-parameters",
            Some(serde_json::json!({ "max-bandwidth": MIGRATE_BANDWIDTH })),
        )
        .map_err(|e| e.to_string())?;
        wait_for_snapshot_point(run, start, pid);
        let t = Instant::now();
        qmp.execute("stop", None).map_err(|e| e.to_string())?;
        let uri = format!("exec:cat > {}", file.display());
        qmp.execute("migrate", Some(serde_json::json!({ "uri": uri })))
            .map_err(|e| e.to_string())?;
        qmp.wait_migration().map_err(|e| e.to_string())?;
        let pause = ms(t.elapsed());
        qmp.execute("cont", None).map_err(|e| e.to_string())?;
        Ok(pause)
    })();
    if result.is_err() {
        let _ = child.kill();
    }
    let run = spawn::wait(spawned, start, child);
    if result.is_ok() {
        check(&run, qemu_status(0), "qemu memtest (snapshotted)");
    }
    result
}

/// Restores: spawn -> guest running, spawn -> the guest's final output.
fn vmm_restore(path: &str) -> Result<(f64, f64), String> {
    let t = spawn::time(&mut vmm(&["restore", path, "--stats"]));
    check(&t, 0, "vmm restore");
    let line = t.stderr.lines().last().ok_or("no --stats line")?;
    let stats: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let vcpu_us = stats["vcpu_start_unix_us"]
        .as_u64()
        .ok_or("no vcpu_start")?;
    let spawned = t.spawned.duration_since(std::time::UNIX_EPOCH).unwrap();
    let running = vcpu_us as f64 / 1e3 - ms(spawned);
    Ok((running, ms(t.first_byte.ok_or("no output")?)))
}

fn qemu_restore(p: &Peers, file: &Path) -> Result<(f64, f64), String> {
    let sock = p.path("qmp-in.sock");
    let _ = std::fs::remove_file(&sock);
    let mut cmd = p.qemu(MEMTEST_MEM_MIB, MEMTEST_SNAP);
    cmd.args(["-global", "migration.store-global-state=off", "-qmp"])
        .arg(format!("unix:{},server=on,wait=off", sock.display()))
        .args(["-incoming", &format!("exec:cat {}", file.display())]);
    let (spawned, start, child) = spawn::spawn(&mut cmd);
    // RESUME is sent when the incoming VM starts; QMP is served from QEMU's
    // start, long before a 256 MiB state is loaded.
    let resumed =
        qmp::Qmp::connect(&sock, Duration::from_secs(30)).and_then(|mut q| q.wait_event("RESUME"));
    let t = spawn::wait(spawned, start, child);
    check(&t, qemu_status(0), "qemu restore");
    let resumed = resumed.map_err(|e| format!("no RESUME event seen: {e}"))?;
    let running = resumed.duration_since(spawned).map_err(|e| e.to_string())?;
    Ok((ms(running), ms(t.first_byte.ok_or("no output")?)))
}

fn snapshot_restore(p: &Peers) -> Vec<Row> {
    let (mut vp, mut qp, mut vd, mut rounds) = (vec![], vec![], vec![], vec![]);
    let (mut vr, mut vo, mut qr, mut qo) = (vec![], vec![], vec![], vec![]);
    let (mut verr, mut qerr) = (None, None);
    let file = p.path("qemu.state");
    for i in 0..RUNS {
        match vmm_snapshot(p, &p.path(&format!("snaps{i}")), SMALL, &[]) {
            Ok(snap) => {
                vp.push(snap.pause);
                vd.push(snap.durable);
                rounds.push(snap.rounds as f64);
                match vmm_restore(&snap.path) {
                    Ok((r, o)) => {
                        vr.push(r);
                        vo.push(o);
                    }
                    Err(e) => verr = Some(e),
                }
            }
            Err(e) => verr = Some(e),
        }
        match qemu_snapshot(p, &file, SMALL) {
            Ok(pause) => {
                qp.push(pause);
                match qemu_restore(p, &file) {
                    Ok((r, o)) => {
                        qr.push(r);
                        qo.push(o);
                    }
                    Err(e) => qerr = Some(e),
                }
            }
            Err(e) => qerr = Some(e),
        }
    }
    let fig = |v: Vec<f64>, err: &Option<String>| {
        if v.is_empty() {
            Err(err.clone().unwrap_or_else(|| "no run succeeded".into()))
        } else {
            Ok(median(v))
        }
    };
    if !vd.is_empty() {
        println!(
            "vmm snapshot, 256 MiB (pre-copy): durable after {:.1} ms, {} rounds (medians)",
            median(vd),
            median(rounds)
        );
    }
    vec![
        Row {
            name: "snapshot: full, 256 MiB: VM pause",
            unit: "ms",
            vmm: fig(vp, &verr),
            qemu: fig(qp, &qerr),
        },
        Row {
            name: "restore: spawn -> guest running",
            unit: "ms",
            vmm: fig(vr, &verr),
            qemu: fig(qr, &qerr),
        },
        Row {
            name: "restore: spawn -> output (mem rewritten)",
            unit: "ms",
            vmm: fig(vo, &verr),
            qemu: fig(qo, &qerr),
        },
    ]
}

fn memory_heavy(p: &Peers) -> Row {
    let (mut v, mut q) = (vec![], vec![]);
    let mem = MEMTEST_MEM_MIB.to_string();
    for _ in 0..HEAVY_RUNS {
        let t = spawn::time(&mut vmm(&[
            "run",
            "--mem-mib",
            &mem,
            "--cmdline",
            MEMTEST_HEAVY,
        ]));
        check(&t, 0, "vmm memtest");
        v.push(ms(t.exit));
        let t = spawn::time(&mut p.qemu(MEMTEST_MEM_MIB, MEMTEST_HEAVY));
        check(&t, qemu_status(0), "qemu memtest");
        assert!(t.stdout.contains("memtest: iters=1000"), "{}", t.stdout);
        q.push(ms(t.exit));
    }
    Row {
        name: "memory-heavy: memtest 256 MiB x 1000",
        unit: "ms",
        vmm: Ok(median(v)),
        qemu: Ok(median(q)),
    }
}
