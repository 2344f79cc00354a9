//! A process's view of `index.log`: tailed by remembered offset, without a
//! lock.
//!
//! Records are a fixed 64 bytes, so a record that does not check is
//! skipped and reading resynchronises at the next slot. Bad records with
//! a valid record after them are *damage* (kept in [`IndexView::damaged`]
//! and reported; the objects they indexed are invisible until `repair`).
//! Bad or partial records with nothing valid after them are the *tail*
//! (an append in progress or torn by a crash): reading stops there
//! ([`IndexView::stop`]) and a writer may cut it (`recover.rs`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{io_err, Result, StoreError};
use super::format::{BootId, Loc, Record, HEADER_LEN, RECORD_LEN};
use super::id::IdHashBuilder;
use super::snap::BaseTable;
use super::ObjectId;

/// Why tailing stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StopReason {
    /// Fewer than 64 bytes remain: an append in progress, or torn by a crash.
    Partial,
    /// A whole record that does not decode.
    Bad(String),
}

/// Where and why tailing stopped before the end of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stop {
    /// Byte offset of the first record not taken.
    pub offset: u64,
    /// File length seen at the time.
    pub file_len: u64,
    pub reason: StopReason,
}

impl Stop {
    pub fn describe(&self, path: &Path) -> String {
        let tail = self.file_len - self.offset;
        match &self.reason {
            StopReason::Partial => format!(
                "{}: ends with a partial record at byte {} ({tail} bytes): a crash during an \
                 append, or a writer still appending; ignored until a writer truncates it",
                path.display(),
                self.offset
            ),
            StopReason::Bad(why) => format!(
                "{}: the last {tail} bytes, from byte {}, hold no valid record ({why}) and \
                 nothing valid follows: a torn tail or damage at the end; ignored",
                path.display(),
                self.offset
            ),
        }
    }
}

/// A run of damaged records in the middle of the index (valid records
/// follow it).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DamagedRecords {
    /// Byte offset of the first bad record.
    pub offset: u64,
    /// Consecutive bad records from there.
    pub records: u64,
    /// Why the first one is bad.
    pub detail: String,
}

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct PackUse {
    pub live: u64,
    pub last_record: u64,
}

/// Everything learnt from the index so far: the entries of an index
/// snapshot (`snap.rs`), if one was loaded, under those of the records
/// read after it.
#[derive(Default)]
pub(crate) struct IndexView {
    /// Entries from records read (after the snapshot's, if any): they win.
    map: HashMap<ObjectId, Loc, IdHashBuilder>,
    /// Entries of the snapshot the view started from.
    base: Option<BaseTable>,
    /// Snapshot entries removed by later records (and not in `map`).
    gone: HashSet<ObjectId, IdHashBuilder>,
    /// End of the valid prefix read so far (next record to read).
    pub pos: u64,
    /// Highest `covers` of any SYNC record seen.
    pub vouched: u64,
    /// End of the last OBJECT or REVOKE record seen (what a sync must
    /// cover; SYNC and BOOT records need not be durable).
    pub data_end: u64,
    /// Boot id of the last SYNC or BOOT record seen.
    pub last_boot: Option<BootId>,
    /// Set when the last tail stopped before the end of the file.
    pub stop: Option<Stop>,
    /// Damaged records skipped so far, in file order.
    pub damaged: Vec<DamagedRecords>,
    /// Per pack: live objects in it and the index offset of its last
    /// OBJECT record.
    packs: BTreeMap<u32, PackUse>,
    objects: u64,
    stored_bytes: u64,
    raw_bytes: u64,
}

/// Bytes read per `pread` when tailing.
const CHUNK: usize = RECORD_LEN * 16 * 1024;

impl IndexView {
    pub fn new() -> IndexView {
        IndexView {
            pos: HEADER_LEN,
            vouched: HEADER_LEN,
            data_end: HEADER_LEN,
            ..IndexView::default()
        }
    }

    /// A view as saved in an index snapshot, to be tailed from
    /// `base.covered` on.
    pub fn from_base(
        base: BaseTable,
        packs: BTreeMap<u32, PackUse>,
        (objects, stored_bytes, raw_bytes): (u64, u64, u64),
        vouched: u64,
        data_end: u64,
        last_boot: Option<BootId>,
    ) -> IndexView {
        IndexView {
            pos: base.covered,
            base: Some(base),
            vouched,
            data_end,
            last_boot,
            packs,
            objects,
            stored_bytes,
            raw_bytes,
            ..IndexView::default()
        }
    }

    /// (bytes covered by the snapshot it started from, its entries); (0, 0)
    /// without one.
    pub fn base_info(&self) -> (u64, u64) {
        self.base
            .as_ref()
            .map_or((0, 0), |b| (b.covered, b.len() as u64))
    }

    pub fn get(&self, id: &ObjectId) -> Option<Loc> {
        if let Some(loc) = self.map.get(id) {
            return Some(*loc);
        }
        if self.gone.contains(id) {
            return None;
        }
        self.base.as_ref()?.get(id)
    }

    /// Every live entry (zero objects with an index record included).
    pub fn entries(&self) -> impl Iterator<Item = (ObjectId, Loc)> + '_ {
        let base = self.base.iter().flat_map(|b| b.iter());
        self.map
            .iter()
            .map(|(id, loc)| (*id, *loc))
            .chain(base.filter(|(id, _)| !self.map.contains_key(id) && !self.gone.contains(id)))
    }

    /// Per pack: live objects and the offset of its last OBJECT record.
    pub fn pack_rows(&self) -> Vec<(u32, PackUse)> {
        self.packs.iter().map(|(p, u)| (*p, *u)).collect()
    }

    /// (objects, stored bytes, raw bytes) of objects with pack bytes.
    pub fn totals(&self) -> (u64, u64, u64) {
        (self.objects, self.stored_bytes, self.raw_bytes)
    }

    /// Highest pack number any OBJECT record (live or not) points into.
    pub fn max_pack(&self) -> Option<u32> {
        self.packs.keys().next_back().copied()
    }

    /// Packs holding live objects whose OBJECT records are at or after
    /// index byte `from`.
    pub fn packs_since(&self, from: u64) -> Vec<u32> {
        self.packs
            .iter()
            .filter(|(_, u)| u.live > 0 && u.last_record >= from)
            .map(|(&p, _)| p)
            .collect()
    }

    /// Reads records appended since `pos`, up to the current end of the
    /// file or the first record that is partial or does not check.
    pub fn tail(&mut self, file: &File, path: &Path) -> Result<()> {
        let len = file.metadata().map_err(io_err("stat", path))?.len();
        if len < self.pos {
            return Err(StoreError::IndexCorrupt {
                path: path.to_path_buf(),
                offset: len,
                detail: format!(
                    "the file is {len} bytes but {} were already read from it: it was \
                     truncated or replaced behind the store's back",
                    self.pos
                ),
            });
        }
        self.stop = None;
        let mut buf = vec![0u8; CHUNK];
        // Bad records not yet known to be damage: they are only if a valid
        // record follows them.
        let mut pending: Option<DamagedRecords> = None;
        let mut at = self.pos;
        while at < len {
            let want = ((len - at) as usize).min(CHUNK);
            let got = read_upto(file, &mut buf[..want], at).map_err(io_err("read", path))?;
            let whole = got - got % RECORD_LEN;
            for rec in buf[..whole].chunks_exact(RECORD_LEN) {
                let rec: &[u8; RECORD_LEN] = rec.try_into().expect("64 bytes");
                match Record::decode(rec) {
                    Ok(r) => {
                        if let Some(d) = pending.take() {
                            self.damaged.push(d);
                        }
                        self.apply(at, r);
                        self.pos = at + RECORD_LEN as u64;
                    }
                    Err(why) => match &mut pending {
                        Some(d) => d.records += 1,
                        None => {
                            pending = Some(DamagedRecords {
                                offset: at,
                                records: 1,
                                detail: why,
                            })
                        }
                    },
                }
                at += RECORD_LEN as u64;
            }
            if whole < want {
                // Fewer than 64 bytes left, or the file shrank under us (a
                // writer truncating a torn tail): stop here either way.
                break;
            }
        }
        if let Some(d) = pending {
            self.stop = Some(Stop {
                offset: d.offset,
                file_len: len,
                reason: StopReason::Bad(d.detail),
            });
        } else if self.pos < len {
            self.stop = Some(Stop {
                offset: self.pos,
                file_len: len,
                reason: StopReason::Partial,
            });
        }
        Ok(())
    }

    /// Takes one record (read from the file, or just appended by us).
    pub fn apply(&mut self, at: u64, rec: Record) {
        match rec {
            Record::Object { id, loc } => {
                self.data_end = at + RECORD_LEN as u64;
                self.remove(&id);
                if !loc.is_zero() {
                    self.objects += 1;
                    self.stored_bytes += u64::from(loc.stored_len);
                    self.raw_bytes += u64::from(loc.raw_len);
                    let u = self.packs.entry(loc.pack).or_default();
                    u.live += 1;
                    u.last_record = at;
                }
                self.map.insert(id, loc);
            }
            Record::Revoke { id } => {
                self.data_end = at + RECORD_LEN as u64;
                self.remove(&id);
            }
            Record::Sync { boot, covers } => {
                self.vouched = self.vouched.max(covers);
                self.last_boot = Some(boot);
            }
            Record::Boot { boot } => self.last_boot = Some(boot),
        }
    }

    fn remove(&mut self, id: &ObjectId) {
        let old = self.get(id);
        if old.is_some() {
            self.map.remove(id);
            if self.base.as_ref().is_some_and(|b| b.get(id).is_some()) {
                self.gone.insert(*id);
            }
        }
        if let Some(old) = old {
            if !old.is_zero() {
                self.objects -= 1;
                self.stored_bytes -= u64::from(old.stored_len);
                self.raw_bytes -= u64::from(old.raw_len);
                if let Some(u) = self.packs.get_mut(&old.pack) {
                    u.live -= 1;
                }
            }
        }
    }
}

/// `pread` until `buf` is full or end of file; returns bytes read.
pub(crate) fn read_upto(file: &File, buf: &mut [u8], mut at: u64) -> std::io::Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], at) {
            Ok(0) => break,
            Ok(n) => {
                done += n;
                at += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(done)
}

/// Reads the whole records in index bytes `from..to` (for recovery).
pub(crate) fn read_records(
    file: &File,
    path: &Path,
    from: u64,
    to: u64,
) -> Result<Vec<(u64, Record)>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = from;
    while at < to {
        let want = ((to - at) as usize).min(CHUNK);
        let got = read_upto(file, &mut buf[..want], at).map_err(io_err("read", path))?;
        for rec in buf[..got - got % RECORD_LEN].chunks_exact(RECORD_LEN) {
            if let Ok(r) = Record::decode(rec.try_into().expect("64 bytes")) {
                out.push((at, r));
            }
            at += RECORD_LEN as u64;
        }
        if got < want {
            break;
        }
    }
    Ok(out)
}
