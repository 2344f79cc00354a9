//! The change log and the record directory that holds it.
//!
//! Owns: the per-VM change log ([`log`]: segmented, framed, CRC-chained,
//! zstd per frame, sparse index, sealed; its on-disk format is documented
//! in the module), the disk state a log describes ([`disk_state`]: the
//! per-disk block-hash table and its O(1)-updatable checksum recorded at
//! every barrier), the checkpoint of that state saved when a log closes
//! ([`checkpoint`]) with what the recorder saw of the image then
//! ([`image_stamp`]: so the next open need not hash the image), temporal checkpoints of it that replays start from
//! ([`checkpoints`]), the hybrid logical clock every record is stamped
//! with ([`hlc`]: logs of several hosts merge in one order), points in a
//! VM's history ([`point`]: `seq=`, `time=`, `mark=`), and the one type
//! that knows a record directory's layout
//! ([`recording::RecordDir`]: `store/`, `logs/<vm>/`, `snapshots/`) with
//! the full check of a log against the store ([`recording::verify`]),
//! retention of old history at checkpoint granularity ([`retain`]), and
//! the traits through which logs are read and written wherever they live
//! ([`backend`]: [`LogBackend`], [`LogAppend`]; the record directory is
//! the local implementation).
//!
//! Does not own: the content store the blocks live in (`store`), what the
//! guest's files mean (`introspection`), VM snapshots (`snapshot`) or
//! rebuilding a disk (`replay`).

pub mod backend;
pub mod checkpoint;
pub mod checkpoints;
pub mod disk_state;
pub mod hlc;
pub mod image_stamp;
pub mod log;
pub mod metrics;
pub mod point;
pub mod recording;
pub mod retain;

pub use backend::{verify_through, BackendVerifyReport, LogAppend, LogBackend, Records};
pub use checkpoints::{Checkpoint, CheckpointError};
pub use disk_state::{DiskState, DiskStateError, ZERO_BLOCK_HASH};
pub use hlc::{Hlc, HlcClock, NodeId};
pub use log::{
    verify, verify_with, BarrierKind, LogError, LogOptions, LogReader, LogWriter, OpenReport,
    Record, RecordKind, VerifyProblem, VerifyReport,
};
pub use recording::{RecordDir, RecordError};
