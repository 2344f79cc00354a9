//! Copying a snapshot's objects between a local store and another object
//! backend (a cluster): what `vmm snapshot push` and `pull` move, before
//! the manifest that names them is written on the other side. A manifest
//! never arrives ahead of its objects, so one that can be read can be
//! restored.
//!
//! The objects of a snapshot are the chunks of each region's page list and
//! the non-zero pages they list (state blobs travel inside the manifest).
//! Both directions skip what the other side already holds and copy the
//! rest in batches.
use std::collections::HashSet;

use serde::Serialize;
use store::{IdHashBuilder, ObjectBackend, ObjectId, Store, StoreError};

use crate::manifest::{live_objects, Manifest, ManifestError};
use crate::pages::PageList;

/// Objects per batch sent or fetched.
const BATCH: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error("snapshot {snapshot}: {source}")]
    Pages {
        snapshot: String,
        #[source]
        source: Box<crate::pages::PagesError>,
    },
}

/// What a transfer moved.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransferReport {
    /// Objects the snapshot needs.
    pub objects: u64,
    /// Of those, objects copied (the other side lacked them).
    pub copied: u64,
    pub copied_bytes: u64,
}

/// Copies every object of `m` from `local` to `remote` that `remote` lacks.
pub fn push_objects(
    m: &Manifest,
    local: &Store,
    remote: &dyn ObjectBackend,
) -> Result<TransferReport, TransferError> {
    let mut live: HashSet<ObjectId, IdHashBuilder> = HashSet::default();
    live_objects(local, m, &mut live)?;
    let mut ids: Vec<ObjectId> = live.into_iter().collect();
    ids.sort_unstable();
    let mut report = TransferReport {
        objects: ids.len() as u64,
        ..TransferReport::default()
    };
    let mut missing = Vec::new();
    for id in ids {
        if !remote.contains(&id)? {
            missing.push(id);
        }
    }
    for batch in missing.chunks(BATCH) {
        let data: Vec<Vec<u8>> = batch
            .iter()
            .map(|id| local.get(id))
            .collect::<Result<_, _>>()?;
        let items: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        remote.put_hashed(&items, batch)?;
        report.copied += batch.len() as u64;
        report.copied_bytes += data.iter().map(|d| d.len() as u64).sum::<u64>();
    }
    remote.sync()?;
    Ok(report)
}

/// Copies every object of `m` from `remote` into `local` that `local`
/// lacks (page-list chunks first: they say which pages there are), then
/// makes them durable.
pub fn pull_objects(
    m: &Manifest,
    remote: &dyn ObjectBackend,
    local: &Store,
) -> Result<TransferReport, TransferError> {
    let mut report = TransferReport::default();
    let regions = m.regions();
    let chunks: Vec<ObjectId> = regions
        .iter()
        .flat_map(|(_, root)| root.chunks.iter().copied())
        .collect();
    fetch(&chunks, remote, local, &mut report)?;
    let mut pages: HashSet<ObjectId, IdHashBuilder> = HashSet::default();
    for (_, root) in &regions {
        let list = PageList::load(local, root).map_err(|source| TransferError::Pages {
            snapshot: m.id.clone(),
            source: Box::new(source),
        })?;
        pages.extend(list.page_objects().map(|(_, id)| id));
    }
    let mut pages: Vec<ObjectId> = pages.into_iter().collect();
    pages.sort_unstable();
    fetch(&pages, remote, local, &mut report)?;
    local.sync()?;
    Ok(report)
}

fn fetch(
    ids: &[ObjectId],
    remote: &dyn ObjectBackend,
    local: &Store,
    report: &mut TransferReport,
) -> Result<(), TransferError> {
    report.objects += ids.len() as u64;
    let missing: Vec<ObjectId> = ids
        .iter()
        .copied()
        .filter(|id| !local.contains(id))
        .collect();
    for batch in missing.chunks(BATCH) {
        // `get` checks each object against its id.
        let data = remote.get_many(batch)?;
        let items: Vec<&[u8]> = data.iter().map(Vec::as_slice).collect();
        local.put_hashed(&items, batch)?;
        report.copied += batch.len() as u64;
        report.copied_bytes += data.iter().map(|d| d.len() as u64).sum::<u64>();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{MemoryRegion, SnapshotKind};
    use crate::pages::{capture, restore};
    use crate::testutil::memory;

    fn store(dir: &std::path::Path) -> Store {
        Store::open(dir).unwrap()
    }

    /// A snapshot of 64 pages (some zero, some repeated) in `s`.
    fn snapshot(s: &Store, seed: u64) -> (Manifest, Vec<u8>) {
        let mut mem = memory(seed, 64);
        mem[..8 * crate::PAGE_SIZE].fill(0);
        let mut m = Manifest::new("vm-1", SnapshotKind::Full, None);
        let (list, _) = capture(s, &mem, None, None).unwrap();
        m.memory.push(MemoryRegion {
            guest_addr: 0,
            size: mem.len() as u64,
            pages: list.save(s).unwrap(),
        });
        (m, mem)
    }

    #[test]
    fn push_then_pull_copies_what_is_missing_and_restores_exactly() {
        let tmp = tempfile::tempdir().unwrap();
        let here = store(&tmp.path().join("here"));
        let cluster = store(&tmp.path().join("cluster"));
        let there = store(&tmp.path().join("there"));
        let (m, mem) = snapshot(&here, 5);

        let pushed = push_objects(&m, &here, &cluster).unwrap();
        assert!(pushed.objects > 0);
        assert_eq!(pushed.copied, pushed.objects);
        // Again: the other side has everything.
        assert_eq!(push_objects(&m, &here, &cluster).unwrap().copied, 0);

        let pulled = pull_objects(&m, &cluster, &there).unwrap();
        assert_eq!(pulled.copied, pulled.objects);
        assert_eq!(pull_objects(&m, &cluster, &there).unwrap().copied, 0);
        let list = PageList::load(&there, &m.memory[0].pages).unwrap();
        let mut out = vec![0u8; mem.len()];
        restore(&there, &list, &mut out).unwrap();
        assert_eq!(out, mem);
    }

    #[test]
    fn a_pull_missing_an_object_fails_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let here = store(&tmp.path().join("here"));
        let empty = store(&tmp.path().join("empty"));
        let there = store(&tmp.path().join("there"));
        let (m, _) = snapshot(&here, 6);
        let err = pull_objects(&m, &empty, &there).unwrap_err();
        let chunk = store::hex::encode(&m.memory[0].pages.chunks[0].0);
        assert!(err.to_string().contains(&chunk[..16]), "{err}");
    }
}
