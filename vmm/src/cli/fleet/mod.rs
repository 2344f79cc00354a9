//! Fleet replay: `vmm worker` on each host that lends its resources, and
//! `vmm fleet replay|drill` that splits a record set's VMs into jobs and
//! places them on the workers (decisions: `replay::fleet`; queues:
//! `jetstream::WorkQueue`).
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{Args, Subcommand};
use jetstream::{ClusterUrl, RemoteUrl};
use replay::fleet::wire::Task;
use replay::Point;

use super::{Cli, CliError};

mod capacity;
mod coordinator;
mod worker;

/// How long the cluster may take to answer (connect, every request).
const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a worker advertises itself.
const HEARTBEAT: Duration = Duration::from_secs(1);

#[derive(Debug, Subcommand)]
pub enum FleetCommand {
    /// Replay VMs' logs to a point on the fleet's workers (verified).
    ///
    /// Each job rebuilds one VM's disk at the point, checks every barrier
    /// on the way, reports the disk's checksum and removes it.
    ///
    /// Example:
    ///   vmm fleet replay --cluster nats://10.0.0.1:4222/lab --vms 'web*' --at end --json
    #[command(verbatim_doc_comment)]
    Replay(FleetArgs),
    /// Disaster-recovery drills of VMs on the fleet's workers.
    ///
    /// Each job is a `vmm drill` on a worker: restore, boot, check.
    ///
    /// Example:
    ///   vmm fleet drill --cluster nats://10.0.0.1:4222/lab --vms '*' --at mark=nightly --max-mem 2GiB
    #[command(verbatim_doc_comment)]
    Drill(FleetDrillArgs),
}

#[derive(Debug, Args)]
pub struct FleetArgs {
    /// The record set: nats://HOST:PORT[,HOST:PORT...]/NAME (see `vmm log push`).
    #[arg(long, value_name = "URL")]
    pub cluster: RemoteUrl,
    /// Which VMs, as a glob over their ids.
    #[arg(long, value_name = "GLOB", default_value = "*")]
    pub vms: String,
    /// The point of each VM's log: seq=N, time=RFC3339, mark=NAME or end.
    #[arg(long, value_name = "POINT", default_value = "end")]
    pub at: Point,
    /// Jobs one worker runs at once, at most (its cores otherwise).
    #[arg(long, value_name = "N")]
    pub max_cpu: Option<u32>,
    /// Memory one worker may give its jobs together, at most (e.g. 2GiB).
    #[arg(long, value_name = "SIZE")]
    pub max_mem: Option<ByteSize>,
    /// Only workers started with --label LABEL.
    #[arg(long, value_name = "LABEL")]
    pub only_workers: Option<String>,
    /// The fleet of workers (as given to `vmm worker --fleet`).
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub fleet: String,
    /// Start once this many workers are alive.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub min_workers: usize,
    /// Seconds to wait for workers (at the start, and when none is left).
    #[arg(long, value_name = "SECS", default_value_t = 10.0)]
    pub wait_workers: f64,
    /// Seconds without a heartbeat after which a worker counts as dead and
    /// its jobs are placed again.
    #[arg(long, value_name = "SECS", default_value_t = 5.0)]
    pub worker_timeout: f64,
    /// Give up after this many seconds (exit status 124).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<f64>,
    /// Copies the cluster keeps of the fleet's queues, when it creates them.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub replicas: usize,
    /// With `replay`: split a VM's log that reads more than this many MiB
    /// into segments between its checkpoints, one job each (every segment
    /// starts from its checkpoint and verifies its barriers); 0: one job
    /// per VM.
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub segment_mib: u64,
    /// Print each job's needs and where it would go (JSON), run nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct FleetDrillArgs {
    #[command(flatten)]
    pub common: FleetArgs,
    /// The microguest command line that checks each restored disk, or
    /// `auto` (see `vmm drill --check`).
    #[arg(long, value_name = "CMDLINE|auto", default_value = "auto")]
    pub check: String,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// The cluster: nats://HOST:PORT[,HOST:PORT...].
    #[arg(long, value_name = "URL")]
    pub cluster: ClusterUrl,
    /// The fleet to serve.
    #[arg(long, value_name = "NAME", default_value = "default")]
    pub fleet: String,
    /// This worker's id (default: host name and process id).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Where jobs write their disks (default: a directory in $TMPDIR).
    #[arg(long, value_name = "DIR")]
    pub work_dir: Option<PathBuf>,
    /// A label jobs can ask for (`vmm fleet --only-workers`); repeatable.
    #[arg(long, value_name = "LABEL")]
    pub label: Vec<String>,
    /// Jobs to run at once (default: the host's cores).
    #[arg(long, value_name = "N")]
    pub cores: Option<u32>,
    /// Memory to give jobs (default: the host's available memory).
    #[arg(long, value_name = "SIZE")]
    pub mem: Option<ByteSize>,
    /// Disk write bandwidth per second (default: measured at start by
    /// writing and syncing 32 MiB in the work directory).
    #[arg(long, value_name = "SIZE")]
    pub disk_bw: Option<ByteSize>,
    /// Copies the cluster keeps of the fleet's queues, when it creates them.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub replicas: usize,
}

impl WorkerArgs {
    fn overrides(&self) -> capacity::Overrides {
        capacity::Overrides {
            cores: self.cores,
            mem_bytes: self.mem.map(|m| m.as_u64()),
            write_bytes_per_sec: self.disk_bw.map(|b| b.as_u64()),
        }
    }
}

pub fn fleet(command: &FleetCommand) -> Result<i32, CliError> {
    match command {
        FleetCommand::Replay(args) => coordinator::fleet_run(args, Task::Replay),
        FleetCommand::Drill(args) => coordinator::fleet_run(
            &args.common,
            Task::Drill {
                check: args.check.clone(),
            },
        ),
    }
}

pub fn worker(cli: &Cli, args: &WorkerArgs) -> Result<i32, CliError> {
    worker::worker(cli, args)
}
