//! Where a command reads a record set from: a local record directory, or a
//! record set in a NATS JetStream cluster (`nats://HOST:PORT[,...]/NAME`),
//! the same logs and objects through the same seams
//! (`changelog::LogBackend`, `store::ObjectBackend`). And `vmm log push`,
//! which puts a local record set into a cluster.
use std::path::{Path, PathBuf};
use std::time::Duration;

use changelog::recording::RecordDir;
use changelog::LogBackend;
use clap::Args;
use jetstream::push::push_log;
use jetstream::{Remote, RemoteUrl};
use store::{ObjectBackend, Store};

use super::CliError;

/// How long a cluster may take to answer (connect, every request).
pub(super) const CLUSTER_TIMEOUT: Duration = Duration::from_secs(10);

pub enum Source {
    Dir(RecordDir),
    Cluster(Box<Remote>),
}

/// The objects of a [`Source`].
pub enum Objects<'a> {
    Local(Box<Store>),
    Cluster(&'a Remote),
}

impl Objects<'_> {
    pub fn backend(&self) -> &dyn ObjectBackend {
        match self {
            Objects::Local(store) => &**store,
            Objects::Cluster(remote) => *remote,
        }
    }
}

impl Source {
    /// `arg` as the user gave it: a `nats://` URL or a directory.
    pub fn open(arg: &Path) -> Result<Source, CliError> {
        match arg.to_str().filter(|s| s.starts_with("nats://")) {
            Some(url) => {
                let url: RemoteUrl = url.parse().map_err(CliError::new)?;
                let remote =
                    Remote::open_existing(&url, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
                Ok(Source::Cluster(Box::new(remote)))
            }
            // Whether the directory exists is the command's to say.
            None => Ok(Source::Dir(RecordDir::new(arg))),
        }
    }

    pub fn logs(&self) -> &dyn LogBackend {
        match self {
            Source::Dir(dir) => dir,
            Source::Cluster(remote) => &**remote,
        }
    }

    pub fn objects(&self) -> Result<Objects<'_>, CliError> {
        match self {
            Source::Dir(dir) => Ok(Objects::Local(Box::new(
                dir.open_store().map_err(CliError::from_display)?,
            ))),
            Source::Cluster(remote) => Ok(Objects::Cluster(remote)),
        }
    }
}

#[derive(Debug, Args)]
pub struct PushArgs {
    /// Record directory (as given to `vmm run --record`).
    pub dir: PathBuf,
    /// The record set in the cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(long, value_name = "URL")]
    pub to: RemoteUrl,
    /// Only this VM's log (default: every VM in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Copies the cluster keeps of each record and block, when it creates
    /// the record set (3 for a 3-node cluster, 1 for a single server).
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub replicas: usize,
    /// Let the cluster remove log records older than this (e.g. 30d, 12h);
    /// replays start from checkpoints, so what is kept stays replayable
    /// from the first checkpoint after the oldest record kept. Applies to
    /// the record set from now on (created or not).
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<humantime::Duration>,
    /// Let the cluster remove the oldest log records beyond this many
    /// bytes (e.g. 50GiB), as --max-age.
    #[arg(long, value_name = "SIZE")]
    pub max_bytes: Option<bytesize::ByteSize>,
    /// Print one JSON report per VM.
    #[arg(long)]
    pub json: bool,
}

/// `vmm log push`: each VM's log from where the cluster's copy ends, its
/// blocks before the records that name them; every record and block is
/// acknowledged by a quorum of the cluster before the next batch.
pub fn push(args: &PushArgs) -> Result<i32, CliError> {
    let dir = RecordDir::new(&args.dir);
    let vms = super::log::vms(&dir, &args.vm)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    let remote =
        Remote::open(&args.to, args.replicas, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
    if args.max_age.is_some() || args.max_bytes.is_some() {
        let mut r = remote.retention().map_err(CliError::from_display)?;
        if let Some(age) = args.max_age {
            r.max_age = Some(age.into());
        }
        if let Some(bytes) = args.max_bytes {
            r.max_bytes = Some(bytes.as_u64());
        }
        remote.set_retention(r).map_err(CliError::from_display)?;
        if !args.json {
            println!(
                "{}: log records kept for {}, up to {} (older ones are removed by the cluster)",
                args.to,
                r.max_age
                    .map_or("ever".into(), |a| humantime::format_duration(a).to_string()),
                r.max_bytes
                    .map_or("any size".into(), |b| bytesize::ByteSize(b).to_string())
            );
        }
    }
    for vm in vms {
        let report = push_log(&dir, &store, &vm, &remote).map_err(CliError::from_display)?;
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialize")
            );
        } else {
            println!(
                "{vm}: sent seq {}..={} ({} records), {} blocks ({} new to the cluster); {} now ends at seq {}",
                report.remote_before + 1,
                report.remote_after,
                report.records_sent,
                report.blocks,
                report.new_blocks,
                args.to,
                report.remote_after
            );
        }
    }
    Ok(0)
}
