//! The guest -> host hint protocol: a guest tells the host which blocks of its
//! virtio disk hold which application file (SQLite, JSON, key-value), so that
//! the host can decode those files from the raw block writes it records.
//!
//! `#![no_std]`, no allocation: messages are encoded into a caller's buffer
//! and decoded in place ([`Hint`] borrows the wire bytes). The microguest
//! (no_std, panic=abort) and the Linux guest agent send; the host receives
//! with [`StreamParser`] from a virtio-console port. [`Hint::encode`] gives
//! back the exact wire bytes of a decoded message (for logging it verbatim).
//! Feature `std` (off by default) adds `Hint::to_vec`.
//!
//! # Wire format (version 1)
//!
//! All integers are little-endian. One message:
//!
//! ```text
//! offset  size  field
//! 0       2     magic        b"VH"
//! 2       1     version      1
//! 3       1     kind         1 File, 2 Extents, 3 Size, 4 Schema, 5 Forget
//! 4       4     payload_len  u32, at most MAX_PAYLOAD (61440)
//! 8       n     payload      (per kind, below)
//! 8+n     4     crc32        IEEE (crc32fast) of bytes 0 .. 8+n (header + payload)
//! ```
//!
//! Payloads. Variable-length fields take the rest of the payload: their length
//! is derived from `payload_len`, so there is no second length to disagree.
//!
//! ```text
//! File    (1): file_id u32 | main_id u32 | format u8 | role u8 | path: UTF-8, 1..=255 bytes
//! Extents (2): file_id u32 | n x (file_offset u64 | sector u64 | len u64)     (24 bytes each)
//!              n = (payload_len - 4) / 24, the division exact, n <= 1024; n = 0 is allowed
//!              (the file has no blocks). Each extent: len > 0, file_offset + len and
//!              sector * 512 + len do not overflow u64. Sectors are 512-byte units of the
//!              virtio disk. A later Extents message replaces the file's earlier extents.
//! Size    (3): file_id u32 | size u64 | exists u8 (0 or 1; size must be 0 when exists = 0);
//!              payload_len exactly 13
//! Schema  (4): file_id u32 | text: UTF-8, 0..=4096 bytes
//! Forget  (5): file_id u32; payload_len exactly 4
//! ```
//!
//! `format`: 1 sqlite, 2 json, 3 kv, 4 leveldb. `role`: 1 main, 2 journal,
//! 3 wal, 4 part. A journal, WAL or part file names its main file's id in
//! `main_id`; a main file names itself. A LevelDB database is hinted file by
//! file: `CURRENT` as main, every other file of its directory as a part
//! (format and role codes 4 were added without a version bump: old messages
//! decode as before, and an older host rejects a message with code 4 as
//! malformed and skips it). That relation, overlaps between extents, and extents beyond the end
//! of the disk are semantic: the host checks them against its own state; this
//! crate validates each message on its own.
//!
//! # Decoding order
//!
//! [`decode`] checks, in this order: magic (also on a partial header), version,
//! `payload_len <= MAX_PAYLOAD` ([`DecodeError::TooLarge`]), completeness
//! ([`DecodeError::Incomplete`]), CRC, kind ([`DecodeError::UnknownKind`]) and
//! then the payload ([`DecodeError::Malformed`]). So an `UnknownKind` or
//! `Malformed` message is still well framed and can be skipped whole; see
//! [`StreamParser`] for the resynchronisation rule.
#![no_std]
#![forbid(unsafe_code)]
#![warn(missing_docs)]

#[cfg(feature = "std")]
extern crate std;

mod decode;
mod encode;
mod error;
pub mod fuzz_entry;
mod stream;
mod types;

pub use decode::decode;
pub use encode::{encode_extents, encode_file, encode_forget, encode_schema, encode_size};
pub use error::{DecodeError, EncodeError};
pub use stream::{StreamParser, StreamStats};
pub use types::{Extent, ExtentIter, Extents, Format, Role};

/// The two bytes every message starts with.
pub const MAGIC: [u8; 2] = *b"VH";
/// The protocol version this crate speaks.
pub const VERSION: u8 = 1;
/// magic(2) version(1) kind(1) payload_len u32 LE.
pub const HEADER_LEN: usize = 8;
/// crc32 (IEEE, crc32fast) of header + payload, LE.
pub const TRAILER_LEN: usize = 4;
/// Largest payload accepted.
pub const MAX_PAYLOAD: usize = 60 * 1024;
/// Largest whole message (header + payload + trailer): a buffer this big
/// holds any message.
pub const MAX_MESSAGE: usize = HEADER_LEN + MAX_PAYLOAD + TRAILER_LEN;
/// Longest path, in bytes of UTF-8.
pub const MAX_PATH: usize = 255;
/// Most extents in one Extents message.
pub const MAX_EXTENTS: usize = 1024;
/// Longest schema text, in bytes of UTF-8.
pub const MAX_SCHEMA: usize = 4096;
/// Size of a disk sector, the unit of [`Extent::sector`].
pub const SECTOR_SIZE: u64 = 512;

/// Message kinds (byte 3 of the header).
pub mod kind {
    /// [`crate::Hint::File`].
    pub const FILE: u8 = 1;
    /// [`crate::Hint::Extents`].
    pub const EXTENTS: u8 = 2;
    /// [`crate::Hint::Size`].
    pub const SIZE: u8 = 3;
    /// [`crate::Hint::Schema`].
    pub const SCHEMA: u8 = 4;
    /// [`crate::Hint::Forget`].
    pub const FORGET: u8 = 5;
}

/// One decoded message. Borrows the wire bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hint<'a> {
    /// A file: its path in the guest, format and role. Journal/WAL files name
    /// their main file's id in `main_id` (a main file names itself).
    File {
        /// Id of this file in later messages.
        file_id: u32,
        /// Id of the main file (this file's own id for a main file).
        main_id: u32,
        /// Application format.
        format: Format,
        /// Role within the application.
        role: Role,
        /// Path in the guest (1..=MAX_PATH bytes).
        path: &'a str,
    },
    /// Where the file's bytes are on disk (replaces earlier extents of this
    /// file). Borrowed wire bytes; iterate with `.iter()`.
    Extents {
        /// The file.
        file_id: u32,
        /// Its extents.
        extents: Extents<'a>,
    },
    /// The file's logical size and whether it exists (journals come and go).
    Size {
        /// The file.
        file_id: u32,
        /// Logical size in bytes (0 when it does not exist).
        size: u64,
        /// Whether the file exists.
        exists: bool,
    },
    /// Schema hints: for SQLite `table=col1,col2;table2=col` (key columns), for
    /// JSON `/path/to/records:keyfield`, for KV ignored.
    Schema {
        /// The file.
        file_id: u32,
        /// The schema text (0..=MAX_SCHEMA bytes).
        text: &'a str,
    },
    /// The file is no longer tracked.
    Forget {
        /// The file.
        file_id: u32,
    },
}

impl Hint<'_> {
    /// The file this message is about.
    pub fn file_id(&self) -> u32 {
        match *self {
            Hint::File { file_id, .. }
            | Hint::Extents { file_id, .. }
            | Hint::Size { file_id, .. }
            | Hint::Schema { file_id, .. }
            | Hint::Forget { file_id } => file_id,
        }
    }

    /// The wire kind byte (see [`kind`]).
    pub fn kind(&self) -> u8 {
        match self {
            Hint::File { .. } => kind::FILE,
            Hint::Extents { .. } => kind::EXTENTS,
            Hint::Size { .. } => kind::SIZE,
            Hint::Schema { .. } => kind::SCHEMA,
            Hint::Forget { .. } => kind::FORGET,
        }
    }

    /// Encodes this message into `out`; returns the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, EncodeError> {
        match *self {
            Hint::File {
                file_id,
                main_id,
                format,
                role,
                path,
            } => encode_file(file_id, main_id, format, role, path, out),
            Hint::Extents { file_id, extents } => encode::encode_extents_raw(file_id, extents, out),
            Hint::Size {
                file_id,
                size,
                exists,
            } => encode_size(file_id, size, exists, out),
            Hint::Schema { file_id, text } => encode_schema(file_id, text, out),
            Hint::Forget { file_id } => encode_forget(file_id, out),
        }
    }

    /// Encodes this message into a new vector.
    #[cfg(feature = "std")]
    pub fn to_vec(&self) -> Result<std::vec::Vec<u8>, EncodeError> {
        let mut v = std::vec![0u8; MAX_MESSAGE];
        let n = self.encode(&mut v)?;
        v.truncate(n);
        Ok(v)
    }
}
