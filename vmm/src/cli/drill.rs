//! `vmm drill`: a disaster-recovery drill. Restore a recorded disk to a
//! point (a verified replay), boot a VM on it whose workload checks the
//! data, and report PASS/FAIL with timings.
//!
//! The default check (`--check auto`) follows what the disk holds: the
//! files the guest announced on the hint channel up to the restore point.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use changelog::log::RecordKind;
use changelog::LogBackend;
use clap::Args;
use hint_proto::{Format, Hint, Role};
use replay::{Base, Options, Point};
use serde::Serialize;
use vmm::metrics::{Counters, RunMetrics};
use vmm::tune::Config;
use vmm::{shutdown, DiskConfig, Machine, SerialOutput, VmConfig};

use super::replay::{claim_output, lock_base};
use super::source::Source;
use super::{Cli, CliError};

#[derive(Debug, Args)]
pub struct DrillArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// pushed to a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(long, value_name = "DIR|URL")]
    pub log: PathBuf,
    /// Whose log (default: the only VM recorded in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Where to start (see `vmm replay --base`).
    #[arg(long, value_name = "IMAGE|empty", default_value = "empty")]
    pub base: Base,
    /// The point to restore to: seq=N, time=RFC3339, mark=NAME or end.
    #[arg(long, value_name = "POINT")]
    pub at: Point,
    /// The microguest command line that checks the restored disk (guest
    /// exit status 0: PASS). `auto` picks it from the files the guest
    /// announced in the log up to the restore point: an SQLite database is
    /// opened and integrity-checked (`workload=sqlite-summary`); a disk
    /// without announced files must hold only zero or intact `blk-writes`
    /// blocks (`workload=blk-verify`); JSON and key-value files need an
    /// explicit --check.
    #[arg(long, value_name = "CMDLINE|auto", default_value = "auto")]
    pub check: String,
    /// Keep the restored disk at PATH (default: removed after the drill).
    #[arg(long, value_name = "PATH")]
    pub keep: Option<PathBuf>,
    /// Replace --keep if it exists.
    #[arg(long)]
    pub force: bool,
    #[command(flatten)]
    pub config: ConfigArgs,
    #[arg(long)]
    pub json: bool,
}

/// The configuration the check VM runs under: a what-if for the workload
/// (its metrics go into the report).
#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Guest memory of the check VM in MiB (example: --mem-mib 64).
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub mem_mib: u64,
    /// vCPUs of the check VM, 1 to 8 (example: --vcpus 2).
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = super::run::parse_vcpus)]
    pub vcpus: u8,
    /// Limit the check VM's disk to N guest requests a second (example:
    /// --disk-iops 500); default: no limit.
    #[arg(long, value_name = "N", value_parser = super::run::parse_iops)]
    pub disk_iops: Option<u64>,
}

impl ConfigArgs {
    pub fn config(&self) -> Config {
        Config {
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            disk_iops: self.disk_iops,
        }
    }
}

#[derive(Debug, Serialize)]
struct DrillReport {
    vm: String,
    at: String,
    restored_to_seq: u64,
    last_verified_barrier: Option<u64>,
    replay_verified: bool,
    /// The restored disk's state checksum (hex; empty if the restore failed).
    checksum: String,
    restore_ms: f64,
    /// What the restore's replayed intervals cost (barrier to barrier).
    replay_steps: replay::StepTotals,
    /// The guest command line that checked the disk.
    check: String,
    /// What the check VM was given.
    config: Config,
    /// What the check VM's run cost (None: no check VM ran).
    metrics: Option<RunMetrics>,
    /// Whether a check VM ran (false: the restore failed, or `auto` found
    /// no check for the disk's files: exit status 125).
    checked: bool,
    boot_and_check_ms: f64,
    guest_status: Option<u8>,
    guest_output: String,
    error: Option<String>,
    pass: bool,
}

/// The main files the guest announced in `vm`'s log up to `last_seq`
/// (file id -> format; forgotten files are gone again).
fn announced_files(logs: &dyn LogBackend, vm: &str, last_seq: u64) -> Result<Vec<Format>, String> {
    let mut files = BTreeMap::new();
    for record in logs.records(vm, 1).map_err(|e| e.to_string())? {
        let record = record.map_err(|e| e.to_string())?;
        if record.seq > last_seq {
            break;
        }
        let RecordKind::Hint { message } = record.kind else {
            continue;
        };
        // An undecodable hint says nothing about the disk; the replay
        // already verified what the disk holds.
        match hint_proto::decode(&message) {
            Ok((
                Hint::File {
                    file_id,
                    format,
                    role: Role::Main,
                    ..
                },
                _,
            )) => {
                files.insert(file_id, format);
            }
            Ok((Hint::Forget { file_id }, _)) => {
                files.remove(&file_id);
            }
            _ => {}
        }
    }
    Ok(files.into_values().collect())
}

/// The check command line for `--check auto`, or why there is none.
fn auto_check(formats: &[Format]) -> Result<String, String> {
    if formats.is_empty() {
        return Ok("workload=blk-verify".into());
    }
    if formats.iter().all(|f| *f == Format::Sqlite) {
        return Ok("workload=sqlite-summary".into());
    }
    let kinds: std::collections::BTreeSet<String> = formats
        .iter()
        .filter(|f| **f != Format::Sqlite)
        .map(|f| format!("{f:?}"))
        .collect();
    Err(format!(
        "the disk holds files ({}) with no built-in check; pass --check CMDLINE (a microguest workload that exits 0 when the data is good)",
        kinds.into_iter().collect::<Vec<_>>().join(", ")
    ))
}

/// The check command line: `check` as given, or for `auto` the one the
/// files announced in `vm`'s log up to `last_seq` call for.
pub(super) fn check_for(
    logs: &dyn LogBackend,
    vm: &str,
    last_seq: u64,
    check: &str,
) -> Result<String, String> {
    if check == "auto" {
        announced_files(logs, vm, last_seq).and_then(|f| auto_check(&f))
    } else {
        Ok(check.to_string())
    }
}

pub fn drill(cli: &Cli, args: &DrillArgs) -> Result<i32, CliError> {
    let source = Source::open(&args.log)?;
    let dir = source.logs();
    let vm = super::log::one_vm(dir, &args.vm)?;
    let objects = source.objects()?;
    let keep_lock = match &args.keep {
        Some(path) => claim_output(path, args.force, "--keep")?,
        None => None,
    };
    let _base_lock = lock_base(&args.base, keep_lock.as_ref())?;
    let disk = match &args.keep {
        Some(path) => path.clone(),
        None => std::env::temp_dir().join(format!("vmm-drill-{}.img", std::process::id())),
    };
    let started = Instant::now();
    let cancel = || shutdown::requested().is_some();
    let replayed = replay::replay_to_file_from(
        dir,
        objects.backend(),
        &vm,
        &args.base,
        &args.at,
        &disk,
        Options {
            cancel: Some(&cancel),
            ..Options::default()
        },
    );
    drop(keep_lock);
    let mut report = DrillReport {
        vm,
        at: args.at.to_string(),
        restored_to_seq: 0,
        last_verified_barrier: None,
        replay_verified: false,
        checksum: String::new(),
        restore_ms: started.elapsed().as_secs_f64() * 1e3,
        replay_steps: Default::default(),
        check: args.check.clone(),
        config: args.config.config(),
        metrics: None,
        checked: false,
        boot_and_check_ms: 0.0,
        guest_status: None,
        guest_output: String::new(),
        error: None,
        pass: false,
    };
    let mut cannot_check = false;
    match replayed {
        Err(e) => report.error = Some(format!("restore failed: {e}")),
        Ok(r) => {
            report.restored_to_seq = r.last_seq;
            report.replay_steps = r.steps;
            report.last_verified_barrier = r.last_verified_barrier;
            report.replay_verified = r.verified;
            report.checksum = r.checksum.clone();
            match check_for(dir, &report.vm, r.last_seq, &args.check) {
                Ok(check) => {
                    report.check = check;
                    report.checked = true;
                    let run = run_check(cli, &disk, &report.check, &report.config);
                    report.boot_and_check_ms = run.metrics.time_ms;
                    report.guest_output = run.output;
                    report.guest_status = run.status;
                    report.error = run.error;
                    report.metrics = Some(run.metrics);
                    report.pass = r.verified && report.guest_status == Some(0);
                }
                Err(e) => {
                    report.error = Some(e);
                    cannot_check = true;
                }
            }
        }
    }
    if args.keep.is_none() {
        let _ = std::fs::remove_file(&disk);
    }
    print(args, &report, cannot_check);
    if let Source::Dir(dir) = &source {
        journal(dir.root(), &report);
    }
    if let Some(signal) = shutdown::requested() {
        return Ok(shutdown::exit_status(signal));
    }
    Ok(if report.pass {
        0
    } else if cannot_check {
        vmm::error::exit::CANNOT_RUN
    } else {
        vmm::error::exit::CHECK_FAILED
    })
}

/// Adds the drill to the record directory's drill journal (which `vmm
/// report` shows), without the guest's console output. A journal that
/// cannot be written is a warning: the drill itself has its answer.
fn journal(dir: &Path, report: &DrillReport) {
    let mut entry = serde_json::to_value(report).expect("reports serialize");
    entry["guest_output"] = serde_json::Value::Null;
    entry["ts_ns"] = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        .into();
    if let Err(e) = insight::drills::append(dir, &entry) {
        eprintln!(
            "vmm: warning: the drill was not added to {}: {e}",
            dir.join(insight::drills::FILE).display()
        );
    }
}

/// What one run of a check VM did.
pub(super) struct CheckRun {
    /// The guest's exit status (None: it did not exit by itself).
    pub status: Option<u8>,
    pub output: String,
    pub error: Option<String>,
    pub metrics: RunMetrics,
}

/// Boots a check VM running `check` under `config` on `disk` (read-only:
/// the restored image stays as the replay made it) and measures its run.
pub(super) fn run_check(cli: &Cli, disk: &Path, check: &str, config: &Config) -> CheckRun {
    let console = Arc::new(Mutex::new(Vec::new()));
    let counters = Arc::new(Counters::default());
    let vm = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: check.to_string(),
        mem_mib: config.mem_mib,
        vcpus: config.vcpus,
        disk_iops: config.disk_iops,
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(120)),
        disks: vec![DiskConfig {
            path: disk.to_path_buf(),
            read_only: true,
        }],
        counters: counters.clone(),
        ..VmConfig::default()
    };
    let booted = Instant::now();
    let outcome = Machine::build(&vm).and_then(|mut m| m.run());
    let metrics = RunMetrics::of(&counters, booted.elapsed());
    let output =
        String::from_utf8_lossy(&console.lock().unwrap_or_else(|e| e.into_inner())).into_owned();
    let (status, error) = match outcome {
        Ok(o) if o.signal.is_some() => (None, Some("the check VM was stopped by a signal".into())),
        Ok(o) => (Some(o.status), None),
        Err(e) => (None, Some(format!("the check VM failed: {e}"))),
    };
    CheckRun {
        status,
        output,
        error,
        metrics,
    }
}

fn print(args: &DrillArgs, report: &DrillReport, cannot_check: bool) {
    if args.json {
        println!(
            "{}",
            serde_json::to_string(report).expect("reports serialize")
        );
        return;
    }
    println!("disaster-recovery drill: {} at {}", report.vm, report.at);
    println!(
        "  restore     {:>8.1} ms  to seq {} (last verified barrier: {})",
        report.restore_ms,
        report.restored_to_seq,
        report
            .last_verified_barrier
            .map_or("none".into(), |s| s.to_string())
    );
    println!(
        "  boot+check  {:>8.1} ms  `{}`",
        report.boot_and_check_ms, report.check
    );
    println!("  config      {}", report.config);
    if let Some(m) = &report.metrics {
        println!(
            "  metrics     vCPU {:.1} ms, {} exits (pio {}, mmio {}, other {}), read {} B, written {} B, throttled {:.1} ms",
            m.vcpu_ms, m.exits, m.pio_exits, m.mmio_exits, m.other_exits,
            m.guest_read_bytes, m.guest_written_bytes, m.throttled_ms
        );
    }
    for line in report.guest_output.lines() {
        println!("    guest> {line}");
    }
    if let Some(e) = &report.error {
        println!("  error: {e}");
    }
    let result = match (report.pass, cannot_check) {
        (true, _) => "PASS",
        (false, false) => "FAIL",
        (false, true) => "NOT CHECKED",
    };
    println!("  result: {result}");
}
