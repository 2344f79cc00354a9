//! `vmm disk serve`.
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use vmm::disk_serve::{self, DiskFs, ServeCounters};
use vmm::lock::{lock_path, LockMode};
use vmm::recording::{RecordConfig, Recorder};

use super::run::parse_vm_id;
use super::CliError;

#[derive(Debug, Subcommand)]
pub enum DiskCommand {
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
}

/// Serve a disk image to this host as a file through FUSE and record every
/// write and flush made to it, as `vmm run --record` records a VM's disk.
///
/// The directory AT then holds `disk` (the image: loop-mount it and let any
/// program write to the filesystem inside) and `hints` (write-only: the
/// hint stream of `vmm-agent --port AT/hints`). An fsync or close of either
/// is a barrier. SIGINT/SIGTERM stop it cleanly: unmount (once the loop
/// device is detached), final barrier, log sealed. Needs root and /dev/fuse.
///
/// Example:
///   vmm disk serve --disk fs.img --record rec --at /mnt/served &
///   losetup -f --show /mnt/served/disk        # /dev/loop0
///   mount /dev/loop0 /mnt/fs && python3 app.py && umount /mnt/fs
///   losetup -d /dev/loop0; kill -INT %1
///   vmm changes rec
#[derive(Debug, Args)]
#[command(verbatim_doc_comment)]
pub struct ServeArgs {
    /// The raw disk image (its size a multiple of 4 KiB).
    #[arg(long, value_name = "IMG")]
    pub disk: PathBuf,
    /// Record into DIR (as `vmm run --record DIR`).
    #[arg(long, value_name = "DIR")]
    pub record: PathBuf,
    /// An existing empty directory to mount the served files on.
    #[arg(long, value_name = "DIR")]
    pub at: PathBuf,
    /// Find these files on the disk's ext4 filesystem without an agent and
    /// decode them (as `vmm run --watch`), e.g. '/var/lib/app/*.db:sqlite'.
    #[arg(long, value_name = "PATH:FORMAT", value_parser = introspection::fsmap::parse_watch)]
    pub watch: Vec<introspection::fsmap::Watch>,
    /// The disk's name in the record directory.
    #[arg(long, value_name = "ID", default_value = "vm0", value_parser = parse_vm_id)]
    pub vm_id: String,
}

/// How long a stop waits for the mount to be released (loop device
/// detached) before giving up on unmounting.
const UNMOUNT_WAIT: Duration = Duration::from_secs(30);

pub fn serve(args: &ServeArgs) -> Result<i32, CliError> {
    let _lock = lock_path(&args.disk, LockMode::Exclusive).map_err(CliError::from_display)?;
    if !args.at.is_dir() {
        return Err(CliError::new(format!(
            "--at {}: not an existing directory (create an empty one to mount on)",
            args.at.display()
        )));
    }
    let config = RecordConfig {
        dir: args.record.clone(),
        vm_id: args.vm_id.clone(),
        decode: true,
        decode_limits: Default::default(),
        replicate: None,
        checkpoints: Default::default(),
        rescan: false,
        log_segment_bytes: None,
        watches: args.watch.clone(),
    };
    let recorder = Recorder::open(&config, &args.disk, Default::default())?;
    let counters = Arc::new(ServeCounters::default());
    let served = DiskFs::new(&args.disk, recorder.clone(), counters.clone())
        .and_then(|fs| disk_serve::mount(fs, &args.at));
    let served = match served {
        Ok(s) => s,
        Err(e) => {
            recorder.close()?;
            return Err(CliError::from_display(e));
        }
    };
    eprintln!(
        "serving {} at {} (hints: {}); SIGINT or SIGTERM stops",
        args.disk.display(),
        served.disk_path().display(),
        served.hints_path().display()
    );
    let signal = loop {
        if let Some(signal) = vmm::shutdown::requested() {
            break signal;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Unmounting fails while the loop device (or anyone) holds the disk.
    let deadline = Instant::now() + UNMOUNT_WAIT;
    let mut served = served;
    let unmounted = loop {
        match served.try_unmount() {
            Ok(()) => break true,
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && Instant::now() < deadline => {
                tracing::warn!(
                    "{} is still in use (detach its loop device: losetup -d); retrying",
                    args.at.display()
                );
                std::thread::sleep(Duration::from_millis(500));
            }
            Err(e) => {
                eprintln!("error: cannot unmount {}: {e}", args.at.display());
                // Leave it mounted (dropping the session would try again).
                std::mem::forget(served);
                break false;
            }
        }
    };
    let stats = recorder.close()?;
    println!(
        "stopped on {}: {} writes ({} partial blocks read back), {} barriers, {} hints; {}",
        vmm::shutdown::name(signal),
        counters.writes.load(Relaxed),
        counters.partial_writes.load(Relaxed),
        counters.barriers.load(Relaxed),
        counters.hint_messages.load(Relaxed),
        match stats {
            Some(s) => format!(
                "{} semantic changes recorded; {} agentless mappings ({} failed), {} hint disagreements",
                s.semantic_changes, s.mappings, s.map_failures, s.hint_mismatches
            ),
            None => "log closed".into(),
        }
    );
    if !unmounted {
        return Err(CliError::new(format!(
            "{} is still mounted: detach its loop device, then `umount {}`",
            args.at.display(),
            args.at.display()
        )));
    }
    Ok(vmm::shutdown::exit_status(signal))
}
