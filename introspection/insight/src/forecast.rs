//! Forecast of a record set's growth: log and store bytes and the time a
//! full replay will take at a horizon, from the history's own rates.
//!
//! Each cumulative series (records, bytes logged, bytes stored after dedup
//! and compression; all VMs added up, per time bucket of the
//! [`Timeline`]) is fitted with AutoETS (additive error, trend chosen by
//! AICc among none, additive and damped additive; `augurs-ets`) and
//! projected to the horizon. Then:
//! - log bytes = the log's bytes now x projected records / records now;
//! - store bytes = the store's bytes now + projected stored bytes - stored
//!   now (the metrics count what new objects took);
//! - full replay time = the measured replay time now x projected bytes
//!   logged / logged now (a replay from the beginning reads every logged
//!   block once).
//!
//! The model is back-tested on the history: fitted on its first 75% of
//! buckets and scored (mean absolute percentage error) on the rest.
//! Beyond [`MAX_STEPS`] buckets the projection goes on along the model's
//! trend at its last step (exact for a linear trend, and a damped trend
//! is flat by then) and the interval widens at the rate it did over the
//! last doubling of the steps.
use augurs_core::prelude::*;
use augurs_ets::AutoETS;
use serde::Serialize;

use crate::timeline::{Bucket, Timeline};

/// Steps (buckets) the model itself predicts.
pub const MAX_STEPS: usize = 10_000;
/// Buckets a back-test needs (fit on 75%, score on 25%).
pub const MIN_BACKTEST_BUCKETS: usize = 8;
/// The prediction interval's level.
pub const LEVEL: f64 = 0.95;

#[derive(Debug, thiserror::Error)]
pub enum ForecastError {
    #[error("forecast: the history has {0} time buckets; it needs at least 4")]
    TooShort(usize),
    #[error("forecast: the {series} series could not be fitted: {why}")]
    Model { series: &'static str, why: String },
}

/// What the caller measured now.
#[derive(Debug, Clone, Copy)]
pub struct ForecastInput {
    pub horizon_ns: u64,
    /// Bytes of the change logs' files.
    pub log_bytes: u64,
    /// Bytes of the content store's files.
    pub store_bytes: u64,
    /// How long a replay of every VM's whole log took, if measured.
    pub full_replay_ns: Option<u64>,
}

/// A projected value with its prediction interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Estimate {
    pub point: f64,
    pub low: f64,
    pub high: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct History {
    pub t0_ns: u64,
    pub t1_ns: u64,
    pub span_s: f64,
    pub buckets: usize,
    pub bucket_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Now {
    pub records: u64,
    pub logged_bytes: u64,
    pub stored_bytes: u64,
    pub log_bytes: u64,
    pub store_bytes: u64,
    /// Bytes logged per byte stored (dedup and compression together).
    pub store_ratio: Option<f64>,
    pub full_replay_s: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct AtHorizon {
    pub records: Estimate,
    pub logged_bytes: Estimate,
    pub log_bytes: Estimate,
    pub store_bytes: Estimate,
    pub full_replay_s: Option<Estimate>,
}

/// Mean absolute percentage errors of the back-test.
#[derive(Debug, Clone, Serialize)]
pub struct Backtest {
    pub train_buckets: usize,
    pub test_buckets: usize,
    pub records_mape: f64,
    pub logged_bytes_mape: f64,
    pub stored_bytes_mape: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Forecast {
    pub history: History,
    pub horizon_s: f64,
    pub steps: u64,
    pub models: Vec<String>,
    pub now: Now,
    pub at_horizon: AtHorizon,
    pub backtest: Option<Backtest>,
    pub warnings: Vec<String>,
}

struct Series {
    name: &'static str,
    values: Vec<f64>,
}

fn cumulative(buckets: &[Bucket], f: impl Fn(&Bucket) -> u64) -> Vec<f64> {
    let mut sum = 0u64;
    buckets
        .iter()
        .map(|b| {
            sum += f(b);
            sum as f64
        })
        .collect()
}

/// The projection of `s` `steps` buckets past its end, never below its
/// last value (the series are cumulative), and the model's name.
fn project(s: &Series, steps: u64) -> Result<(Estimate, String), ForecastError> {
    let last = *s.values.last().expect("series are not empty");
    if s.values.iter().all(|v| *v == s.values[0]) {
        let e = Estimate {
            point: last,
            low: last,
            high: last,
        };
        return Ok((e, "constant".into()));
    }
    let model_err = |why: String| ForecastError::Model {
        series: s.name,
        why,
    };
    let search = AutoETS::new(1, "AZN").map_err(|e| model_err(e.to_string()))?;
    let fitted = search
        .fit(&s.values)
        .map_err(|e| model_err(e.to_string()))?;
    let name = format!("ETS({})", fitted.model().model_type());
    let direct = steps.min(MAX_STEPS as u64) as usize;
    let f = fitted
        .predict(direct, LEVEL)
        .map_err(|e| model_err(e.to_string()))?;
    let at = |i: usize| {
        let iv = f.intervals.as_ref();
        (
            f.point[i],
            iv.map_or(f.point[i], |iv| iv.lower[i]),
            iv.map_or(f.point[i], |iv| iv.upper[i]),
        )
    };
    let (mut point, mut low, mut high) = at(direct - 1);
    if steps > direct as u64 && direct >= 4 {
        let extra = (steps - direct as u64) as f64;
        let slope = f.point[direct - 1] - f.point[direct - 2];
        let half_end = (high - low) / 2.0;
        let (_, l2, h2) = at(direct / 2 - 1);
        let half_mid = ((h2 - l2) / 2.0).max(f64::MIN_POSITIVE);
        // Width ~ steps^p, p from the last doubling of the steps.
        let p = (half_end / half_mid).max(1.0).log2();
        let grow = (steps as f64 / direct as f64).powf(p);
        point += slope * extra;
        low = point - half_end * grow;
        high = point + half_end * grow;
    }
    let e = Estimate {
        point: point.max(last),
        low: low.max(last),
        high: high.max(last),
    };
    Ok((e, format!("{}: {name}", s.name)))
}

fn mape(actual: &[f64], predicted: &[f64]) -> f64 {
    let pairs: Vec<(f64, f64)> = actual
        .iter()
        .zip(predicted)
        .filter(|(a, _)| **a != 0.0)
        .map(|(a, p)| (*a, *p))
        .collect();
    if pairs.is_empty() {
        return 0.0;
    }
    100.0 * pairs.iter().map(|(a, p)| ((a - p) / a).abs()).sum::<f64>() / pairs.len() as f64
}

fn backtest_one(s: &Series, train: usize) -> Result<f64, ForecastError> {
    let (head, tail) = s.values.split_at(train);
    let head = Series {
        name: s.name,
        values: head.to_vec(),
    };
    let mut predicted = Vec::with_capacity(tail.len());
    if head.values.iter().all(|v| *v == head.values[0]) {
        predicted.resize(tail.len(), head.values[0]);
    } else {
        let model_err = |why: String| ForecastError::Model {
            series: s.name,
            why,
        };
        let search = AutoETS::new(1, "AZN").map_err(|e| model_err(e.to_string()))?;
        let fitted = search
            .fit(&head.values)
            .map_err(|e| model_err(e.to_string()))?;
        let f = fitted
            .predict(tail.len(), None)
            .map_err(|e| model_err(e.to_string()))?;
        let last = *head.values.last().expect("not empty");
        predicted.extend(f.point.iter().map(|p| p.max(last)));
    }
    Ok(mape(tail, &predicted))
}

/// Forecasts the record set of `timeline` `input.horizon_ns` past its end.
pub fn forecast(timeline: &Timeline, input: ForecastInput) -> Result<Forecast, ForecastError> {
    let buckets = timeline.combined();
    if buckets.len() < 4 {
        return Err(ForecastError::TooShort(buckets.len()));
    }
    let series = [
        Series {
            name: "records",
            values: cumulative(&buckets, |b| b.records),
        },
        Series {
            name: "logged bytes",
            values: cumulative(&buckets, |b| b.logged_bytes),
        },
        Series {
            name: "stored bytes",
            values: cumulative(&buckets, |b| b.stored_bytes),
        },
    ];
    let steps = input.horizon_ns.div_ceil(timeline.bucket_ns).max(1);
    let mut models = Vec::new();
    let mut projected = Vec::new();
    for s in &series {
        let (e, model) = project(s, steps)?;
        projected.push(e);
        models.push(model);
    }
    let totals = timeline.totals();
    let now = Now {
        records: totals.records,
        logged_bytes: totals.logged_bytes,
        stored_bytes: totals.stored_bytes,
        log_bytes: input.log_bytes,
        store_bytes: input.store_bytes,
        store_ratio: (totals.stored_bytes > 0)
            .then(|| totals.logged_bytes as f64 / totals.stored_bytes as f64),
        full_replay_s: input.full_replay_ns.map(|ns| ns as f64 / 1e9),
    };
    let scale = |e: &Estimate, now_value: u64, base: f64| {
        let r = |v: f64| {
            if now_value == 0 {
                base
            } else {
                base * v / now_value as f64
            }
        };
        Estimate {
            point: r(e.point),
            low: r(e.low),
            high: r(e.high),
        }
    };
    let shift = |e: &Estimate, now_value: u64, base: f64| Estimate {
        point: base + e.point - now_value as f64,
        low: base + e.low - now_value as f64,
        high: base + e.high - now_value as f64,
    };
    let at_horizon = AtHorizon {
        records: projected[0],
        logged_bytes: projected[1],
        log_bytes: scale(&projected[0], totals.records, input.log_bytes as f64),
        store_bytes: shift(&projected[2], totals.stored_bytes, input.store_bytes as f64),
        full_replay_s: now.full_replay_s.map(|s| {
            if totals.logged_bytes > 0 {
                scale(&projected[1], totals.logged_bytes, s)
            } else {
                scale(&projected[0], totals.records, s)
            }
        }),
    };
    let backtest = if buckets.len() >= MIN_BACKTEST_BUCKETS {
        let train = buckets.len() * 3 / 4;
        Some(Backtest {
            train_buckets: train,
            test_buckets: buckets.len() - train,
            records_mape: backtest_one(&series[0], train)?,
            logged_bytes_mape: backtest_one(&series[1], train)?,
            stored_bytes_mape: backtest_one(&series[2], train)?,
        })
    } else {
        None
    };
    let span_ns = timeline.t1_ns - timeline.t0_ns;
    let mut warnings = Vec::new();
    if backtest.is_none() {
        warnings.push(format!(
            "the history has {} buckets: too few to back-test (needs {MIN_BACKTEST_BUCKETS})",
            buckets.len()
        ));
    }
    if span_ns > 0 && input.horizon_ns / span_ns >= 10 {
        warnings.push(format!(
            "the horizon is {}x the recorded history: the projection extrapolates far beyond what was seen",
            input.horizon_ns / span_ns
        ));
    }
    if totals.stored_bytes == 0 {
        warnings.push(
            "no metrics records (logs recorded before them): store growth cannot be projected"
                .into(),
        );
    }
    Ok(Forecast {
        history: History {
            t0_ns: timeline.t0_ns,
            t1_ns: timeline.t1_ns,
            span_s: span_ns as f64 / 1e9,
            buckets: buckets.len(),
            bucket_s: timeline.bucket_ns as f64 / 1e9,
        },
        horizon_s: input.horizon_ns as f64 / 1e9,
        steps,
        models,
        now,
        at_horizon,
        backtest,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::VmTimeline;

    fn timeline(per_bucket: impl Fn(usize) -> Bucket, n: usize) -> Timeline {
        let buckets: Vec<Bucket> = (0..n).map(per_bucket).collect();
        Timeline {
            location: "test".into(),
            t0_ns: 0,
            t1_ns: n as u64 * 1_000_000_000 - 1,
            bucket_ns: 1_000_000_000,
            vms: vec![VmTimeline {
                vm: "vm0".into(),
                first_seq: 1,
                last_seq: 1,
                totals: buckets.iter().fold(Bucket::default(), |mut t, b| {
                    t.records += b.records;
                    t.logged_bytes += b.logged_bytes;
                    t.stored_bytes += b.stored_bytes;
                    t
                }),
                buckets,
                marks: vec![],
                snapshots: vec![],
                checkpoints: vec![],
                tables: Default::default(),
            }],
        }
    }

    fn steady(i: usize) -> Bucket {
        Bucket {
            records: 100 + (i as u64 * 7) % 5,
            logged_bytes: 4096 * 10,
            stored_bytes: 4096 * 5,
            ..Bucket::default()
        }
    }

    #[test]
    fn a_steady_rate_projects_linearly_and_backtests_well() {
        let t = timeline(steady, 40);
        let input = ForecastInput {
            horizon_ns: 40_000_000_000,
            log_bytes: 1_000_000,
            store_bytes: 500_000,
            full_replay_ns: Some(2_000_000_000),
        };
        let f = forecast(&t, input).unwrap();
        // 40 more seconds at the same rate: about twice everything.
        let r = f.at_horizon.records.point / f.now.records as f64;
        assert!((1.9..2.1).contains(&r), "{r}");
        let log = f.at_horizon.log_bytes.point;
        assert!((1.9e6..2.1e6).contains(&log), "{log}");
        let store = f.at_horizon.store_bytes.point;
        assert!((0.5e6 + 0.95 * 40.0 * 20480.0..0.5e6 + 1.05 * 40.0 * 20480.0).contains(&store));
        let replay = f.at_horizon.full_replay_s.unwrap().point;
        assert!((3.9..4.1).contains(&replay), "{replay}");
        let bt = f.backtest.unwrap();
        assert_eq!((bt.train_buckets, bt.test_buckets), (30, 10));
        assert!(bt.records_mape < 2.0, "{bt:?}");
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn a_far_horizon_goes_on_along_the_trend_and_says_so() {
        let t = timeline(steady, 40);
        let day = 86_400_000_000_000;
        let input = ForecastInput {
            horizon_ns: 30 * day,
            log_bytes: 1_000_000,
            store_bytes: 500_000,
            full_replay_ns: None,
        };
        let f = forecast(&t, input).unwrap();
        assert_eq!(f.steps, 30 * 86_400);
        let per_s = f.now.records as f64 / 40.0;
        let expect = f.now.records as f64 + per_s * 30.0 * 86_400.0;
        let got = f.at_horizon.records.point;
        assert!((got / expect - 1.0).abs() < 0.05, "{got} vs {expect}");
        let e = f.at_horizon.records;
        assert!(e.low <= e.point && e.point <= e.high);
        assert!(f.warnings.iter().any(|w| w.contains("extrapolates")));
    }

    #[test]
    fn an_idle_or_short_history_is_handled() {
        let t = timeline(|_| Bucket::default(), 6);
        let input = ForecastInput {
            horizon_ns: 1_000_000_000,
            log_bytes: 0,
            store_bytes: 0,
            full_replay_ns: None,
        };
        let f = forecast(&t, input).unwrap();
        assert_eq!(f.at_horizon.records.point, 0.0);
        assert!(f.backtest.is_none());
        assert!(f.warnings.iter().any(|w| w.contains("too few")));
        let t = timeline(steady, 3);
        assert!(matches!(
            forecast(&t, input),
            Err(ForecastError::TooShort(3))
        ));
    }
}
