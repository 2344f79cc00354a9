//! Values in a JetStream key-value bucket: snapshot manifests, and the
//! temporal checkpoints of a record set's logs.
//!
//! Format: bucket `<name>` (stream `KV_<name>`, description
//! `vmm-jetstream/v1 manifests` or `... checkpoints`), history 1, file
//! storage, key = manifest id (or the VM id for its checkpoint list),
//! value = the bytes as the caller encoded them. A manifest is written
//! once: `put` of an existing key is refused, never overwritten; a
//! checkpoint list is rewritten whole by its one writer (`replace`).
//! Reads are single-key gets from the stream leader: no consumer, so they
//! work while a node is down (listing keys needs one).

use std::sync::Arc;

use async_nats::jetstream::kv::{self, CreateErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::conn::{Conn, Nats};
use crate::error::{check_key, Error, Result};

/// The manifest bucket of a record set.
pub struct ManifestBucket {
    conn: Arc<Conn>,
    name: String,
    kv: kv::Store,
}

impl Nats {
    /// Opens the manifest bucket `name`, creating it with `replicas` copies
    /// if absent; one without our marker is refused ([`Error::NotOurs`]).
    pub fn manifest_bucket(&self, name: &str, replicas: usize) -> Result<ManifestBucket> {
        self.write_once_bucket("manifest bucket", "manifests", name, replicas)
    }

    /// Opens the checkpoint bucket `name` (as [`Nats::manifest_bucket`]).
    pub fn checkpoint_bucket(&self, name: &str, replicas: usize) -> Result<ManifestBucket> {
        self.write_once_bucket("checkpoint bucket", "checkpoints", name, replicas)
    }

    fn write_once_bucket(
        &self,
        what: &'static str,
        kind: &str,
        name: &str,
        replicas: usize,
    ) -> Result<ManifestBucket> {
        let conn = &self.conn;
        let kv = self.kv_bucket(what, kind, name, replicas)?;
        Ok(ManifestBucket {
            conn: conn.clone(),
            name: name.to_string(),
            kv,
        })
    }
}

impl std::fmt::Debug for ManifestBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ManifestBucket")
            .field("name", &self.name)
            .field("urls", &self.conn.urls)
            .finish()
    }
}

impl ManifestBucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    fn target(&self, id: &str) -> String {
        format!("{}/{id}", self.name)
    }

    /// Stores manifest `id` once acknowledged by the cluster; an existing
    /// `id` is [`Error::ManifestExists`].
    pub fn put(&self, id: &str, bytes: &[u8]) -> Result<()> {
        check_key("manifest id", id)?;
        let res = self
            .conn
            .block_on(self.kv.create(id, Bytes::copy_from_slice(bytes)));
        match res {
            Ok(_) => Ok(()),
            Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Err(Error::ManifestExists {
                bucket: self.name.clone(),
                id: id.to_string(),
            }),
            Err(e) => Err(Error::js("manifest put", self.target(id), e)),
        }
    }

    /// Stores `bytes` under `key`, replacing what was there (for values
    /// with one writer that rewrites them whole, like a VM's checkpoint
    /// list; manifests use [`Self::put`]).
    pub fn replace(&self, key: &str, bytes: &[u8]) -> Result<()> {
        check_key("key", key)?;
        self.conn
            .block_on(self.kv.put(key, Bytes::copy_from_slice(bytes)))
            .map(drop)
            .map_err(|e| Error::js("bucket put", self.target(key), e))
    }

    /// Manifest `id`'s bytes, `None` if there is none. A read that times
    /// out (a node just went away and the bucket is electing a leader) is
    /// asked again until the connection's timeout has passed three times.
    pub fn get(&self, id: &str) -> Result<Option<Vec<u8>>> {
        check_key("manifest id", id)?;
        let deadline = std::time::Instant::now() + self.conn.timeout * 3;
        loop {
            match self.conn.block_on(self.kv.get(id)) {
                Ok(v) => return Ok(v.map(|b| b.to_vec())),
                Err(e) if std::time::Instant::now() < deadline => {
                    tracing::debug!("get of {} retried: {e}", self.target(id));
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Err(e) => return Err(Error::js("manifest get", self.target(id), e)),
            }
        }
    }

    /// The ids of all manifests, sorted.
    pub fn list(&self) -> Result<Vec<String>> {
        let mut ids = self.conn.block_on(async {
            let mut keys = self
                .kv
                .keys()
                .await
                .map_err(|e| Error::js("manifest list", &self.name, e))?;
            let mut ids = Vec::new();
            while let Some(k) = keys.next().await {
                ids.push(k.map_err(|e| Error::js("manifest list", &self.name, e))?);
            }
            Ok::<_, Error>(ids)
        })?;
        ids.sort();
        Ok(ids)
    }
}
