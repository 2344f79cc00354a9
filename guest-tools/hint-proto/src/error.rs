//! Decoder and encoder errors.

use core::fmt;

use crate::{MAX_PAYLOAD, VERSION};

/// Why [`decode`](crate::decode) rejected its input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DecodeError {
    /// More bytes are needed. `need` is the whole message's length once the
    /// header has been read, and the smallest possible message length
    /// (`HEADER_LEN + TRAILER_LEN`) before that.
    Incomplete {
        /// Total bytes needed from the start of the buffer.
        need: usize,
    },
    /// The buffer does not start with [`MAGIC`](crate::MAGIC).
    BadMagic,
    /// A version other than [`VERSION`].
    UnsupportedVersion(u8),
    /// A kind byte this version does not know (the message is well framed).
    UnknownKind(u8),
    /// `payload_len` is above [`MAX_PAYLOAD`] (or above a [`StreamParser`](crate::StreamParser)'s buffer).
    TooLarge {
        /// The payload length the header claims.
        len: usize,
    },
    /// The CRC does not match header + payload.
    BadCrc,
    /// The payload breaks a rule of its kind (the message is well framed).
    Malformed(&'static str),
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Incomplete { need } => write!(f, "incomplete hint message: {need} bytes needed"),
            Self::BadMagic => f.write_str("not a hint message: bad magic (expected \"VH\")"),
            Self::UnsupportedVersion(v) => {
                write!(
                    f,
                    "unsupported hint protocol version {v} (this side speaks {VERSION})"
                )
            }
            Self::UnknownKind(k) => write!(f, "unknown hint message kind {k}"),
            Self::TooLarge { len } => {
                write!(
                    f,
                    "hint payload of {len} bytes is too large (limit {MAX_PAYLOAD})"
                )
            }
            Self::BadCrc => f.write_str("hint message CRC mismatch"),
            Self::Malformed(why) => write!(f, "malformed hint message: {why}"),
        }
    }
}

impl core::error::Error for DecodeError {}

/// Why an `encode_*` function refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EncodeError {
    /// `out` is too small; `need` bytes are needed.
    BufferTooSmall {
        /// Bytes the message needs.
        need: usize,
    },
    /// A field is over its limit (path, schema, extents).
    TooLong(&'static str),
    /// A field value the decoder would reject (empty path, zero-length or
    /// overflowing extent, size > 0 of a file that does not exist).
    Invalid(&'static str),
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BufferTooSmall { need } => {
                write!(f, "hint encode buffer too small: {need} bytes needed")
            }
            Self::TooLong(what) => write!(f, "hint field too long: {what}"),
            Self::Invalid(what) => write!(f, "invalid hint field: {what}"),
        }
    }
}

impl core::error::Error for EncodeError {}
