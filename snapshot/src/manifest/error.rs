//! The manifest error type.

use std::io;
use std::path::PathBuf;

use super::RegionName;
use crate::pages::{PagesError, PAGE_SIZE};
use store::{ObjectId, StoreError};

/// Everything that can go wrong reading, writing, checking or merging
/// snapshot manifests. Each message names the file, snapshot, region or
/// object concerned and what to do.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// An operating-system call on a snapshot file or directory failed.
    #[error("snapshot: cannot {op} {path}: {source} (check that the directory exists and is writable, and the disk is not full)")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An id that cannot be a snapshot file name.
    #[error("snapshot: invalid snapshot id {id:?}: {reason}")]
    InvalidId {
        /// The id.
        id: String,
        /// Why.
        reason: String,
    },

    /// No snapshot has this id.
    #[error("snapshot: no snapshot {id:?} in {dir} (list the snapshots to see the ids there)")]
    UnknownId {
        /// The id.
        id: String,
        /// The snapshots directory searched.
        dir: PathBuf,
    },

    /// A snapshot with this id already exists.
    #[error("snapshot: {path} already exists; snapshot ids are unique, make a new one with new_snapshot_id()")]
    AlreadyExists {
        /// The id.
        id: String,
        /// Its file.
        path: PathBuf,
    },

    /// The file does not start with the manifest magic.
    #[error("snapshot: {path} is not a snapshot manifest (it starts with {found:?}, not \"VMMSNAP\\0\"); check the path")]
    NotASnapshot {
        /// The file.
        path: PathBuf,
        /// Its first bytes (up to 8).
        found: String,
    },

    /// The file ends before its header or body does.
    #[error("snapshot: {path} is truncated: it is {len} bytes but its {what} needs {needed}; the write was cut short: use another snapshot")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// Its length.
        len: u64,
        /// What is incomplete ("header", "body").
        what: &'static str,
        /// Bytes needed for it.
        needed: u64,
    },

    /// A CRC does not match, or the body does not decode.
    #[error("snapshot: {path} is corrupt: {detail}; the file was damaged after it was written: use another snapshot or a backup")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },

    /// A format version this build does not read.
    #[error("snapshot: {path} has manifest format version {found}, {} this build reads (1 to {supported}); {}",
        if found > supported { "newer than the versions" } else { "older than the versions" },
        if found > supported { "use a newer vmm to read it" } else { "use the older vmm that wrote it, or re-take the snapshot" })]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u32,
        /// The newest version this build reads (and the one it writes).
        supported: u32,
    },

    /// A manifest whose contents do not make sense.
    #[error("snapshot {id:?}: invalid manifest: {detail}")]
    Invalid {
        /// The snapshot.
        id: String,
        /// What is wrong.
        detail: String,
    },

    /// A snapshot's parent is not there (writing, or walking a chain).
    #[error("snapshot {id:?}: its parent {parent:?} is not in {dir}; the chain is broken: restore the parent's manifest, or use a merged (full) snapshot")]
    MissingParent {
        /// The child.
        id: String,
        /// The parent it names.
        parent: String,
        /// The snapshots directory.
        dir: PathBuf,
    },

    /// A snapshot to remove is the parent of others.
    #[error("snapshot {id:?} is the parent of {children:?}: deleting it alone would break their chains; delete them too (`vmm snapshot delete --with-children`), or merge them first (merge makes a full snapshot that needs no parent)")]
    HasChildren {
        /// The snapshot.
        id: String,
        /// Snapshots naming it as parent.
        children: Vec<String>,
    },

    /// A path given as a record directory is not one.
    #[error("snapshot: {path} is not a snapshot directory: {detail}; expected a record directory holding snapshots/ (as given to `vmm run --snapshots` or `--record`)")]
    NotASnapshotDir {
        /// The path.
        path: PathBuf,
        /// What is wrong with it.
        detail: &'static str,
    },

    /// Following parents comes back to a snapshot already seen.
    #[error("snapshot {id:?}: its chain of parents loops back to {repeated:?}; the manifests are inconsistent")]
    ChainCycle {
        /// Where the walk started.
        id: String,
        /// The snapshot seen twice.
        repeated: String,
    },

    /// A page-list chunk object is missing from the store.
    #[error("snapshot {snapshot:?}: {region}: page-list chunk {chunk} ({object}) is not in the store at {store}; the snapshot cannot be restored: was the store garbage-collected without this snapshot, or is it the wrong store?")]
    MissingChunk {
        /// The snapshot.
        snapshot: String,
        /// The region.
        region: RegionName,
        /// Chunk number in the region's list.
        chunk: usize,
        /// The chunk object.
        object: ObjectId,
        /// The store directory.
        store: PathBuf,
    },

    /// A page object is missing from the store.
    #[error("snapshot {snapshot:?}: {region}: page {page} ({}) needs object {object}, which is not in the store at {store}; the snapshot cannot be restored: was the store garbage-collected without this snapshot, or is it the wrong store?", region.locate(*page * PAGE_SIZE as u64))]
    MissingObject {
        /// The snapshot.
        snapshot: String,
        /// The region.
        region: RegionName,
        /// Page number in the region.
        page: u64,
        /// The page's object.
        object: ObjectId,
        /// The store directory.
        store: PathBuf,
    },

    /// A region's page list could not be read.
    #[error("snapshot {snapshot:?}: {region}: {source}")]
    Pages {
        /// The snapshot.
        snapshot: String,
        /// The region.
        region: RegionName,
        /// What went wrong.
        #[source]
        source: Box<PagesError>,
    },

    /// The manifest could not be serialized.
    #[error("snapshot {id:?}: cannot encode the manifest: {detail}")]
    Encode {
        /// The snapshot.
        id: String,
        /// The serializer's message.
        detail: String,
    },

    /// The content store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result with a [`ManifestError`].
pub type Result<T, E = ManifestError> = std::result::Result<T, E>;

/// Builds a closure mapping an `io::Error` to [`ManifestError::Io`].
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> ManifestError {
    let path = path.into();
    move |source| ManifestError::Io { op, path, source }
}
