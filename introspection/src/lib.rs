//! What the host learns about the guest.
//!
//! Owns: the block tap (every completed guest write becomes a change-log
//! record), the change-log format, guest hints, the semantic decoders
//! (sqlite, json, kv) and audit queries over the semantic change log.
//!
//! Does not own: the virtio devices that produce writes (`vmm`), the content
//! store that keeps block data (`snapshot`), or replay (`replay`).
//!
//! The modules:
//! - [`log`]: the change log (segmented, framed, CRC-chained, zstd per
//!   frame, sparse index): [`LogWriter`], [`LogReader`], [`verify`], and the
//!   on-disk format documented in the module.
//! - [`disk_state`]: the per-disk block-hash table and its O(1)-updatable
//!   state checksum ([`DiskState`]) recorded at every barrier.
//! - [`tap`]: the block tap: completed guest writes and flushes become
//!   log records, their blocks go to the content store ([`BlockTap`]).
//! - [`tap_recovery`]: at a tap's open, cutting back records a failed or
//!   crashed run left after the log's sync point that name missing blocks.
//! - [`checkpoint`]: the disk state saved when a log closes, so that the
//!   next open need not scan the whole log.
//! - [`recording`]: a record directory (store + one log per VM) and its
//!   full verification ([`recording::verify`]).
//! - [`decode`]: semantic decoders (sqlite incl. WAL, json, kv): two
//!   versions of a file in, row/key-level [`Change`]s out.
//! - [`semantic`]: the semantic change event ([`SemanticChange`]) and the
//!   decode-error event ([`DecodeErrorEvent`]).
//! - [`lift`]: the guest's file table from its hints, and lifting hinted
//!   files into semantic changes at barriers.
//! - [`point`]: a point in a VM's history (`seq=N`, `time=T`, `mark=NAME`).
//! - [`query`]: audit queries over the semantic change log (changes,
//!   history, net change between two points), damage-tolerant.

pub mod checkpoint;
pub mod decode;
pub mod disk_state;
pub mod lift;
pub mod log;
pub mod point;
pub mod query;
pub mod recording;
pub mod semantic;
pub mod tap;
pub mod tap_recovery;

pub use disk_state::{DiskState, DiskStateError, ZERO_BLOCK_HASH};
pub use log::{
    verify, verify_with, BarrierKind, LogError, LogOptions, LogReader, LogWriter, OpenReport,
    Record, RecordKind, VerifyProblem, VerifyReport,
};
pub use semantic::{Change, DecodeErrorEvent, Format, Op, SemanticChange, Source};
pub use tap::{BlockTap, TapError, TapOpenReport, TapStats};
