//! `vmm snapshot push` and `vmm snapshot pull`: snapshots in a cluster's
//! record set, so that a host that never ran the VM can restore it.
//!
//! A manifest goes to the record set's manifest bucket only after every
//! object it names is acknowledged there (`snapshot::transfer`); a pull
//! writes the manifest locally only after its objects are durable in the
//! local store. A snapshot's parents travel with it (parents first): an
//! incremental snapshot's directory must hold its chain.
use std::path::{Path, PathBuf};

use clap::Args;
use jetstream::{Remote, RemoteUrl};
use serde::Serialize;
use snapshot::manifest::{decode, encode};
use snapshot::transfer::{pull_objects, push_objects, TransferReport};
use snapshot::{Manifest, SnapshotDir};

use super::source::CLUSTER_TIMEOUT;
use super::CliError;

#[derive(Debug, Args)]
pub struct PushArgs {
    /// The directory holding the snapshots (DIR of DIR/snapshots/ID.snap).
    pub dir: PathBuf,
    /// The record set: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(long, value_name = "URL")]
    pub to: RemoteUrl,
    /// Only this snapshot and its parents (default: every snapshot).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Copies the cluster keeps, when it creates the record set.
    #[arg(long, value_name = "N", default_value_t = 3)]
    pub replicas: usize,
    /// Print one JSON line per snapshot.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PullArgs {
    /// The record set: nats://HOST:PORT[,HOST:PORT...]/NAME.
    pub from: RemoteUrl,
    /// The directory to put them in (created if missing), as DIR of
    /// DIR/snapshots/ID.snap.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Only this snapshot and its parents (default: every snapshot).
    #[arg(long, value_name = "ID")]
    pub id: Option<String>,
    /// Print one JSON line per snapshot.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Line {
    id: String,
    vm: String,
    /// Whether the manifest was new where it went.
    copied_manifest: bool,
    #[serde(flatten)]
    objects: TransferReport,
    /// Where it is now (a pull: the path to give `vmm restore`).
    at: String,
}

fn print(line: &Line, json: bool) {
    if json {
        println!("{}", serde_json::to_string(line).expect("lines serialize"));
    } else {
        println!(
            "{} (vm {}): {} objects, {} copied ({} bytes){} -> {}",
            line.id,
            line.vm,
            line.objects.objects,
            line.objects.copied,
            line.objects.copied_bytes,
            if line.copied_manifest {
                ""
            } else {
                ", manifest already there"
            },
            line.at
        );
    }
}

/// `id` and its parents, oldest first, as `read` finds them.
fn chain(
    id: &str,
    read: &dyn Fn(&str) -> Result<Manifest, CliError>,
) -> Result<Vec<Manifest>, CliError> {
    let mut out = vec![read(id)?];
    while let Some(parent) = out.last().and_then(|m| m.parent.clone()) {
        if out.iter().any(|m| m.id == parent) || out.len() > 10_000 {
            return Err(CliError::new(format!(
                "the parents of snapshot {id} form a cycle at {parent}"
            )));
        }
        out.push(read(&parent)?);
    }
    out.reverse();
    Ok(out)
}

pub fn push(args: &PushArgs) -> Result<i32, CliError> {
    let dir = SnapshotDir::open_existing(&args.dir).map_err(CliError::from_display)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    let read = |id: &str| dir.read(id).map_err(CliError::from_display);
    let manifests = match &args.id {
        Some(id) => chain(id, &read)?,
        // Ids sort by creation: parents come before their children.
        None => dir
            .ids()
            .map_err(CliError::from_display)?
            .iter()
            .map(|id| read(id))
            .collect::<Result<_, _>>()?,
    };
    if manifests.is_empty() {
        return Err(CliError::new(format!(
            "{} holds no snapshot to push",
            args.dir.display()
        )));
    }
    let remote =
        Remote::open(&args.to, args.replicas, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
    for m in manifests {
        let objects = push_objects(&m, &store, &remote).map_err(CliError::from_display)?;
        let bytes = encode(&m).map_err(CliError::from_display)?;
        let bucket = remote.manifests();
        let copied_manifest = match bucket.get(&m.id).map_err(CliError::from_display)? {
            Some(theirs) if theirs == bytes => false,
            Some(_) => {
                return Err(CliError::new(format!(
                    "{} already holds a different snapshot {}; manifests are never overwritten",
                    args.to, m.id
                )))
            }
            None => {
                bucket.put(&m.id, &bytes).map_err(CliError::from_display)?;
                true
            }
        };
        let line = Line {
            id: m.id.clone(),
            vm: m.vm_id.clone(),
            copied_manifest,
            objects,
            at: args.to.to_string(),
        };
        print(&line, args.json);
    }
    Ok(0)
}

pub fn pull(args: &PullArgs) -> Result<i32, CliError> {
    let remote =
        Remote::open_existing(&args.from, CLUSTER_TIMEOUT).map_err(CliError::from_display)?;
    let origin = PathBuf::from(args.from.to_string());
    let read = |id: &str| -> Result<Manifest, CliError> {
        let bytes = remote
            .manifests()
            .get(id)
            .map_err(CliError::from_display)?
            .ok_or_else(|| {
                CliError::new(format!(
                    "{} holds no snapshot {id}; `vmm snapshot push DIR --to {}` puts snapshots there",
                    args.from, args.from
                ))
            })?;
        let m = decode(&bytes, &origin).map_err(CliError::from_display)?;
        if m.id != id {
            return Err(CliError::new(format!(
                "{}: the manifest stored as {id} has id {}",
                args.from, m.id
            )));
        }
        Ok(m)
    };
    let manifests = match &args.id {
        Some(id) => chain(id, &read)?,
        None => remote
            .manifests()
            .list()
            .map_err(CliError::from_display)?
            .iter()
            .map(|id| read(id))
            .collect::<Result<_, _>>()?,
    };
    if manifests.is_empty() {
        return Err(CliError::new(format!("{} holds no snapshot", args.from)));
    }
    let dir = SnapshotDir::open(&args.to).map_err(CliError::from_display)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    for m in manifests {
        let objects = pull_objects(&m, &remote, &store).map_err(CliError::from_display)?;
        let copied_manifest = write_local(&dir, &m)?;
        let line = Line {
            id: m.id.clone(),
            vm: m.vm_id.clone(),
            copied_manifest,
            objects,
            at: dir
                .path(&m.id)
                .map_err(CliError::from_display)?
                .display()
                .to_string(),
        };
        print(&line, args.json);
    }
    Ok(0)
}

/// Writes `m` into `dir` unless the same snapshot is there already; a
/// different one under the same id is refused.
fn write_local(dir: &SnapshotDir, m: &Manifest) -> Result<bool, CliError> {
    if dir.exists(&m.id) {
        let ours = dir.read(&m.id).map_err(CliError::from_display)?;
        if &ours == m {
            return Ok(false);
        }
        return Err(CliError::new(format!(
            "{} already holds a different snapshot {}; pull into another directory",
            path_of(dir, &m.id).display(),
            m.id
        )));
    }
    dir.write(m).map_err(CliError::from_display)?;
    Ok(true)
}

fn path_of(dir: &SnapshotDir, id: &str) -> PathBuf {
    dir.path(id).unwrap_or_else(|_| Path::new(id).to_path_buf())
}
