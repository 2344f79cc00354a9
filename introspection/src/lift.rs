//! Lifting raw disk writes into semantic changes, from guest hints.
//!
//! The guest says (hint-proto) which disk extents hold which file, in
//! which format, and when files appear, grow or vanish. [`FileTable`] keeps
//! that map, validating every hint against the disk (extents inside it, no
//! two files sharing a block). At each barrier the tap asks the [`Lifter`]
//! for the changes of every file whose blocks were written since the last
//! barrier: it reads the file's bytes as they are on the disk at that
//! barrier, decodes the previous and the current version
//! (`crate::decode`), and returns row/key-level changes — or a decode-error
//! event for that file, after which it goes on with the others.
//!
//! Consistency: an SQLite database in rollback-journal mode is lifted only
//! at barriers where its journal is not hot (absent, empty, or without a
//! valid header); a WAL database is lifted as the main file plus the
//! committed frames of its WAL. JSON and KV files are lifted at every
//! barrier after they were written. A LevelDB database (main file
//! `CURRENT`, every other file of its directory a `Part`) is lifted as a
//! bundle of all its existing files (`decode::leveldb::bundle`), named by
//! the directory; its files need Size hints (a table's footer is at its
//! end).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use hint_proto::{Extent, Format as WireFormat, Hint, Role};
use serde::{Deserialize, Serialize};

use crate::decode::{self, SchemaHints};
use crate::provenance::BlockRead;
use crate::semantic::{Change, DecodeErrorEvent, Format, SemanticChange};

mod differ;
mod error;
mod prior;
mod restore;

pub use differ::Differ;
pub use error::HintError;

/// The disk block, in the u64 of disk offsets.
const BLOCK: u64 = store::BLOCK_SIZE as u64;
/// Largest file the lifter reads (a hostile guest cannot make it read more).
pub const MAX_FILE_BYTES: u64 = 256 << 20;
/// Most files tracked at once.
pub const MAX_FILES: usize = 256;
const JOURNAL_MAGIC: [u8; 8] = [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7];

/// One event of the semantic change log (what a `Semantic` record holds).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum SemanticEvent {
    Change(SemanticChange),
    DecodeError(DecodeErrorEvent),
}

#[derive(Clone, Debug)]
pub struct FileInfo {
    pub path: String,
    pub format: Format,
    pub role: Role,
    pub main_id: u32,
    pub extents: Vec<Extent>,
    pub size: Option<u64>,
    pub exists: bool,
    pub schema: SchemaHints,
    /// The schema hint's text as the guest sent it (kept for snapshots).
    pub schema_text: Option<String>,
}

impl FileInfo {
    fn capacity(&self) -> u64 {
        self.extents.iter().map(|e| e.len).sum()
    }

    /// The file's byte length to read: its hinted size, bounded by its
    /// extents and by `MAX_FILE_BYTES`.
    fn read_len(&self) -> u64 {
        self.size
            .unwrap_or(u64::MAX)
            .min(self.capacity())
            .min(MAX_FILE_BYTES)
    }

    /// The disk blocks holding the bytes [`Self::read_len`] reads, in
    /// read order (a block shared by two extents once per extent).
    pub fn blocks(&self) -> Vec<u64> {
        let mut out = Vec::new();
        let mut left = self.read_len();
        for e in &self.extents {
            if left == 0 {
                break;
            }
            let n = e.len.min(left);
            if n == 0 {
                continue;
            }
            let start = e.sector * 512;
            out.extend(start / BLOCK..=(start + n - 1) / BLOCK);
            left -= n;
        }
        out
    }

    fn touches(&self, written: &BTreeSet<u64>) -> bool {
        self.extents.iter().any(|e| {
            let first = e.sector * 512 / BLOCK;
            let last = (e.sector * 512 + e.len - 1) / BLOCK;
            written.range(first..=last).next().is_some()
        })
    }
}

/// The guest's files as its hints describe them.
#[derive(Clone, Default)]
pub struct FileTable {
    files: BTreeMap<u32, FileInfo>,
    disk_bytes: u64,
}

fn format_of(f: WireFormat) -> Format {
    match f {
        WireFormat::Sqlite => Format::Sqlite,
        WireFormat::Json => Format::Json,
        WireFormat::Kv => Format::Kv,
        WireFormat::LevelDb => Format::LevelDb,
    }
}

/// `table=col1,col2;table2=col` or `/json/pointer:keyfield`.
pub fn parse_schema(format: Format, text: &str) -> SchemaHints {
    let mut hints = SchemaHints::default();
    match format {
        Format::Sqlite => {
            for part in text.split(';').filter(|p| !p.is_empty()) {
                if let Some((table, cols)) = part.split_once('=') {
                    hints.key_columns.insert(
                        table.to_string(),
                        cols.split(',')
                            .filter(|c| !c.is_empty())
                            .map(String::from)
                            .collect(),
                    );
                }
            }
        }
        Format::Json => {
            let (path, key) = text.split_once(':').unwrap_or((text, "id"));
            hints.json_record_path = Some(path.to_string());
            hints.json_record_key = Some(key.to_string());
        }
        Format::Kv | Format::LevelDb => {}
    }
    hints
}

impl FileTable {
    pub fn new(disk_bytes: u64) -> Self {
        Self {
            files: BTreeMap::new(),
            disk_bytes,
        }
    }

    pub fn get(&self, id: u32) -> Option<&FileInfo> {
        self.files.get(&id)
    }

    pub fn files(&self) -> impl Iterator<Item = (&u32, &FileInfo)> {
        self.files.iter()
    }

    /// Applies one hint; an invalid one changes nothing and says why.
    pub fn apply(&mut self, hint: &Hint<'_>) -> Result<(), HintError> {
        match *hint {
            Hint::File {
                file_id,
                main_id,
                format,
                role,
                path,
            } => {
                if !self.files.contains_key(&file_id) && self.files.len() >= MAX_FILES {
                    return Err(HintError::TooManyFiles {
                        file_id,
                        max: MAX_FILES,
                    });
                }
                let format = format_of(format);
                self.files.insert(
                    file_id,
                    FileInfo {
                        path: path.to_string(),
                        format,
                        role,
                        main_id,
                        extents: Vec::new(),
                        size: None,
                        exists: true,
                        schema: SchemaHints::default(),
                        schema_text: None,
                    },
                );
            }
            Hint::Extents { file_id, extents } => {
                self.set_extents(file_id, extents.iter().collect())?;
            }
            Hint::Size {
                file_id,
                size,
                exists,
            } => {
                let file = self.file_mut(file_id)?;
                file.size = Some(size);
                file.exists = exists;
            }
            Hint::Schema { file_id, text } => {
                let file = self.file_mut(file_id)?;
                file.schema = parse_schema(file.format, text);
                file.schema_text = Some(text.to_string());
            }
            Hint::Forget { file_id } => {
                self.files.remove(&file_id);
            }
        }
        Ok(())
    }

    /// Sets file `file_id`'s extents, if they lie inside the disk and
    /// overlap no other file's.
    fn set_extents(&mut self, file_id: u32, new: Vec<Extent>) -> Result<(), HintError> {
        for e in &new {
            let end = e.sector.checked_mul(512).and_then(|s| s.checked_add(e.len));
            if end.is_none_or(|end| end > self.disk_bytes) {
                return Err(HintError::ExtentOutside {
                    file_id,
                    sector: e.sector,
                    len: e.len,
                    disk_bytes: self.disk_bytes,
                });
            }
        }
        for (other_id, other) in &self.files {
            if *other_id == file_id {
                continue;
            }
            for a in &new {
                for b in &other.extents {
                    let (a0, a1) = (a.sector * 512, a.sector * 512 + a.len);
                    let (b0, b1) = (b.sector * 512, b.sector * 512 + b.len);
                    if a0 < b1 && b0 < a1 {
                        return Err(HintError::ExtentOverlap {
                            file_id,
                            sector: a.sector,
                            other_id: *other_id,
                            other_path: other.path.clone(),
                        });
                    }
                }
            }
        }
        self.file_mut(file_id)?.extents = new;
        Ok(())
    }

    fn file_mut(&mut self, id: u32) -> Result<&mut FileInfo, HintError> {
        self.files.get_mut(&id).ok_or(HintError::UnknownFile(id))
    }
}

/// Reads `len` bytes of the disk at byte `offset`.
pub type ReadDisk<'a> = &'a mut dyn FnMut(u64, usize) -> std::io::Result<Vec<u8>>;

fn read_file(file: &FileInfo, read: ReadDisk<'_>) -> std::io::Result<Vec<u8>> {
    let want = file.read_len();
    let mut out = Vec::with_capacity(want as usize);
    for e in &file.extents {
        let left = want - out.len() as u64;
        if left == 0 {
            break;
        }
        let n = e.len.min(left) as usize;
        out.extend_from_slice(&read(e.sector * 512, n)?);
    }
    Ok(out)
}

/// Finds, at a barrier, the hinted files to lift and reads their bytes.
///
/// Each file's bytes are cached between barriers and only the blocks
/// written since are read again, so a barrier costs the size of what
/// changed, not of the file. The cache is shared (`Arc`) with the decoding
/// thread and copied only if that thread still holds the previous version.
pub struct Lifter {
    pub table: FileTable,
    cache: BTreeMap<u32, Arc<Vec<u8>>>,
}

/// A main file's bytes at a consistency point, to be diffed by a [`Differ`].
#[derive(Clone)]
pub struct Version {
    pub id: u32,
    pub file: String,
    pub format: Format,
    pub schema: SchemaHints,
    /// The bytes, or why they could not be read.
    pub bytes: Result<FileBytes, String>,
    /// The log position whose disk the bytes were read from (a barrier),
    /// when that disk is in the log (not a restored snapshot's).
    pub at: Option<u64>,
}

/// A file's bytes and, for an SQLite database in WAL mode, its WAL (whose
/// committed frames the decoding thread applies).
#[derive(Clone)]
pub struct FileBytes {
    pub bytes: Arc<Vec<u8>>,
    pub wal: Option<Arc<Vec<u8>>>,
    /// The disk blocks read for them ([`FileInfo::blocks`] of each file
    /// read), and, once the reader filled them in ([`Version::fill_reads`]),
    /// their content hashes: the step's inputs (`crate::provenance`).
    pub reads: Vec<BlockRead>,
}

impl Version {
    /// Fills in the content hash of each block read, from `hash_of` (the
    /// reader's block map at the version's barrier), and the position.
    pub fn fill_reads(&mut self, at: Option<u64>, hash_of: &dyn Fn(u64) -> Option<[u8; 32]>) {
        self.at = at;
        if let Ok(b) = &mut self.bytes {
            for r in &mut b.reads {
                r.hash = hash_of(r.block).unwrap_or(changelog::ZERO_BLOCK_HASH);
            }
        }
    }
}

/// Blocks to be read, their hashes not known yet.
fn unhashed(blocks: Vec<u64>) -> Vec<BlockRead> {
    blocks
        .into_iter()
        .map(|block| BlockRead {
            block,
            hash: [0; 32],
        })
        .collect()
}

/// What one file yielded at a barrier.
pub enum Lifted {
    Changes {
        file: String,
        format: Format,
        changes: Vec<Change>,
        /// How each change was derived, in the same order.
        provenance: Vec<crate::provenance::Provenance>,
    },
    Error {
        file: String,
        format: Format,
        reason: String,
    },
}

impl Lifter {
    pub fn new(disk_bytes: u64) -> Self {
        Self {
            table: FileTable::new(disk_bytes),
            cache: BTreeMap::new(),
        }
    }

    /// File `id`'s bytes now: from the cache plus the blocks in `written`,
    /// or read whole when the cache cannot be trusted (first use, a hint
    /// changed the file, its length changed).
    fn cached(
        &mut self,
        id: u32,
        written: &BTreeSet<u64>,
        hinted: &BTreeSet<u32>,
        read: ReadDisk<'_>,
    ) -> std::io::Result<Arc<Vec<u8>>> {
        let Some(file) = self.table.get(id) else {
            return Ok(Arc::new(Vec::new()));
        };
        let want = file.read_len();
        let reuse =
            !hinted.contains(&id) && self.cache.get(&id).is_some_and(|c| c.len() as u64 == want);
        if !reuse {
            let bytes = Arc::new(read_file(file, read)?);
            self.cache.insert(id, bytes.clone());
            return Ok(bytes);
        }
        let extents = file.extents.clone();
        let entry = self.cache.get_mut(&id).expect("checked above");
        let mut file_offset = 0u64;
        for e in &extents {
            let disk = e.sector * 512;
            let first = disk / BLOCK;
            let last = (disk + e.len - 1) / BLOCK;
            for &b in written.range(first..=last) {
                // The part of block b inside this extent and inside the file.
                let start = (b * BLOCK).max(disk);
                let end = ((b + 1) * BLOCK).min(disk + e.len);
                let f0 = file_offset + (start - disk);
                let f1 = (file_offset + (end - disk)).min(want);
                if f0 >= f1 {
                    continue;
                }
                let fresh = read(start, (f1 - f0) as usize)?;
                Arc::make_mut(entry)[f0 as usize..f1 as usize].copy_from_slice(&fresh);
            }
            file_offset += e.len;
        }
        Ok(entry.clone())
    }

    /// The current versions of every main file touched by `written` (block
    /// numbers) or by a hint since the last barrier (`hinted`) that is at a
    /// consistent point. Only reads; decoding is the [`Differ`]'s job, so
    /// that it can run off the barrier's critical path.
    pub fn versions(
        &mut self,
        written: &BTreeSet<u64>,
        hinted: &BTreeSet<u32>,
        read: ReadDisk<'_>,
    ) -> Vec<Version> {
        let mut mains: BTreeSet<u32> = BTreeSet::new();
        for (id, f) in self.table.files() {
            if f.touches(written) || hinted.contains(id) {
                mains.insert(if f.role == Role::Main { *id } else { f.main_id });
            }
        }
        let mut out = Vec::new();
        for id in mains {
            let Some(main) = self.table.get(id).cloned() else {
                continue;
            };
            if main.role != Role::Main || main.extents.is_empty() || !main.exists {
                continue;
            }
            let bytes = match self.current_version(id, &main, written, hinted, read) {
                Ok(None) => continue, // not at a consistent point for this file
                Ok(Some(bytes)) => Ok(bytes),
                Err(e) => Err(format!("reading the file from the disk: {e}")),
            };
            out.push(Version {
                id,
                file: main.path.clone(),
                format: main.format,
                schema: main.schema.clone(),
                bytes,
                at: None,
            });
        }
        out
    }

    /// The main file's consistent bytes now, or None when a hot journal
    /// says a transaction is half-written.
    fn current_version(
        &mut self,
        id: u32,
        main: &FileInfo,
        written: &BTreeSet<u64>,
        hinted: &BTreeSet<u32>,
        read: ReadDisk<'_>,
    ) -> std::io::Result<Option<FileBytes>> {
        let siblings: Vec<(u32, FileInfo)> = self
            .table
            .files()
            .filter(|(fid, f)| **fid != id && f.main_id == id)
            .map(|(fid, f)| (*fid, f.clone()))
            .collect();
        for (_, j) in siblings
            .iter()
            .filter(|(_, f)| f.role == Role::Journal && f.exists)
        {
            if j.size.unwrap_or(0) >= 28 && !j.extents.is_empty() {
                let header = read(j.extents[0].sector * 512, 28)?;
                let records = u32::from_be_bytes(header[8..12].try_into().expect("4 bytes"));
                if header[..8] == JOURNAL_MAGIC && records != 0 {
                    // The blocks written meanwhile are not patched into the
                    // cached copies: read them whole next time.
                    self.cache.remove(&id);
                    for (sid, _) in &siblings {
                        self.cache.remove(sid);
                    }
                    return Ok(None);
                }
            }
        }
        if main.format == Format::LevelDb {
            return self.leveldb_bundle(id, main, &siblings, written, hinted, read);
        }
        let bytes = self.cached(id, written, hinted, read)?;
        let mut blocks = main.blocks();
        let mut wal = None;
        if main.format == Format::Sqlite {
            if let Some((wal_id, wal_file)) = siblings
                .iter()
                .find(|(_, f)| f.role == Role::Wal && f.exists && f.size.unwrap_or(0) > 0)
            {
                wal = Some(self.cached(*wal_id, written, hinted, read)?);
                blocks.extend(wal_file.blocks());
            }
        }
        Ok(Some(FileBytes {
            bytes,
            wal,
            reads: unhashed(blocks),
        }))
    }

    /// A LevelDB database's existing files, bundled under the directory
    /// name (see `decode::leveldb` for the hint convention).
    fn leveldb_bundle(
        &mut self,
        id: u32,
        main: &FileInfo,
        siblings: &[(u32, FileInfo)],
        written: &BTreeSet<u64>,
        hinted: &BTreeSet<u32>,
        read: ReadDisk<'_>,
    ) -> std::io::Result<Option<FileBytes>> {
        let split = |p: &str| match p.rsplit_once('/') {
            Some((dir, base)) => (dir.to_string(), base.to_string()),
            None => (String::new(), p.to_string()),
        };
        let (dir, base) = split(&main.path);
        let mut files = vec![(base, self.cached(id, written, hinted, read)?)];
        let mut blocks = main.blocks();
        for (sid, f) in siblings {
            if f.exists && f.format == Format::LevelDb {
                files.push((split(&f.path).1, self.cached(*sid, written, hinted, read)?));
                blocks.extend(f.blocks());
            }
        }
        let refs: Vec<(&str, &[u8])> = files
            .iter()
            .map(|(n, b)| (n.as_str(), b.as_slice()))
            .collect();
        Ok(Some(FileBytes {
            bytes: Arc::new(decode::leveldb::bundle::encode(&dir, &refs)),
            wal: None,
            reads: unhashed(blocks),
        }))
    }
}
