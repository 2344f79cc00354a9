//! The seam between the users of objects (the block tap, snapshots,
//! replay) and where objects live. [`Store`] (a local directory of packs)
//! is one implementation; a replicated backend (NATS JetStream) is the
//! other. Everything above this trait sees the same contract:
//!
//! - objects are keyed by [`ObjectId`] (BLAKE3 of the bytes; the all-zero
//!   objects are never stored and always present);
//! - `put_hashed` stores what is not there yet, visible at once, **not yet
//!   durable**; after [`ObjectBackend::sync`] returns `Ok`, every object
//!   whose put returned before the call is durable in that backend (for a
//!   replicated one: acknowledged by a quorum);
//! - `get` returns the bytes checked against their id, or an error naming
//!   the object and the backend.
use crate::{ObjectId, PutReport, Result, Store};

pub trait ObjectBackend: Send + Sync {
    /// Where the objects live, for messages (a directory, a cluster URL).
    fn location(&self) -> String;

    /// Stores `items` whose ids the caller computed (`ids[i]` is
    /// `ObjectId::of(items[i])`, or the zero id for all-zero data) and
    /// reports what this call added.
    fn put_hashed(&self, items: &[&[u8]], ids: &[ObjectId]) -> Result<PutReport>;

    /// [`ObjectBackend::put_hashed`] for a caller that waits on the put
    /// (the block tap, on the guest's path): a backend may store the bytes
    /// uncompressed and compress them later. Same contract otherwise.
    fn put_hashed_uncompressed(&self, items: &[&[u8]], ids: &[ObjectId]) -> Result<PutReport> {
        self.put_hashed(items, ids)
    }

    /// Object `id`, checked against its hash.
    fn get(&self, id: &ObjectId) -> Result<Vec<u8>>;

    /// Objects `ids`, in order, each as [`ObjectBackend::get`]. A backend
    /// across a network asks for them together, so that a replay waits
    /// for one round trip per batch, not per object.
    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        ids.iter().map(|id| self.get(id)).collect()
    }

    /// Whether object `id` is present (zero objects always are).
    fn contains(&self, id: &ObjectId) -> Result<bool>;

    /// Makes every object put before this call durable (see the module doc).
    fn sync(&self) -> Result<()>;
}

impl ObjectBackend for Store {
    fn location(&self) -> String {
        self.dir().display().to_string()
    }

    fn put_hashed(&self, items: &[&[u8]], ids: &[ObjectId]) -> Result<PutReport> {
        Ok(self.put_batch_hashed_report(items, ids)?.1)
    }

    fn put_hashed_uncompressed(&self, items: &[&[u8]], ids: &[ObjectId]) -> Result<PutReport> {
        Ok(self.put_batch_hashed_raw_report(items, ids)?.1)
    }

    fn get(&self, id: &ObjectId) -> Result<Vec<u8>> {
        Store::get(self, id)
    }

    fn get_many(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        Store::get_many(self, ids)
    }

    fn contains(&self, id: &ObjectId) -> Result<bool> {
        Ok(Store::contains(self, id))
    }

    fn sync(&self) -> Result<()> {
        Store::sync(self)
    }
}
