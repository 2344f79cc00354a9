//! `vmm changes`, `vmm history` and `vmm diff`: the semantic change log.
//!
//! The queries themselves are `introspection::query`; this module parses
//! arguments and prints: text (a time column, long values shortened) or
//! NDJSON (values whole), a damaged VM log as one `warning:` line on
//! stderr (a `{"event":"damaged",...}` object in `--json`) and exit
//! status 1 after everything readable was shown.
use std::path::PathBuf;

use super::provenance;
use super::source::Source;
use changelog::point::Point;
use clap::Args;
use introspection::decode;
use introspection::lift::SemanticEvent;
use introspection::query::{self, Damage, Filter, Found};
use introspection::semantic::Format;

use super::CliError;
use vmm::error::exit;

#[derive(Debug, Args)]
pub struct ChangesArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// pushed to a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(required_unless_present = "list_decoders")]
    pub dir: Option<PathBuf>,
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
    /// Only changes at or after this point: seq=N, mark=NAME (in each VM's
    /// own log) or time=RFC3339.
    #[arg(long, value_name = "POINT", value_parser = parse_bound)]
    pub since: Option<Point>,
    /// Only changes at or before this point (seq=N, mark=NAME, time=T).
    #[arg(long, value_name = "POINT", value_parser = parse_bound)]
    pub until: Option<Point>,
    /// With --net: the first point (seq=N, mark=NAME, time=T).
    #[arg(long, value_name = "A", value_parser = parse_bound, requires_all = ["and", "net"], conflicts_with_all = ["since", "until"])]
    pub between: Option<Point>,
    /// With --net: the second point (seq=N, mark=NAME, time=T or end).
    #[arg(long = "and", value_name = "B", value_parser = parse_bound, requires = "between")]
    pub and: Option<Point>,
    /// Net view: one line per key that differs between --between A and
    /// --and B (its row at A and at B); keys unchanged between them are
    /// left out.
    #[arg(long, requires = "between")]
    pub net: bool,
    /// Include decode-error events (files the host could not decode).
    #[arg(long)]
    pub errors: bool,
    /// How each change was derived: decoder and version hash, the blocks
    /// read (count and hash), its base, output and step hashes, and the
    /// VMM version recorded at its barrier (`vmm_version` in --json).
    #[arg(long)]
    pub provenance: bool,
    /// Lift the recorded blocks again with this decoder (NAME or
    /// NAME@VERSION, see --list-decoders) instead of showing the recorded
    /// changes; files of other formats are left out.
    #[arg(long, value_name = "NAME[@VERSION]", conflicts_with_all = ["since", "until", "between", "net", "compare_decoder"])]
    pub decoder: Option<String>,
    /// Lift the recorded blocks with two decoders (give it twice) and show
    /// the steps where they disagree.
    #[arg(long, value_name = "NAME[@VERSION]", conflicts_with_all = ["since", "until", "between", "net", "provenance"])]
    pub compare_decoder: Vec<String>,
    /// List the decoders of this build with their version hashes.
    #[arg(long, conflicts_with_all = ["dir", "decoder", "compare_decoder", "provenance", "net", "between"])]
    pub list_decoders: bool,
    /// MiB of decoded state a relift (--decoder, --compare-decoder) may
    /// hold per diff.
    #[arg(long, value_name = "N", default_value_t = decode::DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,
    /// One JSON object per change (NDJSON), values in full.
    #[arg(long)]
    pub json: bool,
}

/// A point (`seq=N`, `mark=NAME`, `time=T`, `end`), or a bare RFC3339
/// time as `--since`/`--until` took before they took points.
fn parse_bound(s: &str) -> Result<Point, String> {
    s.parse::<Point>().or_else(|e| {
        if s.contains('=') {
            return Err(e);
        }
        format!("time={s}").parse::<Point>().map_err(|_| e)
    })
}

fn query_err(e: query::QueryError) -> CliError {
    CliError::from_display(e)
}

/// Prints damage (stderr, or NDJSON objects) and notes; the exit status.
fn finish<T>(found: &Found<T>, json: bool) -> i32 {
    for note in &found.notes {
        eprintln!("note: {note}");
    }
    for d in &found.damaged {
        if json {
            println!("{}", damaged_json(d));
        }
        eprintln!("warning: {d}");
    }
    if found.damaged.is_empty() {
        0
    } else {
        exit::CHECK_FAILED
    }
}

fn damaged_json(d: &Damage) -> String {
    serde_json::json!({"event": "damaged", "vm": d.vm, "seq": d.seq, "reason": d.reason})
        .to_string()
}

pub fn changes(args: &ChangesArgs) -> Result<i32, CliError> {
    if args.list_decoders {
        return provenance::list_decoders(args.json);
    }
    if let Some(name) = &args.decoder {
        return provenance::with_decoder(args, name);
    }
    if !args.compare_decoder.is_empty() {
        return provenance::compare(args, &args.compare_decoder);
    }
    let source = Source::open(args.dir.as_ref().expect("clap requires DIR"))?;
    let dir = source.logs();
    let filter = Filter {
        vm: args.vm.clone(),
        file: args.file.clone(),
        table: args.table.clone(),
        key: args.key.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        errors: args.errors,
    };
    if let (true, Some(a), Some(b)) = (args.net, &args.between, &args.and) {
        let found = query::net(dir, &filter, a, b).map_err(query_err)?;
        for c in &found.items {
            if args.json {
                println!("{}", serde_json::to_string(c).expect("serialize"));
            } else {
                println!("{c}");
            }
        }
        return Ok(finish(&found, args.json));
    }
    let found = query::changes(dir, &filter).map_err(query_err)?;
    // The VMM version of each barrier, per VM, for --provenance.
    let mut versions = std::collections::BTreeMap::new();
    for event in &found.items {
        let (vm, seq) = match event {
            SemanticEvent::Change(c) => (&c.vm, c.seq),
            SemanticEvent::DecodeError(e) => (&e.vm, e.seq),
        };
        let vmm = if args.provenance {
            versions
                .entry(vm.clone())
                .or_insert_with(|| provenance::barrier_versions(dir, vm))
                .get(&seq)
        } else {
            None
        };
        provenance::print_event(args, event, vmm);
    }
    Ok(finish(&found, args.json))
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Record directory, or nats://HOST:PORT[,HOST:PORT...]/NAME.
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
    /// Only this VM.
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// One JSON object per version (NDJSON), values in full.
    #[arg(long)]
    pub json: bool,
}

pub fn history(args: &HistoryArgs) -> Result<i32, CliError> {
    let source = Source::open(&args.dir)?;
    let dir = source.logs();
    let filter = Filter {
        vm: args.vm.clone(),
        file: Some(args.file.clone()),
        table: args.table.clone(),
        key: Some(args.key.clone()),
        ..Filter::default()
    };
    let found = query::changes(dir, &filter).map_err(query_err)?;
    let mut versions = 0;
    for event in &found.items {
        let SemanticEvent::Change(c) = event else {
            continue;
        };
        versions += 1;
        if args.json {
            println!("{}", serde_json::to_string(c).expect("serialize"));
        } else {
            let value = c.after.as_ref().map_or("(deleted)".to_string(), |v| {
                query::shorten(v, query::TEXT_MAX).to_string()
            });
            println!(
                "{}  {} seq {:<8} {:<6} {}[{}] = {value}",
                query::format_time(c.ts_ns),
                c.vm,
                c.seq,
                c.op.as_str(),
                c.collection,
                query::shorten_str(&c.key, query::TEXT_MAX, "chars"),
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
    Ok(finish(&found, args.json))
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
