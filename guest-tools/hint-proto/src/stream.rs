//! [`StreamParser`]: whole messages out of an arbitrarily chunked byte stream
//! (a virtio-console port), in a fixed buffer of `N` bytes.
//!
//! # Resynchronisation rule
//!
//! The parser looks at the bytes it holds from the current position:
//!
//! * a whole valid message is returned and consumed;
//! * a message whose frame is sound (header and CRC check out) but whose kind
//!   is unknown or whose payload is malformed ([`DecodeError::UnknownKind`],
//!   [`DecodeError::Malformed`]) is reported once and skipped whole: its CRC
//!   vouches for its length, and nothing inside it is mistaken for a message;
//! * anything else that is not a message — bytes that are not [`MAGIC`], a bad
//!   version, a payload length above `MAX_PAYLOAD` or above what the buffer can
//!   hold, a CRC mismatch — is reported once ([`DecodeError::BadMagic`],
//!   `UnsupportedVersion`, `TooLarge`, `BadCrc`), and then the parser drops the
//!   first byte of the bad candidate and every byte after it up to the next
//!   `b"VH"` (or a lone `b'V'` at the end of what it holds, which may begin
//!   one). So a message that started inside a corrupt candidate is still found.
//!   Until the next valid message, further non-magic bytes are dropped
//!   silently (counted in [`StreamStats::skipped_bytes`]): a run of garbage is
//!   one error however it is chunked.
//! * an incomplete candidate waits for more bytes. A corrupt length field can
//!   make it wait for up to `MAX_PAYLOAD` bytes; a receiver that sees the
//!   stream go idle with bytes held may call [`StreamParser::resync`] to give
//!   up on the candidate by the rule above.
//!
//! Give it `N >= MAX_MESSAGE` to accept every legal message; a smaller buffer
//! reports larger messages as `TooLarge` and resynchronises.

use crate::{decode::frame, decode::payload, DecodeError, Hint, MAGIC};
use crate::{HEADER_LEN, TRAILER_LEN};

/// Counters of a [`StreamParser`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Valid messages returned.
    pub messages: u64,
    /// Errors returned.
    pub errors: u64,
    /// Bytes dropped while resynchronising or skipping bad messages.
    pub skipped_bytes: u64,
}

/// Splits a byte stream into messages with a buffer of `N` bytes. Use it as
///
/// ```
/// # use hint_proto::{StreamParser, MAX_MESSAGE};
/// let mut parser = StreamParser::<MAX_MESSAGE>::new();
/// # let chunk: &[u8] = b"VH";
/// parser.feed(chunk, |msg| match msg {
///     Ok(hint) => { /* apply the hint */ }
///     Err(e) => { /* log a decode-error event; the parser has resynchronised */ }
/// });
/// ```
///
/// or call [`StreamParser::push`] and [`StreamParser::next_message`] yourself.
pub struct StreamParser<const N: usize> {
    buf: [u8; N],
    start: usize,
    end: usize,
    /// Dropping garbage after an error: `BadMagic` is not reported again.
    resyncing: bool,
    stats: StreamStats,
}

impl<const N: usize> Default for StreamParser<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> StreamParser<N> {
    const BIG_ENOUGH: () = assert!(N >= HEADER_LEN + TRAILER_LEN, "buffer below one message");

    /// An empty parser.
    pub const fn new() -> Self {
        #[allow(clippy::let_unit_value)]
        let () = Self::BIG_ENOUGH;
        StreamParser {
            buf: [0; N],
            start: 0,
            end: 0,
            resyncing: false,
            stats: StreamStats {
                messages: 0,
                errors: 0,
                skipped_bytes: 0,
            },
        }
    }

    /// Copies as much of `data` as fits into the buffer and returns how much
    /// that was. Returns 0 only when the buffer is full; then
    /// [`StreamParser::next_message`] always makes room.
    pub fn push(&mut self, data: &[u8]) -> usize {
        if self.start > 0 && N - self.end < data.len() {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        let n = data.len().min(N - self.end);
        self.buf[self.end..self.end + n].copy_from_slice(&data[..n]);
        self.end += n;
        n
    }

    /// The next message or error from the buffered bytes; `None` when more
    /// bytes are needed.
    pub fn next_message(&mut self) -> Option<Result<Hint<'_>, DecodeError>> {
        loop {
            let held = &self.buf[self.start..self.end];
            if held.is_empty() {
                return None;
            }
            let (err, n) = match frame(held) {
                Ok(f) => match payload(f.kind, f.payload) {
                    Ok(h) => {
                        self.start += f.total;
                        self.resyncing = false;
                        self.stats.messages += 1;
                        return Some(Ok(h));
                    }
                    // Sound frame, bad content: skip it whole.
                    Err(e) => (e, f.total),
                },
                Err(DecodeError::Incomplete { need }) if need <= N => return None,
                Err(DecodeError::Incomplete { need }) => {
                    let len = need - HEADER_LEN - TRAILER_LEN;
                    (DecodeError::TooLarge { len }, resync_skip(held))
                }
                Err(e) => (e, resync_skip(held)),
            };
            skip(&mut self.start, &mut self.end, &mut self.stats, n);
            if self.resyncing && err == DecodeError::BadMagic {
                continue; // the same run of garbage: already reported
            }
            self.resyncing =
                !matches!(err, DecodeError::UnknownKind(_) | DecodeError::Malformed(_));
            self.stats.errors += 1;
            return Some(Err(err));
        }
    }

    /// Pushes all of `data`, calling `f` with every message or error.
    pub fn feed(&mut self, mut data: &[u8], mut f: impl FnMut(Result<Hint<'_>, DecodeError>)) {
        loop {
            let n = self.push(data);
            data = &data[n..];
            while let Some(m) = self.next_message() {
                f(m);
            }
            if data.is_empty() {
                return;
            }
        }
    }

    /// Gives up on the incomplete candidate at the front (e.g. after the
    /// stream went idle): drops bytes by the resynchronisation rule and
    /// returns how many. Returns 0 when nothing is held.
    pub fn resync(&mut self) -> usize {
        let held = &self.buf[self.start..self.end];
        if held.is_empty() {
            return 0;
        }
        let n = resync_skip(held);
        skip(&mut self.start, &mut self.end, &mut self.stats, n);
        self.resyncing = true;
        n
    }

    /// Bytes held, not yet returned as messages or errors.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The counters.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Drops every held byte (counters stay).
    pub fn clear(&mut self) {
        (self.start, self.end) = (0, 0);
        self.resyncing = false;
    }
}

/// Drops `n` held bytes.
fn skip(start: &mut usize, end: &mut usize, stats: &mut StreamStats, n: usize) {
    *start += n;
    stats.skipped_bytes += n as u64;
    if *start == *end {
        (*start, *end) = (0, 0);
    }
}

/// Bytes to drop from a bad candidate: its first byte, then up to the next
/// `MAGIC`, or a lone `MAGIC[0]` as the last byte.
fn resync_skip(held: &[u8]) -> usize {
    let mut i = 1;
    while i < held.len() {
        if held[i] == MAGIC[0] && held.get(i + 1).is_none_or(|&b| b == MAGIC[1]) {
            return i;
        }
        i += 1;
    }
    held.len()
}
