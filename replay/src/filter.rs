//! What-if transformations: drop records matching a filter, or stop
//! before a given record.
use std::str::FromStr;

/// Records a what-if replay leaves out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Writes with seq in `first..=last`.
    Seq { first: u64, last: u64 },
    /// Writes touching any sector in `first..=last`.
    Sector { first: u64, last: u64 },
}

impl FromStr for Filter {
    type Err = String;

    /// `seq=N`, `seq=A..B`, `sector=N` or `sector=A..B` (inclusive).
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("'{s}' is not a filter: use seq=N, seq=A..B, sector=N or sector=A..B");
        let (key, range) = s.split_once('=').ok_or_else(bad)?;
        let (first, last) = match range.split_once("..") {
            Some((a, b)) => (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?),
            None => {
                let n = range.parse().map_err(|_| bad())?;
                (n, n)
            }
        };
        if first > last {
            return Err(bad());
        }
        match key {
            "seq" => Ok(Filter::Seq { first, last }),
            "sector" => Ok(Filter::Sector { first, last }),
            _ => Err(bad()),
        }
    }
}

impl Filter {
    fn matches(&self, seq: u64, sector: u64, blocks: u64) -> bool {
        match *self {
            Filter::Seq { first, last } => (first..=last).contains(&seq),
            Filter::Sector { first, last } => {
                let end = sector + blocks * 8 - 1;
                sector <= last && end >= first
            }
        }
    }
}

/// A what-if: which writes to drop and where to stop.
#[derive(Debug, Clone, Default)]
pub struct WhatIf {
    pub drop: Vec<Filter>,
    /// Stop before applying this record.
    pub stop_before: Option<u64>,
}

impl WhatIf {
    /// Whether the result can differ from the recorded history.
    pub fn changes_history(&self) -> bool {
        !self.drop.is_empty()
    }

    pub fn drops(&self, seq: u64, sector: u64, blocks: u64) -> bool {
        self.drop.iter().any(|f| f.matches(seq, sector, blocks))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_and_match() {
        let f: Filter = "sector=16..23".parse().unwrap();
        assert!(f.matches(1, 8, 2)); // sectors 8..=23
        assert!(!f.matches(1, 0, 2)); // sectors 0..=15
        let f: Filter = "seq=5".parse().unwrap();
        assert!(f.matches(5, 0, 1) && !f.matches(6, 0, 1));
        for bad in ["seq", "seq=9..3", "lba=1", "seq=a..b"] {
            assert!(bad.parse::<Filter>().is_err(), "{bad}");
        }
    }
}
