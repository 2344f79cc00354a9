//! Diffing each file's versions against the previous one, with the
//! provenance of every step (`crate::provenance`).
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::{FileBytes, Lifted, Version};
use crate::decode::registry::{self, DecoderSpec};
use crate::decode::DecodeLimits;
use crate::provenance::{reads_hash, Base, StepInputs};
use crate::semantic::Format;

/// Diffs each file's versions against the previous one it saw.
#[derive(Default)]
pub struct Differ {
    /// The image each main file had at its last good lift, and where it
    /// was read (the next step's base).
    pub(super) last: BTreeMap<u32, Arc<Vec<u8>>>,
    pub(super) last_base: BTreeMap<u32, Base>,
    /// Limits of each decode (`--decode-budget-mib`).
    pub(super) limits: DecodeLimits,
    /// Files of a restored VM whose state at the snapshot is unknown (see
    /// [`Differ::seed`]): their next good version becomes the baseline.
    pub(super) unseeded: BTreeSet<u32>,
    /// Files seeded with their state at the end of an earlier recorded run
    /// ([`Differ::seed_prior`]) and not diffed yet: if that state does not
    /// decode, the next good version becomes the baseline instead.
    pub(super) tentative: BTreeSet<u32>,
    /// Decode with this decoder only (files of other formats are passed
    /// over); `None`: each format's default decoder, as the recorder.
    only: Option<&'static DecoderSpec>,
}

impl Differ {
    /// A differ whose decodes run within `limits`.
    pub fn with_limits(limits: DecodeLimits) -> Self {
        Differ {
            limits,
            ..Differ::default()
        }
    }

    /// A differ that decodes files of `decoder`'s format with it and
    /// passes over the others (what-if lifts, `crate::relift`).
    pub fn with_decoder(decoder: &'static DecoderSpec, limits: DecodeLimits) -> Self {
        Differ {
            limits,
            only: Some(decoder),
            ..Differ::default()
        }
    }

    /// The decoder for files of `format`, if this differ decodes them.
    pub(super) fn decoder(&self, format: Format) -> Option<&'static DecoderSpec> {
        match self.only {
            Some(d) => (d.format == format).then_some(d),
            None => Some(registry::default_for(format)),
        }
    }

    /// A version's image as `decoder` reads it, and where it came from.
    pub(super) fn image(
        decoder: &DecoderSpec,
        v: &Version,
        bytes: &FileBytes,
    ) -> Result<(Arc<Vec<u8>>, Base), String> {
        let image = decoder.image(&bytes.bytes, bytes.wal.as_deref().map(|w| w.as_slice()))?;
        Ok((
            image,
            Base {
                seq: v.at,
                reads: reads_hash(&bytes.reads),
            },
        ))
    }

    /// Remembers file `id`'s image as the base of its next step.
    pub(super) fn remember(&mut self, id: u32, image: Arc<Vec<u8>>, base: Base) {
        self.last.insert(id, image);
        self.last_base.insert(id, base);
    }

    /// Forgets file `id`'s last state.
    pub(super) fn forget(&mut self, id: u32) {
        self.last.remove(&id);
        self.last_base.remove(&id);
    }

    pub fn diff(&mut self, versions: Vec<Version>) -> Vec<Lifted> {
        let mut out = Vec::new();
        for v in versions {
            let Some(decoder) = self.decoder(v.format) else {
                continue;
            };
            let read = v
                .bytes
                .as_ref()
                .map_err(String::clone)
                .and_then(|b| Self::image(decoder, &v, b));
            let (new, here) = match read {
                Ok(x) => x,
                Err(reason) => {
                    out.push(Lifted::Error {
                        file: v.file,
                        format: v.format,
                        reason,
                    });
                    continue;
                }
            };
            let tentative = self.tentative.remove(&v.id);
            let old = self.last.get(&v.id).map(|b| b.as_slice()).unwrap_or(&[]);
            let inputs = StepInputs {
                decoder,
                reads: here.reads.clone(),
                base: self.last_base.get(&v.id).cloned(),
            };
            let result = decoder.diff(old, &new, &v.schema, &self.limits);
            if tentative {
                if let Err(e) = &result {
                    let replaced =
                        self.replace_prior((v.id, v.file, v.format), &v.schema, (new, here), e);
                    out.push(replaced);
                    continue;
                }
            }
            match result {
                Ok(_) if self.unseeded.remove(&v.id) => {
                    self.remember(v.id, new, here);
                    out.push(Lifted::Error {
                        file: v.file,
                        format: v.format,
                        reason: "first consistent state since its last known state (a snapshot, \
                                 or the end of the last recorded run) caught the file \
                                 mid-transaction; what changed up to here is unknown, changes \
                                 from here on are decoded"
                            .into(),
                    });
                }
                Ok(changes) => {
                    self.remember(v.id, new, here);
                    if !changes.is_empty() {
                        out.push(Lifted::Changes {
                            file: v.file,
                            format: v.format,
                            provenance: inputs.provenance(&changes),
                            changes,
                        });
                    }
                }
                // Keep the last good version: the next consistent state is
                // diffed against it.
                Err(e) => out.push(Lifted::Error {
                    file: v.file,
                    format: v.format,
                    reason: e.to_string(),
                }),
            }
        }
        out
    }
}
