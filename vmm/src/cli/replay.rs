//! `vmm replay`: rebuild a disk at a point of its recorded history (also
//! the restore step of `vmm drill`, cli/drill.rs).
use std::fs::File;
use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use changelog::recording::RecordDir;
use clap::{Args, ValueEnum};
use replay::semantic::{ChangeFilter, KeyRange};
use replay::{Base, Control, Filter, Options, Point, ReplayError, ReplayReport, Step, WhatIf};
use vmm::lock::{self, LockError, LockMode};
use vmm::shutdown;

use super::snapshot_point::{self, is_snapshot_path};
use super::source::Source;
use super::CliError;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StepBy {
    /// Stop after every record.
    Record,
    /// Stop after every barrier (a consistent state).
    Barrier,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// pushed to a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(long, value_name = "DIR|URL")]
    pub log: PathBuf,
    /// Whose log to replay (default: the only VM recorded in DIR). With
    /// --semantic, several VMs (clones of one database) as a,b: their
    /// changes (each log up to --until) are merged in time order and keys
    /// they changed differently are reported as conflicts.
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Where to start: `empty` (the log's own base: it holds the disk as it
    /// was when recording began; from the nearest checkpoint), a disk image
    /// that the log passed through, e.g. the original image or an earlier
    /// replay output, `checkpoint=SEQ` (that checkpoint of the log: a
    /// segment of a long log checked on its own), or a snapshot of the
    /// recorded VM, DIR/snapshots/ID.snap (the disk at the snapshot's
    /// barrier, checked against the log, then the log up to --until).
    #[arg(
        long,
        value_name = "IMAGE|empty|checkpoint=SEQ|SNAPSHOT",
        default_value = "empty"
    )]
    pub base: Base,
    /// Where to stop: seq=N, time=RFC3339, mark=NAME, or end
    /// (example: --until time=2026-11-21T06:01:42Z).
    #[arg(long, value_name = "POINT", default_value = "end")]
    pub until: Point,
    /// The disk image to write. Built under a temporary name and renamed
    /// only once the replay succeeded. Never inside a record or snapshot
    /// directory, never over a disk a running VM has attached.
    #[arg(long, value_name = "PATH")]
    pub out: PathBuf,
    /// Write what each replayed interval (barrier to barrier) cost to
    /// FILE, one JSON object per barrier: records, writes, bytes written,
    /// wall and CPU time, RSS (the totals are in the report).
    #[arg(long, value_name = "FILE")]
    pub step_metrics: Option<PathBuf>,
    /// Replace --out if it exists.
    #[arg(long)]
    pub force: bool,
    /// Step through the replay, showing what each record or barrier
    /// changed; on a terminal, Enter goes on and q stops there.
    #[arg(long, value_name = "UNIT")]
    pub step: Option<StepBy>,
    /// Play the records back at their recorded pace times X, printing each
    /// as a JSON line on stdout (example: --speed 10).
    #[arg(long, value_name = "X")]
    pub speed: Option<f64>,
    /// What-if: leave out writes matching FILTER (seq=N, seq=A..B, sector=N,
    /// sector=A..B); with --semantic, changes matching seq=N, seq=A..B
    /// (the barrier they were lifted at), key=K, key=A..B or table=T;
    /// repeatable. The result is not the recorded history.
    #[arg(long = "drop", value_name = "FILTER")]
    pub drop: Vec<DropFilter>,
    /// What-if: stop just before record SEQ.
    #[arg(long, value_name = "SEQ")]
    pub stop_before: Option<u64>,
    /// Replay the whole log from its beginning instead of starting from
    /// the nearest checkpoint at or before --until (with --base empty).
    #[arg(long)]
    pub no_checkpoints: bool,
    /// Do not check barrier checksums (the result is marked unverified).
    #[arg(long)]
    pub allow_unverified: bool,
    /// Print the final report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Application-level replay: rebuild one application file (--file)
    /// from the semantic change log and write its data to --out: an SQLite
    /// database, the JSON document, or a key-value file's map as JSON. The
    /// state is proved against the file decoded from the block-level replay
    /// at the same barrier (BLAKE3 of the row set; a mismatch exits 1).
    #[arg(long, requires = "file", conflicts_with_all = ["base", "step", "speed", "stop_before", "allow_unverified"])]
    pub semantic: bool,
    /// With --semantic: the file, as the guest named it (e.g. app.db).
    #[arg(long, value_name = "F", requires = "semantic")]
    pub file: Option<String>,
    /// With --semantic: only this table / JSON record path (selective: not
    /// the recorded history).
    #[arg(long, value_name = "T", requires = "semantic")]
    pub table: Option<String>,
    /// With --semantic: only this key or inclusive key range A..B
    /// (selective: not the recorded history).
    #[arg(long, value_name = "K|A..B", requires = "semantic")]
    pub key: Option<KeyRange>,
}

/// A --drop filter: of disk writes, of semantic changes, or valid as both
/// (`seq=`); which one applies depends on --semantic.
#[derive(Debug, Clone)]
pub struct DropFilter {
    pub(super) text: String,
    block: Option<Filter>,
    pub(super) change: Option<ChangeFilter>,
}

impl std::str::FromStr for DropFilter {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let block = s.parse().ok();
        let change = s.parse().ok();
        if block.is_none() && change.is_none() {
            return Err(format!(
                "'{s}' is not a filter: use seq=N, seq=A..B, sector=N or sector=A..B; with --semantic seq=N, seq=A..B, key=K, key=A..B or table=T"
            ));
        }
        Ok(DropFilter {
            text: s.to_string(),
            block,
            change,
        })
    }
}

pub(super) fn usage(message: String) -> CliError {
    CliError {
        message,
        status: vmm::error::exit::USAGE,
        registers: None,
    }
}

fn describe(step: &Step) -> String {
    match step {
        Step::Write {
            seq,
            sector,
            blocks,
            dropped,
            ..
        } => format!(
            "seq {seq}: {} sectors {sector}..{} ({blocks} blocks)",
            if *dropped { "DROPPED write" } else { "write" },
            sector + blocks * 8 - 1
        ),
        Step::Barrier {
            seq,
            verified,
            checksum,
            ..
        } => format!(
            "seq {seq}: barrier {} (disk checksum {})",
            if *verified {
                "verified"
            } else {
                "NOT verified"
            },
            &checksum[..16]
        ),
        Step::Mark { seq, name, .. } => format!("seq {seq}: mark {name}"),
        Step::Snapshot { seq, id, .. } => format!("seq {seq}: snapshot {id}"),
        Step::Hint { seq, .. } => format!("seq {seq}: guest hint"),
        Step::Metrics { seq, .. } => format!("seq {seq}: step metrics"),
        Step::Change { seq, json, .. } => {
            match serde_json::from_str::<introspection::semantic::SemanticChange>(json) {
                Ok(c) => format!("seq {seq}: change {c}"),
                Err(_) => format!("seq {seq}: change {json}"),
            }
        }
    }
}

/// Why `out` may not be written, or the lock on the file it replaces
/// (held until the replay's result is renamed over it, so that no VM
/// attaches that file meanwhile).
pub(super) fn claim_output(out: &Path, force: bool, flag: &str) -> Result<Option<File>, CliError> {
    let refuse = |why: String| CliError::new(format!("{flag} {}: {why}", out.display()));
    let name = out
        .file_name()
        .ok_or_else(|| refuse("names no file".into()))?;
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let parent = parent
        .canonicalize()
        .map_err(|e| refuse(format!("its directory {}: {e}", parent.display())))?;
    if let Some(dir) = RecordDir::enclosing(&parent.join(name)) {
        return Err(refuse(format!(
            "lies inside the record directory {}, whose files only the tool writes; write the image elsewhere",
            dir.root().display()
        )));
    }
    let meta = match std::fs::metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(refuse(e.to_string())),
    };
    if !meta.is_file() {
        return Err(refuse("exists and is not a regular file".into()));
    }
    // Even --force does not pull a disk from under a running VM.
    let held = match lock::lock_path(out, LockMode::Exclusive) {
        Ok(file) => file,
        Err(LockError::InUse { holder, .. }) => {
            return Err(refuse(format!(
                "is a disk image in use by {holder}; replacing it would swap the disk under a running VM: stop it first, or write elsewhere"
            )))
        }
        Err(e) => return Err(CliError::from_display(e)),
    };
    if !force {
        return Err(refuse("already exists; pass --force to replace it".into()));
    }
    Ok(Some(held))
}

/// A shared lock on a --base image while it is read (unless it is the
/// file --out replaces, whose exclusive lock covers it).
pub(super) fn lock_base(base: &Base, out_lock: Option<&File>) -> Result<Option<File>, CliError> {
    let Base::Image(path) = base else {
        return Ok(None);
    };
    let same =
        |m: &std::fs::Metadata, n: &std::fs::Metadata| m.dev() == n.dev() && m.ino() == n.ino();
    if let (Some(out), Ok(meta)) = (out_lock, std::fs::metadata(path)) {
        if out.metadata().is_ok_and(|o| same(&o, &meta)) {
            return Ok(None);
        }
    }
    match lock::lock_path(path, LockMode::Shared) {
        Ok(file) => Ok(Some(file)),
        Err(e @ LockError::InUse { .. }) => Err(CliError::new(format!(
            "--base {e} (a running VM may be writing it)"
        ))),
        // Unreadable bases are reported by the replay itself.
        Err(LockError::Io { .. }) => Ok(None),
    }
}

/// The exit status and message for a replay that a signal cancelled.
pub(super) fn cancelled(out: &Path) -> Result<i32, CliError> {
    let signal = shutdown::requested().unwrap_or(libc::SIGINT);
    eprintln!(
        "vmm: replay stopped on {}; {} was not written and its temporary file was removed",
        shutdown::name(signal),
        out.display()
    );
    Ok(shutdown::exit_status(signal))
}

pub fn replay(args: &ReplayArgs) -> Result<i32, CliError> {
    if args.semantic {
        return super::semantic_replay::run(args);
    }
    let mut block_filters = Vec::new();
    for f in &args.drop {
        match &f.block {
            Some(b) => block_filters.push(b.clone()),
            None => {
                return Err(usage(format!(
                    "--drop {} filters semantic changes: use it with --semantic --file F",
                    f.text
                )))
            }
        }
    }
    let source = Source::open(&args.log)?;
    let from_snapshot = match &args.base {
        Base::Image(path) if is_snapshot_path(path) => Some(snapshot_point::replay_base(
            path,
            source.logs(),
            &args.vm,
            &args.until,
            !args.no_checkpoints,
        )?),
        _ => None,
    };
    let base = from_snapshot.as_ref().map_or(&args.base, |s| &s.base);
    let out_lock = claim_output(&args.out, args.force, "--out")?;
    let _base_lock = lock_base(base, out_lock.as_ref())?;
    let interactive = std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    let mut pending = Vec::new();
    let mut stepper = |step: &Step| -> Control {
        if args.speed.is_some() {
            println!("{}", serde_json::to_string(step).expect("steps serialize"));
            return Control::Continue;
        }
        pending.push(describe(step));
        let pause = match args.step {
            Some(StepBy::Record) => true,
            Some(StepBy::Barrier) => matches!(step, Step::Barrier { .. }),
            None => false,
        };
        if !pause {
            return Control::Continue;
        }
        for line in pending.drain(..) {
            println!("{line}");
        }
        if interactive {
            print!("[Enter: next, q: stop here] ");
            let _ = std::io::stdout().flush();
            let mut answer = String::new();
            let _ = std::io::stdin().lock().read_line(&mut answer);
            if answer.trim() == "q" {
                return Control::Stop;
            }
        }
        Control::Continue
    };
    let observe = args.step.is_some() || args.speed.is_some();
    let mut step_file = match &args.step_metrics {
        Some(path) => Some(StepFile::create(path, args.force)?),
        None => None,
    };
    let mut on_step = |cost: &replay::ReplayStep| {
        if let Some(f) = step_file.as_mut() {
            f.write(cost);
        }
    };
    let cancel = || shutdown::requested().is_some();
    let opts = Options {
        verify: !args.allow_unverified,
        what_if: WhatIf {
            drop: block_filters,
            stop_before: args.stop_before,
        },
        observer: if observe { Some(&mut stepper) } else { None },
        speed: args.speed,
        progress: !observe,
        cancel: Some(&cancel),
        checkpoints: !args.no_checkpoints,
        on_step: args.step_metrics.is_some().then_some(&mut on_step as _),
        ..Options::default()
    };
    let vm = match &from_snapshot {
        Some(s) => s.vm.clone(),
        None => super::log::one_vm(source.logs(), &args.vm)?,
    };
    let objects = source.objects()?;
    let report = match replay::replay_to_file_from(
        source.logs(),
        objects.backend(),
        &vm,
        base,
        &args.until,
        &args.out,
        opts,
    ) {
        Ok(report) => report,
        Err(ReplayError::Cancelled) => return cancelled(&args.out),
        Err(e) => return Err(CliError::from_display(e)),
    };
    drop(out_lock);
    if let Some(f) = step_file.take() {
        f.finish()?;
    }
    if args.json {
        let mut v = serde_json::to_value(&report).expect("reports serialize");
        if let Some(s) = &from_snapshot {
            v["snapshot"] = serde_json::json!({"id": s.id, "seq": s.seq});
        }
        println!("{v}");
    } else if args.speed.is_none() {
        if let Some(s) = &from_snapshot {
            println!(
                "base: snapshot {} (its barrier, seq {}, is in the log with the snapshot's disk checksum)",
                s.id, s.seq
            );
        }
        print_report(args, &vm, &report);
    }
    Ok(0)
}

fn print_report(args: &ReplayArgs, vm: &str, r: &ReplayReport) {
    println!(
        "replayed {} from seq {} to seq {}{}: {} records, {} writes ({} blocks), {} barriers verified",
        vm,
        r.from_seq,
        r.last_seq,
        if r.stopped_early { " (stopped by you)" } else { "" },
        r.records_read,
        r.writes_applied,
        r.blocks_written,
        r.barriers_verified,
    );
    if let Some(cp) = r.checkpoint {
        println!(
            "started from the checkpoint at seq {cp} (--no-checkpoints replays the whole log)"
        );
    }
    let st = &r.steps;
    if st.intervals > 0 {
        println!(
            "cost: {} intervals, {:.1} ms CPU over {:.1} ms (longest interval {:.1} ms), {} written, peak RSS {} KiB",
            st.intervals,
            st.cpu_ns as f64 / 1e6,
            st.interval_ns as f64 / 1e6,
            st.max_interval_ns as f64 / 1e6,
            st.bytes_written,
            st.peak_rss_kib
        );
    }
    println!("disk checksum {}", r.checksum);
    if r.what_if {
        println!(
            "WHAT-IF: this is NOT the recorded history: {} writes dropped; barriers after the first dropped write are not verified",
            r.writes_dropped
        );
    } else if !r.verified {
        println!("UNVERIFIED: barrier checks were off (--allow-unverified)");
    } else if r.last_verified_barrier != Some(r.last_seq) {
        println!(
            "verified up to the barrier at seq {}; the {} later records are what the log says, not yet confirmed by a barrier",
            r.last_verified_barrier.map_or("(none)".into(), |s| s.to_string()),
            r.last_seq - r.last_verified_barrier.unwrap_or(r.from_seq.saturating_sub(1))
        );
    }
    println!("wrote {}", args.out.display());
}

/// `--step-metrics FILE`: one JSON line per replayed interval, written
/// under a temporary name and renamed once the replay succeeded.
struct StepFile {
    path: PathBuf,
    tmp: tempfile::NamedTempFile,
    error: Option<std::io::Error>,
}

impl StepFile {
    fn create(path: &Path, force: bool) -> Result<Self, CliError> {
        if path.exists() && !force {
            return Err(CliError::new(format!(
                "--step-metrics {} exists; pass --force to replace it",
                path.display()
            )));
        }
        let dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let tmp = tempfile::NamedTempFile::new_in(dir)
            .map_err(|e| CliError::new(format!("--step-metrics {}: {e}", path.display())))?;
        Ok(Self {
            path: path.to_path_buf(),
            tmp,
            error: None,
        })
    }

    fn write(&mut self, cost: &replay::ReplayStep) {
        if self.error.is_none() {
            let line = serde_json::to_string(cost).expect("steps serialize");
            if let Err(e) = writeln!(self.tmp, "{line}") {
                self.error = Some(e);
            }
        }
    }

    fn finish(self) -> Result<(), CliError> {
        let fail = |e: std::io::Error| {
            CliError::new(format!("--step-metrics {}: {e}", self.path.display()))
        };
        if let Some(e) = self.error {
            return Err(fail(e));
        }
        // Readable like any file the user writes (a temp file starts 0600).
        let mode = std::os::unix::fs::PermissionsExt::from_mode(0o644);
        self.tmp.as_file().set_permissions(mode).map_err(fail)?;
        self.tmp.as_file().sync_all().map_err(fail)?;
        self.tmp.persist(&self.path).map_err(|e| {
            CliError::new(format!(
                "--step-metrics {}: {}",
                self.path.display(),
                e.error
            ))
        })?;
        Ok(())
    }
}
