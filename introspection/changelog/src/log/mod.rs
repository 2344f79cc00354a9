//! The change log: one per VM, in its own directory (for example
//! `RECORD_DIR/logs/<vm-id>/`), an append-only sequence of records with a
//! strictly increasing `seq` (starting at 1; gap-free except for declared
//! gaps after a crash, see below) and a host timestamp.
//!
//! Write with [`LogWriter`], read with [`LogReader`], check with [`verify`].
//!
//! # Durability contract
//!
//! [`LogWriter::append`] only buffers a record (it gets its `seq` at once).
//! [`LogWriter::commit`] writes the buffered records as one frame with one
//! `write` (visible to readers, not yet durable). [`LogWriter::sync`] commits
//! and then `fdatasync`s the segment (and `fsync`s the directory when a
//! segment file was created since the last sync), then records that point
//! as the log's *sync point* in `SEAL`. **A record is durable once a
//! `sync()` that started after its `append` has returned `Ok`.** After a
//! crash, everything up to the last completed `sync()` is there; later frames
//! may be there, whole, or be a torn tail that [`LogWriter::open`] cuts off
//! (and reports in [`OpenReport`]). A failed `fsync` poisons the writer: it
//! refuses further work until the log is reopened (the page cache can no
//! longer be trusted to hold what was written). Dropping a writer writes
//! nothing it had only buffered (a caller that failed half-way must not get
//! records committed for it); [`LogWriter::close`] syncs and *seals* the log.
//!
//! # Seal, sync point and seq gaps
//!
//! A torn tail can only follow a crash, and only after the last sync point.
//! So [`LogWriter::open`] cuts a bad or incomplete frame only when the log is
//! not sealed and the frame lies after its sync point (and nothing valid
//! follows it). Anything bad in a sealed log, or before the sync point of an
//! unsealed one (records that were fsynced and acknowledged), is refused as
//! [`LogError::Corrupt`] naming the segment, offset and seq; so is a
//! segment shorter than its synced length, and any bytes after a sealed end.
//! [`verify`] reports such a problem with `torn_tail: false`.
//!
//! Seqs are never used twice. The seal file keeps a seq limit: no seq at or
//! above it was ever handed out. An open sets it 4096 above the next seq,
//! and a commit that would cross it first raises it by 4096, durably; so a
//! record reaches the file only below a durable limit, and records a writer
//! only buffered before dying are covered by the reserve. After a crash (an unsealed log), the next record
//! starts at the limit (or above a cut torn frame's seqs, whichever is
//! higher); the seqs between are reported in [`OpenReport::skipped_seqs`].
//! The first frame after such a gap has frame flag bit 1 (`SEQ_GAP`) set:
//! readers accept a frame whose first seq is above the expected one only
//! with that flag, and the CRC chain still links it to the record before,
//! so a gap can never hide a lost frame. A segment whose header starts
//! above the expected seq must begin with such a frame.
//! [`LogWriter::cut_to_sync_point`] (and [`LogWriter::abandon`], for a
//! caller that failed) removes everything after the sync point, keeping its
//! seqs used.
//!
//! `SEAL` (128 bytes) is two 64-byte slots; the valid slot with the higher
//! generation is current, and each update writes the other slot and
//! `fdatasync`s it, so a torn update leaves the previous state. The file is
//! created whole (temp file, rename); a seal file without a valid slot is
//! damage. A slot, little-endian:
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0   | 8    | magic `b"VMMCSEAL"` |
//! | 8   | 8    | generation |
//! | 16  | 4    | flags: bit 0 = sealed (closed cleanly, ends at the sync point) |
//! | 20  | 4    | segment number of the sync point (0: no segment yet) |
//! | 24  | 8    | durable length of that segment |
//! | 32  | 8    | seq after the last record before the sync point |
//! | 40  | 8    | seq limit: no seq at or above it was ever handed out |
//! | 48  | 4    | reserved (0) |
//! | 52  | 4    | CRC32 of bytes 0..52 |
//!
//! A log without `SEAL` (written before seals existed) opens as before: a
//! torn-looking tail is cut, seqs continue after the last record kept; the
//! open then creates its seal file. Seals came within format version 1:
//! older readers refuse the one new thing in segments, the `SEQ_GAP` flag,
//! by name ("unknown frame flags"), and ignore `SEAL`.
//!
//! # Time and HLC stamps
//!
//! Every record carries a hybrid logical clock stamp ([`crate::hlc`]):
//! `ts_ns` (host `CLOCK_REALTIME`, the physical part), a logical counter
//! and the node id of the host that wrote it. Stamps strictly increase
//! along what one writer appends, and `ts_ns` never goes backwards within
//! a log: [`LogWriter::append`] holds a clock that stepped back at the
//! previous record's time and counts the logical part instead, so time ->
//! seq lookups (`time=` points) are well defined on `ts_ns` alone. A
//! writer resumes from the log's last stamp when it opens a log. Records
//! of several logs merge by stamp (then VM, then seq); see `crate::hlc`
//! for the clock-skew tolerance.
//!
//! # Format versions
//!
//! Version 2 (written) adds the stamp's logical counter and node id to
//! each record's payload, after `ts_ns`; nothing else changed. Version 1
//! segments (payload `ts_ns | body`) are still read: their records get
//! the legacy stamp (`ts_ns`, logical 0, node 0 = legacy/unknown). A
//! writer continuing a version-1 log starts a new, version-2 segment for
//! its first frame (a segment's frames all have its header's version), so
//! one log may hold both; index, seal, checkpoint and cut work on frames
//! and are the same in both. Readers before version 2 refuse a version-2
//! segment by its header ("segment format version 2").
//!
//! # On-disk format, version 2 (all integers little-endian)
//!
//! Directory: `NNNNNNNN.seg` segments (8 decimal digits, numbered from 1),
//! `NNNNNNNN.idx` sparse index beside each, `SEAL` (the sync point, see
//! above) and `LOCK` (held with `flock` by the one writer). A new segment is started when the next frame would push
//! the current one past [`LogOptions::segment_max_bytes`]; frames never span
//! segments.
//!
//! Segment header, 96 bytes:
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0   | 8    | magic `b"VMMCLOG\0"` |
//! | 8   | 2    | format version (2; 1 is still read) |
//! | 10  | 2    | vm id length (<= 64) |
//! | 12  | 4    | chain CRC before this segment (crc of the record before `first_seq`, 0 at the start) |
//! | 16  | 8    | first seq of this segment |
//! | 24  | 64   | vm id (UTF-8, zero padded) |
//! | 88  | 4    | reserved (0) |
//! | 92  | 4    | CRC32 of bytes 0..92 |
//!
//! Frames follow back to back. A frame is one batch of records, written with
//! one `write`. Frame header, 56 bytes:
//!
//! | off | size | field |
//! |----:|-----:|-------|
//! | 0   | 4    | magic `b"VLFR"` |
//! | 4   | 1    | flags: bit 0 = stored bytes are zstd-compressed; bit 1 = `SEQ_GAP` (first seq follows a declared gap) |
//! | 5   | 3    | reserved (0) |
//! | 8   | 8    | first seq |
//! | 16  | 4    | record count (>= 1) |
//! | 20  | 4    | stored length (bytes after this header) |
//! | 24  | 4    | raw length (after decompression) |
//! | 28  | 4    | chain CRC before the first record (its "previous record's crc") |
//! | 32  | 8    | ts_ns of the first record |
//! | 40  | 8    | ts_ns of the last record |
//! | 48  | 4    | CRC32 of the stored bytes |
//! | 52  | 4    | CRC32 of header bytes 0..52 |
//!
//! A frame is compressed (zstd) only when that makes it smaller: block
//! hashes do not compress, marks and names do. The raw bytes are records,
//! back to back; record `i` has seq `first_seq + i`:
//!
//! ```text
//! len u32 | crc u32 | type u8 | payload[len]
//!   version 2: payload = ts_ns u64 | logical u32 | node u64 | body
//!   version 1: payload = ts_ns u64 | body
//! crc = CRC32(previous record's crc as u32 LE || type || payload)
//! ```
//!
//! `ts_ns | logical | node` is the record's HLC stamp; within a frame the
//! stamps never decrease, and the frame header's times are the first and
//! last record's `ts_ns`. A record of a type this build does not know is
//! reported as such (by its type byte) even when its payload is shorter
//! than a stamp, since a newer version may lay it out otherwise.
//!
//! The chain runs across frames and segments (the frame and segment headers
//! carry its value at their start, so a reader that seeks can verify from
//! there). Record bodies by type code ([`record_type`]):
//!
//! | code | kind | body |
//! |-----:|------|------|
//! | 1 | `BlockWrite` | sector u64, len u32, then len/4096 BLAKE3 hashes of 32 bytes |
//! | 2 | `Barrier` | kind u8 (0 flush, 1 FUA), disk checksum 32 bytes |
//! | 3 | `Mark` | name, UTF-8, 1..=256 bytes |
//! | 4 | `SnapshotTaken` | snapshot id, UTF-8, 1..=256 bytes |
//! | 5 | `Hint` | one hint-proto message, 1..=64 KiB |
//! | 6 | `SemanticChange` | JSON text, 1 B..=4 MiB (`introspection::lift::SemanticEvent`; a change's optional `provenance` member is `introspection::provenance`) |
//! | 7 | `Metrics` | JSON text ([`crate::metrics::StepMetrics`]), 1 B..=64 KiB, right after the barrier it measures |
//!
//! A build reads the codes it knows and refuses the others with
//! [`LogError::UnknownRecordType`] naming the seq and the code ("read it
//! with a newer build"): code 7 came without a format version bump, so a
//! build from before it refuses a log recorded with metrics that way.
//!
//! Sparse index (`.idx`, a cache, never trusted over the segment): 48-byte
//! header (magic `b"VMMCIDX\0"`, version u16, reserved u16, entry count u32,
//! segment first seq u64, covered segment length u64, next seq after the
//! covered frames u64, last ts_ns u64), entries of (frame first seq u64,
//! frame offset u64, frame first ts_ns u64) for about one frame per
//! [`LogOptions::index_interval_bytes`], then a CRC32 of everything before.
//! A missing, damaged or stale index is rebuilt by scanning frame headers;
//! an entry is used only after the frame at its offset is seen to start at
//! its seq.

mod cursor;
mod cut;
mod error;
mod frame;
mod index;
mod open;
mod reader;
mod record;
mod seal;
mod segment;
mod verify;
pub mod wire;
mod writer;

pub use cut::CutReport;
pub use error::LogError;
pub use open::{lock_dir, OpenReport};
pub use reader::{FrameInfo, LogReader, RecordIter, SegmentSpan};
pub use record::{
    record_type, BarrierKind, Record, RecordKind, BLOCK_SIZE, MAX_HINT_LEN, MAX_METRICS_LEN,
    MAX_NAME_LEN, MAX_SEMANTIC_LEN, MAX_WRITE_LEN, SECTOR_SIZE,
};

pub use segment::{FORMAT_VERSION, MAX_VM_ID_LEN, OLDEST_FORMAT_VERSION};
pub use verify::{verify, verify_with, VerifyProblem, VerifyReport};
pub use writer::{LogOptions, LogWriter};

pub(crate) fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

pub(crate) fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

pub(crate) fn get_u64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
