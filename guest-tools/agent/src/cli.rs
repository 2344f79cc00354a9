//! Command-line arguments.
//!
//! `--file PATH:FORMAT[:SCHEMA]`: the path runs to the first `:` (so it cannot
//! hold one), the format (`sqlite`, `json`, `kv`) to the next, and the schema
//! is the rest (it may hold `:`):
//!
//! * sqlite: `table=col1,col2;table2=col` (key columns per table)
//! * json:   `/path/to/records:keyfield` (JSON pointer to the records, key field)
//! * kv:     free text, passed on (the host ignores it)

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hint_proto::{Format, MAX_SCHEMA};

/// Sends disk-location hints for application files to the VMM host.
#[derive(Debug, Parser)]
#[command(name = "vmm-agent", version, about, long_about = None)]
pub struct Cli {
    /// The virtio-console port to write hints to (e.g. /dev/vport0p1).
    #[arg(long, value_name = "PATH")]
    pub port: PathBuf,

    /// A file to track, as PATH:FORMAT or PATH:FORMAT:SCHEMA; FORMAT is sqlite, json or kv.
    /// SQLite files' -journal and -wal siblings are tracked too.
    #[arg(long = "file", value_name = "PATH:FORMAT[:SCHEMA]", required = true,
          value_parser = parse_file_spec)]
    pub files: Vec<FileSpec>,

    /// Seconds between checks for changed extents and sizes (decimals allowed).
    #[arg(long, value_name = "SECONDS", default_value = "2", value_parser = parse_interval,
          allow_negative_numbers = true)]
    pub interval: Duration,

    /// Send the hints once and exit instead of watching for changes.
    #[arg(long)]
    pub once: bool,

    /// Sectors to add to every extent: where the filesystem starts on the
    /// virtio disk. Default: read from sysfs (a partition's `start`, 0 for a
    /// whole disk).
    #[arg(long, value_name = "SECTORS", allow_negative_numbers = true)]
    pub sector_offset: Option<u64>,
}

/// One `--file` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FileSpec {
    /// The file, as given.
    pub path: PathBuf,
    /// Its format.
    pub format: Format,
    /// Schema hint text, if any.
    pub schema: Option<String>,
}

/// Parses `PATH:FORMAT[:SCHEMA]`.
pub fn parse_file_spec(s: &str) -> Result<FileSpec, String> {
    let (path, rest) = s.split_once(':').ok_or("expected PATH:FORMAT[:SCHEMA]")?;
    if path.is_empty() {
        return Err("empty path".into());
    }
    let (format, schema) = match rest.split_once(':') {
        Some((f, schema)) => (f, Some(schema)),
        None => (rest, None),
    };
    let format = Format::from_name(format)
        .ok_or_else(|| format!("unknown format {format:?} (expected sqlite, json or kv)"))?;
    if let Some(schema) = schema {
        check_schema(format, schema)?;
    }
    Ok(FileSpec {
        path: path.into(),
        format,
        schema: schema.map(str::to_owned),
    })
}

/// Checks the shape of a schema hint for `format`.
pub fn check_schema(format: Format, schema: &str) -> Result<(), String> {
    if schema.len() > MAX_SCHEMA {
        return Err(format!("schema longer than {MAX_SCHEMA} bytes"));
    }
    let name_ok = |n: &str| !n.is_empty() && !n.contains([';', '=', ',']);
    match format {
        Format::Sqlite => {
            for item in schema.split(';') {
                let ok = item
                    .split_once('=')
                    .is_some_and(|(table, cols)| name_ok(table) && cols.split(',').all(name_ok));
                if !ok {
                    return Err(format!(
                        "bad sqlite schema item {item:?} (expected table=col1,col2;table2=col)"
                    ));
                }
            }
            Ok(())
        }
        Format::Json => match schema.rsplit_once(':') {
            Some((path, key)) if path.starts_with('/') && !key.is_empty() => Ok(()),
            _ => Err(format!(
                "bad json schema {schema:?} (expected /path/to/records:keyfield)"
            )),
        },
        Format::Kv | Format::LevelDb => Ok(()),
    }
}

/// Parses a positive number of seconds (at most a day).
pub fn parse_interval(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    if !(secs > 0.0 && secs <= 86_400.0) {
        return Err(format!(
            "interval must be above 0 and at most 86400 seconds, not {s}"
        ));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::error::ErrorKind;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vmm-agent").chain(args.iter().copied()))
    }

    #[test]
    fn full_command_line() {
        let cli = parse(&[
            "--port",
            "/dev/vport0p1",
            "--file",
            "/data/app.db:sqlite",
            "--file",
            "/data/doc.json:json:/records:id",
            "--file",
            "/data/t.db:sqlite:users=id;orders=id,line",
            "--file",
            "/kv.log:kv",
            "--interval",
            "0.5",
            "--sector-offset",
            "2048",
        ])
        .unwrap();
        assert_eq!(cli.port, PathBuf::from("/dev/vport0p1"));
        assert_eq!(cli.interval, Duration::from_millis(500));
        assert_eq!(cli.sector_offset, Some(2048));
        assert!(!cli.once);
        let f = &cli.files;
        assert_eq!(f.len(), 4);
        assert_eq!(
            f[0],
            FileSpec {
                path: "/data/app.db".into(),
                format: Format::Sqlite,
                schema: None
            }
        );
        assert_eq!(f[1].format, Format::Json);
        assert_eq!(f[1].schema.as_deref(), Some("/records:id"));
        assert_eq!(f[2].schema.as_deref(), Some("users=id;orders=id,line"));
        assert_eq!(f[3].format, Format::Kv);
    }

    #[test]
    fn defaults() {
        let cli = parse(&["--port", "p", "--file", "a:kv", "--once"]).unwrap();
        assert_eq!(cli.interval, Duration::from_secs(2));
        assert_eq!(cli.sector_offset, None);
        assert!(cli.once);
    }

    #[test]
    fn missing_arguments() {
        assert_eq!(
            parse(&["--file", "a:kv"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--port", "p"]).unwrap_err().kind(),
            ErrorKind::MissingRequiredArgument
        );
        assert_eq!(
            parse(&["--port", "p", "--file", "a:kv", "--bogus"])
                .unwrap_err()
                .kind(),
            ErrorKind::UnknownArgument
        );
    }

    #[test]
    fn bad_values() {
        for (args, why) in [
            (vec!["--file", "/a.db"], "expected PATH:FORMAT"),
            (vec!["--file", ":sqlite"], "empty path"),
            (vec!["--file", "/a.db:mysql"], "unknown format \"mysql\""),
            (vec!["--file", "/a.db:"], "unknown format \"\""),
            (
                vec!["--file", "/a.db:sqlite:users"],
                "bad sqlite schema item \"users\"",
            ),
            (
                vec!["--file", "/a.db:sqlite:users=id;"],
                "bad sqlite schema item \"\"",
            ),
            (
                vec!["--file", "/a.db:sqlite:users=id,"],
                "bad sqlite schema",
            ),
            (vec!["--file", "/d.json:json:records:id"], "bad json schema"),
            (vec!["--file", "/d.json:json:/records"], "bad json schema"),
            (vec!["--file", "/d.json:json:/records:"], "bad json schema"),
            (
                vec!["--file", "a:kv", "--interval", "0"],
                "interval must be above 0",
            ),
            (
                vec!["--file", "a:kv", "--interval", "-1"],
                "interval must be above 0",
            ),
            (
                vec!["--file", "a:kv", "--interval", "NaN"],
                "interval must be above 0",
            ),
            (
                vec!["--file", "a:kv", "--interval", "soon"],
                "not a number of seconds",
            ),
            (
                vec!["--file", "a:kv", "--sector-offset", "-5"],
                "invalid value",
            ),
        ] {
            let mut all = vec!["--port", "p"];
            all.extend(args);
            let e = parse(&all).unwrap_err().to_string();
            assert!(e.contains(why), "{all:?}: {e}");
        }
        let long = format!("/a:kv:{}", "x".repeat(MAX_SCHEMA + 1));
        assert!(parse(&["--port", "p", "--file", &long])
            .unwrap_err()
            .to_string()
            .contains("schema longer"));
    }
}
