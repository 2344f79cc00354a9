//! Rebuilding past state.
//!
//! Owns: restoring a base (snapshot or disk image), reapplying a change log to
//! a sequence number, time or mark, verifying every barrier checksum on the
//! way, stepping and what-if transformations.
//!
//! Does not own: the log format (`introspection`) or the store (`snapshot`).
//!
//! What exists so far: [`disk::apply`], which writes a VM's logged blocks
//! onto a disk image up to a sequence number, verifying every barrier.

pub mod disk;

pub use disk::{apply, ApplyReport, ReplayError};
