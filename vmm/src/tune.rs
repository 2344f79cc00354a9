//! What-if over VM configurations (issue 13, item 4): the configuration a
//! workload runs under, what it costs, the target it must meet, and the
//! search `vmm tune` runs over them (`crate::cli::tune` runs the points;
//! this module only decides which, so it is tested without KVM).
//!
//! Cost: `mem_mib * per_mib + vcpus * per_vcpu + iops * per_iops`, weights
//! 1, 64 and 0.1 by default: a vCPU is priced like 64 MiB of memory, and
//! 1000 IOPS like 100 MiB. A disk without an IOPS limit is not priced
//! (only possible when IOPS is not varied).
//!
//! Search: more of a resource should never make a run slower, so the
//! configurations that meet the target form an up-set of the grid and the
//! answer lies on its lower frontier. For each (vCPUs, IOPS) pair, in
//! order of cost, a binary search finds the least memory that meets the
//! target, among the memory sizes that would still be cheaper than the
//! best answer so far (a pair with none is skipped without a run). Each
//! point is measured at most once. Where the assumption holds the answer
//! is the cheapest configuration of the grid that meets the target; where
//! noise breaks it, the answer is still a measured point that met the
//! target, and every point is reported with its measured metrics.
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::metrics::RunMetrics;

/// The resources one run of the workload gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Config {
    pub mem_mib: u64,
    pub vcpus: u8,
    /// Guest disk requests a second; None: no limit.
    pub disk_iops: Option<u64>,
}

impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} MiB, {} vCPU{}, ",
            self.mem_mib,
            self.vcpus,
            if self.vcpus == 1 { "" } else { "s" }
        )?;
        match self.disk_iops {
            Some(n) => write!(f, "{n} IOPS"),
            None => write!(f, "disk unlimited"),
        }
    }
}

/// What a configuration costs (see the module doc).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CostModel {
    pub per_mib: f64,
    pub per_vcpu: f64,
    pub per_iops: f64,
}

impl Default for CostModel {
    fn default() -> Self {
        CostModel {
            per_mib: 1.0,
            per_vcpu: 64.0,
            per_iops: 0.1,
        }
    }
}

impl CostModel {
    pub fn cost(&self, c: &Config) -> f64 {
        c.mem_mib as f64 * self.per_mib
            + f64::from(c.vcpus) * self.per_vcpu
            + c.disk_iops.unwrap_or(0) as f64 * self.per_iops
    }
}

/// The values each dimension may take, ascending; a dimension that is not
/// varied has one.
#[derive(Debug, Clone, PartialEq)]
pub struct Space {
    pub mem_mib: Vec<u64>,
    pub vcpus: Vec<u8>,
    pub disk_iops: Vec<Option<u64>>,
}

/// A point of the grid: an index into each dimension.
type Index = [usize; 3];

impl Space {
    /// Sorts and dedups every dimension; None if one is empty.
    #[must_use]
    pub fn new(
        mut mem_mib: Vec<u64>,
        mut vcpus: Vec<u8>,
        mut disk_iops: Vec<Option<u64>>,
    ) -> Option<Self> {
        mem_mib.sort_unstable();
        mem_mib.dedup();
        vcpus.sort_unstable();
        vcpus.dedup();
        // None (no limit) sorts last: it is the most generous.
        disk_iops.sort_unstable_by_key(|v| v.unwrap_or(u64::MAX));
        disk_iops.dedup();
        if mem_mib.is_empty() || vcpus.is_empty() || disk_iops.is_empty() {
            return None;
        }
        Some(Space {
            mem_mib,
            vcpus,
            disk_iops,
        })
    }

    fn lens(&self) -> Index {
        [self.mem_mib.len(), self.vcpus.len(), self.disk_iops.len()]
    }

    fn config(&self, i: Index) -> Config {
        Config {
            mem_mib: self.mem_mib[i[0]],
            vcpus: self.vcpus[i[1]],
            disk_iops: self.disk_iops[i[2]],
        }
    }
}

/// What the run must achieve: `time<=X` (X in s or ms: `2s`, `1500ms`,
/// or a bare number of seconds).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    TimeAtMost(Duration),
}

impl std::str::FromStr for Target {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "'{s}' is not a target: use time<=X with X in seconds or ms (example: time<=1.5s)"
            )
        };
        let value = s.trim().strip_prefix("time<=").ok_or_else(bad)?.trim();
        let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
            (ms, 1e-3)
        } else {
            (value.strip_suffix('s').unwrap_or(value), 1.0)
        };
        let secs = number.trim().parse::<f64>().map_err(|_| bad())? * scale;
        if !secs.is_finite() || secs <= 0.0 || secs > 86_400.0 {
            return Err(bad());
        }
        Ok(Target::TimeAtMost(Duration::from_secs_f64(secs)))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::TimeAtMost(d) => write!(f, "time<={}s", d.as_secs_f64()),
        }
    }
}

impl Target {
    pub fn met_by(&self, m: &RunMetrics) -> bool {
        match self {
            Target::TimeAtMost(d) => m.time_ms <= d.as_secs_f64() * 1e3,
        }
    }
}

/// One measured point.
#[derive(Debug, Clone, Serialize)]
pub struct Tried {
    pub config: Config,
    pub cost: f64,
    /// What the run cost (None: it failed before it could be measured).
    pub metrics: Option<RunMetrics>,
    /// Why the run failed (its check did not pass): it never meets the
    /// target.
    pub error: Option<String>,
    pub meets: bool,
}

/// Every point measured, in order, and which one is the answer.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub tried: Vec<Tried>,
    /// Index into `tried` of the cheapest point that met the target.
    pub best: Option<usize>,
    /// The search stopped at `max_runs` before it had finished.
    pub budget_exhausted: bool,
}

/// Runs the search of the module doc, measuring a point with `measure`,
/// at most `max_runs` times.
pub fn search(
    space: &Space,
    cost: &CostModel,
    target: &Target,
    max_runs: usize,
    mut measure: impl FnMut(&Config) -> Result<RunMetrics, String>,
) -> Outcome {
    let mut seen: BTreeMap<Index, usize> = BTreeMap::new();
    let mut tried: Vec<Tried> = Vec::new();
    let mut budget_exhausted = false;
    let mut best: Option<usize> = None;
    let [mems, vcpus, iops] = space.lens();
    let mut pairs: Vec<(usize, usize)> = (0..vcpus)
        .flat_map(|v| (0..iops).map(move |i| (v, i)))
        .collect();
    pairs.sort_by(|a, b| {
        let c = |p: &(usize, usize)| cost.cost(&space.config([0, p.0, p.1]));
        c(a).total_cmp(&c(b)).then(a.cmp(b))
    });
    'pairs: for (v, i) in pairs {
        let bound = best.map_or(f64::INFINITY, |b| tried[b].cost);
        // Memory sizes that would beat the best so far (cost grows with them).
        let mut hi = (0..mems)
            .take_while(|&m| cost.cost(&space.config([m, v, i])) < bound)
            .count();
        let mut lo = 0;
        while lo < hi {
            let mid = (lo + hi) / 2;
            let point = [mid, v, i];
            let k = match seen.get(&point) {
                Some(&k) => k,
                None => {
                    if tried.len() >= max_runs {
                        budget_exhausted = true;
                        break 'pairs;
                    }
                    let config = space.config(point);
                    let measured = measure(&config);
                    let meets = measured.as_ref().is_ok_and(|m| target.met_by(m));
                    let (metrics, error) = match measured {
                        Ok(m) => (Some(m), None),
                        Err(e) => (None, Some(e)),
                    };
                    tried.push(Tried {
                        config,
                        cost: cost.cost(&config),
                        metrics,
                        error,
                        meets,
                    });
                    seen.insert(point, tried.len() - 1);
                    tried.len() - 1
                }
            };
            if tried[k].meets {
                if best.is_none_or(|b| tried[k].cost < tried[b].cost) {
                    best = Some(k);
                }
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
    }
    Outcome {
        tried,
        best,
        budget_exhausted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space() -> Space {
        Space::new(
            vec![32, 64, 128, 256],
            vec![1, 2, 4],
            vec![Some(100), Some(1000), Some(10_000)],
        )
        .unwrap()
    }

    /// A workload of a data set of `need` MiB: it fits from `need` MiB of
    /// memory on; reads cost 1/iops each, 20x more of them when it spills;
    /// compute is 400 ms over the vCPUs.
    fn model(need: u64) -> impl FnMut(&Config) -> Result<RunMetrics, String> {
        move |c: &Config| {
            let reads = if c.mem_mib >= need { 50.0 } else { 1000.0 };
            let io = reads / c.disk_iops.unwrap_or(1_000_000) as f64;
            let time_ms = (io + 0.4 / f64::from(c.vcpus)) * 1e3;
            Ok(RunMetrics {
                time_ms,
                ..Default::default()
            })
        }
    }

    /// The cheapest point meeting the target, by measuring every point.
    fn brute_force(space: &Space, target: &Target, need: u64) -> Config {
        let cost = CostModel::default();
        let mut m = model(need);
        let mut best: Option<(f64, Config)> = None;
        for &mem_mib in &space.mem_mib {
            for &vcpus in &space.vcpus {
                for &disk_iops in &space.disk_iops {
                    let c = Config {
                        mem_mib,
                        vcpus,
                        disk_iops,
                    };
                    if target.met_by(&m(&c).unwrap()) && best.is_none_or(|(b, _)| cost.cost(&c) < b)
                    {
                        best = Some((cost.cost(&c), c));
                    }
                }
            }
        }
        best.unwrap().1
    }

    #[test]
    fn the_search_finds_the_cheapest_configuration_that_meets_the_target() {
        let space = space();
        for (need, target) in [
            (128, "time<=1s"),
            (64, "time<=500ms"),
            (256, "time<=0.3s"),
            (32, "time<=2"),
        ] {
            let target: Target = target.parse().unwrap();
            let out = search(&space, &CostModel::default(), &target, 100, model(need));
            let best = &out.tried[out.best.expect("a point meets the target")];
            assert_eq!(
                best.config,
                brute_force(&space, &target, need),
                "need {need} {target}"
            );
            // Far fewer runs than the 36 points of the grid.
            assert!(out.tried.len() <= 12, "{} runs", out.tried.len());
            assert!(!out.budget_exhausted);
        }
    }

    #[test]
    fn each_point_is_measured_once_and_failures_never_meet() {
        let space = space();
        let mut runs = BTreeMap::new();
        let out = search(
            &space,
            &CostModel::default(),
            &"time<=1s".parse().unwrap(),
            100,
            |c| {
                *runs.entry((c.mem_mib, c.vcpus, c.disk_iops)).or_insert(0) += 1;
                if c.vcpus == 1 {
                    Err("check failed".into())
                } else {
                    model(64)(c)
                }
            },
        );
        assert!(runs.values().all(|&n| n == 1), "{runs:?}");
        let best = &out.tried[out.best.unwrap()];
        assert_eq!(best.config.vcpus, 2);
        assert!(out
            .tried
            .iter()
            .filter(|t| t.error.is_some())
            .all(|t| !t.meets));
    }

    #[test]
    fn an_unreachable_target_reports_no_answer_after_trying_the_top() {
        let out = search(
            &space(),
            &CostModel::default(),
            &"time<=1ms".parse().unwrap(),
            100,
            model(64),
        );
        assert!(out.best.is_none());
        let top = out.tried.last().unwrap().config;
        assert_eq!(
            (top.mem_mib, top.vcpus, top.disk_iops),
            (256, 4, Some(10_000))
        );
    }

    #[test]
    fn the_budget_stops_the_search() {
        let out = search(
            &space(),
            &CostModel::default(),
            &"time<=1ms".parse().unwrap(),
            3,
            model(64),
        );
        assert_eq!(out.tried.len(), 3);
        assert!(out.budget_exhausted);
    }

    #[test]
    fn targets_parse_in_seconds_and_ms_and_bad_ones_are_refused() {
        let ms = |s: &str| match s.parse::<Target>().unwrap() {
            Target::TimeAtMost(d) => d.as_millis(),
        };
        assert_eq!(ms("time<=1.5s"), 1500);
        assert_eq!(ms("time<=250ms"), 250);
        assert_eq!(ms("time<=2"), 2000);
        for bad in [
            "time>=1",
            "time<=",
            "time<=-1",
            "time<=abc",
            "mem<=3",
            "time<=nan",
        ] {
            let e = bad.parse::<Target>().unwrap_err();
            assert!(e.contains("time<=X"), "{bad}: {e}");
        }
    }

    #[test]
    fn cost_prices_each_resource_and_not_an_unlimited_disk() {
        let c = CostModel::default();
        let cfg = Config {
            mem_mib: 48,
            vcpus: 2,
            disk_iops: Some(1000),
        };
        assert_eq!(c.cost(&cfg), 48.0 + 128.0 + 100.0);
        assert_eq!(
            c.cost(&Config {
                disk_iops: None,
                ..cfg
            }),
            176.0
        );
        assert_eq!(cfg.to_string(), "48 MiB, 2 vCPUs, 1000 IOPS");
    }
}
