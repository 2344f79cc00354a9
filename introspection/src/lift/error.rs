//! Why a hint was refused: one from the guest (live), or one a snapshot's
//! manifest saved (its file table, restored into a restored VM's tap).
//! A refused hint changes nothing in the [`super::FileTable`].
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HintError {
    /// The message is not a hint-proto message.
    #[error("{0}")]
    Undecodable(hint_proto::DecodeError),
    #[error("trailing bytes after the hint message")]
    TrailingBytes,
    /// A new file while the table is full.
    #[error("file {file_id}: more than {max} files hinted")]
    TooManyFiles { file_id: u32, max: usize },
    /// Extents, Size or Schema for a file no File hint declared.
    #[error("hint for file {0}, which no File hint declared")]
    UnknownFile(u32),
    #[error("file {file_id}: extent at sector {sector} of {len} bytes lies outside the {disk_bytes}-byte disk")]
    ExtentOutside {
        file_id: u32,
        sector: u64,
        len: u64,
        disk_bytes: u64,
    },
    #[error("file {file_id}: extent at sector {sector} overlaps file {other_id} ({other_path})")]
    ExtentOverlap {
        file_id: u32,
        sector: u64,
        other_id: u32,
        other_path: String,
    },
    /// A saved file table names a format this version does not know.
    #[error("saved file {file_id} ({path}): unknown format {format:?}")]
    UnknownFormat {
        file_id: u32,
        path: String,
        format: String,
    },
    /// A saved file table names a role this version does not know.
    #[error("saved file {file_id} ({path}): unknown role {role:?}")]
    UnknownRole {
        file_id: u32,
        path: String,
        role: String,
    },
}
