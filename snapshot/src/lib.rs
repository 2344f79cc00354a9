//! VM state at rest.
//!
//! Owns: the content-addressed store (BLAKE3 keys, zstd values, the zero page
//! never stored, refcount GC) and VM state capture/restore, full and
//! incremental.
//!
//! Does not own: running a VM (`vmm`) or reapplying change logs (`replay`).
