//! The drill journal of a record directory: `DIR/drills.jsonl`, one JSON
//! object per line, one line per `vmm drill` run against that directory
//! (its `--json` report plus when it ran). Appended with `O_APPEND` and
//! fsynced; a torn last line (a crash mid-append) is skipped on reading,
//! never fatal. The report shows the last ones.
use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

/// The journal's file name in a record directory.
pub const FILE: &str = "drills.jsonl";

/// Appends `entry` as one line to `dir`'s journal, durably.
pub fn append(dir: &Path, entry: &serde_json::Value) -> std::io::Result<()> {
    let mut f = OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(dir.join(FILE))?;
    // A line torn by a crash is ended first, so that this one stays whole.
    let len = f.metadata()?.len();
    let mut line = Vec::new();
    let mut last = [0u8];
    if len > 0 && f.read_exact_at(&mut last, len - 1).is_ok() && last[0] != b'\n' {
        line.push(b'\n');
    }
    serde_json::to_writer(&mut line, entry).map_err(std::io::Error::other)?;
    line.push(b'\n');
    f.write_all(&line)?;
    f.sync_data()
}

/// The last `n` entries of `dir`'s journal, oldest first (none when there
/// is no journal).
pub fn last(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let Ok(text) = std::fs::read_to_string(dir.join(FILE)) else {
        return Vec::new();
    };
    let all: Vec<serde_json::Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    all[all.len().saturating_sub(n)..].to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_back_in_order_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        assert!(last(dir.path(), 5).is_empty());
        for i in 0..4 {
            append(dir.path(), &serde_json::json!({ "n": i })).unwrap();
        }
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.path().join(FILE))
            .unwrap();
        f.write_all(b"{\"n\": 9").unwrap();
        append(dir.path(), &serde_json::json!({ "n": 10 })).unwrap();
        let got: Vec<u64> = last(dir.path(), 3)
            .iter()
            .map(|v| v["n"].as_u64().unwrap())
            .collect();
        assert_eq!(got, [2, 3, 10]);
    }
}
