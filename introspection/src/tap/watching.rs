//! Agentless mapping at barriers (`crate::fsmap`): before a barrier is
//! lifted, the watched files are mapped from the ext4 filesystem on the
//! image as it is at that barrier, and what changed since the last mapping
//! goes into the log as hints with host-chosen file ids (so replay and
//! `vmm changes` treat them as any guest's hints). Each version of a file
//! is therefore read with the mapping of its own barrier: a file rewritten
//! to new blocks is re-mapped at the next barrier, never decoded from the
//! old map over new data.
//!
//! A file the guest's agent also hints is left to the agent's entry (two
//! entries cannot share blocks) and cross-checked: a different size or
//! block map is counted (`TapStats::hint_mismatches`) and warned about
//! when it starts. A disk that is not ext4, or that the reader cannot read,
//! is reported once (again after it was readable) and recording goes on at
//! block level.
use std::collections::BTreeMap;

use hint_proto::{
    encode_extents, encode_file, encode_size, EncodeError, Extent, Role, MAX_MESSAGE,
};

use super::{BlockTap, TapError};
use crate::fsmap::{map_ext4, MappedFile, Watch};

/// Host-assigned file ids start here (an agent numbers from 1).
pub const HOST_FILE_ID_BASE: u32 = 0x4000_0000;

#[derive(Default)]
pub(super) struct Watching {
    watches: Vec<Watch>,
    ids: BTreeMap<String, u32>,
    /// What the log was last told about each host-mapped file.
    told: BTreeMap<u32, MappedFile>,
    /// The last mapping failed (and was reported).
    failing: bool,
    /// Agent files that disagreed at the last barrier.
    disagreeing: BTreeMap<u32, String>,
    /// Blocks were written since the last mapping.
    pub(super) dirty: bool,
}

/// One hint message, encoded.
fn encode(f: impl FnOnce(&mut [u8]) -> Result<usize, EncodeError>) -> Result<Vec<u8>, EncodeError> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let n = f(&mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

fn extents_of(m: &MappedFile) -> Vec<Extent> {
    m.extents
        .iter()
        .map(|&(file_offset, disk, len)| Extent {
            file_offset,
            sector: disk / 512,
            len,
        })
        .collect()
}

/// An agent-hinted file, for the cross-check.
struct AgentFile {
    id: u32,
    path: String,
    size: u64,
    /// Its block map as runs.
    runs: Vec<(u64, u64)>,
}

/// A block map as (disk byte, length) runs, adjacent runs merged.
fn runs(extents: impl Iterator<Item = (u64, u64)>) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (start, len) in extents {
        match out.last_mut() {
            Some(last) if last.0 + last.1 == start => last.1 += len,
            _ => out.push((start, len)),
        }
    }
    out
}

impl BlockTap {
    /// Watch these files from now on (agentless mapping at every barrier
    /// after writes). Empty: no mapping.
    pub fn set_watches(&mut self, watches: Vec<Watch>) {
        self.watching = (!watches.is_empty()).then(|| Watching {
            watches,
            dirty: true,
            ..Default::default()
        });
    }

    /// Maps the watched files if blocks were written since the last
    /// mapping, and logs hints for what changed.
    pub(super) fn map_watched(&mut self) -> Result<(), TapError> {
        let Some(w) = self.watching.as_mut() else {
            return Ok(());
        };
        if !w.dirty {
            return Ok(());
        }
        w.dirty = false;
        let disk_bytes = self.image.metadata().map(|m| m.len()).unwrap_or(0);
        let mapped = match map_ext4(&self.image, disk_bytes, &w.watches) {
            Ok(m) => {
                w.failing = false;
                m
            }
            Err(e) => {
                if !w.failing {
                    tracing::warn!(vm = %self.vm_id, "agentless mapping: {e}; recording goes on at block level");
                }
                w.failing = true;
                self.stats.map_failures += 1;
                return Ok(());
            }
        };
        self.stats.mappings += 1;
        // Agent files, by path, for the cross-check.
        let agent: Vec<AgentFile> = self
            .lifter
            .table
            .files()
            .filter(|(id, f)| **id < HOST_FILE_ID_BASE && f.exists)
            .map(|(id, f)| {
                let mut ext: Vec<_> = f
                    .extents
                    .iter()
                    .map(|e| (e.file_offset, e.sector * 512, e.len))
                    .collect();
                ext.sort();
                AgentFile {
                    id: *id,
                    path: f.path.clone(),
                    size: f.size.unwrap_or(0),
                    runs: runs(ext.into_iter().map(|(_, d, l)| (d, l))),
                }
            })
            .collect();
        let mut messages = Vec::new();
        let w = self.watching.as_mut().expect("checked above");
        // Files gone first: a file renamed over another takes its blocks.
        let gone: Vec<u32> = w
            .told
            .iter()
            .filter(|(_, t)| t.role == Role::Main && !mapped.iter().any(|m| m.path == t.path))
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            messages.push(encode(|b| encode_extents(*id, &[], b)));
            messages.push(encode(|b| encode_size(*id, 0, false, b)));
            w.told.remove(id);
        }
        for m in &mapped {
            // The agent may name the file by a longer path (its mount
            // point's); the mapped path starts with '/'.
            let hinted = agent.iter().find(|a| a.path.ends_with(&m.path));
            if let Some(a) = hinted {
                let ours = runs(m.extents.iter().map(|&(_, d, l)| (d, l)));
                if m.exists && (a.size != m.size || a.runs != ours) {
                    self.stats.hint_mismatches += 1;
                    if w.disagreeing.insert(a.id, m.path.clone()).is_none() {
                        tracing::warn!(vm = %self.vm_id, "agent hint for {} disagrees with the filesystem: agent {} bytes in {} runs, ext4 {} bytes in {} runs", a.path, a.size, a.runs.len(), m.size, ours.len());
                    }
                } else {
                    w.disagreeing.remove(&a.id);
                }
                continue;
            }
            let next = HOST_FILE_ID_BASE + w.ids.len() as u32;
            let id = *w.ids.entry(m.path.clone()).or_insert(next);
            let main_id = *w.ids.get(&m.main_path).unwrap_or(&id);
            let before = w.told.get(&id);
            if before.is_none_or(|b| b.format != m.format || b.role != m.role) {
                messages.push(encode(|b| {
                    encode_file(id, main_id, m.format, m.role, &m.path, b)
                }));
            }
            if before.is_none_or(|b| b.extents != m.extents) {
                let ext = extents_of(m);
                messages.push(encode(|b| encode_extents(id, &ext, b)));
            }
            if before.is_none_or(|b| b.size != m.size || b.exists != m.exists) {
                messages.push(encode(|b| encode_size(id, m.size, m.exists, b)));
            }
        }
        for m in mapped {
            if let Some(&id) = w.ids.get(&m.path) {
                w.told.insert(id, m);
            }
        }
        for message in messages {
            match message {
                Ok(bytes) => {
                    self.record_hint(&bytes)?;
                }
                Err(e) => {
                    tracing::warn!(vm = %self.vm_id, "agentless mapping: cannot encode a hint: {e}")
                }
            }
        }
        Ok(())
    }
}
