//! `vmm restore` and `vmm snapshot list|create|merge|delete`.
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Subcommand};
use replay::Point;
use snapshot::{merge, SnapshotDir};
use vmm::api::Command;
use vmm::machine::{MemoryMode, RestoreConfig, SnapshotConfig};
use vmm::recording::RecordConfig;
use vmm::{DiskConfig, Machine, SerialOutput};

use super::run::{finish, parse_disk, parse_serial, parse_vm_id};
use super::snapshot_point::choose_at;
use super::source::Source;
use super::{Cli, CliError};

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The snapshot: its file, DIR/snapshots/ID.snap (as `vmm snapshot
    /// list` prints it); with --at, the directory DIR whose snapshots to
    /// choose from.
    pub snapshot: PathBuf,
    /// Restore the VM as of this point of its log (seq=N, time=RFC3339,
    /// mark=NAME): the latest snapshot in DIR whose barrier is at or before
    /// it, with the disk rebuilt from the log at that snapshot's own
    /// barrier (needs --rebuild-disk). Example: vmm restore rec --at
    /// mark=before-upgrade --rebuild-disk then.img
    #[arg(long, value_name = "POINT", requires = "rebuild_disk")]
    pub at: Option<Point>,
    /// With --at: whose snapshots, by the VM id of its log (default: the
    /// only recorded VM with snapshots in DIR).
    #[arg(long, value_name = "ID", requires = "at")]
    pub from_vm: Option<String>,
    /// Disks to attach instead of the snapshot's own (a clone needs its own
    /// copy); as in `vmm run --disk`.
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = parse_disk)]
    pub disks: Vec<DiskConfig>,
    #[arg(long, value_name = "stdout|file:PATH", default_value = "stdout", value_parser = parse_serial)]
    pub serial: SerialOutput,
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,
    /// Go on recording the disk into DIR (see `vmm run --record`).
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,
    /// With --record: hash the whole disk image at start (see `vmm run
    /// --rescan`).
    #[arg(long, requires = "record")]
    pub rescan: bool,
    /// With --record: MiB of decoded state each decode of a hinted file
    /// may hold (see `vmm run --decode-budget-mib`).
    #[arg(long, value_name = "N", default_value_t = introspection::decode::DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,
    /// The restored VM's name for its log and further snapshots (a clone
    /// should get its own).
    #[arg(long, value_name = "ID", default_value = "vm0", value_parser = parse_vm_id)]
    pub vm_id: String,
    /// Keep taking snapshots (default: into the snapshot's own directory).
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,
    /// Serve the control socket at PATH (see `vmm run --api-sock`).
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Serve live metrics (Prometheus text format) at ADDR while the VM
    /// runs, as for `vmm run --metrics` (example: --metrics 127.0.0.1:9100).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,
    #[arg(long)]
    pub stats: bool,
    /// Restore even onto a disk whose content differs from the one the
    /// snapshot was taken with (the guest may then read data it never
    /// wrote). A disk of another size is refused regardless. With
    /// --rebuild-disk: replace PATH if it exists.
    #[arg(long)]
    pub force: bool,
    /// Rebuild the snapshot's disk at PATH from its change log, as of the
    /// snapshot's own barrier (a verified replay, from the checkpoint
    /// taken with the snapshot), and restore onto it: a host that never
    /// ran the VM needs no separate replay step.
    #[arg(long, value_name = "PATH", conflicts_with = "disks")]
    pub rebuild_disk: Option<PathBuf>,
    /// With --rebuild-disk: where the log is (default: the snapshot's own
    /// directory, DIR of DIR/snapshots/ID.snap), or a record set in a
    /// cluster (nats://HOST:PORT[,HOST:PORT...]/NAME).
    #[arg(long, value_name = "DIR|URL", requires = "rebuild_disk")]
    pub log: Option<PathBuf>,
    /// How guest memory comes back: `lazy` starts the vCPU at once and
    /// brings pages in on first touch and in the background (userfaultfd;
    /// eager, with a warning, where that is unavailable); `eager` copies
    /// every page in before the vCPU starts.
    #[arg(long, value_name = "lazy|eager", default_value = "lazy")]
    pub memory: MemoryMode,
}

/// `DIR/snapshots/ID.snap` -> (DIR, ID).
pub(super) fn split_snapshot_path(path: &Path) -> Result<(PathBuf, String), CliError> {
    let bad = || {
        CliError::new(format!(
            "{} is not a snapshot file path: expected DIR/snapshots/ID.snap (see `vmm snapshot list DIR`)",
            path.display()
        ))
    };
    let id = path
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_suffix(".snap"))
        .ok_or_else(bad)?;
    let snapshots = path.parent().ok_or_else(bad)?;
    if snapshots.file_name().and_then(|n| n.to_str()) != Some("snapshots") {
        return Err(bad());
    }
    let dir = snapshots
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    Ok((dir, id.to_string()))
}

pub fn restore(cli: &Cli, args: &RestoreArgs) -> Result<i32, CliError> {
    let (dir, id) = match &args.at {
        Some(point) => {
            if !args.snapshot.is_dir() {
                return Err(CliError::new(format!(
                    "with --at, give the directory whose snapshots to choose from (e.g. the record directory), not {}",
                    args.snapshot.display()
                )));
            }
            let log = args.log.clone().unwrap_or_else(|| args.snapshot.clone());
            let source = Source::open(&log)?;
            let id = choose_at(&args.snapshot, source.logs(), &args.from_vm, point)?;
            (args.snapshot.clone(), id)
        }
        None => split_snapshot_path(&args.snapshot)?,
    };
    let mut disks = args.disks.clone();
    if let Some(path) = &args.rebuild_disk {
        let log = args.log.clone().unwrap_or_else(|| dir.clone());
        disks = vec![super::snapshot_disk::rebuild(
            &dir, &id, &log, path, args.force,
        )?];
    }
    let config = RestoreConfig {
        kvm_path: cli.kvm.clone(),
        dir: dir.clone(),
        id,
        disks: (!disks.is_empty()).then_some(disks),
        serial: args.serial.clone(),
        timeout: args.timeout.map(Duration::from_secs),
        record: args.record.clone().map(|dir| RecordConfig {
            dir,
            vm_id: args.vm_id.clone(),
            decode: true,
            decode_limits: introspection::decode::DecodeLimits {
                budget_mib: args.decode_budget_mib,
            },
            replicate: None,
            checkpoints: Default::default(),
            rescan: args.rescan,
            log_segment_bytes: None,
            watches: Vec::new(),
        }),
        snapshot: Some(SnapshotConfig {
            dir: args.snapshots.clone().unwrap_or(dir),
            vm_id: args.vm_id.clone(),
        }),
        api_sock: args.api_sock.clone(),
        force: args.force,
        memory: args.memory,
        counters: Default::default(),
    };
    // Bound before the VM exists: an address in use fails here (125).
    let _metrics = super::run::serve_metrics(args.metrics.as_deref(), &config.counters)?;
    let machine = Machine::restore(&config)?;
    Ok(finish(
        machine,
        args.stats,
        args.record.as_deref(),
        &args.vm_id,
    )?)
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCommand {
    /// List the snapshots in a directory: path, kind, VM, parent.
    ///
    /// Examples:
    ///   vmm snapshot list /tmp/rec --json
    ///   vmm restore $(vmm snapshot list /tmp/rec --latest)
    #[command(verbatim_doc_comment)]
    List(ListArgs),
    /// Snapshot a running VM through its control socket (`vmm run
    /// --api-sock`). Prints the new snapshot's path.
    ///
    /// Example: vmm snapshot create --api-sock /tmp/vm0.sock --incremental
    Create(CreateArgs),
    /// Fold an incremental snapshot and its chain of parents into one new
    /// full snapshot (the chain stays; the new id is printed).
    ///
    /// Example: vmm snapshot merge /tmp/rec/snapshots/ID.snap
    Merge(MergeArgs),
    /// Delete a snapshot's manifest (durably); `vmm store gc DIR` then
    /// frees the pages nothing else uses. A snapshot that is the parent of
    /// others is refused (they are named) unless --with-children deletes
    /// them all. The snapshot is named as for merge, or as DIR ID.
    ///
    /// Examples:
    ///   vmm snapshot delete /tmp/rec/snapshots/ID.snap
    ///   vmm snapshot delete /tmp/rec ID --with-children --json
    #[command(verbatim_doc_comment)]
    Delete(DeleteArgs),
    /// Copy snapshots (and their parents) into a record set in a cluster,
    /// each manifest after every object it names is acknowledged there.
    ///
    /// Example: vmm snapshot push snaps --to nats://10.0.0.1:4222/lab
    Push(super::snapshot_remote::PushArgs),
    /// Copy snapshots (and their parents) from a cluster into a local
    /// directory, to restore them on a host that never ran the VM.
    ///
    /// Example:
    ///   vmm snapshot pull nats://10.0.0.1:4222/lab --to snaps --id ID
    ///   vmm restore snaps/snapshots/ID.snap
    #[command(verbatim_doc_comment)]
    Pull(super::snapshot_remote::PullArgs),
}

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// DIR/snapshots/ID.snap, or the record directory DIR followed by ID.
    #[arg(value_name = "SNAPSHOT|DIR ID", num_args = 1..=2, required = true)]
    pub target: Vec<PathBuf>,
    /// Also delete every snapshot descending from it.
    #[arg(long)]
    pub with_children: bool,
    /// Print one JSON object: the ids deleted, leaves first.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// Only the pages dirtied since the VM's last snapshot.
    #[arg(long)]
    pub incremental: bool,
    /// Keep the VM stopped while all memory is captured (the old way),
    /// instead of pre-copying it while the guest runs and stopping it
    /// only for the pages written meanwhile.
    #[arg(long)]
    pub stop_the_world: bool,
    #[arg(long)]
    pub json: bool,
}

/// A running VM's control socket (for pause, resume and mark).
#[derive(Debug, Args)]
pub struct SocketArgs {
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
}

#[derive(Debug, Args)]
pub struct MarkArgs {
    #[arg(long, value_name = "PATH")]
    pub api_sock: PathBuf,
    /// The mark's name (1-256 bytes); replay and drills can target it.
    pub name: String,
}

fn ask(socket: &Path, command: Command) -> Result<serde_json::Value, CliError> {
    vmm::api::client::request(socket, &command).map_err(CliError::from_display)
}

pub fn create(args: &CreateArgs) -> Result<i32, CliError> {
    let kind = if args.incremental {
        "incremental"
    } else {
        "full"
    };
    let answer = ask(
        &args.api_sock,
        Command::Snapshot {
            kind: kind.into(),
            stop_the_world: args.stop_the_world,
        },
    )?;
    if args.json {
        println!("{answer}");
    } else {
        println!("{}", answer["path"].as_str().unwrap_or_default());
        eprintln!(
            "{} snapshot ({}, {} rounds): {} of {} pages hashed, {} new objects, VM paused {:.1} ms, durable after {:.1} ms",
            answer["kind"].as_str().unwrap_or(kind),
            answer["mode"].as_str().unwrap_or_default(),
            answer["rounds"],
            answer["hashed_pages"],
            answer["pages"],
            answer["new_objects"],
            answer["pause_us"].as_f64().unwrap_or(0.0) / 1e3,
            answer["durable_us"].as_f64().unwrap_or(0.0) / 1e3
        );
    }
    Ok(0)
}

pub fn pause(args: &SocketArgs) -> Result<i32, CliError> {
    ask(&args.api_sock, Command::Pause).map(|_| 0)
}

pub fn resume(args: &SocketArgs) -> Result<i32, CliError> {
    ask(&args.api_sock, Command::Resume).map(|_| 0)
}

pub fn mark(args: &MarkArgs) -> Result<i32, CliError> {
    let answer = ask(
        &args.api_sock,
        Command::Mark {
            name: args.name.clone(),
        },
    )?;
    println!("mark '{}' at seq {}", args.name, answer["seq"]);
    Ok(0)
}

#[derive(Debug, Args)]
pub struct ListArgs {
    pub dir: PathBuf,
    /// One JSON object per snapshot (NDJSON).
    #[arg(long)]
    pub json: bool,
    /// Only the newest snapshot (for scripts: with --json its object, else
    /// just its path). Exit status 125 when there is none.
    #[arg(long)]
    pub latest: bool,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    pub snapshot: PathBuf,
}

pub fn list(args: &ListArgs) -> Result<i32, CliError> {
    let dir = SnapshotDir::open_existing(&args.dir).map_err(CliError::from_display)?;
    let entries = dir.list().map_err(CliError::from_display)?;
    if args.latest {
        let newest = entries
            .into_iter()
            .filter_map(|e| e.map_err(|e| eprintln!("warning: {e}")).ok())
            .max_by(|a, b| (a.created_ns, &a.id).cmp(&(b.created_ns, &b.id)))
            .ok_or_else(|| {
                CliError::new(format!("{} holds no readable snapshot", args.dir.display()))
            })?;
        if args.json {
            println!("{}", serde_json::to_string(&newest).expect("serialize"));
        } else {
            let path = dir.path(&newest.id).map_err(CliError::from_display)?;
            println!("{}", path.display());
        }
        return Ok(0);
    }
    for entry in entries {
        match entry {
            Ok(s) if args.json => println!("{}", serde_json::to_string(&s).expect("serialize")),
            Ok(s) => println!(
                "{}  {}  vm {}  parent {}",
                dir.path(&s.id)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
                s.kind,
                s.vm_id,
                s.parent.as_deref().unwrap_or("-")
            ),
            Err(e) => eprintln!("warning: {e}"),
        }
    }
    Ok(0)
}

pub fn merge_cmd(args: &MergeArgs) -> Result<i32, CliError> {
    let (dir, id) = split_snapshot_path(&args.snapshot)?;
    let dir = SnapshotDir::open_existing(&dir).map_err(CliError::from_display)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    let merged = merge(&dir, &store, &id).map_err(CliError::from_display)?;
    println!(
        "{}",
        dir.path(&merged.id)
            .map_err(CliError::from_display)?
            .display()
    );
    Ok(0)
}

pub fn delete(args: &DeleteArgs) -> Result<i32, CliError> {
    let (dir, id) = match args.target.as_slice() {
        [snapshot] => split_snapshot_path(snapshot)?,
        [dir, id] => (dir.clone(), id.to_string_lossy().into_owned()),
        _ => unreachable!("clap takes one or two values"),
    };
    let snaps = SnapshotDir::open_existing(&dir).map_err(CliError::from_display)?;
    let deleted = snaps
        .delete(&id, args.with_children)
        .map_err(CliError::from_display)?;
    if args.json {
        println!("{}", serde_json::json!({ "ok": true, "deleted": deleted }));
    } else {
        for id in &deleted {
            println!(
                "deleted {}",
                snaps.snapshots_dir().join(format!("{id}.snap")).display()
            );
        }
        eprintln!(
            "vmm: run `vmm store gc {}` to free the pages no other snapshot or log uses",
            dir.display()
        );
    }
    Ok(0)
}
