//! VM state at rest.
//!
//! Owns: the content-addressed store ([`store`]: BLAKE3 keys, zstd values,
//! the zero page never stored, packs and an index log shared by many VMM
//! processes; refcount GC to come) and VM state capture/restore, full and
//! incremental.
//!
//! Does not own: running a VM (`vmm`) or reapplying change logs (`replay`).

pub mod store;

pub use store::{ObjectId, OpenReport, Store, StoreError, StoreOptions, StoreStats};
