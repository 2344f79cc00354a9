//! `vmm store retain DIR --keep D`: drop a record directory's history
//! older than a window at checkpoint granularity (`changelog::retain`
//! holds the rules and the crash-safety argument). A dry run unless
//! `--apply`; `vmm store gc` then frees the blocks nothing names any more.
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use changelog::retain::{self, RetainPlan, RetainPolicy};
use changelog::RecordDir;
use clap::Args;

use super::CliError;

#[derive(Debug, Args)]
pub struct RetainArgs {
    /// Record directory (as given to `vmm run --record`).
    pub dir: PathBuf,
    /// Keep the full history of this window (e.g. 7d, 12h); older records
    /// go, down to checkpoint granularity.
    #[arg(long, value_name = "DURATION")]
    pub keep: humantime::Duration,
    /// Of the checkpoints older than the window, keep the first of every
    /// period this long (each stays restorable: `vmm replay --until
    /// seq=N` at its seq).
    #[arg(long, value_name = "DURATION", default_value = "1d")]
    pub checkpoint_every: humantime::Duration,
    /// Only this VM's log (default: every VM's).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Do it (without: only say what would be removed).
    #[arg(long)]
    pub apply: bool,
    /// One JSON object per VM.
    #[arg(long)]
    pub json: bool,
}

fn print(plan: &RetainPlan, applied: bool) {
    let verb = if applied { "removed" } else { "would remove" };
    match (&plan.note, plan.is_empty()) {
        (Some(note), true) => println!("{}: nothing to remove: {note}", plan.vm),
        _ => println!(
            "{}: {verb} seqs {}..{} ({} records, {} segments, {} bytes) before the checkpoint at seq {}; {} older checkpoints kept, {} dropped",
            plan.vm,
            plan.first_seq,
            plan.first_kept_seq.saturating_sub(1),
            plan.records_removed,
            plan.segments_removed.len(),
            plan.bytes_removed,
            plan.base_checkpoint.unwrap_or(0),
            plan.checkpoints_kept
                .iter()
                .filter(|&&s| Some(s) < plan.base_checkpoint)
                .count(),
            plan.checkpoints_dropped.len()
        ),
    }
}

pub fn retain(args: &RetainArgs) -> Result<i32, CliError> {
    let dir = RecordDir::new(&args.dir);
    if !dir.has_layout() {
        return Err(CliError::new(format!(
            "{} is not a record directory (no logs/ and store/); give the DIR of `vmm run --record DIR`",
            args.dir.display()
        )));
    }
    let vms = super::log::vms(&dir, &args.vm)?;
    let store = dir.open_store().map_err(CliError::from_display)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let policy = RetainPolicy {
        cut_ns: now.saturating_sub(args.keep.as_nanos().min(u128::from(u64::MAX)) as u64),
        checkpoint_every_ns: args.checkpoint_every.as_nanos().min(u128::from(u64::MAX)) as u64,
    };
    for vm in vms {
        let plan = retain::plan(&dir, &store, &vm, policy).map_err(CliError::from_display)?;
        if args.apply && !plan.is_empty() {
            retain::apply(&dir, &plan).map_err(|e| match e {
                retain::RetainError::Log(changelog::LogError::Locked { .. }) => CliError::new(format!(
                    "VM {vm} is recording into {} (its log is locked): nothing was removed; retry once it stopped",
                    args.dir.display()
                )),
                e => CliError::new(format!("retain {vm}: {e}")),
            })?;
        }
        if args.json {
            let mut v = serde_json::to_value(&plan).expect("plans serialize");
            v["applied"] = (args.apply && !plan.is_empty()).into();
            println!("{v}");
        } else {
            print(&plan, args.apply);
        }
    }
    if !args.apply && !args.json {
        println!(
            "dry run: nothing was changed; --apply does it, then `vmm store gc` frees the space"
        );
    }
    Ok(0)
}
