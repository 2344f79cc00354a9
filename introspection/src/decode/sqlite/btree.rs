//! B-tree pages, cells and overflow chains (fileformat2 §1.6).
//!
//! Every page number, cell pointer, length and chain is bounds-checked. A
//! [`Pager`] hands out each page at most once per decode (a visited bitmap
//! over all b-tree and overflow pages), so a page cycle, a page shared by two
//! trees or by a tree and an overflow chain is an error, and the total work
//! of a decode is bounded by the number of pages. Payloads that fit on their
//! page are borrowed, only overflowing ones are assembled.

use std::borrow::Cow;

use super::header::{be16, be32, Header};
use crate::decode::{bad, DecodeError};

/// Deepest b-tree accepted (real trees are a handful of levels deep).
pub const MAX_DEPTH: usize = 40;

/// Read a varint (1..=9 bytes, big-endian, 7 bits per byte, the 9th byte
/// contributing all 8 bits) at `at`: the value and the bytes it took.
#[inline]
pub fn varint(b: &[u8], at: usize) -> Option<(u64, usize)> {
    let first = *b.get(at)?;
    if first < 0x80 {
        return Some((first as u64, 1));
    }
    let mut v: u64 = 0;
    for i in 0..8 {
        let c = *b.get(at + i)?;
        v = (v << 7) | (c & 0x7f) as u64;
        if c < 0x80 {
            return Some((v, i + 1));
        }
    }
    let c = *b.get(at + 8)?;
    Some(((v << 8) | c as u64, 9))
}

/// Access to the pages of one database image.
pub struct Pager<'a> {
    data: &'a [u8],
    page_size: usize,
    usable: usize,
    /// Pages that may be referenced: the database size, capped by the input.
    limit: u32,
    seen: Vec<u64>,
}

impl<'a> Pager<'a> {
    pub fn new(data: &'a [u8], h: &Header) -> Pager<'a> {
        let in_input = (data.len() / h.page_size as usize) as u64;
        let limit = (h.page_count as u64).min(in_input) as u32;
        Pager {
            data,
            page_size: h.page_size as usize,
            usable: h.usable_size as usize,
            limit,
            seen: vec![0; (limit as usize).div_ceil(64) + 1],
        }
    }

    pub fn usable(&self) -> usize {
        self.usable
    }

    /// The usable part of page `pgno` (1-based), without claiming it.
    pub fn page(&self, pgno: u32) -> Result<&'a [u8], DecodeError> {
        if pgno == 0 || pgno > self.limit {
            return bad(format!(
                "sqlite: page {pgno} out of range (database has {} pages)",
                self.limit
            ));
        }
        let start = (pgno as usize - 1) * self.page_size;
        Ok(&self.data[start..start + self.usable])
    }

    /// The page, marked as used; an error when it was used before.
    pub fn claim(&mut self, pgno: u32) -> Result<&'a [u8], DecodeError> {
        let p = self.page(pgno)?;
        let (w, bit) = (pgno as usize / 64, 1u64 << (pgno % 64));
        if self.seen[w] & bit != 0 {
            return bad(format!("sqlite: page {pgno} referenced twice (cycle?)"));
        }
        self.seen[w] |= bit;
        Ok(p)
    }

    /// Largest payload that could be real: nothing is larger than the input.
    fn max_payload(&self) -> u64 {
        self.data.len() as u64
    }
}

/// The four b-tree page types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PageKind {
    IndexInterior = 2,
    TableInterior = 5,
    IndexLeaf = 10,
    TableLeaf = 13,
}

impl PageKind {
    fn from_byte(b: u8) -> Option<PageKind> {
        Some(match b {
            2 => PageKind::IndexInterior,
            5 => PageKind::TableInterior,
            10 => PageKind::IndexLeaf,
            13 => PageKind::TableLeaf,
            _ => return None,
        })
    }
    pub fn is_leaf(self) -> bool {
        matches!(self, PageKind::IndexLeaf | PageKind::TableLeaf)
    }
    pub fn is_table(self) -> bool {
        matches!(self, PageKind::TableInterior | PageKind::TableLeaf)
    }
}

/// A parsed b-tree page header.
#[derive(Clone, Copy, Debug)]
pub struct PageHeader {
    pub kind: PageKind,
    pub cells: usize,
    /// Offset of the cell pointer array.
    pub ptrs: usize,
    /// Right-most child (interior pages).
    pub right: u32,
}

/// Parse the b-tree header of page `pgno` (at offset 100 on page 1).
pub fn page_header(page: &[u8], pgno: u32) -> Result<PageHeader, DecodeError> {
    let h = if pgno == 1 { 100 } else { 0 };
    let kind = page
        .get(h)
        .and_then(|&b| PageKind::from_byte(b))
        .ok_or_else(|| DecodeError::new(format!("sqlite: page {pgno} is not a b-tree page")))?;
    let cells = be16(page, h + 3).unwrap_or(0) as usize;
    let (ptrs, right) = if kind.is_leaf() {
        (h + 8, 0)
    } else {
        (h + 12, be32(page, h + 8).unwrap_or(0))
    };
    if ptrs + 2 * cells > page.len() {
        return bad(format!("sqlite: page {pgno}: {cells} cells do not fit"));
    }
    Ok(PageHeader {
        kind,
        cells,
        ptrs,
        right,
    })
}

impl PageHeader {
    /// Offset of cell `i`, checked to lie past the pointer array.
    #[inline]
    pub fn cell_offset(&self, page: &[u8], i: usize, pgno: u32) -> Result<usize, DecodeError> {
        let off = be16(page, self.ptrs + 2 * i).unwrap_or(0) as usize;
        if off < self.ptrs + 2 * self.cells || off >= page.len() {
            return bad(format!(
                "sqlite: page {pgno}: cell pointer {off} out of bounds"
            ));
        }
        Ok(off)
    }
}

/// Bytes of a payload of `p` bytes kept on a page of usable size `u`
/// (the X/M/K rules of §1.6).
pub fn local_payload(p: u64, u: usize, table_leaf: bool) -> usize {
    let u = u as u64;
    let x = if table_leaf {
        u - 35
    } else {
        ((u - 12) * 64 / 255) - 23
    };
    if p <= x {
        return p as usize;
    }
    let m = ((u - 12) * 32 / 255) - 23;
    let k = m + ((p - m) % (u - 4));
    if k <= x {
        k as usize
    } else {
        m as usize
    }
}

/// The payload of a cell that starts at `at` (just past the payload-size
/// varint, the rowid varint and any child pointer): borrowed when it fits,
/// else assembled from the overflow chain.
fn payload<'a>(
    pager: &mut Pager<'a>,
    page: &'a [u8],
    at: usize,
    p: u64,
    table_leaf: bool,
    pgno: u32,
) -> Result<Cow<'a, [u8]>, DecodeError> {
    if p > pager.max_payload() {
        return bad(format!("sqlite: page {pgno}: payload of {p} bytes"));
    }
    let usable = pager.usable();
    let local = local_payload(p, usable, table_leaf);
    let Some(local_bytes) = page.get(at..at + local) else {
        return bad(format!("sqlite: page {pgno}: cell payload out of bounds"));
    };
    if local as u64 == p {
        return Ok(Cow::Borrowed(local_bytes));
    }
    let Some(mut next) = be32(page, at + local) else {
        return bad(format!(
            "sqlite: page {pgno}: overflow pointer out of bounds"
        ));
    };
    let mut out = Vec::with_capacity(p as usize);
    out.extend_from_slice(local_bytes);
    let mut left = p as usize - local;
    while left > 0 {
        if next == 0 {
            return bad(format!(
                "sqlite: overflow chain from page {pgno} ends early"
            ));
        }
        let ov = pager.claim(next)?;
        let take = left.min(usable - 4);
        out.extend_from_slice(&ov[4..4 + take]);
        left -= take;
        next = be32(ov, 0).unwrap_or(0);
    }
    Ok(Cow::Owned(out))
}

/// One entry of a b-tree: table cells carry a rowid, index cells a key
/// record (which for WITHOUT ROWID tables is the whole row).
pub struct Entry<'a> {
    pub rowid: i64,
    pub payload: Cow<'a, [u8]>,
}

/// Visit every entry of the b-tree rooted at `root` in key order; `table`
/// says whether it must be a table (intkey) or an index b-tree. Interior
/// index cells carry entries too and are visited between their subtrees.
pub fn walk<'a>(
    pager: &mut Pager<'a>,
    root: u32,
    table: bool,
    f: &mut dyn FnMut(Entry<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    visit(pager, root, table, 0, f)
}

fn visit<'a>(
    pager: &mut Pager<'a>,
    pgno: u32,
    table: bool,
    depth: usize,
    f: &mut dyn FnMut(Entry<'a>) -> Result<(), DecodeError>,
) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return bad(format!(
            "sqlite: b-tree deeper than {MAX_DEPTH} at page {pgno}"
        ));
    }
    let page = pager.claim(pgno)?;
    let h = page_header(page, pgno)?;
    if h.kind.is_table() != table {
        return bad(format!("sqlite: page {pgno} has the wrong b-tree type"));
    }
    let cut = |what: &str| DecodeError::new(format!("sqlite: page {pgno}: truncated {what}"));
    for i in 0..h.cells {
        let off = h.cell_offset(page, i, pgno)?;
        match h.kind {
            PageKind::TableLeaf => {
                let (p, n1) = varint(page, off).ok_or_else(|| cut("payload size"))?;
                let (rowid, n2) = varint(page, off + n1).ok_or_else(|| cut("rowid"))?;
                let payload = payload(pager, page, off + n1 + n2, p, true, pgno)?;
                f(Entry {
                    rowid: rowid as i64,
                    payload,
                })?;
            }
            PageKind::IndexLeaf => {
                let (p, n1) = varint(page, off).ok_or_else(|| cut("payload size"))?;
                let payload = payload(pager, page, off + n1, p, false, pgno)?;
                f(Entry { rowid: 0, payload })?;
            }
            PageKind::TableInterior => {
                let child = be32(page, off).ok_or_else(|| cut("child pointer"))?;
                visit(pager, child, table, depth + 1, f)?;
            }
            PageKind::IndexInterior => {
                let child = be32(page, off).ok_or_else(|| cut("child pointer"))?;
                visit(pager, child, table, depth + 1, f)?;
                let (p, n1) = varint(page, off + 4).ok_or_else(|| cut("payload size"))?;
                let payload = payload(pager, page, off + 4 + n1, p, false, pgno)?;
                f(Entry { rowid: 0, payload })?;
            }
        }
    }
    if !h.kind.is_leaf() {
        visit(pager, h.right, table, depth + 1, f)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints() {
        assert_eq!(varint(&[0x7f], 0), Some((0x7f, 1)));
        assert_eq!(varint(&[0x81, 0x00], 0), Some((0x80, 2)));
        assert_eq!(varint(&[0xff; 9], 0), Some((u64::MAX, 9)));
        assert_eq!(varint(&[0x81], 0), None);
        assert_eq!(varint(&[], 0), None);
    }

    #[test]
    fn local_sizes() {
        // U = 1024: X(table leaf) = 989; M = 103.
        assert_eq!(local_payload(989, 1024, true), 989);
        let p = 5000u64;
        let k = 103 + ((p - 103) % 1020);
        assert_eq!(local_payload(p, 1024, true), k as usize);
        assert!(local_payload(100_000, 4096, false) <= ((4096 - 12) * 64 / 255) - 23);
    }
}
