//! The index snapshot: `index.log` replayed up to an offset, saved as one
//! sorted table, so that opening a store reads one file and replays only
//! the records appended after it (replaying 224k records took 60-70 ms;
//! loading their snapshot takes a few).
//!
//! `DIR/index.snap` (little-endian; written to a temp file and renamed,
//! not fsynced: it is a cache, checked at every load and ignored when it
//! does not check, which costs one full replay):
//!
//! ```text
//! 0..8     magic b"VMSTORSN"
//! 8..12    version u32 = 1
//! 12..16   entry length u32 = 56
//! 16..24   covered u64: index.log bytes replayed into it (a record boundary)
//! 24..40   device u64, inode u64 of the index.log it was taken from
//! 40..48   entries u64
//! 48..56   pack rows u64
//! 56..64   vouched u64      (IndexView fields, as after the replay)
//! 64..72   data_end u64
//! 72..88   last boot id [16]
//! 88       has last boot u8, 89..96 zero
//! 96..120  objects, stored bytes, raw bytes u64
//! 120..128 zero
//! 128..192 the index record that ends at `covered` (zero if covered = 64)
//! then     pack rows: pack u32 | zero u32 | live u64 | last record u64
//! then     entries sorted by id: id [32] | offset u64 | pack u32 |
//!          stored_len u32 | raw_len u32 | flags u8 | zero [3]
//! then     crc32 of everything before it
//! ```
//!
//! It is used only if its CRC checks and it belongs to the index as it is
//! now: the same file (device, inode: a compaction or repair renames a new
//! index over the old), at least `covered` bytes long, with the same record
//! ending at `covered` (an inode number reused by a later file would not
//! have it). A view with damaged records is never saved, so damage is
//! always found and reported by a full replay.
use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;

use super::error::{io_err, Result};
use super::format::{Loc, HEADER_LEN, RECORD_LEN};
use super::index::{read_upto, IndexView, PackUse};
use super::{ObjectId, Store};

pub(crate) const SNAP_FILE: &str = "index.snap";
const MAGIC: &[u8; 8] = b"VMSTORSN";
const VERSION: u32 = 1;
const HEAD: usize = 192;
const PACK_ROW: usize = 24;
const ENTRY: usize = 56;
/// A view is saved again once this many records (or a sixteenth of the
/// snapshot's entries, if more) were replayed after its snapshot.
const MIN_TAIL_RECORDS: u64 = 1024;

/// Entries of a snapshot, sorted by id, with a fan-out table on the id's
/// first two bytes (ids are BLAKE3 output, so buckets hold a few entries
/// each and a lookup touches two cache lines).
pub(crate) struct BaseTable {
    bytes: Vec<u8>,
    /// Byte offset of the first entry in `bytes`.
    start: usize,
    count: usize,
    /// `fanout[p]` = index of the first entry whose id starts with a
    /// prefix >= p (65537 values).
    fanout: Vec<u32>,
    /// index.log bytes it covers.
    pub covered: u64,
}

impl BaseTable {
    pub fn len(&self) -> usize {
        self.count
    }

    fn entry(&self, i: usize) -> &[u8] {
        let at = self.start + i * ENTRY;
        &self.bytes[at..at + ENTRY]
    }

    pub fn get(&self, id: &ObjectId) -> Option<Loc> {
        let p = prefix(&id.0);
        let (mut lo, mut hi) = (self.fanout[p] as usize, self.fanout[p + 1] as usize);
        while lo < hi {
            let mid = (lo + hi) / 2;
            let e = self.entry(mid);
            match e[..32].cmp(&id.0[..]) {
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
                std::cmp::Ordering::Equal => return Some(decode_loc(e)),
            }
        }
        None
    }

    pub fn iter(&self) -> impl Iterator<Item = (ObjectId, Loc)> + '_ {
        (0..self.count).map(|i| {
            let e = self.entry(i);
            (
                ObjectId(e[..32].try_into().expect("32 bytes")),
                decode_loc(e),
            )
        })
    }
}

fn prefix(id: &[u8; 32]) -> usize {
    usize::from(u16::from_be_bytes([id[0], id[1]]))
}

fn decode_loc(e: &[u8]) -> Loc {
    Loc {
        offset: u64_at(e, 32),
        pack: u32_at(e, 40),
        stored_len: u32_at(e, 44),
        raw_len: u32_at(e, 48),
        flags: e[52],
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Whether `view` has moved far enough past its snapshot to save again.
pub(crate) fn worth_saving(view: &IndexView) -> bool {
    let (covered, base) = view.base_info();
    let tail = view.pos.saturating_sub(covered) / RECORD_LEN as u64;
    view.damaged.is_empty() && tail > MIN_TAIL_RECORDS.max(base / 16)
}

/// Saves `view` (of the index file `index`, whose identity is `ident`) as
/// the snapshot in `dir`.
pub(crate) fn save(
    dir: &Path,
    view: &IndexView,
    index: &File,
    ident: (u64, u64),
) -> std::io::Result<()> {
    let mut entries: Vec<(ObjectId, Loc)> = view.entries().collect();
    entries.sort_unstable_by_key(|e| e.0 .0);
    let packs = view.pack_rows();
    let mut out = Vec::with_capacity(HEAD + packs.len() * PACK_ROW + entries.len() * ENTRY + 4);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&(ENTRY as u32).to_le_bytes());
    let (objects, stored, raw) = view.totals();
    for v in [
        view.pos,
        ident.0,
        ident.1,
        entries.len() as u64,
        packs.len() as u64,
    ] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&view.vouched.to_le_bytes());
    out.extend_from_slice(&view.data_end.to_le_bytes());
    out.extend_from_slice(&view.last_boot.unwrap_or_default());
    out.push(u8::from(view.last_boot.is_some()));
    out.extend_from_slice(&[0; 7]);
    for v in [objects, stored, raw, 0] {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out.extend_from_slice(&last_record(index, view.pos)?);
    for (pack, u) in packs {
        out.extend_from_slice(&pack.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&u.live.to_le_bytes());
        out.extend_from_slice(&u.last_record.to_le_bytes());
    }
    for (id, loc) in &entries {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&loc.offset.to_le_bytes());
        out.extend_from_slice(&loc.pack.to_le_bytes());
        out.extend_from_slice(&loc.stored_len.to_le_bytes());
        out.extend_from_slice(&loc.raw_len.to_le_bytes());
        out.extend_from_slice(&[loc.flags, 0, 0, 0]);
    }
    out.extend_from_slice(&crc32fast::hash(&out).to_le_bytes());
    // A name per process: two handles saving at once each rename a whole file.
    let tmp = dir.join(format!("{SNAP_FILE}.tmp.{}", std::process::id()));
    std::fs::write(&tmp, &out)?;
    std::fs::rename(&tmp, dir.join(SNAP_FILE)).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// The 64 bytes of `index` that end at `covered` (zeros at the header).
fn last_record(index: &File, covered: u64) -> std::io::Result<[u8; RECORD_LEN]> {
    let mut rec = [0u8; RECORD_LEN];
    if covered > HEADER_LEN {
        let got = read_upto(index, &mut rec, covered - RECORD_LEN as u64)?;
        if got != RECORD_LEN {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
    }
    Ok(rec)
}

/// The view saved in `dir` when it belongs to `index`, else an empty view
/// (IndexView's `Default` is not one: it starts before the file header).
pub(crate) fn load_or_new(dir: &Path, index: &File, ident: (u64, u64)) -> IndexView {
    match load(dir, index, ident) {
        Some(view) => view,
        None => IndexView::new(),
    }
}

/// The view saved in `dir`, if there is one and it belongs to `index`
/// (identity `ident`) as it is now; `None` otherwise (then the caller
/// replays the whole index).
pub(crate) fn load(dir: &Path, index: &File, ident: (u64, u64)) -> Option<IndexView> {
    let bytes = std::fs::read(dir.join(SNAP_FILE)).ok()?;
    if bytes.len() < HEAD + 4 || &bytes[..8] != MAGIC {
        return None;
    }
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    if u32_at(body, 8) != VERSION || u32_at(body, 12) != ENTRY as u32 {
        return None;
    }
    if crc32fast::hash(body).to_le_bytes() != crc {
        return None;
    }
    let covered = u64_at(body, 16);
    let (count, pack_rows) = (u64_at(body, 40) as usize, u64_at(body, 48) as usize);
    let start = HEAD.checked_add(pack_rows.checked_mul(PACK_ROW)?)?;
    if (u64_at(body, 24), u64_at(body, 32)) != ident
        || body.len() != start.checked_add(count.checked_mul(ENTRY)?)?
        || covered < HEADER_LEN
        || (covered - HEADER_LEN) % RECORD_LEN as u64 != 0
        || index.metadata().ok()?.len() < covered
        || last_record(index, covered).ok()?[..] != body[128..192]
    {
        return None;
    }
    let mut packs = BTreeMap::new();
    for row in body[HEAD..start].chunks_exact(PACK_ROW) {
        let u = PackUse {
            live: u64_at(row, 8),
            last_record: u64_at(row, 16),
        };
        packs.insert(u32_at(row, 0), u);
    }
    let last_boot = (body[88] != 0).then(|| body[72..88].try_into().expect("16 bytes"));
    let totals = (u64_at(body, 96), u64_at(body, 104), u64_at(body, 112));
    let (vouched, data_end) = (u64_at(body, 56), u64_at(body, 64));
    let mut base = BaseTable {
        bytes,
        start,
        count,
        fanout: Vec::new(),
        covered,
    };
    base.fanout = fanout(&base)?;
    Some(IndexView::from_base(
        base, packs, totals, vouched, data_end, last_boot,
    ))
}

/// The fan-out table of a sorted table; `None` if it is not sorted.
fn fanout(base: &BaseTable) -> Option<Vec<u32>> {
    let mut fan = vec![0u32; 65537];
    let mut prev: Option<&[u8]> = None;
    for i in 0..base.count {
        let id = &base.entry(i)[..32];
        if prev.is_some_and(|p| p >= id) {
            return None;
        }
        prev = Some(id);
        fan[prefix(id.try_into().expect("32 bytes")) + 1] += 1;
    }
    for p in 1..fan.len() {
        fan[p] += fan[p - 1];
    }
    Some(fan)
}

impl Store {
    /// Saves the index as read so far as the index snapshot (`snap.rs`)
    /// when enough records were read after the last one; returns whether
    /// it did. A cache: the next open replays less. Done on drop too.
    pub fn save_index_snapshot(&self) -> Result<bool> {
        let mut g = self.inner();
        g.refresh(&self.index_path)?;
        if !worth_saving(&g.view) {
            return Ok(false);
        }
        save(&self.dir, &g.view, &g.index, g.generation)
            .map_err(io_err("write index snapshot in", &self.dir))?;
        Ok(true)
    }
}

impl Drop for Store {
    /// Leaves an index snapshot for the next open when this handle read or
    /// wrote enough records past the last one (best effort: without it the
    /// next open replays more of the index).
    fn drop(&mut self) {
        let g = self.inner.get_mut().unwrap_or_else(|e| e.into_inner());
        if worth_saving(&g.view) {
            let _ = save(&self.dir, &g.view, &g.index, g.generation);
        }
    }
}
