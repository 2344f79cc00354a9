//! Reading many objects at once: [`Store::get_many`].
//!
//! Objects put together sit next to each other in a pack (a write's blocks,
//! a snapshot's pages), so a batch is read with one `pread` per run of
//! neighbouring values instead of one per object, and the BLAKE3 checks
//! (the bulk of the work) are split across two threads when the batch is
//! large enough to pay for one.

use std::collections::HashMap;
use std::fs::File;
use std::path::PathBuf;
use std::sync::Arc;

use super::error::{io_err, Result, StoreError};
use super::format::{Loc, ENTRY_LEN};
use super::index::read_upto;
use super::pack::{check_value, short_value};
use super::{ObjectId, Store};

/// Neighbouring values are read together when at most this many unrelated
/// bytes lie between them (besides the next entry's header).
const MAX_GAP: u64 = 16 << 10;
/// A single read covers at most this much of a pack.
const MAX_RUN: u64 = 8 << 20;
/// Batches of at least this many stored bytes are checked on two threads.
const PARALLEL_BYTES: u64 = 512 << 10;

/// One `pread` of a pack: `items` are (position in the batch, location),
/// in pack order, all inside `start..end`.
struct Run {
    pack: u32,
    start: u64,
    end: u64,
    items: Vec<(usize, Loc)>,
}

impl Store {
    /// Objects `ids`, in order, each checked against its BLAKE3 as by
    /// [`Store::get`] (the same errors), read with one `pread` per run of
    /// neighbouring values.
    pub fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        let mut out: Vec<Option<Vec<u8>>> = vec![None; ids.len()];
        let mut stored = Vec::new();
        let mut files: HashMap<u32, (Arc<File>, PathBuf)> = HashMap::new();
        {
            let mut g = self.inner();
            let mut refreshed = false;
            for (i, id) in ids.iter().enumerate() {
                let loc = match g.view.get(id) {
                    Some(loc) => loc,
                    None => {
                        if let Some(len) = id.zero_len() {
                            out[i] = Some(vec![0; len]);
                            continue;
                        }
                        if !refreshed {
                            g.refresh(&self.index_path)?;
                            refreshed = true;
                        }
                        g.view.get(id).ok_or_else(|| StoreError::NotFound {
                            id: *id,
                            dir: self.dir.clone(),
                            index_damage: g.view.damaged.first().map(|d| d.offset),
                        })?
                    }
                };
                if loc.is_zero() {
                    out[i] = Some(vec![0; loc.raw_len as usize]);
                    continue;
                }
                if let std::collections::hash_map::Entry::Vacant(e) = files.entry(loc.pack) {
                    match g.packs.reader(loc.pack) {
                        Ok(f) => {
                            e.insert((f, g.packs.path(loc.pack)));
                        }
                        // A pack gone (a compaction by another handle) or
                        // damaged: `get` knows how to retry or what to say.
                        Err(_) => {
                            drop(g);
                            return ids.iter().map(|id| self.get(id)).collect();
                        }
                    }
                }
                stored.push((i, loc));
            }
        }
        stored.sort_by_key(|(_, l)| (l.pack, l.offset));
        // A batch checked on two threads is read in at least two runs.
        let total: u64 = stored.iter().map(|(_, l)| u64::from(l.stored_len)).sum();
        let parallel = total >= PARALLEL_BYTES;
        let max_run = if parallel {
            MAX_RUN.min(total / 2)
        } else {
            MAX_RUN
        };
        let mut runs: Vec<Run> = Vec::new();
        for (i, loc) in stored {
            let end = loc.offset + u64::from(loc.stored_len);
            match runs.last_mut() {
                Some(r)
                    if r.pack == loc.pack
                        && loc.offset >= r.end
                        && loc.offset - r.end <= MAX_GAP + ENTRY_LEN as u64
                        && end - r.start <= max_run =>
                {
                    r.end = end;
                    r.items.push((i, loc));
                }
                _ => runs.push(Run {
                    pack: loc.pack,
                    start: loc.offset,
                    end,
                    items: vec![(i, loc)],
                }),
            }
        }

        let check = |runs: &[Run]| -> Result<Vec<(usize, Vec<u8>)>> {
            let mut done = Vec::new();
            let mut buf = Vec::new();
            for r in runs {
                let (file, path) = &files[&r.pack];
                buf.resize((r.end - r.start) as usize, 0);
                let got = read_upto(file, &mut buf, r.start).map_err(io_err("read", path))?;
                for &(i, loc) in &r.items {
                    let at = (loc.offset - r.start) as usize;
                    let want = loc.stored_len as usize;
                    if got < at + want {
                        return Err(short_value(path, &ids[i], loc, got.saturating_sub(at)));
                    }
                    let value = buf[at..at + want].to_vec();
                    done.push((i, check_value(path, &ids[i], loc, value)?));
                }
            }
            Ok(done)
        };
        let checked = if parallel && runs.len() > 1 {
            // Split where about half the bytes are.
            let mut acc = 0;
            let mid = runs
                .iter()
                .position(|r| {
                    acc += r.end - r.start;
                    acc * 2 >= total
                })
                .map_or(runs.len() / 2, |p| p.clamp(1, runs.len() - 1));
            let (a, b) = runs.split_at(mid);
            let (a, b) = std::thread::scope(|s| {
                let other = s.spawn(|| check(b));
                (check(a), other.join())
            });
            let b = b.unwrap_or_else(|p| std::panic::resume_unwind(p));
            // The first error in batch order, as a sequential read says.
            let (mut a, b) = (a?, b?);
            a.extend(b);
            a
        } else {
            check(&runs)?
        };
        for (i, v) in checked {
            out[i] = Some(v);
        }
        Ok(out
            .into_iter()
            .map(|v| v.expect("every object resolved"))
            .collect())
    }
}
