//! Rebuilding `index.log` from the packs (`vmm store repair`).
//!
//! With the writers' lock held, [`repair`]:
//! 1. reads the old index as far as it can (damaged records skipped; a
//!    missing or unreadable index is taken as empty);
//! 2. scans every version 2 pack entry by entry (format in `format.rs`),
//!    resynchronising on the next valid entry header after damage, and
//!    keeps each object whose value decodes (zstd) to bytes with its
//!    BLAKE3: the first good copy of an id wins;
//! 3. keeps every object of the old index not found by the scan (version 1
//!    packs have no entry headers, so this is the only way to keep their
//!    objects) if its bytes still read back and check; zero objects
//!    (index-only records) are kept as they were;
//! 4. fsyncs the packs it points into, writes the new index (header, one
//!    OBJECT record per object, a SYNC record covering them) to
//!    `index.log.repair`, fsyncs it, keeps the old index under another
//!    name (a hard link `index.log.pre-repair-<unix seconds>`: nothing the
//!    user had is lost) and renames the new one over `index.log`, then
//!    fsyncs the directory. Handles in other processes see the new inode
//!    and reload (as after a compaction).
//!
//! Damaged objects (BLAKE3 mismatch, undecodable zstd, cut short) are
//! kept out, and listed. **Limit:** an object of a version 1 pack whose
//! index record is lost cannot be found again: nothing in the pack says
//! where it starts. Run `vmm store gc` to rewrite old packs as version 2.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use serde::Serialize;

use super::error::{io_err, Result};
use super::format::{
    decode_header, EntryHeader, Loc, Record, ENTRY_LEN, ENTRY_MAGIC, FLAG_ZSTD, HEADER_LEN,
    INDEX_MAGIC, PACK_VERSION_V1, RECORD_LEN,
};
use super::id::IdHashBuilder;
use super::index::{read_upto, IndexView};
use super::lock::{current_boot_id, lock_exclusive};
use super::pack::{check_header, decompress, read_object, PackFiles};
use super::{encode_header, fsync_dir, ObjectId};

/// An object (or a stretch of a pack) that could not be kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DamagedObject {
    /// The object, when its entry header or index record names it.
    pub id: Option<ObjectId>,
    /// Pack number.
    pub pack: u32,
    /// Byte offset in the pack (of the value, or of the unreadable bytes).
    pub offset: u64,
    /// What was wrong.
    pub detail: String,
}

/// What [`repair`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RepairReport {
    /// Objects with pack bytes in the new index.
    pub objects: u64,
    /// Of those, found by scanning version 2 packs.
    pub from_scan: u64,
    /// Of those, kept from a still-valid record of the old index.
    pub from_old_index: u64,
    /// Zero objects (index-only records) kept from the old index.
    pub zero_objects: u64,
    /// Pack files looked at.
    pub packs: u64,
    /// Those of format version 1 (not scannable, see the module doc).
    pub v1_packs: Vec<u32>,
    /// Objects in the old index (with pack bytes).
    pub old_index_objects: u64,
    /// Damaged records skipped in the old index.
    pub old_index_damaged_records: u64,
    /// Damaged objects and unreadable stretches of packs, kept out.
    pub damaged: Vec<DamagedObject>,
    /// Objects the old index had that the new one does not.
    pub lost: Vec<ObjectId>,
    /// Length of the new `index.log`.
    pub index_bytes: u64,
    /// Where the old `index.log` was kept, if there was one.
    pub old_index_saved: Option<std::path::PathBuf>,
    /// Other findings.
    pub warnings: Vec<String>,
}

/// Rebuilds the index of the store in `dir` from its packs (see the
/// module doc). The store need not open: its index may be gone or damaged.
pub fn repair(dir: &Path) -> Result<RepairReport> {
    let packs_dir = dir.join("packs");
    std::fs::read_dir(&packs_dir).map_err(io_err("list", &packs_dir))?;
    let lock_path = dir.join("lock");
    let lock = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(io_err("open", &lock_path))?;
    let _locked = lock_exclusive(&lock, &lock_path)?;

    let mut report = RepairReport::default();
    let index_path = dir.join("index.log");
    let old = read_old_index(&index_path, &mut report)?;
    let mut packs = PackFiles::new(packs_dir.clone());
    let mut found: HashMap<ObjectId, Loc, IdHashBuilder> = HashMap::default();
    for n in packs.on_disk()? {
        report.packs += 1;
        let path = packs.path(n);
        let file = File::open(&path).map_err(io_err("open pack", &path))?;
        match check_header(&file, &path, n) {
            Ok(PACK_VERSION_V1) => report.v1_packs.push(n),
            Ok(_) => scan_pack(&file, &path, n, &mut found, &mut report)?,
            Err(e) => report.damaged.push(DamagedObject {
                id: None,
                pack: n,
                offset: 0,
                detail: e.to_string(),
            }),
        }
    }
    report.from_scan = found.len() as u64;

    let mut zero = Vec::new();
    for (id, loc) in old.entries() {
        if found.contains_key(&id) {
            continue;
        }
        if loc.is_zero() {
            zero.push((id, loc));
            continue;
        }
        let checked = packs
            .reader(loc.pack)
            .and_then(|f| read_object(&f, &packs.path(loc.pack), &id, loc));
        match checked {
            Ok(_) => {
                found.insert(id, loc);
                report.from_old_index += 1;
            }
            Err(e) => {
                if !report.damaged.iter().any(|d| d.id == Some(id)) {
                    report.damaged.push(DamagedObject {
                        id: Some(id),
                        pack: loc.pack,
                        offset: loc.offset,
                        detail: e.to_string(),
                    });
                }
                report.lost.push(id);
            }
        }
    }
    report.objects = found.len() as u64;
    report.zero_objects = zero.len() as u64;
    report.lost.sort_unstable_by_key(|id| id.0);

    // Everything the new index vouches for must be durable first.
    let mut used: Vec<u32> = found.values().map(|l| l.pack).collect();
    used.sort_unstable();
    used.dedup();
    for n in used {
        let path = packs.path(n);
        packs
            .reader(n)?
            .sync_data()
            .map_err(io_err("fsync", &path))?;
    }
    fsync_dir(&packs_dir)?;

    let mut objects: Vec<(ObjectId, Loc)> = found.into_iter().collect();
    objects.sort_by_key(|(_, l)| (l.pack, l.offset));
    let mut records: Vec<Record> = zero
        .into_iter()
        .chain(objects)
        .map(|(id, loc)| Record::Object { id, loc })
        .collect();
    let covers = HEADER_LEN + (records.len() * RECORD_LEN) as u64;
    records.push(Record::Sync {
        boot: current_boot_id(),
        covers,
    });
    let mut bytes = Vec::with_capacity(HEADER_LEN as usize + records.len() * RECORD_LEN);
    bytes.extend_from_slice(&encode_header(INDEX_MAGIC, RECORD_LEN as u32));
    for r in &records {
        bytes.extend_from_slice(&r.encode());
    }
    let tmp = dir.join("index.log.repair");
    let f = File::create(&tmp).map_err(io_err("create", &tmp))?;
    f.write_all_at(&bytes, 0).map_err(io_err("write", &tmp))?;
    f.sync_all().map_err(io_err("fsync", &tmp))?;
    if index_path.exists() {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut saved = dir.join(format!("index.log.pre-repair-{secs}"));
        let mut n = 1;
        while saved.exists() {
            saved = dir.join(format!("index.log.pre-repair-{secs}.{n}"));
            n += 1;
        }
        std::fs::hard_link(&index_path, &saved).map_err(io_err("keep the old index as", &saved))?;
        report.old_index_saved = Some(saved);
    }
    std::fs::rename(&tmp, &index_path).map_err(io_err("rename over", &index_path))?;
    fsync_dir(dir)?;
    report.index_bytes = bytes.len() as u64;
    Ok(report)
}

/// The old index's view, or an empty one (with a warning) when it is
/// missing or its header is unreadable.
fn read_old_index(path: &Path, report: &mut RepairReport) -> Result<IndexView> {
    let mut view = IndexView::new();
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            report.warnings.push(format!(
                "{} is missing: rebuilt from the packs alone",
                path.display()
            ));
            return Ok(view);
        }
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let mut h = [0u8; HEADER_LEN as usize];
    let got = read_upto(&file, &mut h, 0).map_err(io_err("read", path))?;
    if let Err(why) = decode_header(&h[..got], INDEX_MAGIC) {
        report.warnings.push(format!(
            "{}: unreadable header ({why}): rebuilt from the packs alone",
            path.display()
        ));
        return Ok(view);
    }
    view.tail(&file, path)?;
    report.old_index_objects = view.totals().0;
    report.old_index_damaged_records = view.damaged.iter().map(|d| d.records).sum();
    if let Some(stop) = &view.stop {
        report.warnings.push(stop.describe(path));
    }
    Ok(view)
}

/// Scans a version 2 pack: every entry whose value checks goes into
/// `found` (unless an earlier copy of the id did); the rest into
/// `report.damaged`.
fn scan_pack(
    file: &File,
    path: &Path,
    n: u32,
    found: &mut HashMap<ObjectId, Loc, IdHashBuilder>,
    report: &mut RepairReport,
) -> Result<()> {
    let len = file.metadata().map_err(io_err("stat", path))?.len() as usize;
    let mut buf = vec![0u8; len];
    let got = read_upto(file, &mut buf, 0).map_err(io_err("read", path))?;
    buf.truncate(got);
    for entry in scan_entries(&buf) {
        match entry {
            Scanned::Good { id, loc } => {
                found.entry(id).or_insert(Loc { pack: n, ..loc });
            }
            Scanned::Bad { id, offset, detail } => report.damaged.push(DamagedObject {
                id,
                pack: n,
                offset,
                detail,
            }),
        }
    }
    Ok(())
}

/// One result of [`scan_entries`].
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Scanned {
    /// An object whose bytes check (`loc.pack` is left 0).
    Good { id: ObjectId, loc: Loc },
    /// A damaged value (`id` from its header) or unreadable bytes.
    Bad {
        id: Option<ObjectId>,
        offset: u64,
        detail: String,
    },
}

/// Walks the entries of a whole version 2 pack file held in `pack`.
pub(crate) fn scan_entries(pack: &[u8]) -> Vec<Scanned> {
    let mut out = Vec::new();
    let mut pos = HEADER_LEN as usize;
    while pos < pack.len() {
        let h = match EntryHeader::decode(&pack[pos..]) {
            Ok(h) => h,
            Err(why) => {
                let next = next_entry(pack, pos + 1);
                out.push(Scanned::Bad {
                    id: None,
                    offset: pos as u64,
                    detail: format!("{} bytes hold no valid entry ({why})", next - pos),
                });
                pos = next;
                continue;
            }
        };
        let value_at = pos + ENTRY_LEN;
        let end = value_at + h.stored_len as usize;
        let bad = |detail: String| Scanned::Bad {
            id: Some(h.id),
            offset: value_at as u64,
            detail,
        };
        if end > pack.len() {
            out.push(bad(format!(
                "the pack ends {} bytes into the {}-byte value",
                pack.len() - value_at,
                h.stored_len
            )));
            break;
        }
        let stored = &pack[value_at..end];
        let raw = if h.flags & FLAG_ZSTD != 0 {
            decompress(stored, h.raw_len as usize).map_err(|e| format!("zstd: {e}"))
        } else {
            Ok(stored.to_vec())
        };
        out.push(match raw {
            Err(e) => bad(format!("the value does not decode ({e})")),
            Ok(raw) if raw.len() != h.raw_len as usize => bad(format!(
                "decoded to {} bytes, the entry says {}",
                raw.len(),
                h.raw_len
            )),
            Ok(raw) if ObjectId::of(&raw) != h.id => {
                bad(format!("its bytes hash to {}", ObjectId::of(&raw)))
            }
            Ok(_) => Scanned::Good {
                id: h.id,
                loc: Loc {
                    pack: 0,
                    offset: value_at as u64,
                    stored_len: h.stored_len,
                    raw_len: h.raw_len,
                    flags: h.flags,
                },
            },
        });
        pos = end;
    }
    out
}

/// The offset of the first valid entry header at or after `from`, or the
/// end of the pack.
fn next_entry(pack: &[u8], from: usize) -> usize {
    let mut at = from;
    while at + ENTRY_LEN <= pack.len() {
        if pack[at..at + 4] == ENTRY_MAGIC && EntryHeader::decode(&pack[at..]).is_ok() {
            return at;
        }
        at += 1;
    }
    pack.len()
}
