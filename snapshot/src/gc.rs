//! Garbage collection of the content store: mark every object a snapshot
//! or change log refers to, then compact the store to those
//! ([`Store::compact`], whose doc gives the protocol and the crash-safety
//! argument).
//!
//! Writers that put objects and then record references to them (a
//! snapshot: capture, save the page lists, write the manifest; a change-log
//! batch) hold a [`Store::pin`] across both steps, so that a collection
//! never runs between them.

use std::collections::HashSet;

use serde::Serialize;

use crate::manifest::{ManifestError, SnapshotDir};
use crate::pages::PageList;
use store::{GcReport, IdHashBuilder, ObjectId, Store, StoreError};

/// The set of objects a collection keeps.
pub type LiveSet = HashSet<ObjectId, IdHashBuilder>;

/// Error from the caller's part of the mark (its change logs).
pub type ExtraError = Box<dyn std::error::Error + Send + Sync>;

/// Why a collection did not run or stopped.
#[derive(Debug, thiserror::Error)]
pub enum GcError {
    /// A snapshot could not be read or its page lists loaded: collecting
    /// without it would delete its pages, so nothing is collected.
    #[error("gc: nothing was collected: {0}; fix or remove that snapshot first")]
    Snapshot(#[from] ManifestError),
    /// The store failed.
    #[error("gc: {0}")]
    Store(#[from] StoreError),
    /// The caller's marking (change logs) failed; nothing was collected.
    #[error("gc: nothing was collected: marking the change logs' objects failed: {0}")]
    Extra(ExtraError),
}

/// What [`collect`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CollectReport {
    /// Snapshots marked.
    pub snapshots: u64,
    /// Objects marked live (snapshots' and the caller's).
    pub live_objects: u64,
    /// What the compaction did.
    pub store: GcReport,
}

/// Collects `store`: takes the collection lock (waiting for pins), marks
/// the chunks and pages of every snapshot in `dir`, lets `extra` add the
/// objects its change logs refer to, then compacts the store to that set.
/// Any snapshot that cannot be read stops the collection before anything
/// is deleted.
pub fn collect(
    dir: &SnapshotDir,
    store: &Store,
    extra: impl FnOnce(&mut LiveSet) -> Result<(), ExtraError>,
) -> Result<CollectReport, GcError> {
    collect_marked(store, |live| {
        let snapshots = walk_snapshots(
            dir,
            store,
            |_, id| {
                live.insert(id);
            },
            |_, e| Err(e),
        )?;
        extra(live).map_err(GcError::Extra)?;
        Ok(snapshots)
    })
}

/// Collects `store` with the caller's whole mark: under the collection
/// lock, `mark` adds every referenced object (a walk built on
/// [`walk_snapshots`] and the caller's logs) and returns how many
/// snapshots it marked; then the store is compacted to that set.
pub fn collect_marked(
    store: &Store,
    mark: impl FnOnce(&mut LiveSet) -> Result<u64, GcError>,
) -> Result<CollectReport, GcError> {
    let lock = store.gc_lock()?;
    store.refresh()?;
    let mut live = LiveSet::default();
    let snapshots = mark(&mut live)?;
    let report = store.compact(&lock, |id| live.contains(id))?;
    Ok(CollectReport {
        snapshots,
        live_objects: live.len() as u64,
        store: report,
    })
}

/// Walks every object the snapshots in `dir` refer to: for each snapshot
/// (by id order), each region's page-list chunks, then its non-zero pages,
/// as `visit(snapshot id, object)` (an object may come more than once).
/// A snapshot that cannot be read, or whose page list cannot be loaded, is
/// passed to `broken` with its id: returning `Err` stops the walk (garbage collection
/// must not go on without it), `Ok` goes on to the next (verification
/// reports it). Returns the number of snapshots.
pub fn walk_snapshots(
    dir: &SnapshotDir,
    store: &Store,
    mut visit: impl FnMut(&str, ObjectId),
    mut broken: impl FnMut(&str, ManifestError) -> Result<(), ManifestError>,
) -> Result<u64, ManifestError> {
    let ids = dir.ids()?;
    'snapshots: for id in &ids {
        let m = match dir.read(id) {
            Ok(m) => m,
            Err(e) => {
                broken(id, e)?;
                continue;
            }
        };
        for (name, root) in m.regions() {
            for chunk in &root.chunks {
                visit(id, *chunk);
            }
            match PageList::load(store, root) {
                Ok(list) => list.page_objects().for_each(|(_, page)| visit(id, page)),
                Err(source) => {
                    broken(
                        id,
                        ManifestError::Pages {
                            snapshot: m.id.clone(),
                            region: name.clone(),
                            source: Box::new(source),
                        },
                    )?;
                    continue 'snapshots;
                }
            }
        }
    }
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{merge, Manifest, MemoryRegion, SnapshotKind};
    use crate::pages::{capture, restore, PageList, PAGE_SIZE};
    use crate::testutil::{memory, mutate, Rng};

    fn snap(dir: &SnapshotDir, store: &Store, mem: &[u8], parent: Option<&Manifest>) -> Manifest {
        let _pin = store.pin().unwrap();
        let kind = if parent.is_some() {
            SnapshotKind::Incremental
        } else {
            SnapshotKind::Full
        };
        let mut m = Manifest::new("vm", kind, parent.map(|p| p.id.clone()));
        let (list, st) = capture(store, mem, None, None).unwrap();
        m.memory.push(MemoryRegion {
            guest_addr: 0,
            size: mem.len() as u64,
            pages: list.save(store).unwrap(),
        });
        m.stats.add_capture(&st);
        dir.write(&m).unwrap();
        m
    }

    fn restored(store: &Store, m: &Manifest) -> Vec<u8> {
        let list = PageList::load(store, &m.memory[0].pages).unwrap();
        let mut out = vec![0u8; m.memory[0].size as usize];
        restore(store, &list, &mut out).unwrap();
        out
    }

    #[test]
    fn collect_frees_removed_snapshots_and_keeps_the_rest() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let store = dir.open_store().unwrap();
        let mut mem = memory(1, 1024);
        let a = snap(&dir, &store, &mem, None);
        let mem_a = mem.clone();
        let mut bitmap = vec![0u64; 16];
        mutate(&mut mem, &mut bitmap, &mut Rng(3), 200, 1);
        let b = snap(&dir, &store, &mem, Some(&a));
        let merged = merge(&dir, &store, &b.id).unwrap();
        // Objects only a caller's log knows about.
        let logged = store.put(&[42u8; 4096]).unwrap();
        let stray = store.put(&[43u8; 4096]).unwrap();
        // A second handle (as another process) with a view from before.
        let other = store::Store::open(store.dir()).unwrap();
        assert!(other.contains(&stray));
        let before = store.stats();

        // Nothing removed: only the stray object goes.
        let r = collect(&dir, &store, |live| {
            live.insert(logged);
            Ok(())
        })
        .unwrap();
        assert_eq!(r.snapshots, 3);
        assert_eq!(r.store.objects_kept, before.objects - 1);
        assert!(!store.contains(&stray));
        assert_eq!(store.get(&logged).unwrap(), vec![42u8; 4096]);
        for m in [&a, &b, &merged] {
            crate::manifest::check(&store, m).unwrap();
        }
        assert!(restored(&store, &a) == mem_a);

        // Remove a and b (b first: a is its parent); the merged copy of b
        // still restores, a's own pages are freed.
        assert!(matches!(
            dir.remove(&a.id),
            Err(ManifestError::HasChildren { .. })
        ));
        dir.remove(&b.id).unwrap();
        dir.remove(&a.id).unwrap();
        let r = collect(&dir, &store, |_| Ok(())).unwrap();
        assert_eq!(r.snapshots, 1);
        assert!(r.store.objects_kept < r.store.objects_before);
        assert!(r.store.bytes_freed > 0, "{r:?}");
        assert!(restored(&store, &merged) == mem);
        assert!(store.get(&logged).is_err());

        // The older handle reloads and reads the compacted store.
        assert!(restored(&other, &merged) == mem);
        other.refresh().unwrap();
        assert!(!other.contains(&stray));
        // And writes into it without reusing a pack number.
        let id = other.put(&[44u8; PAGE_SIZE]).unwrap();
        assert_eq!(store.get(&id).unwrap(), vec![44u8; PAGE_SIZE]);
        let reopened = store::Store::open(store.dir()).unwrap();
        assert!(reopened.open_report().warnings.is_empty());
        assert!(restored(&reopened, &merged) == mem);
    }

    #[test]
    fn walk_names_each_snapshot_and_goes_past_broken_ones_when_lenient() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let store = dir.open_store().unwrap();
        let a = snap(&dir, &store, &memory(4, 64), None);
        let b = snap(&dir, &store, &memory(5, 64), None);
        let mut seen: Vec<(String, ObjectId)> = Vec::new();
        let n = walk_snapshots(
            &dir,
            &store,
            |s, id| seen.push((s.into(), id)),
            |_, e| Err(e),
        )
        .unwrap();
        assert_eq!(n, 2);
        let mut live = LiveSet::default();
        live_objects_of(&store, &b, &mut live);
        let of_b: LiveSet = seen
            .iter()
            .filter(|(s, _)| *s == b.id)
            .map(|(_, id)| *id)
            .collect();
        assert_eq!(of_b, live);

        // a's page list chunk is lost: strict stops, lenient goes on to b.
        let chunk = a.memory[0].pages.chunks[0];
        std::fs::remove_file(tmp.path().join("store/index.log")).unwrap();
        let fresh = dir.open_store().unwrap();
        assert!(!fresh.contains(&chunk));
        assert!(walk_snapshots(&dir, &fresh, |_, _| {}, |_, e| Err(e)).is_err());
        let mut broken = Vec::new();
        let mut visited = Vec::new();
        walk_snapshots(
            &dir,
            &fresh,
            |s, _| visited.push(s.to_string()),
            |id, e| {
                broken.push(format!("{id}: {e}"));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(broken.len(), 2, "{broken:?}");
        assert!(broken[0].starts_with(&format!("{}: ", a.id)), "{broken:?}");
        assert!(visited.contains(&a.id), "a's chunks are still named");
    }

    fn live_objects_of(store: &Store, m: &Manifest, live: &mut LiveSet) {
        crate::manifest::live_objects(store, m, live).unwrap();
    }

    #[test]
    fn collect_refuses_when_a_snapshot_is_unreadable() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SnapshotDir::open(tmp.path()).unwrap();
        let store = dir.open_store().unwrap();
        let a = snap(&dir, &store, &memory(2, 64), None);
        std::fs::write(dir.path(&a.id).unwrap(), b"VMMSNAP\0junk").unwrap();
        let before = store.stats();
        let e = collect(&dir, &store, |_| Ok(())).unwrap_err();
        assert!(
            matches!(e, GcError::Snapshot(ManifestError::Truncated { .. })),
            "{e}"
        );
        assert!(e.to_string().contains("nothing was collected"), "{e}");
        let e = collect(&dir, &store, |_| Err("log unreadable".into())).unwrap_err();
        assert!(matches!(e, GcError::Snapshot(_)), "{e}");
        std::fs::remove_file(dir.path(&a.id).unwrap()).unwrap();
        let e = collect(&dir, &store, |_| Err("log unreadable".into())).unwrap_err();
        assert!(matches!(e, GcError::Extra(_)), "{e}");
        assert_eq!(store.stats(), before);

        // Everything unreferenced: the store empties, and new writes go on
        // in a fresh pack number.
        let r = collect(&dir, &store, |_| Ok(())).unwrap();
        assert_eq!((r.store.objects_kept, store.stats().objects), (0, 0));
        let id = store.put(&[5u8; 4096]).unwrap();
        assert_eq!(store.get(&id).unwrap(), vec![5u8; 4096]);
        assert!(store.stats().packs == 1);
    }
}
