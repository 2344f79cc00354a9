//! The command line: argument definitions (clap) and dispatch.
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use vmm::error::exit;
use vmm::VmmError;

mod changes;
mod demo;
mod disk;
mod drill;
mod fleet;
mod insight;
mod log;
mod log_stats;
mod provenance;
mod replay;
mod retain;
mod run;
mod semantic_replay;
mod snapshot;
mod snapshot_disk;
mod snapshot_point;
mod snapshot_remote;
mod source;
mod store;
mod tune;

/// A minimal KVM VMM that boots test VMs, records what they write, and
/// snapshots and replays them.
///
/// Without --kernel, `vmm run` boots the built-in microguest, a tiny test VM
/// whose workload is chosen on its command line (e.g. `workload=hello`).
#[derive(Debug, Parser)]
#[command(
    name = "vmm",
    version = vmm::BUILD_VERSION,
    propagate_version = true,
    after_help = AFTER_HELP
)]
pub struct Cli {
    /// KVM device to use.
    #[arg(long, global = true, value_name = "PATH", default_value = "/dev/kvm")]
    pub kvm: PathBuf,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Boot a VM and run it until the guest exits.
    ///
    /// The exit status is the guest's own (written to the debug-exit port
    /// 0xf4); 124 means --timeout expired, 125 the VMM could not start the
    /// VM (a disk image another process uses, for one), 126 the guest
    /// crashed (registers are printed), 130/143 it was stopped cleanly on
    /// SIGINT/SIGTERM (recording closed with a final barrier, control
    /// socket removed).
    ///
    /// Examples:
    ///   vmm run
    ///   vmm run --cmdline "workload=count n=1000000 seed=7"
    ///   vmm run --kernel vmlinux --cmdline "console=ttyS0" --mem-mib 512
    #[command(verbatim_doc_comment)]
    Run(run::RunArgs),
    /// Walk through what the tool does on the built-in microguest, narrating
    /// each step.
    Demo(demo::DemoArgs),
    /// Inspect and verify change logs recorded with `vmm run --record DIR`.
    #[command(subcommand)]
    Log(log::LogCommand),
    /// The content store of a record directory.
    #[command(subcommand)]
    Store(store::StoreCommand),
    /// Rebuild a recorded disk at a sequence number, time or mark, verified.
    ///
    /// Every barrier passed on the way is checked against its recorded disk
    /// checksum; the result is renamed into place only on success. An
    /// existing --out is replaced only with --force, and never when a
    /// running VM has it attached or it lies in a record directory.
    ///
    /// Examples:
    ///   vmm replay --log rec/ --vm web1 --until mark=before-upgrade --out web1.img
    ///   vmm replay --log rec/ --base orig.img --until seq=4711 --out then.img
    ///   vmm replay --log rec/ --until end --drop seq=100..120 --out whatif.img
    ///   vmm replay --log rec/ --until seq=50 --step barrier --out x.img
    ///   vmm replay --log rec/ --until end --out web1.img --force
    ///
    /// Application-level replay (rows of one file, proved against the disk):
    ///   vmm replay --log rec/ --semantic --file app.db --until mark=m1 --out app-m1.db
    ///   vmm replay --log rec/ --semantic --file app.db --table customers --key 1..100 --out c.db
    ///   vmm replay --log rec/ --semantic --file app.db --drop seq=40..60 --out whatif.db
    ///   vmm replay --log rec/ --semantic --file app.db --vm a,b --out merged.db --json
    #[command(verbatim_doc_comment)]
    Replay(replay::ReplayArgs),
    /// Disaster-recovery drill: restore, boot, check; PASS/FAIL with timings.
    ///
    /// Restores a recorded disk to a point, boots a VM on it whose workload
    /// checks the data, and reports (exit status 0 only on PASS).
    ///
    /// Example: vmm drill --log rec/ --vm web1 --at mark=nightly --json
    ///
    /// What-if: --mem-mib, --vcpus and --disk-iops give the check VM
    /// another configuration; the report has what its run cost (time, vCPU
    /// time, exits, bytes, time throttled).
    ///
    /// Example: vmm drill --log rec/ --at end --check "workload=workset pages=2048" --mem-mib 64 --disk-iops 200
    #[command(verbatim_doc_comment)]
    Drill(drill::DrillArgs),
    /// The cheapest VM configuration whose run of a workload meets a target.
    ///
    /// Restores the disk at the point once, then runs the workload under
    /// the configurations a search over the varied dimensions picks, and
    /// reports every configuration it ran with its metrics and the
    /// cheapest that met the target (exit status 0; 1 when none did).
    /// Cost = MiB x --cost-mib + vCPUs x --cost-vcpu + IOPS x --cost-iops.
    ///
    /// Example:
    ///   vmm tune --log rec/ --at end --check "workload=workset pages=2048 passes=8" --target "time<=1.5s" --vary mem,vcpus,iops --mem-values 32,48,64
    #[command(verbatim_doc_comment)]
    Tune(tune::TuneArgs),
    /// Bring a VM back from a snapshot and run it on from there.
    ///
    /// Examples:
    ///   vmm restore snaps/snapshots/ID.snap
    ///   vmm restore $(vmm snapshot list snaps --latest) --disk clone1.img --vm-id clone1
    #[command(verbatim_doc_comment)]
    Restore(snapshot::RestoreArgs),
    /// Create (on a running VM), list, merge and delete snapshots.
    #[command(subcommand)]
    Snapshot(snapshot::SnapshotCommand),
    /// What changed inside the guests' applications, row by row.
    ///
    /// Row/key-level changes lifted from recorded disk writes and the
    /// guests' file hints (SQLite, JSON, key-value).
    ///
    /// A damaged VM log is reported (one warning naming the VM, the seq
    /// and why) and the other VMs are shown; the exit status is then 1.
    ///
    /// Examples:
    ///   vmm changes rec/ --file app.db --table customers
    ///   vmm changes rec/ --vm web1 --since mark=before-upgrade --until seq=900
    ///   vmm changes rec/ --key 123 --since time=2026-11-21T06:00:00Z --json
    ///   vmm changes rec/ --between mark=nightly --and end --net
    ///   vmm changes rec/ --file app.db --provenance
    ///   vmm changes rec/ --decoder json-leaves
    ///   vmm changes rec/ --compare-decoder sqlite --compare-decoder sqlite-nowal
    ///   vmm changes --list-decoders
    #[command(verbatim_doc_comment)]
    Changes(changes::ChangesArgs),
    /// Re-derive the changes lifted at one seq from the stored blocks and
    /// check every hash of their provenance.
    ///
    /// Reads the file at the step's base and at SEQ from the log's block
    /// map and the content store, checks the blocks' hashes, decodes again
    /// with the same decoder version, and checks each change's output
    /// hash and the step's. Exit 0: verified (one line per file says what
    /// was checked); 1: a hash does not re-derive (the line says which);
    /// 125: nothing to check (no such change, no provenance, a decoder
    /// version this build does not have).
    ///
    /// Examples:
    ///   vmm verify-change rec/ 42 --vm vm0 --file app.db
    ///   vmm verify-change nats://10.0.0.1:4222/lab 42 --vm web1 --json
    #[command(verbatim_doc_comment)]
    VerifyChange(provenance::VerifyChangeArgs),
    /// Every version of one row or key, with VM and time.
    ///
    /// Example: vmm history rec/ --vm web1 --file app.db --table customers --key 123
    History(changes::HistoryArgs),
    /// Pause a running VM (its control socket: `vmm run --api-sock`).
    Pause(snapshot::SocketArgs),
    /// Resume a paused VM.
    Resume(snapshot::SocketArgs),
    /// Write a named mark into a running VM's change log.
    ///
    /// Example: vmm mark --api-sock /tmp/vm0.sock before-upgrade
    Mark(snapshot::MarkArgs),
    /// Replay or drill many VMs at once on the fleet's workers.
    ///
    /// Splits a record set in a cluster into one job per VM, places each
    /// on a live `vmm worker` that has what it needs (memory, disk,
    /// label), places the jobs of a worker that dies on the others, and
    /// reports each job (worker, time, bytes, checksum, PASS/FAIL).
    ///
    /// Example:
    ///   vmm fleet drill --cluster nats://10.0.0.1:4222/lab --vms '*' --at end
    #[command(subcommand, verbatim_doc_comment)]
    Fleet(fleet::FleetCommand),
    /// Lend this host to fleet replay: advertise its resources, run jobs.
    ///
    /// Runs until SIGINT/SIGTERM; jobs it holds then go to other workers.
    ///
    /// Example:
    ///   vmm worker --cluster nats://10.0.0.1:4222 --label ssd --mem 8GiB
    #[command(verbatim_doc_comment)]
    Worker(fleet::WorkerArgs),
    /// Decode two versions of a file offline and show what changed.
    ///
    /// Example: vmm diff --format sqlite old.db new.db --json
    Diff(changes::DiffArgs),
    /// One self-contained HTML page of a record set: a timeline per VM
    /// (writes, flushes, marks, snapshots, checkpoints, semantic changes
    /// per table), storage growth and its forecast, dedup, the last drills.
    ///
    /// Example: vmm report rec --html rec.html
    Report(insight::ReportArgs),
    /// Record what host tools write to a disk image (served through FUSE).
    ///
    /// Example: vmm disk serve --disk disk.img --record rec --at served
    #[command(subcommand)]
    Disk(disk::DiskCommand),
}

/// The end of `vmm --help`: a first session, and the table of exit
/// statuses (vmm::error::exit; the README has the same table).
const AFTER_HELP: &str = "A first session:
  vmm demo
  truncate -s 64M disk.img
  vmm run --disk disk.img --record rec --cmdline \"workload=sqlite rows=200\"
  vmm log verify rec
  vmm changes rec --file app.db --table customers
  vmm replay --log rec --until seq=100 --out then.img

Exit status:
  0        success; for `vmm run` and `vmm restore`: the guest's own status (0-255)
  1        a check failed (log verify, drill, store verify found damage)
  64       usage error (bad or missing arguments)
  122      recording failed while running (the log ends at its last good barrier)
  124      the guest did not finish within --timeout
  125      could not do the job (bad input, unreadable file, disk image in use)
  126      the guest crashed (its registers are printed)
  130/143  stopped cleanly on SIGINT/SIGTERM (recording closed, socket removed)";

/// A command's failure: one line for the user, and the exit status.
#[derive(Debug)]
pub struct CliError {
    message: String,
    status: i32,
    registers: Option<String>,
}

impl CliError {
    /// An error of the tool (bad input, unreadable files): exit status 125.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            status: exit::CANNOT_RUN,
            registers: None,
        }
    }

    pub fn from_display(e: impl std::fmt::Display) -> Self {
        Self::new(e.to_string())
    }
}

impl From<VmmError> for CliError {
    fn from(e: VmmError) -> Self {
        Self {
            message: e.to_string(),
            status: e.exit_status(),
            registers: e.registers().map(|r| r.to_string()),
        }
    }
}

/// Parses arguments, runs the command, and returns the process exit status.
pub fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version print to stdout and succeed; everything
            // else is a usage error, kept apart from a guest's status 2.
            let _ = e.print();
            return if e.use_stderr() { exit::USAGE } else { 0 };
        }
    };
    init_logging();
    // The commands that own a VM or write an image stop cleanly on SIGINT
    // and SIGTERM (vmm::shutdown); the others may die as usual.
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Restore(_)
            | Command::Replay(_)
            | Command::Drill(_)
            | Command::Tune(_)
            | Command::Fleet(_)
            | Command::Worker(_)
            | Command::Disk(_)
    ) {
        if let Err(e) = vmm::shutdown::install() {
            eprintln!("error: cannot install the SIGINT/SIGTERM handlers: {e}");
            return exit::CANNOT_RUN;
        }
    }
    let result = match &cli.command {
        Command::Run(args) => run::run(&cli, args).map_err(CliError::from),
        Command::Demo(args) => demo::run(&cli, args),
        Command::Log(log::LogCommand::Show(args)) => log::show(args),
        Command::Log(log::LogCommand::Verify(args)) => log::verify(args),
        Command::Log(log::LogCommand::Mark(args)) => log::mark(args),
        Command::Log(log::LogCommand::Push(args)) => source::push(args),
        Command::Log(log::LogCommand::Checkpoints(args)) => log::checkpoints(args),
        Command::Log(log::LogCommand::Stats(args)) => log_stats::stats(args),
        Command::Store(store::StoreCommand::Stats(args)) => store::stats(args),
        Command::Store(store::StoreCommand::Gc(args)) => store::gc(args),
        Command::Store(store::StoreCommand::Verify(args)) => store::verify(args),
        Command::Store(store::StoreCommand::Repair(args)) => store::repair(args),
        Command::Store(store::StoreCommand::Forecast(args)) => insight::forecast(args),
        Command::Store(store::StoreCommand::Retain(args)) => retain::retain(args),
        Command::Replay(args) => replay::replay(args),
        Command::Drill(args) => drill::drill(&cli, args),
        Command::Tune(args) => tune::tune(&cli, args),
        Command::Fleet(command) => fleet::fleet(command),
        Command::Worker(args) => fleet::worker(&cli, args),
        Command::Restore(args) => snapshot::restore(&cli, args),
        Command::Changes(args) => changes::changes(args),
        Command::History(args) => changes::history(args),
        Command::VerifyChange(args) => provenance::verify_change(args),
        Command::Diff(args) => changes::diff(args),
        Command::Report(args) => insight::report(args),
        Command::Disk(disk::DiskCommand::Serve(args)) => disk::serve(args),
        Command::Snapshot(snapshot::SnapshotCommand::List(args)) => snapshot::list(args),
        Command::Snapshot(snapshot::SnapshotCommand::Merge(args)) => snapshot::merge_cmd(args),
        Command::Snapshot(snapshot::SnapshotCommand::Create(args)) => snapshot::create(args),
        Command::Snapshot(snapshot::SnapshotCommand::Delete(args)) => snapshot::delete(args),
        Command::Snapshot(snapshot::SnapshotCommand::Push(args)) => snapshot_remote::push(args),
        Command::Snapshot(snapshot::SnapshotCommand::Pull(args)) => snapshot_remote::pull(args),
        Command::Pause(args) => snapshot::pause(args),
        Command::Resume(args) => snapshot::resume(args),
        Command::Mark(args) => snapshot::mark(args),
    };
    match result {
        Ok(status) => status,
        Err(err) => {
            if let Some(regs) = &err.registers {
                eprintln!("{regs}");
            }
            eprintln!("error: {}", err.message);
            err.status
        }
    }
}

/// Warnings (a hostile guest's bad requests, for one) go to stderr; set
/// `VMM_LOG=info` or `debug` for more, `VMM_LOG=error` for less.
fn init_logging() {
    let level = match std::env::var("VMM_LOG").as_deref() {
        Ok("error") => tracing::Level::ERROR,
        Ok("info") => tracing::Level::INFO,
        Ok("debug") => tracing::Level::DEBUG,
        Ok("trace") => tracing::Level::TRACE,
        _ => tracing::Level::WARN,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_max_level(level)
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
