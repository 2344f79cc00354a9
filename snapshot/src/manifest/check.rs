//! Checking a manifest against the store, and merging chains.

use std::collections::HashSet;

use serde::Serialize;

use super::{
    new_snapshot_id, Manifest, ManifestError, Result, SnapshotDir, SnapshotKind, SnapshotStats,
};
use crate::pages::PageList;
use store::clock::now_ns;
use store::{IdHashBuilder, ObjectId, Store};

/// What [`check`] looked at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    /// Regions (memory and shared).
    pub regions: u64,
    /// Pages in them.
    pub pages: u64,
    /// Zero pages (nothing to find).
    pub zero_pages: u64,
    /// Distinct objects found (chunks and pages).
    pub objects: u64,
}

/// Checks that every object `m` needs is in `store`: each region's chunk
/// objects, then each non-zero page. Reports the first one missing with
/// its region, page number and guest address. Contents are not re-hashed
/// here: [`Store::get`] verifies every object when it is restored.
pub fn check(store: &Store, m: &Manifest) -> Result<CheckReport> {
    let mut report = CheckReport::default();
    let mut seen: HashSet<ObjectId, IdHashBuilder> = HashSet::default();
    for (name, root) in m.regions() {
        report.regions += 1;
        for (chunk, id) in root.chunks.iter().enumerate() {
            if !store.contains(id) {
                return Err(ManifestError::MissingChunk {
                    snapshot: m.id.clone(),
                    region: name.clone(),
                    chunk,
                    object: *id,
                    store: store.dir().to_path_buf(),
                });
            }
            seen.insert(*id);
        }
        let list = PageList::load(store, root).map_err(|source| ManifestError::Pages {
            snapshot: m.id.clone(),
            region: name.clone(),
            source: Box::new(source),
        })?;
        report.pages += list.len() as u64;
        for (page, id) in list.ids().iter().enumerate() {
            if id.is_zero_block() {
                report.zero_pages += 1;
                continue;
            }
            if seen.contains(id) {
                continue;
            }
            if !store.contains(id) {
                return Err(ManifestError::MissingObject {
                    snapshot: m.id.clone(),
                    region: name.clone(),
                    page: page as u64,
                    object: *id,
                    store: store.dir().to_path_buf(),
                });
            }
            seen.insert(*id);
        }
    }
    report.objects = seen.len() as u64;
    Ok(report)
}

/// Adds every store object `m` refers to (chunks and non-zero pages) to
/// `live` (for garbage collection).
pub fn live_objects(
    store: &Store,
    m: &Manifest,
    live: &mut HashSet<ObjectId, IdHashBuilder>,
) -> Result<()> {
    for (name, root) in m.regions() {
        live.extend(root.chunks.iter().copied());
        let list = PageList::load(store, root).map_err(|source| ManifestError::Pages {
            snapshot: m.id.clone(),
            region: name.clone(),
            source: Box::new(source),
        })?;
        live.extend(list.page_objects().map(|(_, id)| id));
    }
    Ok(())
}

/// Folds snapshot `id` and its chain of parents into one full snapshot,
/// written to `dir` under a new id, and returns it.
///
/// Page lists are complete in every snapshot, so the merged one takes the
/// latest (`id`'s) state blobs, regions, disk position, annotations and guest files,
/// with `kind` Full and no parent; it then restores without any of the
/// chain. The whole chain must be readable (a missing parent or a cycle is
/// an error, as it would be for any use of the chain), and every object
/// the result needs must be in `store` ([`check`]). `merged_from` and
/// `merged_chain` annotations record where it came from. A chain of one
/// (a full snapshot) gives a full copy under a new id.
pub fn merge(dir: &SnapshotDir, store: &Store, id: &str) -> Result<Manifest> {
    let chain = dir.chain(id)?;
    let leaf = &chain[0];
    let report = check(store, leaf)?;
    let mut m = leaf.clone();
    m.id = new_snapshot_id();
    m.parent = None;
    m.kind = SnapshotKind::Full;
    m.created_ns = now_ns();
    m.stats = SnapshotStats {
        pages: report.pages,
        zero_pages: report.zero_pages,
        changed_pages: report.pages - report.zero_pages,
        ..SnapshotStats::default()
    };
    m.annotations.insert("merged_from".into(), leaf.id.clone());
    let ids: Vec<&str> = chain.iter().map(|c| c.id.as_str()).collect();
    m.annotations.insert("merged_chain".into(), ids.join(","));
    dir.write(&m)?;
    Ok(m)
}
