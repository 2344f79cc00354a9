//! Writing: `put_batch` and `sync`.

use std::collections::HashSet;

use super::error::{io_err, Result, StoreError};
use super::format::{Loc, Record, ENTRY_LEN, FLAG_ZERO};
use super::id::{is_well_known_zero_len, IdHashBuilder};
use super::lock::lock_exclusive;
use super::pack::append_entry;
use super::{fsync_dir, is_all_zero, ObjectId, Store, MAX_OBJECT_LEN};

/// What one put call added to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct PutReport {
    /// Objects written to a pack by this call (zero objects excluded).
    pub new_objects: u64,
    /// Their own length.
    pub new_raw_bytes: u64,
    /// Bytes they take in packs (after compression).
    pub new_stored_bytes: u64,
}

/// An object prepared outside the lock: its pack entry (header, then the
/// `len` stored bytes) is `buf[start..start + ENTRY_LEN + len]` (nothing
/// for a zero object).
struct Staged {
    item: usize,
    start: usize,
    len: u32,
    flags: u8,
}

/// A contiguous range of the batch buffer bound for one place in a pack.
struct Run {
    pack: u32,
    pack_offset: u64,
    start: usize,
    end: usize,
}

impl Store {
    /// Stores a batch of objects; returns their ids in order.
    ///
    /// Hashing and compression happen before the writers' lock is taken.
    /// Under it: new index records from other processes are read, objects
    /// already present are skipped, the rest go to the current pack with one
    /// `pwrite` (more only if the pack rolls over or another process stored
    /// some of them meanwhile), then one `pwrite` appends their index
    /// records. Not durable until [`Store::sync`].
    pub fn put_batch<T: AsRef<[u8]>>(&self, items: &[T]) -> Result<Vec<ObjectId>> {
        let mut ids = Vec::with_capacity(items.len());
        for item in items {
            let data = item.as_ref();
            ids.push(if is_all_zero(data) {
                ObjectId::zero(data.len())
            } else {
                ObjectId::of(data)
            });
        }
        Ok(self.put_with_ids(items, ids, Some(self.opts.zstd_level))?.0)
    }

    /// Like [`Store::put_batch`] for objects whose BLAKE3 hashes the caller
    /// has already computed (the block tap hashes every block for its disk
    /// checksum): `ids[i]` must be `ObjectId::of(items[i])`. The ids are
    /// trusted here, not rechecked; `get` still verifies every object it
    /// returns, so a wrong id is caught as corruption on read.
    pub fn put_batch_hashed<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: &[ObjectId],
    ) -> Result<Vec<ObjectId>> {
        Ok(self.put_batch_hashed_report(items, ids)?.0)
    }

    /// [`Store::put_batch_hashed`] that also says what this call added to
    /// the store (objects already present, put by anyone, are not counted).
    pub fn put_batch_hashed_report<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: &[ObjectId],
    ) -> Result<(Vec<ObjectId>, PutReport)> {
        self.put_hashed_at(items, ids, Some(self.opts.zstd_level))
    }

    /// [`Store::put_batch_hashed_report`] that stores new objects as they
    /// are, uncompressed: the block tap's path, where the guest waits for
    /// the put. [`Store::compact`] (`vmm store gc`) compresses them later.
    pub fn put_batch_hashed_raw_report<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: &[ObjectId],
    ) -> Result<(Vec<ObjectId>, PutReport)> {
        self.put_hashed_at(items, ids, None)
    }

    /// Hashed puts, compressing new objects at `level` (`None`: not).
    fn put_hashed_at<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: &[ObjectId],
        level: Option<i32>,
    ) -> Result<(Vec<ObjectId>, PutReport)> {
        assert_eq!(items.len(), ids.len(), "one id per item");
        let ids = items
            .iter()
            .zip(ids)
            .map(|(item, id)| {
                let data = item.as_ref();
                if is_all_zero(data) {
                    ObjectId::zero(data.len())
                } else {
                    *id
                }
            })
            .collect();
        self.put_with_ids(items, ids, level)
    }

    fn put_with_ids<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: Vec<ObjectId>,
        level: Option<i32>,
    ) -> Result<(Vec<ObjectId>, PutReport)> {
        let mut zero = Vec::with_capacity(items.len());
        let mut todo = Vec::new();
        let mut seen: HashSet<ObjectId, IdHashBuilder> = HashSet::default();
        for (i, item) in items.iter().enumerate() {
            let data = item.as_ref();
            if data.len() > MAX_OBJECT_LEN {
                return Err(StoreError::TooLarge {
                    len: data.len(),
                    max: MAX_OBJECT_LEN,
                });
            }
            let z = is_all_zero(data);
            zero.push(z);
            if (z && is_well_known_zero_len(data.len())) || !seen.insert(ids[i]) {
                continue;
            }
            todo.push(i);
        }
        if todo.is_empty() {
            return Ok((ids, PutReport::default()));
        }
        loop {
            if let Some(report) = self.try_put(items, &ids, &zero, todo.clone(), level)? {
                return Ok((ids, report));
            }
        }
    }

    /// One attempt at storing `items[i]` for `i` in `todo`. Returns `None`
    /// when a compaction replaced the index between the unlocked dedup
    /// check and taking the lock (objects skipped as present may be gone):
    /// the caller tries again.
    fn try_put<T: AsRef<[u8]>>(
        &self,
        items: &[T],
        ids: &[ObjectId],
        zero: &[bool],
        mut todo: Vec<usize>,
        level: Option<i32>,
    ) -> Result<Option<PutReport>> {
        let generation = {
            let mut g = self.inner();
            // A view from before a compaction may list objects it dropped
            // (one stat per batch; a compaction after this point is caught
            // under the lock below).
            g.reload_if_replaced(&self.index_path)?;
            // The view is only trusted for dedup once this boot's BOOT
            // record is in it (objects lost in a crash are revoked by then).
            if g.view.last_boot == Some(self.boot) {
                todo.retain(|&i| g.view.get(&ids[i]).is_none());
                if todo.is_empty() {
                    return Ok(Some(PutReport::default()));
                }
            }
            g.generation
        };

        let mut buf = Vec::new();
        let mut staged = Vec::with_capacity(todo.len());
        for &i in &todo {
            let start = buf.len();
            let (len, flags) = if zero[i] {
                (0, FLAG_ZERO)
            } else {
                append_entry(level, &ids[i], items[i].as_ref(), &mut buf)
            };
            let len = len as u32;
            staged.push(Staged {
                item: i,
                start,
                len,
                flags,
            });
        }

        let mut g = self.inner();
        let _locked = lock_exclusive(&g.lock, &self.lock_path)?;
        g.prepare_write(&self.index_path, self.boot)?;
        if g.generation != generation {
            return Ok(None);
        }
        staged.retain(|s| g.view.get(&ids[s.item]).is_none());
        if staged.is_empty() {
            return Ok(Some(PutReport::default()));
        }

        let limit = self.opts.pack_target_size;
        let mut records = Vec::with_capacity(staged.len());
        let mut cur: Option<(u32, u64)> = None;
        let mut run: Option<Run> = None;
        for s in &staged {
            let raw_len = items[s.item].as_ref().len() as u32;
            let id = ids[s.item];
            if s.flags & FLAG_ZERO != 0 {
                let loc = Loc {
                    pack: 0,
                    offset: 0,
                    stored_len: 0,
                    raw_len,
                    flags: FLAG_ZERO,
                };
                records.push(Record::Object { id, loc });
                continue;
            }
            let (mut pack, mut len) = match cur {
                Some(c) => c,
                None => {
                    // An index with no packs (new, or compacted to nothing)
                    // goes on after the highest pack file there: pack
                    // numbers are never reused (see `gc.rs`).
                    let n = match g.view.max_pack() {
                        Some(n) => n,
                        None => g.packs.on_disk()?.last().copied().unwrap_or(0),
                    };
                    (n, g.packs.open_writer(n)?)
                }
            };
            if len >= limit {
                // Roll over: what is buffered for this pack goes out first.
                if let Some(r) = run.take() {
                    g.packs
                        .write_at(r.pack, &buf[r.start..r.end], r.pack_offset)?;
                }
                while len >= limit {
                    pack += 1;
                    len = g.packs.open_writer(pack)?;
                }
            }
            let entry_len = ENTRY_LEN as u64 + u64::from(s.len);
            let end = s.start + entry_len as usize;
            match &mut run {
                Some(r) if r.pack == pack && r.end == s.start => r.end = end,
                _ => {
                    if let Some(r) = run.take() {
                        g.packs
                            .write_at(r.pack, &buf[r.start..r.end], r.pack_offset)?;
                    }
                    run = Some(Run {
                        pack,
                        pack_offset: len,
                        start: s.start,
                        end,
                    });
                }
            }
            let loc = Loc {
                pack,
                offset: len + ENTRY_LEN as u64,
                stored_len: s.len,
                raw_len,
                flags: s.flags,
            };
            records.push(Record::Object { id, loc });
            cur = Some((pack, len + entry_len));
        }
        if let Some(r) = run {
            g.packs
                .write_at(r.pack, &buf[r.start..r.end], r.pack_offset)?;
        }
        g.append(&self.index_path, &records)?;
        let mut report = PutReport::default();
        for s in &staged {
            if s.flags & FLAG_ZERO == 0 {
                report.new_objects += 1;
                report.new_raw_bytes += items[s.item].as_ref().len() as u64;
                report.new_stored_bytes += u64::from(s.len);
            }
        }
        Ok(Some(report))
    }

    /// Makes every object put so far durable.
    ///
    /// Contract: when `sync` returns `Ok`, every object whose `put` or
    /// `put_batch` returned before the call, on any handle in any process,
    /// survives a host crash (they are all in the index when it runs).
    ///
    /// It fdatasyncs each pack holding values indexed since the last sync
    /// (by any process), the pack directory, the store directory and the
    /// index, in that order, then appends a SYNC record (itself made durable
    /// by the next sync) so that recovery after a reboot need only check
    /// what came later. Does nothing when nothing was indexed since the
    /// last sync.
    pub fn sync(&self) -> Result<()> {
        let (end, files, index) = {
            let mut g = self.inner();
            if g.view.last_boot != Some(self.boot) {
                // First write of this handle since a reboot: recover before
                // deciding what this sync covers, so that the SYNC record
                // below never vouches for objects revoked after it.
                let _locked = lock_exclusive(&g.lock, &self.lock_path)?;
                g.prepare_write(&self.index_path, self.boot)?;
            }
            g.refresh(&self.index_path)?;
            let end = g.view.pos;
            if g.view.data_end <= g.view.vouched {
                return Ok(());
            }
            let mut files = Vec::new();
            for p in g.view.packs_since(g.view.vouched) {
                files.push((g.packs.path(p), g.packs.reader(p)?));
            }
            let index = g
                .index
                .try_clone()
                .map_err(io_err("duplicate handle of", &self.index_path))?;
            (end, files, index)
        };
        // fsync without holding the handle's mutex: gets go on meanwhile.
        for (path, f) in &files {
            f.sync_data().map_err(io_err("fsync", path))?;
        }
        fsync_dir(&self.dir.join("packs"))?;
        fsync_dir(&self.dir)?;
        index
            .sync_data()
            .map_err(io_err("fsync", &self.index_path))?;

        let mut g = self.inner();
        let _locked = lock_exclusive(&g.lock, &self.lock_path)?;
        g.prepare_write(&self.index_path, self.boot)?;
        if end > g.view.vouched {
            let rec = Record::Sync {
                boot: self.boot,
                covers: end,
            };
            g.append(&self.index_path, &[rec])?;
        }
        Ok(())
    }
}
