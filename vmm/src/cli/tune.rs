//! `vmm tune`: the cheapest VM configuration under which a workload on a
//! recorded disk meets a target. The disk is restored once (a verified
//! replay, as `vmm drill` does); each configuration the search picks
//! (`vmm::tune` says how it picks them and what they cost) boots a check
//! VM on it under that configuration and measures the run.
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use replay::{Base, Options, Point};
use serde::Serialize;
use vmm::metrics::RunMetrics;
use vmm::shutdown;
use vmm::tune::{self, Config, CostModel, Space, Target, Tried};

use super::drill::{check_for, run_check, ConfigArgs};
use super::replay::lock_base;
use super::source::Source;
use super::{Cli, CliError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Dimension {
    Mem,
    Vcpus,
    Iops,
}

#[derive(Debug, Args)]
pub struct TuneArgs {
    /// Record directory (as given to `vmm run --record`), or a record set
    /// in a cluster: nats://HOST:PORT[,HOST:PORT...]/NAME.
    #[arg(long, value_name = "DIR|URL")]
    pub log: PathBuf,
    /// Whose log (default: the only VM recorded in DIR).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Where the replay starts (see `vmm replay --base`).
    #[arg(long, value_name = "IMAGE|empty", default_value = "empty")]
    pub base: Base,
    /// The point whose disk the workload runs on: seq=N, time=RFC3339,
    /// mark=NAME or end.
    #[arg(long, value_name = "POINT")]
    pub at: Point,
    /// The microguest command line of the workload (exit status 0: its
    /// run counts); `auto` as for `vmm drill`.
    #[arg(long, value_name = "CMDLINE|auto", default_value = "auto")]
    pub check: String,
    /// What a run must achieve: time<=X, X in seconds or ms (the check
    /// VM's wall time from build to exit; example: --target "time<=1.5s").
    #[arg(long, value_name = "time<=X")]
    pub target: Target,
    /// The dimensions to vary (example: --vary mem,iops); the others keep
    /// --mem-mib, --vcpus and --disk-iops.
    #[arg(
        long,
        value_name = "mem,vcpus,iops",
        value_delimiter = ',',
        required = true
    )]
    pub vary: Vec<Dimension>,
    /// Memory sizes to try, in MiB.
    #[arg(long, value_name = "MIB,..", value_delimiter = ',', default_value = "32,64,128,256,512", value_parser = parse_mem)]
    pub mem_values: Vec<u64>,
    /// vCPU counts to try.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_value = "1,2,4", value_parser = super::run::parse_vcpus)]
    pub vcpus_values: Vec<u8>,
    /// IOPS limits to try.
    #[arg(long, value_name = "N,..", value_delimiter = ',', default_value = "100,1000,10000", value_parser = super::run::parse_iops)]
    pub iops_values: Vec<u64>,
    #[command(flatten)]
    pub fixed: ConfigArgs,
    /// Cost of one MiB of memory.
    #[arg(long, value_name = "W", default_value_t = 1.0, value_parser = parse_weight)]
    pub cost_mib: f64,
    /// Cost of one vCPU.
    #[arg(long, value_name = "W", default_value_t = 64.0, value_parser = parse_weight)]
    pub cost_vcpu: f64,
    /// Cost of one IOPS of limit.
    #[arg(long, value_name = "W", default_value_t = 0.1, value_parser = parse_weight)]
    pub cost_iops: f64,
    /// Stop after this many runs.
    #[arg(long, value_name = "N", default_value_t = 30)]
    pub max_runs: usize,
    #[arg(long)]
    pub json: bool,
}

fn parse_mem(s: &str) -> Result<u64, String> {
    let (min, max) = (vmm::memory::MIN_MEM_MIB, vmm::memory::MAX_MEM_MIB);
    match s.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("'{s}' MiB: give a memory size from {min} to {max}")),
    }
}

fn parse_weight(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(w) if w.is_finite() && w >= 0.0 => Ok(w),
        _ => Err(format!("'{s}' is not a cost weight: give a number >= 0")),
    }
}

#[derive(Serialize)]
struct TuneReport<'a> {
    vm: String,
    at: String,
    check: String,
    target: String,
    cost_model: CostModel,
    /// Every configuration run, in order, with its metrics.
    tried: &'a [Tried],
    /// The cheapest that met the target (None: none did).
    best: Option<&'a Tried>,
    budget_exhausted: bool,
}

/// Removes the restored image however the command ends.
struct TempImage(PathBuf);

impl Drop for TempImage {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn tune(cli: &Cli, args: &TuneArgs) -> Result<i32, CliError> {
    let space = space(args)?;
    let cost = CostModel {
        per_mib: args.cost_mib,
        per_vcpu: args.cost_vcpu,
        per_iops: args.cost_iops,
    };
    let source = Source::open(&args.log)?;
    let logs = source.logs();
    let vm = super::log::one_vm(logs, &args.vm)?;
    let objects = source.objects()?;
    let _base_lock = lock_base(&args.base, None)?;
    let disk = TempImage(std::env::temp_dir().join(format!("vmm-tune-{}.img", std::process::id())));
    let cancel = || shutdown::requested().is_some();
    let restored = replay::replay_to_file_from(
        logs,
        objects.backend(),
        &vm,
        &args.base,
        &args.at,
        &disk.0,
        Options {
            cancel: Some(&cancel),
            ..Options::default()
        },
    )
    .map_err(|e| CliError::new(format!("restoring {vm} at {}: {e}", args.at)))?;
    if !restored.verified {
        return Err(CliError::new(format!(
            "the replay of {vm} to {} could not be verified against a barrier's checksum: a configuration measured on that disk would prove nothing; pick a point at or after a flush",
            args.at
        )));
    }
    let check = check_for(logs, &vm, restored.last_seq, &args.check).map_err(CliError::new)?;
    if !args.json {
        println!(
            "tune: {vm} at {} (seq {}), `{check}`, target {}",
            args.at, restored.last_seq, args.target
        );
        println!(
            "  cost = {} x MiB + {} x vCPU + {} x IOPS",
            cost.per_mib, cost.per_vcpu, cost.per_iops
        );
    }
    let outcome = tune::search(&space, &cost, &args.target, args.max_runs, |config| {
        let measured = measure(cli, &disk.0, &check, config);
        if !args.json {
            print_point(config, cost.cost(config), &measured, &args.target);
        }
        measured
    });
    let best = outcome.best.map(|i| &outcome.tried[i]);
    if args.json {
        let report = TuneReport {
            vm,
            at: args.at.to_string(),
            check,
            target: args.target.to_string(),
            cost_model: cost,
            tried: &outcome.tried,
            best,
            budget_exhausted: outcome.budget_exhausted,
        };
        println!(
            "{}",
            serde_json::to_string(&report).expect("reports serialize")
        );
    } else {
        match best {
            Some(b) => println!(
                "cheapest meeting {}: {} (cost {}) after {} runs",
                args.target,
                b.config,
                b.cost,
                outcome.tried.len()
            ),
            None => println!(
                "no configuration tried meets {} ({} runs{})",
                args.target,
                outcome.tried.len(),
                if outcome.budget_exhausted {
                    ", --max-runs reached"
                } else {
                    ""
                }
            ),
        }
    }
    if let Some(signal) = shutdown::requested() {
        return Ok(shutdown::exit_status(signal));
    }
    Ok(if best.is_some() {
        0
    } else {
        vmm::error::exit::CHECK_FAILED
    })
}

/// The grid: the varied dimensions' values, the fixed ones' single value.
fn space(args: &TuneArgs) -> Result<Space, CliError> {
    let varies = |d| args.vary.contains(&d);
    let mem = if varies(Dimension::Mem) {
        args.mem_values.clone()
    } else {
        vec![args.fixed.mem_mib]
    };
    let vcpus = if varies(Dimension::Vcpus) {
        args.vcpus_values.clone()
    } else {
        vec![args.fixed.vcpus]
    };
    let iops = if varies(Dimension::Iops) {
        args.iops_values.iter().copied().map(Some).collect()
    } else {
        vec![args.fixed.disk_iops]
    };
    Space::new(mem, vcpus, iops)
        .ok_or_else(|| CliError::new("a varied dimension has no values to try"))
}

/// One run of the workload under `config`: its metrics when the guest
/// exited 0, else why not.
fn measure(cli: &Cli, disk: &Path, check: &str, config: &Config) -> Result<RunMetrics, String> {
    if shutdown::requested().is_some() {
        return Err("stopped by a signal".into());
    }
    let run = run_check(cli, disk, check, config);
    match (run.status, run.error) {
        (Some(0), _) => Ok(run.metrics),
        (_, Some(e)) => Err(e),
        (Some(status), None) => Err(format!(
            "the workload exited {status}: {}",
            run.output.lines().last().unwrap_or("")
        )),
        (None, None) => Err("the workload did not finish".into()),
    }
}

fn print_point(config: &Config, cost: f64, measured: &Result<RunMetrics, String>, target: &Target) {
    match measured {
        Ok(m) => println!(
            "  {:<34} cost {:>7.1}  time {:>8.1} ms  vCPU {:>8.1} ms  exits {:>6}  read {:>10} B  throttled {:>7.1} ms  {}",
            config.to_string(),
            cost,
            m.time_ms,
            m.vcpu_ms,
            m.exits,
            m.guest_read_bytes,
            m.throttled_ms,
            if target.met_by(m) { "meets" } else { "misses" }
        ),
        Err(e) => println!("  {:<34} cost {cost:>7.1}  failed: {e}", config.to_string()),
    }
}
