//! `vmm store forecast` and `vmm report`: a record set's history as a
//! forecast of its growth and as one HTML page (the `insight` crate).
//! This file measures what the crate cannot: the bytes of the logs' and
//! the store's files, and how long a full replay takes now.
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use clap::Args;
use insight::report::ReportInput;
use insight::{Forecast, ForecastInput, Timeline};
use replay::{Base, Options, Point};

use super::source::Source;
use super::CliError;

#[derive(Debug, Args)]
pub struct ForecastArgs {
    /// Record directory, or a record set in a cluster
    /// (nats://HOST:PORT[,HOST:PORT...]/NAME).
    #[arg(value_name = "DIR|URL")]
    pub dir: PathBuf,
    /// How far ahead (e.g. 30d, 12h).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub horizon: humantime::Duration,
    /// Only these VMs (repeatable; default: every VM, as they share one
    /// store).
    #[arg(long, value_name = "ID")]
    pub vm: Vec<String>,
    /// Time buckets the history is cut into for the model.
    #[arg(long, value_name = "N", default_value_t = 48, value_parser = clap::value_parser!(u16).range(4..=10_000))]
    pub buckets: u16,
    /// Do not replay the logs to measure the replay time now (then no
    /// replay time is projected).
    #[arg(long)]
    pub no_replay: bool,
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Record directory, or a record set in a cluster
    /// (nats://HOST:PORT[,HOST:PORT...]/NAME).
    #[arg(value_name = "DIR|URL")]
    pub dir: PathBuf,
    /// The page to write (one self-contained file).
    #[arg(long, value_name = "OUT.html")]
    pub html: PathBuf,
    /// Replace OUT.html if it exists.
    #[arg(long)]
    pub force: bool,
    /// The forecast's horizon.
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub horizon: humantime::Duration,
    /// Do not replay the logs to measure the replay time now.
    #[arg(long)]
    pub no_replay: bool,
    /// How many of the last drills to show.
    #[arg(long, value_name = "N", default_value_t = 10)]
    pub drills: usize,
}

fn dir_bytes(path: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

/// How long replaying every VM's whole log (no checkpoints) takes now.
fn measure_replay(source: &Source, vms: &[String]) -> Result<u64, CliError> {
    let objects = source.objects()?;
    let tmp =
        tempfile::tempdir().map_err(|e| CliError::new(format!("a temporary directory: {e}")))?;
    let start = Instant::now();
    for vm in vms {
        eprintln!("vmm: measuring a full replay of {vm}");
        let out = tmp.path().join("replay.img");
        replay::replay_to_file_from(
            source.logs(),
            objects.backend(),
            vm,
            &Base::Empty,
            &Point::End,
            &out,
            Options {
                checkpoints: false,
                ..Options::default()
            },
        )
        .map_err(|e| CliError::new(format!("measuring a full replay of {vm}: {e}")))?;
        let _ = std::fs::remove_file(&out);
    }
    Ok(start.elapsed().as_nanos() as u64)
}

fn run_forecast(
    source: &Source,
    vms: &[String],
    horizon: humantime::Duration,
    buckets: usize,
    replay: bool,
) -> Result<Forecast, CliError> {
    let timeline = Timeline::read(source.logs(), vms, buckets).map_err(CliError::from_display)?;
    let names: Vec<String> = timeline.vms.iter().map(|v| v.vm.clone()).collect();
    let (log_bytes, store_bytes) = match source {
        Source::Dir(dir) => (
            names.iter().map(|vm| dir_bytes(&dir.log_dir(vm))).sum(),
            dir_bytes(&dir.store_dir()),
        ),
        // A cluster's stream sizes are the engine's; the forecast then
        // projects what the metrics count.
        Source::Cluster(_) => (0, 0),
    };
    let full_replay_ns = if replay {
        Some(measure_replay(source, &names)?)
    } else {
        None
    };
    let input = ForecastInput {
        horizon_ns: horizon.as_nanos().min(u128::from(u64::MAX)) as u64,
        log_bytes,
        store_bytes,
        full_replay_ns,
    };
    insight::forecast(&timeline, input).map_err(CliError::from_display)
}

pub fn forecast(args: &ForecastArgs) -> Result<i32, CliError> {
    let source = Source::open(&args.dir)?;
    let f = run_forecast(
        &source,
        &args.vm,
        args.horizon,
        args.buckets.into(),
        !args.no_replay,
    )?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&f).expect("forecasts serialize")
        );
        return Ok(0);
    }
    let h = &f.history;
    println!(
        "history: {:.1} s in {} buckets of {:.3} s; {} records, {} logged, {} stored",
        h.span_s,
        h.buckets,
        h.bucket_s,
        f.now.records,
        insight::report::bytes(f.now.logged_bytes as f64),
        insight::report::bytes(f.now.stored_bytes as f64)
    );
    println!("model: {}", f.models.join("; "));
    let e = |x: &insight::forecast::Estimate, fmt: &dyn Fn(f64) -> String| {
        format!("{} (95%: {} .. {})", fmt(x.point), fmt(x.low), fmt(x.high))
    };
    println!("in {}:", args.horizon);
    println!(
        "  log    {}",
        e(&f.at_horizon.log_bytes, &insight::report::bytes)
    );
    println!(
        "  store  {}",
        e(&f.at_horizon.store_bytes, &insight::report::bytes)
    );
    if let (Some(now), Some(r)) = (f.now.full_replay_s, &f.at_horizon.full_replay_s) {
        println!(
            "  full replay {} (now {now:.2} s)",
            e(r, &|s| format!("{s:.1} s"))
        );
    }
    match &f.backtest {
        Some(b) => println!(
            "back-test (fit on {} buckets, scored on {}): mean abs error {:.1}% records, {:.1}% logged, {:.1}% stored",
            b.train_buckets, b.test_buckets, b.records_mape, b.logged_bytes_mape, b.stored_bytes_mape
        ),
        None => println!("back-test: none (history too short)"),
    }
    for w in &f.warnings {
        println!("warning: {w}");
    }
    Ok(0)
}

pub fn report(args: &ReportArgs) -> Result<i32, CliError> {
    if args.html.exists() && !args.force {
        return Err(CliError::new(format!(
            "{} exists; pass --force to replace it",
            args.html.display()
        )));
    }
    let source = Source::open(&args.dir)?;
    let timeline = Timeline::read(source.logs(), &[], 120).map_err(CliError::from_display)?;
    let (forecast, note) = match run_forecast(&source, &[], args.horizon, 48, !args.no_replay) {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e.message)),
    };
    let (drills, store_bytes) = match &source {
        Source::Dir(dir) => (
            insight::drills::last(dir.root(), args.drills),
            Some(dir_bytes(&dir.store_dir())),
        ),
        Source::Cluster(_) => (Vec::new(), None),
    };
    let generated_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let page = insight::report::render(&ReportInput {
        timeline: &timeline,
        forecast: forecast.as_ref(),
        forecast_note: note,
        drills: &drills,
        store_bytes,
        generated_ns,
    });
    write_atomically(&args.html, page.as_bytes())?;
    println!(
        "wrote {} ({} VMs, {} records)",
        args.html.display(),
        timeline.vms.len(),
        timeline.totals().records
    );
    Ok(0)
}

/// Temp file beside `path`, fsync, rename: a reader never sees half a page.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), CliError> {
    let fail = |e: std::io::Error| CliError::new(format!("cannot write {}: {e}", path.display()));
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::NamedTempFile::new_in(parent).map_err(fail)?;
    tmp.write_all(bytes).map_err(fail)?;
    // Readable like any file the user writes (a temp file starts 0600).
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))
        .map_err(fail)?;
    tmp.as_file().sync_all().map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
