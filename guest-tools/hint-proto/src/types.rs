//! Field types: formats, roles and extents (24 bytes each on the wire:
//! file_offset, sector, len, u64 LE).

use core::fmt;

use crate::SECTOR_SIZE;

/// The application format of a file.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Format {
    /// An SQLite database (and its journal / WAL).
    Sqlite = 1,
    /// A JSON document.
    Json = 2,
    /// A key-value log.
    Kv = 3,
    /// A LevelDB database: every file of its directory, `CURRENT` as the
    /// main file and the others as [`Role::Part`] (added in version 1 as a
    /// new code; older hosts reject it as an unknown format).
    LevelDb = 4,
}

impl Format {
    /// The format for a wire byte.
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Sqlite),
            2 => Some(Self::Json),
            3 => Some(Self::Kv),
            4 => Some(Self::LevelDb),
            _ => None,
        }
    }
    /// Lower-case name: `sqlite`, `json`, `kv`, `leveldb`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Sqlite => "sqlite",
            Self::Json => "json",
            Self::Kv => "kv",
            Self::LevelDb => "leveldb",
        }
    }
    /// The format for a lower-case name (inverse of [`Format::name`]).
    pub fn from_name(s: &str) -> Option<Self> {
        [Self::Sqlite, Self::Json, Self::Kv, Self::LevelDb]
            .into_iter()
            .find(|f| f.name() == s)
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a file is to its application.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// The main file (the database, the document, the log).
    Main = 1,
    /// An SQLite rollback journal (`-journal`).
    Journal = 2,
    /// An SQLite write-ahead log (`-wal`).
    Wal = 3,
    /// Another file of a multi-file database (LevelDB: its logs, MANIFEST
    /// and tables); `main_id` names the database's main file.
    Part = 4,
}

impl Role {
    /// The role for a wire byte.
    pub const fn from_u8(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Main),
            2 => Some(Self::Journal),
            3 => Some(Self::Wal),
            4 => Some(Self::Part),
            _ => None,
        }
    }
    /// Lower-case name: `main`, `journal`, `wal`, `part`.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Main => "main",
            Self::Journal => "journal",
            Self::Wal => "wal",
            Self::Part => "part",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `len` bytes of a file at `file_offset` are on disk at `sector` (512-byte
/// units). 24 bytes on the wire: file_offset, sector, len, each u64 LE.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Extent {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// First 512-byte sector on the virtio disk.
    pub sector: u64,
    /// Length in bytes (> 0).
    pub len: u64,
}

impl Extent {
    /// Bytes per extent on the wire.
    pub const WIRE_LEN: usize = 24;

    /// Byte offset on the disk (`sector * 512`); `None` on overflow.
    pub const fn disk_offset(&self) -> Option<u64> {
        self.sector.checked_mul(SECTOR_SIZE)
    }

    /// Why this extent is invalid on the wire, if it is.
    pub(crate) fn problem(&self) -> Option<&'static str> {
        if self.len == 0 {
            return Some("zero-length extent");
        }
        if self.file_offset.checked_add(self.len).is_none() {
            return Some("extent file_offset + len overflows");
        }
        match self.disk_offset().and_then(|d| d.checked_add(self.len)) {
            None => Some("extent sector * 512 + len overflows"),
            Some(_) => None,
        }
    }

    pub(crate) fn from_wire(b: &[u8; 24]) -> Self {
        let u = |i: usize| {
            let mut w = [0u8; 8];
            w.copy_from_slice(&b[i..i + 8]);
            u64::from_le_bytes(w)
        };
        Extent {
            file_offset: u(0),
            sector: u(8),
            len: u(16),
        }
    }
}

/// The extents of an Extents message: borrowed, already validated wire bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Extents<'a> {
    raw: &'a [u8],
}

impl<'a> Extents<'a> {
    /// Callers guarantee `raw.len() % 24 == 0` and valid extents.
    pub(crate) const fn from_validated(raw: &'a [u8]) -> Self {
        Extents { raw }
    }
    /// Number of extents.
    pub fn len(&self) -> usize {
        self.raw.len() / Extent::WIRE_LEN
    }
    /// No extents (the file holds no blocks).
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }
    /// Extent `i`, if there is one.
    pub fn get(&self, i: usize) -> Option<Extent> {
        let start = i.checked_mul(Extent::WIRE_LEN)?;
        let b = self.raw.get(start..start.checked_add(Extent::WIRE_LEN)?)?;
        Some(Extent::from_wire(b.try_into().ok()?))
    }
    /// The extents in wire order.
    pub fn iter(&self) -> ExtentIter<'a> {
        ExtentIter {
            chunks: self.raw.chunks_exact(Extent::WIRE_LEN),
        }
    }
    /// Sum of the extents' lengths (saturating).
    pub fn total_len(&self) -> u64 {
        self.iter().fold(0u64, |acc, e| acc.saturating_add(e.len))
    }
    /// The wire bytes (24 per extent).
    pub fn as_bytes(&self) -> &'a [u8] {
        self.raw
    }
}

impl fmt::Debug for Extents<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for Extents<'a> {
    type Item = Extent;
    type IntoIter = ExtentIter<'a>;
    fn into_iter(self) -> ExtentIter<'a> {
        self.iter()
    }
}

/// Iterator over [`Extents`].
#[derive(Clone, Debug)]
pub struct ExtentIter<'a> {
    chunks: core::slice::ChunksExact<'a, u8>,
}

impl Iterator for ExtentIter<'_> {
    type Item = Extent;
    fn next(&mut self) -> Option<Extent> {
        let c = self.chunks.next()?;
        c.try_into().ok().map(Extent::from_wire)
    }
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.chunks.size_hint()
    }
}

impl ExactSizeIterator for ExtentIter<'_> {}
