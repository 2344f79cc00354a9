//! The guest's hinted files at the snapshot point (manifest version 2).
//!
//! A recording VMM learns from guest hints (`hint-proto`) which disk
//! extents hold which application file, in which format, with which key
//! columns. That table lives only in the recorder; a restored VM (the same
//! one resumed, or a clone) never sends those hints again, because its
//! guest already sent them before the snapshot. So the table is part of
//! the VM's state: [`Manifest::guest_files`] holds it, and a restore hands
//! it to the restored VM's recorder.
//!
//! The table is kept here as plain data (names, not `hint-proto` types):
//! this crate stores it, `introspection` validates and applies it.
//!
//! [`Manifest::guest_files`]: super::Manifest::guest_files

use serde::{Deserialize, Serialize};

/// One file the guest had hinted (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestFile {
    /// The guest's id for the file.
    pub id: u32,
    /// The id of the main file this one belongs to (itself for a main file).
    pub main_id: u32,
    /// The file's name as the guest gave it (e.g. `app.db`).
    pub path: String,
    /// Its format by `hint-proto` name: `sqlite`, `json` or `kv`.
    pub format: String,
    /// Its role by `hint-proto` name: `main`, `journal` or `wal`.
    pub role: String,
    /// Where its bytes are on the disk, in file order.
    pub extents: Vec<GuestExtent>,
    /// Its length in bytes, when the guest said.
    pub size: Option<u64>,
    /// Whether the file exists (a deleted journal keeps its extents).
    pub exists: bool,
    /// The schema hint's text as the guest sent it, if it sent one.
    pub schema: Option<String>,
}

/// `len` bytes of a file at `file_offset` are on disk at `sector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GuestExtent {
    /// Byte offset in the file.
    pub file_offset: u64,
    /// First 512-byte sector on the disk.
    pub sector: u64,
    /// Length in bytes.
    pub len: u64,
}
