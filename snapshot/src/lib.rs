//! VM state at rest.
//!
//! Owns: the content-addressed store ([`store`]: BLAKE3 keys, zstd values,
//! the zero page never stored, packs and an index log shared by many VMM
//! processes, compaction), guest memory as page lists in it ([`pages`]:
//! capture full or incremental, restore), snapshot manifests and their
//! directory ([`manifest`]: versioned file, check, chain merge) and
//! mark-and-sweep collection of the store ([`gc`]).
//!
//! Does not own: running a VM (`vmm`) or reapplying change logs (`replay`).

pub mod gc;
pub mod manifest;
pub mod pages;

#[cfg(test)]
mod testutil;

pub use manifest::{
    check, merge, new_snapshot_id, DiskPosition, DiskRecord, GuestExtent, GuestFile, Manifest,
    ManifestError, MemoryRegion, PathResolution, SharedRegion, SnapshotDir, SnapshotKind,
    SnapshotStats, StateBlob,
};
pub use pages::{
    capture, restore, restore_filtered, restore_over, restore_page, set_max_threads, CaptureStats,
    PageList, PagesError, PagesRef, RestoreStats, PAGE_SIZE,
};
