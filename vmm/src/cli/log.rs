//! `vmm log show|verify` and `vmm store stats`: reading a record directory.
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use changelog::log::{Record, RecordKind};
use changelog::metrics::StepMetrics;
use changelog::recording::{self, RecordDir};
use changelog::LogBackend;
use clap::{Args, Subcommand};
use introspection::semantic::{describe_hint, SemanticChange};
use store::hex;

use super::CliError;
use snapshot::refs::Scope;
use snapshot::trust;

#[derive(Debug, Subcommand)]
pub enum LogCommand {
    /// List the records of the change logs in a record directory.
    ///
    /// Example: vmm log show /tmp/rec --vm vm0 --from 100 --limit 20
    Show(ShowArgs),
    /// Check logs completely: frame and record CRCs, the CRC chain, that
    /// every block a write names is in the store's index, and every
    /// barrier's disk checksum recomputed from the writes before it. With
    /// --deep, also read every block back and check its BLAKE3 (without
    /// it the block data is not read, and the OK line says so). Prints OK
    /// per VM, or the first bad record and why (exit status 1).
    ///
    /// Example: vmm log verify /tmp/rec --deep
    Verify(VerifyArgs),
    /// Append a named mark to a VM's log while the VM is not running (a
    /// running VM takes marks through its control socket). Replay and
    /// drills can then target `mark=NAME`.
    ///
    /// Example: vmm log mark /tmp/rec before-upgrade --vm web1
    Mark(MarkArgs),
    /// Copy a record directory's logs and the blocks they name into a NATS
    /// JetStream cluster (replicated there), continuing where the
    /// cluster's copy ends. Replay, changes and history then read them
    /// from the cluster on any host: pass nats://HOST:PORT/NAME in place of
    /// DIR. A cluster copy that is not a prefix of the local log is
    /// refused.
    ///
    /// Example: vmm log push /tmp/rec --to nats://127.0.0.1:4222/lab
    Push(super::source::PushArgs),
    /// List a VM's temporal checkpoints (seq, time, blocks mapped): the
    /// points `vmm replay` starts from instead of the log's beginning.
    ///
    /// Example: vmm log checkpoints /tmp/rec --vm web1 --json
    Checkpoints(CheckpointsArgs),
    /// Summarise what a VM's recorded steps cost, from the metrics record
    /// after each barrier: per run and overall, totals (vCPU and recorder
    /// CPU time, VM exits by kind, guest bytes read and written, bytes
    /// stored after dedup), p50/p99/max per barrier, the dedup ratio and
    /// peak RSS.
    ///
    /// Example: vmm log stats /tmp/rec --vm web1 --json
    Stats(super::log_stats::StatsArgs),
}

#[derive(Debug, Args)]
pub struct CheckpointsArgs {
    /// Record directory, or a record set in a cluster
    /// (nats://HOST:PORT[,HOST:PORT...]/NAME).
    #[arg(value_name = "DIR|URL")]
    pub dir: PathBuf,
    /// Whose checkpoints (default: every VM's).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// One JSON object per checkpoint.
    #[arg(long)]
    pub json: bool,
}

/// `vmm log checkpoints`.
pub fn checkpoints(args: &CheckpointsArgs) -> Result<i32, CliError> {
    let source = super::source::Source::open(&args.dir)?;
    let logs = source.logs();
    for vm in vms(logs, &args.vm)? {
        for cp in logs.checkpoints(&vm).map_err(CliError::from_display)? {
            let blocks: u64 = cp.chunks.len() as u64;
            if args.json {
                let mut v = serde_json::to_value(&cp).expect("checkpoints serialize");
                v["vm"] = serde_json::Value::String(vm.clone());
                println!("{v}");
            } else {
                println!(
                    "{vm}  seq {}  {}  {} map chunk(s), disk checksum {}",
                    cp.seq,
                    humantime::format_rfc3339_nanos(
                        std::time::UNIX_EPOCH + std::time::Duration::from_nanos(cp.ts_ns)
                    ),
                    blocks,
                    store::hex::encode(&cp.disk_checksum)
                );
            }
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    /// Record directory (as given to `vmm run --record`).
    pub dir: PathBuf,
    /// Whose log (default: the only VM recorded in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// The mark's name (1-256 bytes).
    pub name: String,
}

#[derive(Debug, Args)]
pub struct ShowArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// in a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(value_name = "DIR|URL")]
    pub dir: PathBuf,
    /// Only this VM's log (default: every VM in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Start at this sequence number.
    #[arg(long, value_name = "SEQ", default_value_t = 1)]
    pub from: u64,
    /// Show at most N records per VM.
    #[arg(long, value_name = "N")]
    pub limit: Option<u64>,
    /// One JSON object per record (NDJSON), for scripts.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// pushed to a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    pub dir: PathBuf,
    /// Only this VM's log (default: every VM in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Print one JSON report per VM.
    #[arg(long)]
    pub json: bool,
    /// Read every block the log references back and check its BLAKE3.
    #[arg(long)]
    pub deep: bool,
}

/// The VMs a command acts on: `only` (when present there) or every VM.
pub fn vms(logs: &dyn LogBackend, only: &Option<String>) -> Result<Vec<String>, CliError> {
    let location = logs.location();
    if !location.starts_with("nats://") && !Path::new(&location).is_dir() {
        return Err(CliError::new(format!(
            "{location} is not a record directory (it does not exist); pass the DIR given to `vmm run --record`"
        )));
    }
    let all = logs
        .vm_ids()
        .map_err(|e| CliError::new(format!("{location}: {e}")))?;
    match only {
        Some(vm) if all.contains(vm) => Ok(vec![vm.clone()]),
        Some(vm) => Err(CliError::new(format!(
            "no log for VM '{vm}' in {location} (VMs there: {})",
            if all.is_empty() {
                "none".into()
            } else {
                all.join(", ")
            }
        ))),
        None if all.is_empty() => Err(CliError::new(format!(
            "{location} holds no logs; record one with `vmm run --disk IMG --record {location}`"
        ))),
        None => Ok(all),
    }
}

/// The one VM a command that works on a single log acts on: `only` when
/// given (and present), else the only VM recorded in `dir`. Several VMs
/// and no --vm is an error naming them, never a guess.
pub fn one_vm(logs: &dyn LogBackend, only: &Option<String>) -> Result<String, CliError> {
    let mut all = vms(logs, only)?;
    if all.len() > 1 {
        return Err(CliError::new(format!(
            "{} holds the logs of several VMs ({}); pass --vm ID to choose one",
            logs.location(),
            all.join(", ")
        )));
    }
    Ok(all.remove(0))
}

pub fn show(args: &ShowArgs) -> Result<i32, CliError> {
    let source = super::source::Source::open(&args.dir)?;
    let logs = source.logs();
    for vm in vms(logs, &args.vm)? {
        let mut records = logs
            .records(&vm, args.from.max(1))
            .map_err(CliError::from_display)?
            .peekable();
        if !args.json {
            // The first seq kept (a cluster's retention may have removed
            // older ones) and the last.
            let first = match records.peek() {
                Some(Ok(r)) => r.seq,
                _ => 0,
            };
            let last = logs.last_seq(&vm).map_err(CliError::from_display)?;
            println!("{vm}: seq {first}..{last}");
            println!("{:>10}  {:<30}  record", "seq", "time (UTC)");
        }
        for (n, record) in records.enumerate() {
            if args.limit.is_some_and(|l| n as u64 >= l) {
                break;
            }
            let record = record.map_err(CliError::from_display)?;
            if args.json {
                let mut v = serde_json::to_value(&record).expect("records serialize");
                v["vm"] = vm.clone().into();
                v["hlc"] = record.hlc().to_string().into();
                println!("{v}");
            } else {
                println!(
                    "{:>10}  {:<30}  {}",
                    record.seq,
                    time(record.ts_ns),
                    describe(&record)
                );
            }
        }
    }
    Ok(0)
}

fn time(ts_ns: u64) -> String {
    humantime::format_rfc3339_micros(UNIX_EPOCH + Duration::from_nanos(ts_ns)).to_string()
}

fn describe(record: &Record) -> String {
    match &record.kind {
        RecordKind::BlockWrite { sector, len, .. } => {
            format!(
                "write  sector {sector} ({} blocks, {len} bytes)",
                len / store::BLOCK_SIZE as u32
            )
        }
        RecordKind::Barrier {
            kind,
            disk_checksum,
        } => format!(
            "{kind:?} barrier, disk checksum {}",
            &hex::encode(disk_checksum)[..16]
        )
        .to_lowercase(),
        RecordKind::Mark { name } => format!("mark   {name}"),
        RecordKind::SnapshotTaken { id } => format!("snapshot {id}"),
        RecordKind::Hint { message } => format!("hint   {}", describe_hint(message)),
        RecordKind::Semantic { json } => match serde_json::from_str::<SemanticChange>(json) {
            Ok(change) => format!("change {change}"),
            Err(_) => format!("change {json}"),
        },
        RecordKind::Metrics { json } => match StepMetrics::from_json(json) {
            Ok(m) => format!(
                "metrics of barrier {}: vcpu {:.3} ms, {} exits, guest wrote {} read {}, stored {} new, rss {} KiB",
                m.barrier,
                m.vcpu_ns as f64 / 1e6,
                m.exits.total(),
                m.guest_written_bytes,
                m.guest_read_bytes,
                m.stored_bytes,
                m.rss_kib
            ),
            Err(_) => format!("metrics {json}"),
        },
    }
}

pub fn verify(args: &VerifyArgs) -> Result<i32, CliError> {
    if let source @ super::source::Source::Cluster(_) = super::source::Source::open(&args.dir)? {
        return verify_cluster(args, &source);
    }
    let dir = RecordDir::new(&args.dir);
    let mut status = 0;
    for vm in vms(&dir, &args.vm)? {
        let report = recording::verify(&dir, &vm).map_err(CliError::from_display)?;
        // The content itself, only when asked: it reads every block.
        let content = if args.deep {
            let store = dir.open_store().map_err(CliError::from_display)?;
            let scope = Scope {
                vm: Some(vm.clone()),
                logs_only: true,
            };
            Some(
                trust::check(dir.root(), &store, &scope, true, !args.json)
                    .map_err(CliError::from_display)?,
            )
        } else {
            None
        };
        let content_ok = content.as_ref().is_none_or(|c| c.is_ok());
        if !report.is_ok() || !content_ok {
            status = 1;
        }
        if args.json {
            let mut v = serde_json::to_value(&report).expect("reports serialize");
            v["content_checked"] = args.deep.into();
            if let Some(c) = &content {
                v["content"] = serde_json::to_value(c).expect("reports serialize");
            }
            println!("{v}");
            continue;
        }
        if let Some(c) = &content {
            super::store::print_problems(c);
        }
        match &report.log.problem {
            None if content_ok => println!(
                "{vm}: OK: {} records (seq {}..{}) in {} segments, {} barriers verified, {} blocks {}{}",
                report.log.records,
                report.log.first_seq.unwrap_or(0),
                report.log.last_seq,
                report.log.segments,
                report.barriers_checked,
                report.objects_checked,
                if args.deep {
                    "read back and BLAKE3-checked"
                } else {
                    "in the store's index (index only; run --deep to read the data)"
                },
                report.from_checkpoint.map_or(String::new(), |cp| format!(
                    "; older records were removed (store retain): disk checksums checked from the checkpoint at seq {cp}"
                ))
            ),
            None => println!(
                "{vm}: FAILED: the log checks, but {} block object(s) it needs are missing or damaged in the store (listed above)",
                content.as_ref().map_or(0, |c| c.bad_objects.len())
            ),
            Some(p) => println!(
                "{vm}: FAILED at {} ({}, offset {}): {}{}",
                p.seq.map_or("an unreadable record".to_string(), |s| format!("seq {s}")),
                p.segment.display(),
                p.offset,
                p.reason,
                if p.torn_tail { " (torn tail: the writer cuts it on next open)" } else { "" }
            ),
        }
    }
    Ok(status)
}

/// `log verify nats://...`: each log as the cluster holds it (see
/// `changelog::verify_through`).
fn verify_cluster(args: &VerifyArgs, source: &super::source::Source) -> Result<i32, CliError> {
    let objects = source.objects()?;
    let mut status = 0;
    for vm in vms(source.logs(), &args.vm)? {
        let r = changelog::verify_through(source.logs(), objects.backend(), &vm, args.deep)
            .map_err(CliError::from_display)?;
        if r.problem.is_some() {
            status = 1;
        }
        if args.json {
            println!("{}", serde_json::to_string(&r).expect("reports serialize"));
            continue;
        }
        match &r.problem {
            None => println!(
                "{vm}: OK: {} records (seq ..{}) in {}, {} barriers verified, {} blocks {}",
                r.records,
                r.last_seq,
                r.location,
                r.barriers_checked,
                r.objects_checked,
                if args.deep {
                    "read back and BLAKE3-checked"
                } else {
                    "present in the cluster (presence only; run --deep to read the data)"
                }
            ),
            Some((seq, why)) => println!("{vm}: FAILED at seq {seq}: {why}"),
        }
        if let (Some(first), Some(cp)) = (r.trimmed_before, r.from_checkpoint) {
            println!(
                "{vm}: records before seq {first} were removed by the record set's retention limits; checked from the checkpoint at seq {cp}"
            );
        }
    }
    Ok(status)
}

pub fn mark(args: &MarkArgs) -> Result<i32, CliError> {
    let dir = RecordDir::new(&args.dir);
    let vm = one_vm(&dir, &args.vm)?;
    // Through the recorder's open: a failed run's unstored records are cut
    // before this mark makes the log's sync point move past them.
    let store = dir.open_store().map_err(CliError::from_display)?;
    let (mut log, _, cut) = introspection::tap_recovery::open_log(&dir, &store, &vm, None)
        .map_err(CliError::from_display)?;
    if let Some(cut) = cut {
        tracing::warn!("log of {vm}: {cut}");
    }
    let seq = log
        .append(RecordKind::Mark {
            name: args.name.clone(),
        })
        .map_err(CliError::from_display)?;
    log.sync().map_err(CliError::from_display)?;
    log.close().map_err(CliError::from_display)?;
    println!("{vm}: mark '{}' at seq {seq}", args.name);
    Ok(0)
}
