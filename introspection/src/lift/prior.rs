//! A file's state at the end of the previous recorded run as the baseline
//! of its first decode in this one.
//!
//! Without it, the first decode of a file in a run diffs against nothing
//! and every row of a database that merely was opened would be logged as
//! inserted again. The tap (`tap/prior.rs`) decides which files have a
//! past in the log and reads their earlier bytes; this module gives it the
//! two pieces: [`Lifter::version_with`] reads one main file through any
//! reader without disturbing the barrier cache, and [`Differ::seed_prior`]
//! takes those bytes as the file's last state, tentatively: when they do
//! not decode (the file moved on the disk between runs, so the current
//! extents show other data in the old state), the first version of this
//! run becomes the baseline, reported as such, instead of every later
//! barrier failing against an undecodable past.
use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Differ, Lifted, Lifter, ReadDisk, Version};
use crate::decode::{DecodeError, SchemaHints};
use crate::provenance::Base;
use crate::semantic::Format;

impl Lifter {
    /// Main file `id`'s version as `read` shows it (a journal hot there
    /// makes it an `Err`), read with the file table as it is now. The
    /// barrier cache is set aside meanwhile: these bytes are not the disk's.
    pub fn version_with(&mut self, id: u32, read: ReadDisk<'_>) -> Option<Version> {
        let main = self.table.get(id)?.clone();
        let all: BTreeSet<u32> = self.table.files.keys().copied().collect();
        let saved = std::mem::take(&mut self.cache);
        let bytes = match self.current_version(id, &main, &BTreeSet::new(), &all, read) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err("its journal is hot (mid-transaction)".to_string()),
            Err(e) => Err(format!("reading the file's earlier state: {e}")),
        };
        self.cache = saved;
        Some(Version {
            id,
            file: main.path,
            format: main.format,
            schema: main.schema,
            bytes,
            at: None,
        })
    }
}

impl Differ {
    /// [`Differ::seed`] with each file's state at the end of an earlier
    /// recorded run; those that do not decode at their first diff are
    /// replaced (see the module doc).
    pub fn seed_prior(&mut self, versions: Vec<Version>) -> Vec<(String, String)> {
        let ids: Vec<u32> = versions.iter().map(|v| v.id).collect();
        let unknown = self.seed(versions);
        for id in ids {
            if self.last.contains_key(&id) && !self.unseeded.contains(&id) {
                self.tentative.insert(id);
            }
        }
        unknown
    }

    /// The earlier state of file `id` did not decode against `new`
    /// (`err`): `new` becomes the baseline if it decodes by itself.
    pub(super) fn replace_prior(
        &mut self,
        (id, file, format): (u32, String, Format),
        schema: &SchemaHints,
        (new, here): (Arc<Vec<u8>>, Base),
        err: &DecodeError,
    ) -> Lifted {
        self.forget(id);
        let Some(decoder) = self.decoder(format) else {
            return Lifted::Error {
                file,
                format,
                reason: err.to_string(),
            };
        };
        let reason = match decoder.diff(&[], &new, schema, &self.limits) {
            Ok(_) => {
                self.remember(id, new, here);
                format!(
                    "its state at the end of the last recorded run does not decode ({err}); \
                     what changed between the runs is unknown, this state is the baseline and \
                     changes from here on are decoded"
                )
            }
            Err(e) => {
                self.unseeded.insert(id);
                e.to_string()
            }
        };
        Lifted::Error {
            file,
            format,
            reason,
        }
    }
}

#[cfg(test)]
mod tests;
