//! `vmm log stats DIR|URL --vm V [--json]`: what a VM's recorded steps
//! cost, from the `Metrics` records after its barriers, per run and
//! overall: totals, the per-barrier distribution (p50/p99/max of vCPU
//! time and bytes), the dedup ratio and peak RSS.
use std::collections::BTreeMap;
use std::path::PathBuf;

use changelog::log::RecordKind;
use changelog::metrics::{ExitCounts, StepMetrics};
use clap::Args;
use serde::Serialize;

use super::CliError;

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Record directory, or a record set in a cluster
    /// (nats://HOST:PORT[,HOST:PORT...]/NAME).
    #[arg(value_name = "DIR|URL")]
    pub dir: PathBuf,
    /// Whose log (default: every VM's).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// One JSON object per VM.
    #[arg(long)]
    pub json: bool,
}

/// Totals and distributions over a set of steps.
#[derive(Debug, Default, Serialize)]
pub struct Summary {
    /// Barriers that carry metrics (steps).
    pub barriers: u64,
    /// Wall-clock time the steps cover.
    pub interval_ns: u64,
    pub vcpu_ns: u64,
    pub recorder_ns: u64,
    pub exits: ExitCounts,
    pub exits_total: u64,
    pub guest_read_bytes: u64,
    pub guest_written_bytes: u64,
    pub logged_bytes: u64,
    pub new_objects: u64,
    pub new_raw_bytes: u64,
    pub stored_bytes: u64,
    /// Bytes logged per byte of new objects (1.0: nothing deduplicated).
    pub dedup_ratio: Option<f64>,
    /// Bytes logged per byte stored (dedup and compression together).
    pub store_ratio: Option<f64>,
    pub peak_rss_kib: u64,
    /// Per barrier: vCPU ms, bytes the guest wrote, bytes stored.
    pub vcpu_ms: Dist,
    pub written_bytes: Dist,
    pub stored_bytes_per_barrier: Dist,
}

/// A distribution by nearest rank.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Dist {
    pub p50: f64,
    pub p99: f64,
    pub max: f64,
}

impl Dist {
    fn of(mut v: Vec<f64>) -> Dist {
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| v[((p / 100.0 * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Dist {
            p50: rank(50.0),
            p99: rank(99.0),
            max: v[v.len() - 1],
        }
    }
}

impl Summary {
    pub fn of(steps: &[StepMetrics]) -> Summary {
        let mut s = Summary {
            barriers: steps.len() as u64,
            ..Default::default()
        };
        for m in steps {
            s.interval_ns += m.interval_ns;
            s.vcpu_ns += m.vcpu_ns;
            s.recorder_ns += m.recorder_ns;
            s.exits.pio += m.exits.pio;
            s.exits.mmio += m.exits.mmio;
            s.exits.other += m.exits.other;
            s.guest_read_bytes += m.guest_read_bytes;
            s.guest_written_bytes += m.guest_written_bytes;
            s.logged_bytes += m.logged_bytes;
            s.new_objects += m.new_objects;
            s.new_raw_bytes += m.new_raw_bytes;
            s.stored_bytes += m.stored_bytes;
            s.peak_rss_kib = s.peak_rss_kib.max(m.rss_kib);
        }
        s.exits_total = s.exits.total();
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        s.dedup_ratio = ratio(s.logged_bytes, s.new_raw_bytes);
        s.store_ratio = ratio(s.logged_bytes, s.stored_bytes);
        let dist = |f: fn(&StepMetrics) -> f64| Dist::of(steps.iter().map(f).collect());
        s.vcpu_ms = dist(|m| m.vcpu_ns as f64 / 1e6);
        s.written_bytes = dist(|m| m.guest_written_bytes as f64);
        s.stored_bytes_per_barrier = dist(|m| m.stored_bytes as f64);
        s
    }
}

/// One VM's report.
#[derive(Debug, Serialize)]
struct VmStats {
    vm: String,
    /// Barrier records in the log, with metrics or not (the base's and
    /// those of builds before metrics have none).
    log_barriers: u64,
    runs: Vec<RunStats>,
    overall: Summary,
}

#[derive(Debug, Serialize)]
struct RunStats {
    /// The run's id: its start, Unix ns.
    run: u64,
    started: String,
    #[serde(flatten)]
    summary: Summary,
}

/// `vmm log stats`.
pub fn stats(args: &StatsArgs) -> Result<i32, CliError> {
    let source = super::source::Source::open(&args.dir)?;
    let logs = source.logs();
    for vm in super::log::vms(logs, &args.vm)? {
        let mut steps = Vec::new();
        let mut log_barriers = 0;
        for record in logs.records(&vm, 1).map_err(CliError::from_display)? {
            let record = record.map_err(CliError::from_display)?;
            match record.kind {
                RecordKind::Barrier { .. } => log_barriers += 1,
                RecordKind::Metrics { json } => {
                    let m = StepMetrics::from_json(&json).map_err(|e| {
                        CliError::new(format!(
                            "{vm}: metrics record seq {} is not readable: {e}",
                            record.seq
                        ))
                    })?;
                    steps.push(m);
                }
                _ => {}
            }
        }
        let mut by_run: BTreeMap<u64, Vec<StepMetrics>> = BTreeMap::new();
        for m in &steps {
            by_run.entry(m.run).or_default().push(m.clone());
        }
        let report = VmStats {
            vm: vm.clone(),
            log_barriers,
            runs: by_run
                .iter()
                .map(|(&run, s)| RunStats {
                    run,
                    started: time(run),
                    summary: Summary::of(s),
                })
                .collect(),
            overall: Summary::of(&steps),
        };
        if args.json {
            println!(
                "{}",
                serde_json::to_string(&report).expect("reports serialize")
            );
        } else {
            print_text(&report);
        }
    }
    Ok(0)
}

fn time(ns: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns))
        .to_string()
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).display().iec().to_string()
}

fn print_text(r: &VmStats) {
    println!(
        "{}: {} run(s), {} barrier(s) with metrics ({} in the log)",
        r.vm,
        r.runs.len(),
        r.overall.barriers,
        r.log_barriers
    );
    for run in &r.runs {
        println!("  run started {}:", run.started);
        print_summary(&run.summary, "    ");
    }
    if r.runs.len() != 1 {
        println!("  overall:");
        print_summary(&r.overall, "    ");
    }
}

fn print_summary(s: &Summary, indent: &str) {
    let ms = |ns: u64| ns as f64 / 1e6;
    let ratio = |r: Option<f64>| r.map_or("-".to_string(), |r| format!("{r:.2}x"));
    println!(
        "{indent}{} barriers over {:.3} s; vCPU {:.1} ms, recorder {:.1} ms",
        s.barriers,
        s.interval_ns as f64 / 1e9,
        ms(s.vcpu_ns),
        ms(s.recorder_ns)
    );
    println!(
        "{indent}exits {} (pio {}, mmio {}, other {})",
        s.exits_total, s.exits.pio, s.exits.mmio, s.exits.other
    );
    println!(
        "{indent}guest read {}, wrote {}; logged {}; stored {} in {} new objects (dedup {}, dedup+compression {})",
        bytes(s.guest_read_bytes),
        bytes(s.guest_written_bytes),
        bytes(s.logged_bytes),
        bytes(s.stored_bytes),
        s.new_objects,
        ratio(s.dedup_ratio),
        ratio(s.store_ratio)
    );
    println!(
        "{indent}per barrier: vCPU ms p50 {:.2} p99 {:.2} max {:.2}; written p50 {} p99 {} max {}",
        s.vcpu_ms.p50,
        s.vcpu_ms.p99,
        s.vcpu_ms.max,
        bytes(s.written_bytes.p50 as u64),
        bytes(s.written_bytes.p99 as u64),
        bytes(s.written_bytes.max as u64)
    );
    println!("{indent}peak RSS {}", bytes(s.peak_rss_kib * 1024));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let d = Dist::of((1..=100).map(f64::from).collect());
        assert_eq!(
            d,
            Dist {
                p50: 50.0,
                p99: 99.0,
                max: 100.0
            }
        );
        assert_eq!(Dist::of(vec![7.0]).p99, 7.0);
        assert_eq!(Dist::of(vec![]), Dist::default());
    }

    #[test]
    fn totals_sum_and_rss_peaks() {
        let step = |w: u64, raw: u64, rss: u64| StepMetrics {
            guest_written_bytes: w,
            logged_bytes: w,
            new_raw_bytes: raw,
            stored_bytes: raw / 2,
            rss_kib: rss,
            ..Default::default()
        };
        let s = Summary::of(&[step(8192, 4096, 10), step(8192, 8192, 30)]);
        assert_eq!(
            (s.barriers, s.guest_written_bytes, s.peak_rss_kib),
            (2, 16384, 30)
        );
        assert_eq!(s.dedup_ratio, Some(16384.0 / 12288.0));
        assert_eq!(s.store_ratio, Some(16384.0 / 6144.0));
    }
}
