//! A point in a VM's recorded history: a sequence number, a time, or a
//! mark. One syntax for every command that takes one (`vmm replay
//! --until`, `vmm drill --at`, `vmm changes --since/--until/--between`).
use std::fmt;
use std::str::FromStr;
use std::time::UNIX_EPOCH;

use thiserror::Error;

use crate::backend::LogBackend;
use crate::log::{LogError, RecordKind};

/// Why a point could not be found in a log.
#[derive(Debug, Error)]
pub enum PointError {
    #[error(transparent)]
    Log(#[from] LogError),
    /// The log has no such seq, time or mark.
    #[error("{0}")]
    NotInLog(String),
}

/// A point in a VM's recorded history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Point {
    /// Up to and including this record.
    Seq(u64),
    /// Up to and including the last record at or before this time (ns since
    /// the Unix epoch).
    Time(u64),
    /// Up to and including the last mark with this name.
    Mark(String),
    /// The whole log.
    End,
}

impl FromStr for Point {
    type Err = String;

    /// `seq=N`, `time=RFC3339` (e.g. `time=2026-11-21T06:01:42Z`),
    /// `mark=NAME` or `end`.
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!("'{s}' is not a point in the log: use seq=N, time=RFC3339 (e.g. time=2026-11-21T06:01:42Z), mark=NAME or end")
        };
        if s == "end" {
            return Ok(Point::End);
        }
        let (key, value) = s.split_once('=').ok_or_else(bad)?;
        match key {
            "seq" => value.parse().map(Point::Seq).map_err(|_| bad()),
            "time" => {
                let t =
                    humantime::parse_rfc3339_weak(value).map_err(|e| format!("{}: {e}", bad()))?;
                let ns = t.duration_since(UNIX_EPOCH).map_err(|_| bad())?.as_nanos();
                Ok(Point::Time(u64::try_from(ns).map_err(|_| bad())?))
            }
            "mark" if !value.is_empty() => Ok(Point::Mark(value.to_string())),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for Point {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Point::Seq(n) => write!(f, "seq={n}"),
            Point::Time(ns) => write!(
                f,
                "time={}",
                humantime::format_rfc3339_nanos(UNIX_EPOCH + std::time::Duration::from_nanos(*ns))
            ),
            Point::Mark(m) => write!(f, "mark={m}"),
            Point::End => write!(f, "end"),
        }
    }
}

impl Point {
    /// The seq of the last record this point includes in `vm`'s log,
    /// wherever the log lives.
    pub fn resolve(&self, logs: &dyn LogBackend, vm: &str) -> Result<u64, PointError> {
        let last = logs.last_seq(vm)?;
        match self {
            Point::End => Ok(last),
            Point::Seq(n) if *n >= 1 && *n <= last => Ok(*n),
            Point::Seq(n) => Err(PointError::NotInLog(format!(
                "seq {n} is outside the log (seq 1..{last})"
            ))),
            Point::Time(ns) => logs
                .seq_at_time(vm, *ns)?
                .ok_or_else(|| PointError::NotInLog(format!("{self} is before the first record"))),
            Point::Mark(name) => {
                let mut found = None;
                for record in logs.records(vm, 1)? {
                    let record = record?;
                    if matches!(&record.kind, RecordKind::Mark { name: n } if n == name) {
                        found = Some(record.seq);
                    }
                }
                found.ok_or_else(|| {
                    PointError::NotInLog(format!("no mark named '{name}' in the log"))
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_parse() {
        assert_eq!("seq=42".parse::<Point>().unwrap(), Point::Seq(42));
        assert_eq!(
            "mark=before-upgrade".parse::<Point>().unwrap(),
            Point::Mark("before-upgrade".into())
        );
        assert_eq!("end".parse::<Point>().unwrap(), Point::End);
        assert_eq!(
            "time=1970-01-01T00:00:01Z".parse::<Point>().unwrap(),
            Point::Time(1_000_000_000)
        );
        for bad in ["seq=", "seq=x", "42", "time=yesterday", "mark=", "when=1"] {
            assert!(bad.parse::<Point>().is_err(), "{bad}");
        }
    }
}
