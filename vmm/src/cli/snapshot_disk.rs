//! `vmm restore SNAP --rebuild-disk PATH`: the snapshot's disk rebuilt
//! from its change log as of the snapshot's own barrier (the manifest's
//! disk position), then restored onto. The replay starts from the
//! checkpoint the recorder took with the snapshot when there is one, and
//! its result must carry the checksum the snapshot recorded.
use std::path::{Path, PathBuf};

use replay::{Base, Options, Point};
use snapshot::SnapshotDir;
use vmm::DiskConfig;

use super::replay::claim_output;
use super::source::Source;
use super::CliError;

/// Rebuilds snapshot `id`'s disk (in `dir`) at `out` from the log in
/// `log`; returns the disk to attach.
pub fn rebuild(
    dir: &Path,
    id: &str,
    log: &Path,
    out: &Path,
    force: bool,
) -> Result<DiskConfig, CliError> {
    let manifest = SnapshotDir::open_existing(dir)
        .and_then(|d| d.read(id))
        .map_err(CliError::from_display)?;
    let position = manifest.disk.ok_or_else(|| {
        CliError::new(format!(
            "snapshot {id} has no recorded disk (its VM ran without --record): there is no log to rebuild it from; pass --disk instead"
        ))
    })?;
    let _lock = claim_output(out, force, "--rebuild-disk")?;
    let source = Source::open(log)?;
    let objects = source.objects()?;
    let report = replay::replay_to_file_from(
        source.logs(),
        objects.backend(),
        &position.log_vm_id,
        &Base::Empty,
        &Point::Seq(position.seq),
        out,
        Options::default(),
    )
    .map_err(|e| {
        CliError::new(format!(
            "cannot rebuild the disk of snapshot {id} from {} (VM {} to seq {}): {e}",
            log.display(),
            position.log_vm_id,
            position.seq
        ))
    })?;
    let actual = store::hex::encode(&position.checksum);
    if report.checksum != actual || report.last_seq != position.seq {
        let _ = std::fs::remove_file(out);
        return Err(CliError::new(format!(
            "the disk rebuilt from {} (VM {}, seq {}, checksum {}) is not the one snapshot {id} was taken with (seq {}, checksum {actual}); the log is not this snapshot's",
            log.display(),
            position.log_vm_id,
            report.last_seq,
            report.checksum,
            position.seq
        )));
    }
    eprintln!(
        "rebuilt {} at seq {} of VM {}{} (checksum verified)",
        out.display(),
        position.seq,
        position.log_vm_id,
        report.checkpoint.map_or(String::new(), |c| format!(
            " from the checkpoint at seq {c}"
        ))
    );
    Ok(DiskConfig {
        path: PathBuf::from(out),
        read_only: false,
    })
}
