//! Rebuilding past state.
//!
//! Owns: restoring a base (snapshot or disk image), reapplying a change log to
//! a sequence number, time or mark, verifying every barrier checksum on the
//! way, stepping and what-if transformations.
//!
//! Does not own: the log format (`introspection`) or the store (`snapshot`).
