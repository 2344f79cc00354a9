//! `vmm store stats|gc|verify|repair`: the content store of a record (or
//! snapshot) directory.
use std::path::{Path, PathBuf};

use changelog::recording::RecordDir;
use clap::{Args, Subcommand};
use store::Store;

use super::CliError;
use snapshot::refs::Scope;
use snapshot::trust::{self, TrustReport};

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Objects, logical bytes (what the logs reference), stored bytes and
    /// the dedup ratio of a record directory's content store.
    ///
    /// Example: vmm store stats /tmp/rec --json
    Stats(StatsArgs),
    /// Free store objects that no snapshot and no change log references
    /// (mark and sweep; the packs are rewritten). Refuses while a VMM is
    /// recording or snapshotting into the store.
    ///
    /// Example: vmm store gc /tmp/rec
    Gc(StatsArgs),
    /// Check every object that a change log or snapshot in DIR needs. With
    /// --deep each is read back and BLAKE3-checked (in parallel, with a
    /// progress bar); without, only that the index has it and its pack
    /// holds its bytes. Prints each bad or missing object with the log
    /// seqs and snapshot ids that need it, and how far each log still
    /// replays. Exit status 1 when anything is bad.
    ///
    /// Example: vmm store verify /tmp/rec --deep
    Verify(VerifyArgs),
    /// Rebuild the store's index from its packs (under the writers' lock;
    /// temp file, fsync, rename; the old index is kept beside it as
    /// index.log.pre-repair-SECONDS), keeping damaged objects out, then report
    /// what can no longer be replayed: per log, the last barrier that is
    /// fully replayable and the first seq that needs a missing object; the
    /// snapshots that are broken. Exit status 1 when something referenced
    /// is still missing. Objects of version 1 packs are kept only through
    /// their still-valid index records.
    ///
    /// Example: vmm store repair /tmp/rec
    Repair(StatsArgs),
    /// Predict the growth of the logs and the store and the time a full
    /// replay will take, from the recorded rates (AutoETS on the history
    /// in time buckets), with the model's back-tested error on the history.
    ///
    /// Example: vmm store forecast /tmp/rec --horizon 30d --json
    Forecast(super::insight::ForecastArgs),
    /// Drop history older than a window, keeping checkpoints: the kept log
    /// replays from the last checkpoint before the cut, and older
    /// checkpoints (one per --checkpoint-every) stay restorable at their
    /// seq. A dry run unless --apply; `vmm store gc` then frees the blocks.
    ///
    /// Example: vmm store retain /tmp/rec --keep 7d --checkpoint-every 1d --apply
    Retain(super::retain::RetainArgs),
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Record directory (as given to `vmm run --record`), or a snapshot
    /// directory holding `store/`.
    pub dir: PathBuf,
    /// Print one JSON object instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Record directory (as given to `vmm run --record`), or a snapshot
    /// directory holding `store/`.
    pub dir: PathBuf,
    /// Read every object back and check its BLAKE3.
    #[arg(long)]
    pub deep: bool,
    /// Print one JSON object instead of text (for scripts).
    #[arg(long)]
    pub json: bool,
}

fn store_dir(dir: &Path) -> Result<RecordDir, CliError> {
    let rec = RecordDir::new(dir);
    if !rec.store_dir().is_dir() {
        // A record directory always has its store; anything else is a typo.
        return Err(CliError::new(format!(
            "{} has no content store; pass the DIR given to `vmm run --record`",
            dir.display()
        )));
    }
    Ok(rec)
}

pub fn stats(args: &StatsArgs) -> Result<i32, CliError> {
    let dir = store_dir(&args.dir)?;
    let stats = snapshot::usage::stats(&dir).map_err(CliError::from_display)?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&stats).expect("stats serialize")
        );
    } else {
        println!("objects        {}", stats.store.objects);
        println!(
            "logical bytes  {} (what the logs reference)",
            stats.logical_bytes
        );
        println!(
            "raw bytes      {} (distinct objects, uncompressed)",
            stats.store.raw_bytes
        );
        println!(
            "stored bytes   {} (in {} packs)",
            stats.store.stored_bytes, stats.store.packs
        );
        println!(
            "dedup ratio    {:.2}x (logical / stored)",
            stats.dedup_ratio
        );
        if let Some(at) = stats.store.first_damaged_index_offset {
            println!(
                "index damage   {} record(s) skipped, first at byte {at}: run `vmm store repair {}`",
                stats.store.damaged_index_records,
                args.dir.display()
            );
        }
    }
    Ok(0)
}

pub fn gc(args: &StatsArgs) -> Result<i32, CliError> {
    let dir = store_dir(&args.dir)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    if !store.gc_possible().map_err(CliError::from_display)? {
        return Err(CliError::new(format!(
            "the store {} is in use by a running VMM (recording or snapshotting); run gc once it has stopped",
            dir.store_dir().display()
        )));
    }
    let (report, logs) =
        snapshot::refs::collect_garbage(dir.root(), &store).map_err(CliError::from_display)?;
    if args.json {
        println!("{}", serde_json::to_string(&report).expect("serialize"));
    } else {
        let st = &report.store;
        println!(
            "kept {} of {} objects ({} live: {} snapshots, {logs} logs); stored bytes {} -> {}; packs {} -> {}",
            st.objects_kept,
            st.objects_before,
            report.live_objects,
            report.snapshots,
            st.stored_bytes_before,
            st.stored_bytes_after,
            st.pack_files_before,
            st.pack_files_after
        );
    }
    Ok(0)
}

/// Opens the store for checking: its open report's index damage is part
/// of what verify reports.
fn open(dir: &RecordDir) -> Result<Store, CliError> {
    dir.open_store().map_err(|e| {
        CliError::new(format!(
            "{e} (if the index is unreadable, `vmm store repair {}` rebuilds it)",
            dir.root().display()
        ))
    })
}

pub fn verify(args: &VerifyArgs) -> Result<i32, CliError> {
    let dir = store_dir(&args.dir)?;
    let store = open(&dir)?;
    let damage = store.open_report().damaged.clone();
    let report = trust::check(dir.root(), &store, &Scope::default(), args.deep, true)
        .map_err(CliError::from_display)?;
    let ok = report.is_ok() && damage.is_empty();
    if args.json {
        let mut v = serde_json::to_value(&report).expect("reports serialize");
        v["ok"] = ok.into();
        v["store"] = dir.store_dir().display().to_string().into();
        v["index_damage"] = serde_json::to_value(&damage).expect("serialize");
        println!("{v}");
        return Ok(if ok { 0 } else { 1 });
    }
    for d in &damage {
        println!(
            "index damage: {} record(s) at byte {} of {}/index.log ({}): the objects they indexed are invisible",
            d.records,
            d.offset,
            dir.store_dir().display(),
            d.detail
        );
    }
    print_problems(&report);
    let what = checked(&report);
    if ok {
        println!("OK: {what}");
    } else {
        let counts = [
            (report.bad_objects.len(), "bad object(s)"),
            (report.broken_snapshots.len(), "broken snapshot(s)"),
            (report.unreadable.len(), "unreadable log(s)/snapshot(s)"),
            (damage.len(), "damaged index record run(s)"),
        ];
        let found: Vec<String> = counts
            .iter()
            .filter(|(n, _)| *n > 0)
            .map(|(n, what)| format!("{n} {what}"))
            .collect();
        println!(
            "FAILED: {} among {what}; `vmm store repair {}` rebuilds the index from the packs and says what can still be replayed",
            found.join(", "),
            args.dir.display()
        );
    }
    Ok(if ok { 0 } else { 1 })
}

/// "N objects needed by L log(s) and S snapshot(s), read and
/// BLAKE3-checked" (or "index only").
pub fn checked(report: &TrustReport) -> String {
    format!(
        "{} objects needed by {} log(s) and {} snapshot(s), {}",
        report.objects_checked,
        report.logs.len(),
        report.snapshots,
        if report.deep {
            "all read and BLAKE3-checked"
        } else {
            "in the index with their pack bytes (index only; run --deep to read the data)"
        }
    )
}

/// The bad objects, unreadable logs and snapshots, and how far each log
/// replays when something is bad.
pub fn print_problems(report: &TrustReport) {
    for line in report.bad_lines() {
        println!("{line}");
    }
    for u in &report.unreadable {
        println!("unreadable {}: {}", u.what, u.error);
    }
    for s in &report.broken_snapshots {
        println!("snapshot {s}: broken (cannot be restored)");
    }
    if !report.bad_objects.is_empty() {
        for line in report.log_lines() {
            println!("{line}");
        }
    }
}

pub fn repair(args: &StatsArgs) -> Result<i32, CliError> {
    let dir = store_dir(&args.dir)?;
    let repaired = store::repair(&dir.store_dir()).map_err(CliError::from_display)?;
    let store = open(&dir)?;
    let report = trust::check(dir.root(), &store, &Scope::default(), false, true)
        .map_err(CliError::from_display)?;
    let ok = report.is_ok();
    if args.json {
        let v = serde_json::json!({
            "ok": ok,
            "store": dir.store_dir().display().to_string(),
            "repair": repaired,
            "references": report,
        });
        println!("{v}");
        return Ok(if ok { 0 } else { 1 });
    }
    for w in &repaired.warnings {
        println!("warning: {w}");
    }
    println!(
        "rebuilt {}/index.log from {} pack(s): {} objects ({} found by scanning the packs, {} kept from the old index{}), {} zero objects; {} damaged object(s) kept out, {} object(s) of the old index lost",
        dir.store_dir().display(),
        repaired.packs,
        repaired.objects,
        repaired.from_scan,
        repaired.from_old_index,
        if repaired.v1_packs.is_empty() {
            String::new()
        } else {
            format!("; {} version 1 pack(s) kept only through it", repaired.v1_packs.len())
        },
        repaired.zero_objects,
        repaired.damaged.len(),
        repaired.lost.len()
    );
    if let Some(saved) = &repaired.old_index_saved {
        println!("the old index is kept as {}", saved.display());
    }
    for d in &repaired.damaged {
        println!(
            "damaged {} in pack {} at byte {}: {}",
            d.id.map_or("bytes".to_string(), |id| format!("object {id}")),
            d.pack,
            d.offset,
            d.detail
        );
    }
    print_problems(&report);
    for line in report.log_lines() {
        if report.bad_objects.is_empty() {
            println!("{line}");
        }
    }
    if ok {
        println!("OK: {}", checked(&report));
    } else {
        println!(
            "INCOMPLETE: {} object(s) still missing; the logs replay only as far as shown above",
            report.bad_objects.len()
        );
    }
    Ok(if ok { 0 } else { 1 })
}
