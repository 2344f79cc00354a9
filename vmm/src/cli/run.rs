//! `vmm run`.
use std::path::PathBuf;
use std::time::Duration;

use clap::Args;
use introspection::tap::CheckpointPolicy;
use vmm::machine::SnapshotConfig;
use vmm::metrics::MetricsServer;
use vmm::recording::{RecordConfig, ReplicaConfig};
use vmm::shared::SharedMemConfig;
use vmm::{DiskConfig, KernelSource, Machine, SerialOutput, VmConfig, VmmError};

use super::Cli;

#[derive(Debug, Args)]
pub struct RunArgs {
    /// PVH-bootable ELF kernel: a Linux vmlinux built with CONFIG_PVH, or a
    /// microguest build. Default: the microguest built into this binary.
    #[arg(long, value_name = "PATH")]
    pub kernel: Option<PathBuf>,

    /// Kernel command line. The microguest reads `workload=NAME` and its
    /// parameters from it, e.g. "workload=count n=1000 seed=7"
    /// (workloads: hello, exit code=N, count n=N seed=S, fault, spin).
    #[arg(long, value_name = "STR", default_value = "")]
    pub cmdline: String,

    /// Guest memory in MiB (example: --mem-mib 256). Untouched pages cost
    /// the host nothing.
    #[arg(long, value_name = "N", default_value_t = 128)]
    pub mem_mib: u64,

    /// vCPUs, 1 to 8, one host thread each (example: --vcpus 2). Every
    /// vCPU starts at the kernel's PVH entry; with more than one the
    /// command line gets `cpus=N`, and the microguest's `smp-memtest`
    /// workload spreads its work over them.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = parse_vcpus)]
    pub vcpus: u8,

    /// Limit each disk to N guest requests a second (a token bucket holding
    /// a tenth of a second's worth): a what-if for slower storage
    /// (example: --disk-iops 500).
    #[arg(long, value_name = "N", value_parser = parse_iops)]
    pub disk_iops: Option<u64>,

    /// Where the guest's serial console (COM1) goes: `stdout`, or
    /// `file:PATH` to write it to PATH (example: --serial file:/tmp/console.log).
    #[arg(long, value_name = "stdout|file:PATH", default_value = "stdout", value_parser = parse_serial)]
    pub serial: SerialOutput,

    /// Stop the guest after SECS seconds and exit with status 124
    /// (example: --timeout 10).
    #[arg(long, value_name = "SECS")]
    pub timeout: Option<u64>,

    /// Attach a raw disk image as a virtio-blk device; `,ro` makes it
    /// read-only. Repeat for more disks (example: --disk data.img
    /// --disk base.img,ro). The image size must be a multiple of 4 KiB.
    #[arg(long = "disk", value_name = "PATH[,ro]", value_parser = parse_disk)]
    pub disks: Vec<DiskConfig>,

    /// Record every write and flush of the disk into DIR: its blocks go to
    /// the content store DIR/store (shared by all VMs recorded there), the
    /// change log to DIR/logs/VM-ID (example: --record /var/lib/vmm/rec).
    /// Needs exactly one --disk. Records are stamped with this host's node
    /// id: set VMM_NODE_ID=NAME to name the host (default: from
    /// /etc/machine-id), so changes of VMs on several hosts merge in order.
    #[arg(long, value_name = "DIR")]
    pub record: Option<PathBuf>,

    /// With --record: replicate the recording to a NATS JetStream cluster,
    /// synchronously: a guest FLUSH completes only after the cluster
    /// acknowledged the barrier and every block before it (a quorum of
    /// replicas stored them). An unreachable cluster stops the run before
    /// the VM starts; a failure later is a recording failure (the guest
    /// gets I/O errors, exit 122). Example: --replicate
    /// nats://10.0.0.1:4222,10.0.0.2:4222,10.0.0.3:4222/lab
    #[arg(long, value_name = "URL", requires = "record")]
    pub replicate: Option<jetstream::RemoteUrl>,

    /// With --replicate: copies the cluster keeps of each record and block
    /// when it creates the record set (1 for a single server).
    #[arg(long, value_name = "N", default_value_t = 3, requires = "replicate")]
    pub replicas: usize,

    /// With --record: take a temporal checkpoint (the disk's block map, kept
    /// in the store) every N barriers, so `vmm replay` starts from the
    /// nearest one instead of the log's beginning; 0: never by count.
    /// Checkpoints are also taken at every snapshot.
    #[arg(long, value_name = "N", default_value_t = 1000, requires = "record")]
    pub checkpoint_every: u64,

    /// With --record: also take one after every MIB MiB written; 0: never
    /// by size.
    #[arg(long, value_name = "MIB", default_value_t = 1024, requires = "record")]
    pub checkpoint_every_mib: u64,

    /// With --record: hash the whole disk image at start instead of
    /// trusting the log's saved state of it. Without it, the state saved
    /// when the log was last closed is used if the log was closed cleanly
    /// and the image's size, inode, mtime and ctime are those recorded then
    /// and a sample of its blocks matches; otherwise the image is hashed
    /// anyway and a warning says why.
    #[arg(long, requires = "record")]
    pub rescan: bool,

    /// With --record: start a new log segment at this size (KiB; default
    /// 65536). `vmm store retain` drops old history in whole segments, so
    /// smaller segments let it cut finer.
    #[arg(long, value_name = "KIB", requires = "record", value_parser = clap::value_parser!(u64).range(4..=4_194_304))]
    pub log_segment_kib: Option<u64>,

    /// With --record: do not offer the guest the hint channel, so nothing
    /// is decoded into semantic changes (block recording only).
    #[arg(long)]
    pub no_decode: bool,

    /// With --record: MiB of decoded state each decode of a hinted file
    /// may hold (rows, values, changes); a file that needs more gets a
    /// decode-error event naming this flag (example: --decode-budget-mib 1024).
    #[arg(long, value_name = "N", default_value_t = introspection::decode::DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,

    /// With --record: find these files on the disk's ext4 filesystem
    /// without an agent and decode them: at every barrier after writes the
    /// host maps them to blocks itself (journal replayed, read-only).
    /// /ABS/PATH:FORMAT, FORMAT sqlite, json, kv or auto (files with
    /// SQLite's header); the last path component may be a glob. Repeatable
    /// (example: --watch '/var/lib/app/*.db:sqlite'). A disk that is not
    /// ext4 is reported once and recorded at block level.
    #[arg(long, value_name = "PATH:FORMAT", value_parser = introspection::fsmap::parse_watch, requires = "record")]
    pub watch: Vec<introspection::fsmap::Watch>,

    /// The VM's name in the record directory (with --record).
    #[arg(long, value_name = "ID", default_value = "vm0", value_parser = parse_vm_id)]
    pub vm_id: String,

    /// Keep snapshots in DIR (DIR/snapshots, pages in DIR/store); default:
    /// the --record directory. Turns on dirty-page tracking, so that the
    /// guest (port 0xf5) or `vmm snapshot create` can take full and
    /// incremental snapshots.
    #[arg(long, value_name = "DIR")]
    pub snapshots: Option<PathBuf>,

    /// Map a memory region shared with other VMs into the guest at
    /// 0xe0000000: NAME,SIZE_MIB[,PATH]. VMs given the same PATH share it;
    /// without PATH it is this VM's own (example: --shared-mem
    /// mailbox,4,/dev/shm/mailbox). The guest finds it on its command line
    /// (`shmem=NAME@ADDR:SIZE`); snapshots capture it.
    #[arg(long, value_name = "NAME,MIB[,PATH]")]
    pub shared_mem: Option<SharedMemConfig>,

    /// Serve the control socket at PATH while the VM runs: `vmm pause`,
    /// `vmm resume`, `vmm snapshot create`, `vmm mark` talk to it
    /// (example: --api-sock /tmp/vm0.sock). Snapshots need --snapshots or
    /// --record.
    #[arg(long, value_name = "PATH")]
    pub api_sock: Option<PathBuf>,

    /// Give the VM an in-kernel PIT (i8254 timer): `on` or `off`. Default:
    /// on with --kernel (a Linux guest may calibrate its clocks against
    /// it), off for the built-in microguest, which never uses it: on this
    /// kind of host KVM's PIT adds 15-20 ms to both VM start and exit.
    #[arg(long, value_name = "on|off", value_parser = parse_on_off)]
    pub pit: Option<bool>,
    /// Serve live metrics in the Prometheus text format at ADDR (HOST:PORT;
    /// port 0 picks a free one, printed on stderr) while the VM runs: VM
    /// exits by kind, guest bytes read and written, vCPU and recorder CPU
    /// time, barriers and bytes stored, RSS (example: --metrics
    /// 127.0.0.1:9100, then GET http://127.0.0.1:9100/metrics). An address
    /// in use stops the run before the VM starts (exit 125).
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<String>,

    /// Print run statistics as one JSON line on stderr when the guest exits:
    /// time, VM exits, resident memory and the VMM's own overhead.
    #[arg(long)]
    pub stats: bool,
}

pub fn parse_serial(s: &str) -> Result<SerialOutput, String> {
    match s {
        "stdout" => Ok(SerialOutput::Stdout),
        _ => match s.strip_prefix("file:") {
            Some(path) if !path.is_empty() => Ok(SerialOutput::File(PathBuf::from(path))),
            _ => Err(format!(
                "'{s}' is not a serial output: use 'stdout' or 'file:PATH'"
            )),
        },
    }
}

pub fn parse_vcpus(s: &str) -> Result<u8, String> {
    let max = vmm::machine::MAX_VCPUS;
    match s.parse::<u8>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' vCPUs: give a number from 1 to {max}")),
    }
}

pub fn parse_iops(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if (1..=10_000_000).contains(&n) => Ok(n),
        _ => Err(format!(
            "'{s}' IOPS: give a number of requests a second from 1 to 10000000"
        )),
    }
}

pub fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" => Ok(true),
        "off" => Ok(false),
        _ => Err(format!("'{s}' is neither 'on' nor 'off'")),
    }
}

pub fn parse_vm_id(s: &str) -> Result<String, String> {
    vmm::recording::check_vm_id(s)
        .map(|()| s.to_string())
        .map_err(|e| e.to_string())
}

pub fn parse_disk(s: &str) -> Result<DiskConfig, String> {
    let (path, read_only) = match s.rsplit_once(',') {
        Some((path, "ro")) => (path, true),
        Some((path, "rw")) => (path, false),
        Some((_, opt)) => return Err(format!("unknown disk option '{opt}': use PATH or PATH,ro")),
        None => (s, false),
    };
    if path.is_empty() {
        return Err("empty disk path: use PATH or PATH,ro".into());
    }
    Ok(DiskConfig {
        path: PathBuf::from(path),
        read_only,
    })
}

impl RunArgs {
    pub fn config(&self, cli: &Cli) -> VmConfig {
        VmConfig {
            kvm_path: cli.kvm.clone(),
            kernel: self
                .kernel
                .clone()
                .map_or(KernelSource::Microguest, KernelSource::File),
            cmdline: self.cmdline.clone(),
            mem_mib: self.mem_mib,
            vcpus: self.vcpus,
            disk_iops: self.disk_iops,
            serial: self.serial.clone(),
            timeout: self.timeout.map(Duration::from_secs),
            disks: self.disks.clone(),
            record: self.record.clone().map(|dir| RecordConfig {
                dir,
                vm_id: self.vm_id.clone(),
                decode: !self.no_decode,
                decode_limits: introspection::decode::DecodeLimits {
                    budget_mib: self.decode_budget_mib,
                },
                replicate: self.replicate.clone().map(|url| ReplicaConfig {
                    url,
                    replicas: self.replicas,
                }),
                checkpoints: CheckpointPolicy {
                    every_barriers: self.checkpoint_every,
                    every_bytes: self.checkpoint_every_mib << 20,
                },
                rescan: self.rescan,
                log_segment_bytes: self.log_segment_kib.map(|k| k << 10),
                watches: self.watch.clone(),
            }),
            snapshot: self
                .snapshots
                .clone()
                .or_else(|| self.record.clone())
                .map(|dir| SnapshotConfig {
                    dir,
                    vm_id: self.vm_id.clone(),
                }),
            api_sock: self.api_sock.clone(),
            shared_mem: self.shared_mem.clone(),
            pit: self.pit,
            counters: Default::default(),
        }
    }
}

pub fn run(cli: &Cli, args: &RunArgs) -> Result<i32, VmmError> {
    let config = args.config(cli);
    // Bound before the VM exists: an address in use fails here (125); the
    // server stops when the run has ended.
    let _metrics = serve_metrics(args.metrics.as_deref(), &config.counters)?;
    let machine = Machine::build(&config)?;
    finish(machine, args.stats, args.record.as_deref(), &args.vm_id)
}

/// Starts the `--metrics` endpoint, when asked, and says where it is.
pub fn serve_metrics(
    addr: Option<&str>,
    counters: &std::sync::Arc<vmm::metrics::Counters>,
) -> Result<Option<MetricsServer>, VmmError> {
    let Some(addr) = addr else {
        return Ok(None);
    };
    let server = MetricsServer::start(addr, counters.clone())?;
    eprintln!("vmm: metrics at http://{}/metrics", server.addr());
    Ok(Some(server))
}

/// Runs a built or restored machine to its end and reports.
pub fn finish(
    mut machine: Machine,
    print_stats: bool,
    record: Option<&std::path::Path>,
    vm_id: &str,
) -> Result<i32, VmmError> {
    let outcome = machine.run()?;
    if let Some(signal) = outcome.signal {
        eprintln!(
            "vmm: stopped on {}: the guest was halted between two exits and the devices finished{}",
            vmm::shutdown::name(signal),
            if outcome.recording.is_some() {
                "; the recording ends with a final barrier"
            } else {
                ""
            }
        );
    }
    for snap in &outcome.snapshots {
        eprintln!(
            "vmm: snapshot {} ({:?}, {} of {} pages hashed, {} new objects, VM paused {:.1} ms)",
            snap.id,
            snap.kind,
            snap.stats.hashed_pages,
            snap.stats.pages,
            snap.stats.new_objects,
            snap.pause_us as f64 / 1e3
        );
    }
    if print_stats {
        let mut outcome_stats = outcome.stats.clone();
        outcome_stats.huge_kib = vmm::memory::huge_bytes() / 1024;
        let mut stats = serde_json::to_value(&outcome_stats).expect("stats serialize");
        stats["recording"] = serde_json::to_value(outcome.recording).expect("serialize");
        if let Some(signal) = outcome.signal {
            stats["signal"] = vmm::shutdown::name(signal).into();
        }
        eprintln!("{stats}");
    } else if let (Some(rec), Some(dir)) = (outcome.recording, record) {
        eprintln!(
            "vmm: recorded {} writes ({} blocks, {} barriers) as {} in {}",
            rec.writes,
            rec.blocks,
            rec.barriers,
            vm_id,
            dir.display()
        );
    }
    // The console ends with the guest: a reader of our stdout sees EOF now,
    // not after KVM has torn the VM down (which takes 1-25 ms on this kernel).
    close_stdout();
    // And the process exits without waiting for that teardown either.
    machine.release_for_exit();
    Ok(match outcome.signal {
        Some(signal) => vmm::shutdown::exit_status(signal),
        None => i32::from(outcome.status),
    })
}

fn close_stdout() {
    use std::io::Write;
    let _ = std::io::stdout().flush();
    if let Ok(null) = std::fs::OpenOptions::new().write(true).open("/dev/null") {
        // SAFETY: dup2 onto fd 1 only replaces what stdout refers to; Rust's
        // stdout handle keeps working (it now writes to /dev/null).
        unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), 1) };
    }
}
