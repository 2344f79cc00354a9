//! VM state at rest: snapshots.
//!
//! Owns: guest memory as page lists in the content store ([`pages`]:
//! capture full or incremental, restore), snapshot manifests and their
//! directory ([`manifest`]: versioned file, check, chain merge), the
//! mark-and-sweep collection of the store ([`gc`]) with the one walk of
//! every object that logs and snapshots reference ([`refs`]: gc's mark,
//! store verify and repair) and the check of those objects ([`trust`]:
//! what a damaged store can still replay)
//! and what a record directory holds ([`usage`]), and copying a
//! snapshot's objects to and from another object backend ([`transfer`]).
//!
//! Does not own: the content store itself (`store`), the change log and the
//! record directory's layout (`changelog`), running a VM (`vmm`) or
//! reapplying change logs (`replay`).

pub mod gc;
pub mod manifest;
pub mod pages;
pub mod refs;
pub mod transfer;
pub mod trust;
pub mod usage;

#[cfg(test)]
mod testutil;

pub use manifest::{
    check, merge, new_snapshot_id, DiskPosition, DiskRecord, GuestExtent, GuestFile, Manifest,
    ManifestError, MemoryRegion, PathResolution, SharedRegion, SnapshotDir, SnapshotKind,
    SnapshotStats, StateBlob,
};
pub use pages::{
    capture, capture_live, restore, restore_filtered, restore_over, restore_page, set_max_threads,
    CaptureStats, LiveMemory, PageList, PagesError, PagesRef, RestoreStats, PAGE_SIZE,
};
