//! `--watch PATH:FORMAT`: which files the agentless mapper looks for.
use hint_proto::Format as WireFormat;

/// Longest accepted watch pattern.
const MAX_PATTERN: usize = hint_proto::MAX_PATH;

/// What format a watched file is decoded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchFormat {
    Known(WireFormat),
    /// Decided by the file's header (SQLite's magic); others are skipped.
    Auto,
}

/// One watch: a file, or the files of one directory matching a glob.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The file, or (with `name_glob`) the directory.
    pub path: String,
    pub name_glob: Option<glob::Pattern>,
    pub format: WatchFormat,
    /// As given.
    pub text: String,
}

/// Parses `/ABS/PATH:FORMAT`, FORMAT one of sqlite, json, kv or auto; the
/// last path component may be a glob (`/var/lib/app/*.db:sqlite`,
/// `/srv/data/*:auto`); directories are literal.
pub fn parse_watch(s: &str) -> Result<Watch, String> {
    let (path, format) = s
        .rsplit_once(':')
        .ok_or("expected /PATH:FORMAT (FORMAT: sqlite, json, kv or auto)")?;
    let format = match format {
        "auto" => WatchFormat::Auto,
        f => WatchFormat::Known(
            WireFormat::from_name(f)
                .filter(|f| *f != WireFormat::LevelDb)
                .ok_or_else(|| {
                    format!("unknown format {f:?} (expected sqlite, json, kv or auto)")
                })?,
        ),
    };
    if !path.starts_with('/') || path.len() > MAX_PATTERN || path.ends_with('/') {
        return Err(format!(
            "{path:?}: expected an absolute file path inside the guest's filesystem"
        ));
    }
    let (dir, name) = path.rsplit_once('/').expect("starts with /");
    if dir.contains(['*', '?', '[']) {
        return Err(format!(
            "{path:?}: only the last path component may be a glob"
        ));
    }
    let name_glob = if name.contains(['*', '?', '[']) {
        Some(glob::Pattern::new(name).map_err(|e| format!("{name:?}: {e}"))?)
    } else {
        None
    };
    Ok(Watch {
        path: if name_glob.is_some() {
            if dir.is_empty() {
                "/".into()
            } else {
                dir.to_string()
            }
        } else {
            path.to_string()
        },
        name_glob,
        format,
        text: s.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_files_globs_and_formats() {
        let w = parse_watch("/var/lib/app/*.db:sqlite").unwrap();
        assert_eq!(w.path, "/var/lib/app");
        assert!(w.name_glob.as_ref().unwrap().matches("app.db"));
        assert!(!w.name_glob.as_ref().unwrap().matches("app.db-journal"));
        assert_eq!(w.format, WatchFormat::Known(WireFormat::Sqlite));
        let w = parse_watch("/data/doc.json:json").unwrap();
        assert_eq!(
            (w.path.as_str(), w.name_glob.is_none()),
            ("/data/doc.json", true)
        );
        assert_eq!(
            parse_watch("/srv/*:auto").unwrap().format,
            WatchFormat::Auto
        );
        for bad in [
            "var/x.db:sqlite",
            "/x.db",
            "/x.db:csv",
            "/a/*/x.db:sqlite",
            "/a/:kv",
        ] {
            assert!(parse_watch(bad).is_err(), "{bad}");
        }
    }
}
