//! `vmm changes`, `vmm history` and `vmm diff`: the semantic change log.
use std::path::PathBuf;
use std::time::UNIX_EPOCH;

use clap::Args;
use introspection::decode;
use introspection::lift::SemanticEvent;
use introspection::log::{LogReader, RecordKind};
use introspection::recording::RecordDir;
use introspection::semantic::Format;

use super::CliError;

#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Record directory (as given to `vmm run --record`).
    pub dir: PathBuf,
    /// Only this VM.
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Only this file (as the guest named it, e.g. app.db).
    #[arg(long, value_name = "F")]
    pub file: Option<String>,
    /// Only this table / JSON path / collection.
    #[arg(long, value_name = "T")]
    pub table: Option<String>,
    /// Only this key (rowid, primary key, JSON record key or KV key).
    #[arg(long, value_name = "K")]
    pub key: Option<String>,
    /// Only changes at or after this time (RFC3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub since: Option<u64>,
    /// Only changes at or before this time (RFC3339).
    #[arg(long, value_name = "TIME", value_parser = parse_time)]
    pub until: Option<u64>,
    /// Include decode-error events (files the host could not decode).
    #[arg(long)]
    pub errors: bool,
    /// One JSON object per change (NDJSON).
    #[arg(long)]
    pub json: bool,
}

fn parse_time(s: &str) -> Result<u64, String> {
    let t = humantime::parse_rfc3339_weak(s)
        .map_err(|e| format!("'{s}' is not an RFC3339 time (e.g. 2026-11-21T06:01:42Z): {e}"))?;
    Ok(t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64))
}

/// Every semantic event of the selected VMs, in log order.
fn events(dir: &RecordDir, vm: &Option<String>) -> Result<Vec<SemanticEvent>, CliError> {
    let all = dir
        .vm_ids()
        .map_err(|e| CliError::new(format!("{}: {e}", dir.root().display())))?;
    if all.is_empty() {
        return Err(CliError::new(format!(
            "{} holds no logs; record one with `vmm run --disk IMG --record DIR`",
            dir.root().display()
        )));
    }
    let mut out = Vec::new();
    for id in all.iter().filter(|id| vm.as_ref().is_none_or(|v| v == *id)) {
        let reader = LogReader::open(dir.log_dir(id)).map_err(CliError::from_display)?;
        for record in reader.iter().map_err(CliError::from_display)? {
            if let RecordKind::Semantic { json } = record.map_err(CliError::from_display)?.kind {
                match serde_json::from_str(&json) {
                    Ok(event) => out.push(event),
                    Err(e) => eprintln!("warning: unreadable semantic record in {id}'s log: {e}"),
                }
            }
        }
    }
    Ok(out)
}

pub fn changes(args: &ChangesArgs) -> Result<i32, CliError> {
    let dir = RecordDir::new(&args.dir);
    for event in events(&dir, &args.vm)? {
        let keep = match &event {
            SemanticEvent::Change(c) => {
                args.file.as_ref().is_none_or(|f| *f == c.file)
                    && args.table.as_ref().is_none_or(|t| *t == c.collection)
                    && args.key.as_ref().is_none_or(|k| *k == c.key)
                    && args.since.is_none_or(|t| c.ts_ns >= t)
                    && args.until.is_none_or(|t| c.ts_ns <= t)
            }
            SemanticEvent::DecodeError(e) => {
                args.errors && args.file.as_ref().is_none_or(|f| *f == e.file)
            }
        };
        if !keep {
            continue;
        }
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&event).expect("events serialize")
            );
        } else {
            match &event {
                SemanticEvent::Change(c) => println!("{c}"),
                SemanticEvent::DecodeError(e) => println!("{e}"),
            }
        }
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    pub dir: PathBuf,
    /// The file (e.g. app.db).
    #[arg(long, value_name = "F")]
    pub file: String,
    /// The row or key.
    #[arg(long, value_name = "K")]
    pub key: String,
    /// The table / collection (needed when several have the key).
    #[arg(long, value_name = "T")]
    pub table: Option<String>,
    #[arg(long)]
    pub json: bool,
}

pub fn history(args: &HistoryArgs) -> Result<i32, CliError> {
    let dir = RecordDir::new(&args.dir);
    let mut versions = 0;
    for event in events(&dir, &None)? {
        let SemanticEvent::Change(c) = event else {
            continue;
        };
        if c.file != args.file
            || c.key != args.key
            || args.table.as_ref().is_some_and(|t| *t != c.collection)
        {
            continue;
        }
        versions += 1;
        if args.json {
            println!("{}", serde_json::to_string(&c).expect("serialize"));
        } else {
            let when = humantime::format_rfc3339_micros(
                UNIX_EPOCH + std::time::Duration::from_nanos(c.ts_ns),
            );
            let value = c
                .after
                .as_ref()
                .map_or("(deleted)".to_string(), |v| v.to_string());
            println!(
                "{when}  {} seq {:<8} {:<6} {}[{}] = {value}",
                c.vm,
                c.seq,
                c.op.as_str(),
                c.collection,
                c.key
            );
        }
    }
    if versions == 0 && !args.json {
        println!(
            "no changes of {}[{}] in {}",
            args.file,
            args.key,
            args.dir.display()
        );
    }
    Ok(0)
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    /// sqlite, json, kv or leveldb (OLD and NEW: database directories or
    /// lone write-ahead logs).
    #[arg(long, value_name = "FORMAT")]
    pub format: Format,
    /// The older version of the file.
    pub old: PathBuf,
    /// The newer version.
    pub new: PathBuf,
    /// SQLite: the WAL beside OLD (its committed frames are applied).
    #[arg(long, value_name = "PATH")]
    pub old_wal: Option<PathBuf>,
    /// SQLite: the WAL beside NEW.
    #[arg(long, value_name = "PATH")]
    pub new_wal: Option<PathBuf>,
    /// Key columns (`table=col1,col2;...`) or JSON records (`/path:key`).
    #[arg(long, value_name = "HINT")]
    pub schema: Option<String>,
    /// MiB of decoded state the diff may hold (raise it for files that
    /// decode to far more than they store).
    #[arg(long, value_name = "N", default_value_t = decode::DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,
    #[arg(long)]
    pub json: bool,
}

fn read(path: &PathBuf) -> Result<Vec<u8>, CliError> {
    std::fs::read(path).map_err(|e| CliError::new(format!("{}: {e}", path.display())))
}

/// A file's bytes, or a LevelDB directory bundled as its decoder expects.
fn read_version(path: &PathBuf, format: Format) -> Result<Vec<u8>, CliError> {
    if format == Format::LevelDb && path.is_dir() {
        return decode::leveldb::bundle::read_dir(path)
            .map_err(|e| CliError::new(format!("{}: {e}", path.display())));
    }
    read(path)
}

pub fn diff(args: &DiffArgs) -> Result<i32, CliError> {
    let with_wal = |db: &PathBuf, wal: &Option<PathBuf>| -> Result<Vec<u8>, CliError> {
        let bytes = read_version(db, args.format)?;
        match wal {
            Some(w) => decode::sqlite::apply_wal(&bytes, &read(w)?)
                .map_err(|e| CliError::new(format!("{}: {e}", w.display()))),
            None => Ok(bytes),
        }
    };
    let old = with_wal(&args.old, &args.old_wal)?;
    let new = with_wal(&args.new, &args.new_wal)?;
    let hints = args
        .schema
        .as_deref()
        .map(|s| introspection::lift::parse_schema(args.format, s))
        .unwrap_or_default();
    let limits = decode::DecodeLimits {
        budget_mib: args.decode_budget_mib,
    };
    let changes = decode::diff_with(args.format, &old, &new, &hints, &limits).map_err(|e| {
        CliError::new(format!(
            "cannot decode {} / {} as {}: {e}",
            args.old.display(),
            args.new.display(),
            args.format
        ))
    })?;
    for c in &changes {
        if args.json {
            println!("{}", serde_json::to_string(c).expect("serialize"));
        } else {
            let name = args
                .new
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let change = introspection::semantic::SemanticChange::from_change(
                "-",
                0,
                0,
                name,
                args.format,
                c.clone(),
            );
            println!("{}", change.to_string().trim_start_matches("- seq 0 "));
        }
    }
    if !args.json {
        eprintln!("{} changes", changes.len());
    }
    Ok(0)
}
