//! `vmm demo`: the product in one command, on the built-in microguest.
//!
//! Each step narrates what it does and checks its own result, so a failing
//! step exits non-zero. Later features add steps (record, decode, snapshot,
//! replay).
use std::sync::{Arc, Mutex};

use changelog::recording::{self, RecordDir};
use clap::Args;
use vmm::recording::RecordConfig;
use vmm::{DiskConfig, Machine, SerialOutput, VmConfig, VmmError};

use super::{Cli, CliError};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Guest memory in MiB for the demo VMs.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub mem_mib: u64,
}

pub fn run(cli: &Cli, args: &DemoArgs) -> Result<i32, CliError> {
    println!("vmm demo: a tour on the built-in microguest\n");

    step(
        1,
        "Boot the microguest (PVH entry, 32-bit -> long mode -> CPL3) and let it greet",
    );
    let (console, outcome, ms) = boot(cli, args, "workload=hello")?;
    for line in console.lines() {
        println!("   guest> {line}");
    }
    println!(
        "   exit status {} after {ms:.1} ms ({} VM exits, VMM overhead {} KiB)",
        outcome.status, outcome.stats.vcpu_exits, outcome.stats.vmm_overhead_kib
    );
    if outcome.status != 0 || !console.contains("Hello from the microguest") {
        return Ok(fail("the microguest did not greet"));
    }

    step(
        2,
        "Run guest code at native speed: a seeded PRNG sum, checked on the host",
    );
    let (n, seed) = (5_000_000u64, 7u64);
    let (console, _, ms) = boot(cli, args, &format!("workload=count n={n} seed={seed}"))?;
    let expected = format!("count n={n} sum={:#018x}", xorshift_sum(n, seed));
    println!("   guest> {}", console.trim_end());
    println!("   host   {expected}");
    if !console.contains(&expected) {
        return Ok(fail("guest and host disagree"));
    }
    println!("   match ({n} steps in {ms:.1} ms, boot included)");

    step(
        3,
        "Record a disk: every guest write into a change log and a content store",
    );
    let work = tempfile_dir()?;
    let rec = work.join("rec");
    let workload = "workload=blk-writes seed=7 writes=300 max_blocks=16 flush_every=10 dup_every=3";
    let mut disks = Vec::new();
    for vm in ["vm1", "vm2"] {
        let disk = work.join(format!("{vm}.img"));
        std::fs::File::create(&disk)
            .and_then(|f| f.set_len(16 << 20))
            .map_err(|e| CliError::new(format!("{}: {e}", disk.display())))?;
        let config = VmConfig {
            kvm_path: cli.kvm.clone(),
            cmdline: workload.to_string(),
            mem_mib: args.mem_mib,
            serial: SerialOutput::Capture(Arc::new(Mutex::new(Vec::new()))),
            timeout: Some(std::time::Duration::from_secs(60)),
            disks: vec![DiskConfig {
                path: disk.clone(),
                read_only: false,
            }],
            record: Some(RecordConfig {
                dir: rec.clone(),
                vm_id: vm.to_string(),
                decode: true,
                decode_limits: Default::default(),
                replicate: None,
                checkpoints: Default::default(),
                rescan: false,
                log_segment_bytes: None,
                watches: Vec::new(),
            }),
            ..VmConfig::default()
        };
        let outcome = Machine::build(&config)?.run()?;
        let r = outcome.recording.unwrap_or_default();
        println!(
            "   {vm}: {} writes, {} blocks, {} flush barriers recorded",
            r.writes, r.blocks, r.barriers
        );
        disks.push((vm, disk));
    }
    let dir = RecordDir::new(&rec);
    for (vm, _) in &disks {
        let report = recording::verify(&dir, vm).map_err(CliError::from_display)?;
        if !report.is_ok() {
            return Ok(fail(&format!(
                "log of {vm} does not verify: {:?}",
                report.log.problem
            )));
        }
        println!(
            "   log verify {vm}: OK ({} records, {} barrier checksums recomputed, all {} blocks in the store)",
            report.log.records, report.barriers_checked, report.objects_checked
        );
    }
    let stats = snapshot::usage::stats(&dir).map_err(CliError::from_display)?;
    println!(
        "   store: {} objects, {} KiB logical, {} KiB stored: dedup {:.2}x (two VMs, same data)",
        stats.store.objects,
        stats.logical_bytes / 1024,
        stats.store.stored_bytes / 1024,
        stats.dedup_ratio
    );

    step(
        4,
        "Replay vm1's log onto an empty disk and compare byte for byte",
    );
    let (vm, disk) = &disks[0];
    let replayed = work.join("replayed.img");
    std::fs::File::create(&replayed)
        .and_then(|f| f.set_len(16 << 20))
        .map_err(|e| CliError::new(format!("{}: {e}", replayed.display())))?;
    let report = replay::apply(&dir, vm, &replayed, 1, None).map_err(CliError::from_display)?;
    let same = std::fs::read(disk).ok() == std::fs::read(&replayed).ok();
    println!(
        "   applied {} writes up to seq {}, {} barriers verified, checksum {}...",
        report.writes_applied,
        report.last_seq,
        report.barriers_verified,
        &report.checksum[..16]
    );
    if !same {
        return Ok(fail("the replayed disk differs from the recorded one"));
    }
    println!("   identical to the VM's disk");

    step(
        5,
        "Point in time: rebuild vm1's disk at its 10th flush, verified, and drill on it",
    );
    let reader =
        changelog::log::LogReader::open(dir.log_dir(vm)).map_err(CliError::from_display)?;
    let tenth = reader
        .iter()
        .map_err(CliError::from_display)?
        .filter_map(|r| r.ok())
        .filter(|r| matches!(r.kind, changelog::RecordKind::Barrier { .. }))
        .nth(10)
        .map(|r| r.seq)
        .unwrap_or(1);
    let then = work.join("then.img");
    let point = replay::Point::Seq(tenth);
    let report = replay::replay_to_file(
        &dir,
        vm,
        &replay::Base::Empty,
        &point,
        &then,
        replay::Options::default(),
    )
    .map_err(CliError::from_display)?;
    println!(
        "   {point}: {} writes applied, {} barrier checksums verified, last at seq {}",
        report.writes_applied,
        report.barriers_verified,
        report.last_verified_barrier.unwrap_or(0)
    );
    let console = Arc::new(Mutex::new(Vec::new()));
    let check = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: "workload=blk-verify".into(),
        mem_mib: args.mem_mib,
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        disks: vec![DiskConfig {
            path: then.clone(),
            read_only: true,
        }],
        ..VmConfig::default()
    };
    let outcome = Machine::build(&check)?.run()?;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    println!("   drill guest> {}", text.trim_end());
    if outcome.status != 0 || !report.verified {
        return Ok(fail("the point-in-time disk did not check out"));
    }
    println!("   PASS: the guest finds every block whole on the restored disk");

    step(
        6,
        "Snapshot a guest mid-workload (full, then incremental), restore and compare",
    );
    let memtest = "workload=memtest pages=2048 iters=60 seed=5";
    let plain = run_captured(cli, args, memtest, None)?;
    let snaps = work.join("snaps");
    let snapped = run_captured(cli, args, &format!("{memtest} snap_every=20"), Some(&snaps))?;
    for s in &snapped.1.snapshots {
        println!(
            "   {:?} snapshot: {} of {} pages hashed, {} new objects, guest paused {:.1} ms",
            s.kind,
            s.stats.hashed_pages,
            s.stats.pages,
            s.stats.new_objects,
            s.pause_us as f64 / 1e3
        );
    }
    println!("   uninterrupted> {}", plain.0.trim_end());
    for s in &snapped.1.snapshots {
        let console = Arc::new(Mutex::new(Vec::new()));
        let config = vmm::machine::RestoreConfig {
            kvm_path: cli.kvm.clone(),
            dir: snaps.clone(),
            id: s.id.clone(),
            disks: None,
            serial: SerialOutput::Capture(console.clone()),
            timeout: Some(std::time::Duration::from_secs(60)),
            record: None,
            snapshot: None,
            api_sock: None,
            force: false,
            memory: vmm::machine::MemoryMode::default(),
            counters: Default::default(),
        };
        let started = std::time::Instant::now();
        let mut machine = Machine::restore(&config)?;
        let restore_ms = started.elapsed().as_secs_f64() * 1e3;
        machine.run()?;
        let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
        println!(
            "   restored {:?} ({restore_ms:.1} ms to ready)> {}",
            s.kind,
            text.trim_end()
        );
        if text != plain.0 {
            return Ok(fail(
                "a restored guest ended differently from the uninterrupted one",
            ));
        }
    }
    println!("   identical: the restored guests carried on exactly where they were");

    step(
        7,
        "What changed inside the guest: real SQLite in the microguest, decoded on the host",
    );
    let disk = work.join("app.img");
    std::fs::File::create(&disk)
        .and_then(|f| f.set_len(64 << 20))
        .map_err(|e| CliError::new(format!("{}: {e}", disk.display())))?;
    let sqlrec = work.join("sqlrec");
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: "workload=sqlite rows=60 seed=7 journal=wal close=1".into(),
        mem_mib: args.mem_mib.max(128),
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(120)),
        disks: vec![DiskConfig {
            path: disk,
            read_only: false,
        }],
        record: Some(RecordConfig {
            dir: sqlrec.clone(),
            vm_id: "app1".into(),
            decode: true,
            decode_limits: Default::default(),
            replicate: None,
            checkpoints: Default::default(),
            rescan: false,
            log_segment_bytes: None,
            watches: Vec::new(),
        }),
        ..VmConfig::default()
    };
    let outcome = Machine::build(&config)?.run()?;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    if let Some(line) = text.lines().find(|l| l.starts_with("sqlite: ")) {
        println!("   guest> {line}");
    }
    let rec = outcome.recording.unwrap_or_default();
    println!(
        "   host: {} hints, {} writes, {} barriers -> {} row-level changes ({} decode errors)",
        rec.hints, rec.writes, rec.barriers, rec.semantic_changes, rec.decode_errors
    );
    let mut shown = std::collections::BTreeMap::new();
    let reader = changelog::log::LogReader::open(RecordDir::new(&sqlrec).log_dir("app1"))
        .map_err(CliError::from_display)?;
    for record in reader
        .iter()
        .map_err(CliError::from_display)?
        .filter_map(|r| r.ok())
    {
        let changelog::RecordKind::Semantic { json } = record.kind else {
            continue;
        };
        let Ok(introspection::lift::SemanticEvent::Change(c)) = serde_json::from_str(&json) else {
            continue;
        };
        let seen = shown.entry((c.collection.clone(), c.op)).or_insert(0);
        *seen += 1;
        if *seen <= 1 && c.collection != "sqlite_schema" {
            let line = c.to_string();
            let line = if line.len() > 150 {
                format!("{}...", &line[..150])
            } else {
                line
            };
            println!("   {line}");
        }
    }
    if rec.semantic_changes == 0 || rec.decode_errors != 0 {
        return Ok(fail("the SQLite workload's changes were not decoded"));
    }
    println!("   (all of them: vmm changes DIR; one row's versions: vmm history DIR --file app.db --key K)");
    let _ = std::fs::remove_dir_all(&work);

    println!("\ndemo OK");
    Ok(0)
}

/// Boots the microguest with `cmdline`, optionally taking snapshots into
/// `snapshots`; returns its console and outcome.
fn run_captured(
    cli: &Cli,
    args: &DemoArgs,
    cmdline: &str,
    snapshots: Option<&std::path::Path>,
) -> Result<(String, vmm::RunOutcome), CliError> {
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: cmdline.to_string(),
        mem_mib: args.mem_mib,
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        snapshot: snapshots.map(|dir| vmm::machine::SnapshotConfig {
            dir: dir.to_path_buf(),
            vm_id: "demo".into(),
        }),
        ..VmConfig::default()
    };
    let outcome = Machine::build(&config)?.run()?;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    Ok((text, outcome))
}

/// A fresh scratch directory for the demo's disks and records.
fn tempfile_dir() -> Result<std::path::PathBuf, CliError> {
    let dir = std::env::temp_dir().join(format!("vmm-demo-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| CliError::new(format!("{}: {e}", dir.display())))?;
    Ok(dir)
}

fn step(n: u32, what: &str) {
    println!("[{n}] {what}");
}

fn fail(why: &str) -> i32 {
    println!("\ndemo FAILED: {why}");
    1
}

fn boot(
    cli: &Cli,
    args: &DemoArgs,
    cmdline: &str,
) -> Result<(String, vmm::RunOutcome, f64), VmmError> {
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: cmdline.to_string(),
        mem_mib: args.mem_mib,
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..VmConfig::default()
    };
    let outcome = Machine::build(&config)?.run()?;
    // Build and run only: KVM's teardown of the VM afterwards is not boot time.
    let ms = (outcome.stats.build_us + outcome.stats.run_us) as f64 / 1e3;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    Ok((text, outcome, ms))
}

/// The microguest's `count` workload, computed on the host.
fn xorshift_sum(n: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut sum = 0u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x);
    }
    sum
}
