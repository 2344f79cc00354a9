//! What a writer does under the lock before appending: cut a torn index
//! tail, and after a reboot revoke objects whose bytes were lost.
//!
//! Rules (never guess):
//! - Bad records with a valid record after them are damage, never a torn
//!   tail: they are skipped by every reader (`index.rs`) and never
//!   truncated, so no valid record after them is lost; `repair` rebuilds
//!   what they indexed.
//! - A partial record at the end (fewer than 64 bytes) is what a process
//!   killed during `write` leaves: truncate it.
//! - Whole bad records at the very end, in an index last written during
//!   this boot, cannot come from a crash (the page cache is coherent, so a
//!   killed writer leaves only a prefix): refuse with
//!   [`StoreError::IndexCorrupt`].
//! - After a reboot, pages of unsynced appends may have reached the disk in
//!   any order: bad records at the very end are cut.
//! - After a reboot, an OBJECT record not covered by a SYNC record may point
//!   at pack bytes that never reached the disk. Each such object is read
//!   back and checked; lost ones get a REVOKE record, so that dedup never
//!   skips writing them again. Then a BOOT record marks the index as
//!   checked for this boot.

use std::os::unix::fs::FileExt;
use std::path::Path;

use super::error::{io_err, Result, StoreError};
use super::format::{BootId, Loc, Record, RECORD_LEN};
use super::index::{read_records, StopReason};
use super::pack::read_object;
use super::{Inner, ObjectId};

impl Inner {
    /// With the writers' lock held: reads new records and makes the index
    /// end clean, so that `view.pos` is the file's length and appends may
    /// start there.
    pub(super) fn prepare_write(&mut self, index_path: &Path, boot: BootId) -> Result<()> {
        self.reload_if_replaced(index_path)?;
        self.view.tail(&self.index, index_path)?;
        let rebooted = self.view.last_boot != Some(boot);
        if let Some(stop) = self.view.stop.clone() {
            if let StopReason::Bad(why) = &stop.reason {
                let corrupt = |detail: String| StoreError::IndexCorrupt {
                    path: index_path.to_path_buf(),
                    offset: stop.offset,
                    detail,
                };
                if !rebooted {
                    return Err(corrupt(format!(
                        "{why}; it was written since this host booted, so it is not the torn \
                         tail of a crash"
                    )));
                }
            }
            self.index
                .set_len(stop.offset)
                .map_err(io_err("truncate", index_path))?;
            self.warnings.push(format!(
                "truncated {} to {} bytes: {}",
                index_path.display(),
                stop.offset,
                stop.describe(index_path)
            ));
            self.view.stop = None;
        }
        if rebooted {
            self.recheck_after_reboot(index_path, boot)?;
        }
        Ok(())
    }

    /// Appends `recs` at the end of the index (lock held, after
    /// [`Self::prepare_write`]) and takes them into the view.
    pub(super) fn append(&mut self, index_path: &Path, recs: &[Record]) -> Result<()> {
        let mut buf = Vec::with_capacity(recs.len() * RECORD_LEN);
        for r in recs {
            buf.extend_from_slice(&r.encode());
        }
        self.index
            .write_all_at(&buf, self.view.pos)
            .map_err(io_err("write", index_path))?;
        for r in recs {
            self.view.apply(self.view.pos, *r);
            self.view.pos += RECORD_LEN as u64;
        }
        Ok(())
    }

    fn recheck_after_reboot(&mut self, index_path: &Path, boot: BootId) -> Result<()> {
        let unsynced = read_records(&self.index, index_path, self.view.vouched, self.view.pos)?;
        let mut lost = Vec::new();
        for (_, rec) in unsynced {
            let Record::Object { id, loc } = rec else {
                continue;
            };
            // Only the live record of an id matters; zero ones have no bytes.
            if loc.is_zero() || self.view.get(&id) != Some(loc) {
                continue;
            }
            if !self.survived(&id, loc)? {
                lost.push(id);
            }
        }
        let mut recs: Vec<Record> = lost.iter().map(|&id| Record::Revoke { id }).collect();
        recs.push(Record::Boot { boot });
        self.append(index_path, &recs)?;
        if !lost.is_empty() {
            let sample: Vec<String> = lost.iter().take(3).map(|id| id.to_string()).collect();
            self.warnings.push(format!(
                "{} object(s) put before a crash were never synced and their bytes did not \
                 survive; they are revoked and absent until put again (e.g. {})",
                lost.len(),
                sample.join(", ")
            ));
        }
        Ok(())
    }

    /// Whether the object's bytes read back intact. I/O errors other than
    /// a missing pack are returned, not taken as loss.
    fn survived(&mut self, id: &ObjectId, loc: Loc) -> Result<bool> {
        let file = match self.packs.reader(loc.pack) {
            Ok(f) => f,
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
                return Ok(false)
            }
            Err(StoreError::BadHeader { .. }) => return Ok(false),
            Err(e) => return Err(e),
        };
        match read_object(&file, &self.packs.path(loc.pack), id, loc) {
            Ok(_) => Ok(true),
            Err(StoreError::Corrupt { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
