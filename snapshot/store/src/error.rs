//! The store's one error type.

use std::io;
use std::path::PathBuf;

use super::ObjectId;

/// Everything that can go wrong in the content store. Each message names
/// the file or object concerned and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system call on a store file failed.
    #[error("content store: cannot {op} {path}: {source} (check that the path exists, is writable and the disk is not full)")]
    Io {
        /// What was being done ("open", "read", "fsync", ...).
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// A store file does not start with the expected magic and version.
    #[error("content store: {path} is not a store file this version can read ({detail}); check that the store directory is right, or use the tool version that wrote it")]
    BadHeader {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },

    /// The index has a damaged entry that is not explained by a crash
    /// during an append; writing is refused so nothing more is lost.
    #[error("content store: index {path} ends with damaged records from byte {offset} ({detail}); writes are refused so nothing more is lost: run `vmm store repair` to rebuild the index from the packs")]
    IndexCorrupt {
        /// The index file.
        path: PathBuf,
        /// Byte offset of the first bad entry.
        offset: u64,
        /// What was wrong.
        detail: String,
    },

    /// The requested object is not in the store.
    #[error("content store: object {id} is not in the store at {dir} ({}); put it again", not_found_why(*.index_damage))]
    NotFound {
        /// The object.
        id: ObjectId,
        /// The store directory.
        dir: PathBuf,
        /// Byte offset of the first damaged record of the index, if any:
        /// the object may have been indexed there.
        index_damage: Option<u64>,
    },

    /// The stored bytes of an object do not decode to bytes with its hash.
    #[error("content store: object {id} is corrupt in {path} at byte {offset}: {detail}; the data cannot be returned: restore the store from a copy or put the object again")]
    Corrupt {
        /// The object.
        id: ObjectId,
        /// The pack file holding it.
        path: PathBuf,
        /// Byte offset of its stored bytes in the pack.
        offset: u64,
        /// What was wrong (length, decompression, hash mismatch).
        detail: String,
    },

    /// An object is larger than the store accepts.
    #[error("content store: object of {len} bytes is larger than the {max}-byte limit; split it into smaller objects")]
    TooLarge {
        /// Its length.
        len: usize,
        /// The limit ([`super::MAX_OBJECT_LEN`]).
        max: usize,
    },

    /// An object backend other than the local store (a replicated one)
    /// failed: `location` names it (e.g. its cluster URL and bucket).
    #[error("object store at {location}: {source}")]
    Backend {
        /// Where the objects live.
        location: String,
        /// What failed there.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

fn not_found_why(index_damage: Option<u64>) -> String {
    match index_damage {
        Some(at) => format!(
            "the index has damaged records from byte {at} on, which may have held it: run \
             `vmm store repair` to rebuild the index from the packs"
        ),
        None => "it was never put, its bytes were lost in a crash before they were synced, or \
                 `vmm store repair` kept it out as damaged"
            .to_string(),
    }
}

/// Result with a [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Builds a closure mapping an `io::Error` to [`StoreError::Io`].
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> StoreError {
    let path = path.into();
    move |source| StoreError::Io { op, path, source }
}
