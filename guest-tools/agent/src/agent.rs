//! The tracking loop: which files, what was last sent, what to send now.

use std::collections::HashMap;
use std::fs::{self, File, Metadata};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use hint_proto::{
    encode_extents, encode_file, encode_schema, encode_size, Extent, Format, Role, MAX_MESSAGE,
    MAX_PATH,
};

use crate::cli::FileSpec;
use crate::fiemap::{classify, device_start_sector, fiemap, is_unsupported, Mapping, Unusable};
use crate::AgentError;

/// What `stat` says; a change means the file must be mapped again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct StatKey {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl StatKey {
    fn of(m: &Metadata) -> Self {
        StatKey {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        }
    }
}

/// A tracked file and what was last sent about it.
#[derive(Debug)]
pub struct Tracked {
    /// Its file id.
    pub id: u32,
    /// Its main file's id (its own for a main file).
    pub main_id: u32,
    /// Format.
    pub format: Format,
    /// Role.
    pub role: Role,
    /// Absolute path, as sent.
    pub path: String,
    /// Schema hint (main files only).
    pub schema: Option<String>,
    key: Option<StatKey>,
    sent_size: Option<(u64, bool)>,
    sent_extents: Option<Vec<Extent>>,
    warned: Vec<Unusable>,
    last_error: Option<String>,
}

/// The agent: tracks files and writes hints to `W` (the port).
pub struct Agent<W: Write> {
    out: W,
    port: PathBuf,
    files: Vec<Tracked>,
    sector_offset: Option<u64>,
    dev_start: HashMap<u64, u64>,
    warnings: Vec<String>,
    buf: Vec<u8>,
    announced: bool,
    messages: u64,
}

/// What a file looks like now.
struct State {
    key: Option<StatKey>,
    size: u64,
    exists: bool,
    mapping: Mapping,
}

fn hint_path(path: &Path, suffix: &str) -> Result<String, AgentError> {
    let s = path
        .to_str()
        .ok_or_else(|| AgentError::NotUtf8 { path: path.into() })?;
    if s.len() + suffix.len() > MAX_PATH {
        return Err(AgentError::PathTooLong { path: path.into() });
    }
    Ok(format!("{s}{suffix}"))
}

impl<W: Write> Agent<W> {
    /// Checks the files (main files must exist and be regular files) and
    /// assigns ids; writes nothing yet. `port` names `out` in errors.
    pub fn new(
        out: W,
        port: PathBuf,
        specs: &[FileSpec],
        sector_offset: Option<u64>,
    ) -> Result<Self, AgentError> {
        let mut files = Vec::new();
        for spec in specs {
            let err = |source| AgentError::File {
                path: spec.path.clone(),
                source,
            };
            let path = fs::canonicalize(&spec.path).map_err(err)?;
            if files.iter().any(|t: &Tracked| Path::new(&t.path) == path) {
                return Err(AgentError::Duplicate { path });
            }
            if !fs::metadata(&path).map_err(err)?.is_file() {
                return Err(AgentError::NotRegular { path });
            }
            let suffix = if spec.format == Format::Sqlite {
                "-journal"
            } else {
                ""
            };
            hint_path(&path, suffix)?;
            let main_id = files.len() as u32 + 1;
            let mut add = |role, suffix, schema| -> Result<(), AgentError> {
                files.push(Tracked {
                    id: files.len() as u32 + 1,
                    main_id,
                    format: spec.format,
                    role,
                    path: hint_path(&path, suffix)?,
                    schema,
                    key: None,
                    sent_size: None,
                    sent_extents: None,
                    warned: Vec::new(),
                    last_error: None,
                });
                Ok(())
            };
            add(Role::Main, "", spec.schema.clone())?;
            if spec.format == Format::Sqlite {
                add(Role::Journal, "-journal", None)?;
                add(Role::Wal, "-wal", None)?;
            }
        }
        Ok(Agent {
            out,
            port,
            files,
            sector_offset,
            dev_start: HashMap::new(),
            warnings: Vec::new(),
            buf: vec![0; MAX_MESSAGE],
            announced: false,
            messages: 0,
        })
    }

    /// The tracked files.
    pub fn files(&self) -> &[Tracked] {
        &self.files
    }

    /// The output (the port).
    pub fn output(&self) -> &W {
        &self.out
    }

    /// Messages written so far.
    pub fn messages(&self) -> u64 {
        self.messages
    }

    /// Warnings since the last call (unusable extents, unknown devices,
    /// files that could not be mapped on a later poll).
    pub fn take_warnings(&mut self) -> Vec<String> {
        std::mem::take(&mut self.warnings)
    }

    /// Sends what changed since the last poll and returns the number of
    /// messages written. The first poll sends File and Schema hints, then
    /// Extents and Size of every file; its errors are fatal. Later, a file
    /// that cannot be mapped is a warning and is retried next time.
    pub fn poll(&mut self) -> Result<usize, AgentError> {
        let before = self.messages;
        let first = !self.announced;
        if first {
            for i in 0..self.files.len() {
                let t = &self.files[i];
                let n = encode_file(t.id, t.main_id, t.format, t.role, &t.path, &mut self.buf)?;
                let schema = t.schema.clone();
                self.send(n)?;
                if let Some(text) = schema {
                    let n = encode_schema(self.files[i].id, &text, &mut self.buf)?;
                    self.send(n)?;
                }
            }
            self.announced = true;
        }
        for i in 0..self.files.len() {
            match self.observe(i) {
                Ok(Some(state)) => {
                    self.files[i].last_error = None;
                    self.update(i, state)?;
                }
                Ok(None) => {}
                Err(e) if first => return Err(e),
                Err(e) => {
                    // Once per distinct error, not every poll.
                    let e = e.to_string();
                    if self.files[i].last_error.as_ref() != Some(&e) {
                        self.warnings.push(format!("{e} (will retry)"));
                        self.files[i].last_error = Some(e);
                    }
                }
            }
        }
        self.out.flush().map_err(|source| AgentError::PortWrite {
            path: self.port.clone(),
            source,
        })?;
        Ok((self.messages - before) as usize)
    }

    /// The file's state now, or `None` when `stat` says it did not change.
    fn observe(&mut self, i: usize) -> Result<Option<State>, AgentError> {
        let path = PathBuf::from(&self.files[i].path);
        let err = |source| AgentError::File {
            path: path.clone(),
            source,
        };
        let missing = State {
            key: None,
            size: 0,
            exists: false,
            mapping: Mapping::default(),
        };
        let meta = match fs::metadata(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(missing)),
            r => r.map_err(err)?,
        };
        if !meta.is_file() {
            return Err(AgentError::NotRegular { path: path.clone() });
        }
        let key = StatKey::of(&meta);
        if self.files[i].key == Some(key) {
            return Ok(None);
        }
        let file = match File::open(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Some(missing)),
            r => r.map_err(err)?,
        };
        let raw = fiemap(&file).map_err(|e| {
            if is_unsupported(&e) {
                AgentError::NoFiemap { path: path.clone() }
            } else {
                err(e)
            }
        })?;
        let mapping = classify(&raw, self.start_sector(key.dev));
        Ok(Some(State {
            key: Some(key),
            size: meta.size(),
            exists: true,
            mapping,
        }))
    }

    /// Where device `dev` starts on the virtio disk, in sectors.
    fn start_sector(&mut self, dev: u64) -> u64 {
        if let Some(o) = self.sector_offset {
            return o;
        }
        let warnings = &mut self.warnings;
        *self.dev_start.entry(dev).or_insert_with(|| {
            device_start_sector(dev).unwrap_or_else(|| {
                warnings.push(format!(
                    "cannot tell where device {}:{} starts on the disk (not in /sys/dev/block); \
                     assuming sector 0 (set --sector-offset)",
                    libc::major(dev),
                    libc::minor(dev)
                ));
                0
            })
        })
    }

    /// Sends Extents and Size where `state` differs from what was sent.
    fn update(&mut self, i: usize, state: State) -> Result<(), AgentError> {
        let t = &mut self.files[i];
        t.key = state.key;
        let m = state.mapping;
        if !m.unusable.is_empty() && m.unusable != t.warned {
            let first = &m.unusable[0];
            self.warnings.push(format!(
                "{}: {} extent(s) left out of the hints, e.g. {} bytes at offset {}: {}",
                t.path,
                m.unusable.len(),
                first.len,
                first.file_offset,
                first.reason
            ));
        }
        t.warned = m.unusable;
        let (id, path) = (t.id, t.path.clone());
        if t.sent_extents.as_ref() != Some(&m.extents) {
            if m.dropped > 0 {
                self.warnings.push(format!(
                    "{path}: {} more extents than a hint holds were left out",
                    m.dropped
                ));
            }
            let n = encode_extents(id, &m.extents, &mut self.buf)?;
            self.send(n)?;
            self.files[i].sent_extents = Some(m.extents);
        }
        let size = (state.size, state.exists);
        if self.files[i].sent_size != Some(size) {
            let n = encode_size(id, size.0, size.1, &mut self.buf)?;
            self.send(n)?;
            self.files[i].sent_size = Some(size);
        }
        Ok(())
    }

    /// Writes the first `n` bytes of the buffer.
    fn send(&mut self, n: usize) -> Result<(), AgentError> {
        self.out
            .write_all(&self.buf[..n])
            .map_err(|source| AgentError::PortWrite {
                path: self.port.clone(),
                source,
            })?;
        self.messages += 1;
        Ok(())
    }
}
