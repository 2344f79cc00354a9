//! Where a row's encoded values ([`super::row`]'s cell encoding) live, and
//! how the state holds a row.
//!
//! The fold and the SQLite output read rows in an order unrelated to where
//! they lie (by key, while they lie in stream order), so each row they
//! read is a cache miss, and on a large stream a TLB miss too. A row whose
//! values are on the heap costs two of them (the row, then its values);
//! [`Data`] keeps short values in the row itself, so reading one costs
//! one. Most application rows are a few numbers and short strings.
use std::fmt;
use std::ops::Deref;

use super::row::Row;

/// Encoded values up to this many bytes are kept in the row: with its
/// name list and this, a [`Row`] is 128 bytes, two cache lines (it is
/// aligned to them), and a row with up to 46 bytes of values uses one.
pub const INLINE: usize = 110;

/// A row's encoded values.
#[derive(Clone)]
pub enum Data {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl From<&[u8]> for Data {
    fn from(b: &[u8]) -> Data {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Data::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Data::Heap(b.into())
        }
    }
}

impl Deref for Data {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            Data::Inline { len, bytes } => &bytes[..usize::from(*len)],
            Data::Heap(b) => b,
        }
    }
}

impl PartialEq for Data {
    fn eq(&self, other: &Data) -> bool {
        **self == **other
    }
}

impl fmt::Debug for Data {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A row of the state: borrowed from the change that set it (folding
/// copies no row), or owned when the fold made it (a reshaped row, a
/// decoded file's). A pointer either way, so that the state's table stays
/// small (its slots are read in random order too).
#[derive(Clone, Debug)]
pub enum Held<'a> {
    Borrowed(&'a Row),
    Owned(Box<Row>),
}

impl Held<'_> {
    /// The row, to change (copied first when borrowed).
    pub fn to_mut(&mut self) -> &mut Row {
        if let Held::Borrowed(r) = *self {
            *self = Held::Owned(Box::new(r.clone()));
        }
        match self {
            Held::Owned(r) => r,
            Held::Borrowed(_) => unreachable!("made owned above"),
        }
    }
}

impl Deref for Held<'_> {
    type Target = Row;
    fn deref(&self) -> &Row {
        match self {
            Held::Borrowed(r) => r,
            Held::Owned(r) => r,
        }
    }
}

impl PartialEq for Held<'_> {
    fn eq(&self, other: &Held<'_>) -> bool {
        **self == **other
    }
}

/// A hint to the CPU to start loading the cache lines of `row` (its
/// values too when they are in the row).
#[inline(always)]
pub fn prefetch_row(row: &Row) {
    const _: () = assert!(size_of::<Row>() == 128 && align_of::<Row>() == 64);
    let p = (row as *const Row).cast::<u8>();
    prefetch(p);
    prefetch(p.wrapping_add(64));
}

/// A hint to the CPU to start loading `p`'s cache line.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it reads nothing and cannot fault,
    // whatever the address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
