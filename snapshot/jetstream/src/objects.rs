//! Content-addressed objects in a JetStream key-value bucket.
//!
//! Format: bucket `<name>` (stream `KV_<name>`, description
//! `vmm-jetstream/v1 objects`), history 1, file storage, `replicas` copies.
//! The key of an object is the lowercase hex of its 32-byte BLAKE3 hash, the
//! value is its bytes, verbatim (compressed or not is the caller's choice;
//! the hash is of the stored bytes). One message per object.
//!
//! Why a KV bucket and not the JetStream object store: objects are 4 KiB
//! blocks, far below the 1 MiB default max payload, so the object store's
//! chunking buys nothing and costs two messages (chunk + metadata) and a
//! non-atomic existence check per object. A KV put is one message, and
//! "store only if absent" is one server-side check: the publish carries
//! `Nats-Expected-Last-Subject-Sequence: 0`, so the stream rejects it when
//! the key already exists, whoever (VM, host) wrote it first. Objects larger
//! than the server's max payload are refused ([`Error::TooLarge`]).

use std::collections::VecDeque;
use std::sync::Arc;

use async_nats::header::{HeaderMap, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE};
use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::kv;
use bytes::Bytes;

use crate::conn::{Conn, Nats};
use crate::error::{Error, Result};

/// An object's id: the BLAKE3 hash of its bytes.
pub type ObjectId = [u8; 32];

/// How many puts `put_many` keeps unacknowledged at once: below async-nats'
/// in-flight ack limit (5000). 4096 measured ~1.4x faster than 512 on the
/// loopback cluster (see the `put` bench).
pub(crate) const WINDOW: usize = 4096;
/// How many gets `get_many_required` keeps in flight: enough to hide the
/// round trip, few enough not to crowd out the cluster's other clients.
pub const GET_WINDOW: usize = 64;

/// Lowercase hex of an id: the key of the object.
pub fn hex(id: &ObjectId) -> String {
    blake3::Hash::from_bytes(*id).to_hex().to_string()
}

/// A content-addressed object bucket. Cheap to clone (one connection).
#[derive(Clone)]
pub struct ObjectBucket {
    pub(crate) conn: Arc<Conn>,
    name: String,
    kv: kv::Store,
    max_value: usize,
}

impl Nats {
    /// Opens the object bucket `name`, creating it with `replicas` copies
    /// (3 in a 3-node cluster, 1 on a single server) if absent. A bucket of
    /// that name without our marker is refused ([`Error::NotOurs`]).
    pub fn object_bucket(&self, name: &str, replicas: usize) -> Result<ObjectBucket> {
        let conn = &self.conn;
        let kv = self.kv_bucket("object bucket", "objects", name, replicas)?;
        Ok(ObjectBucket {
            conn: conn.clone(),
            name: name.to_string(),
            kv,
            max_value: conn.client.server_info().max_payload,
        })
    }
}

impl std::fmt::Debug for ObjectBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectBucket")
            .field("name", &self.name)
            .field("urls", &self.conn.urls)
            .finish()
    }
}

impl ObjectBucket {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The largest object the server accepts (its max payload, less room
    /// for the headers).
    pub fn max_value_size(&self) -> usize {
        self.max_value.saturating_sub(1024)
    }

    /// Stores `bytes` under `id` unless an object with that id exists.
    /// Returns whether this call stored it. Returns only after the cluster
    /// acknowledged the write (a quorum of replicas has it).
    pub fn put(&self, id: &ObjectId, bytes: &[u8]) -> Result<bool> {
        Ok(self.put_many(&[(*id, bytes)])?[0])
    }

    /// Stores many objects, pipelined: publishes without waiting for each
    /// acknowledgement (up to [`WINDOW`] in flight), then waits for all. On
    /// `Ok`, every object is acknowledged by the cluster; the result says
    /// per object whether this call stored it. An object whose ack was lost
    /// (timeout, reconnect) is published again; if the first attempt had in
    /// fact landed, that object is reported as not new.
    pub fn put_many(&self, items: &[(ObjectId, &[u8])]) -> Result<Vec<bool>> {
        for (id, bytes) in items {
            self.check_put(id, bytes)?;
        }
        self.conn.block_on(async {
            let mut new = vec![false; items.len()];
            let mut retry = Vec::new();
            let mut inflight: VecDeque<(usize, PublishAckFuture)> = VecDeque::new();
            for (i, (id, bytes)) in items.iter().enumerate() {
                if inflight.len() >= WINDOW {
                    let (j, ack) = inflight.pop_front().expect("window is not empty");
                    self.settle(j, ack.await, &mut new, &mut retry, &items[j].0)?;
                }
                match self.publish(id, bytes).await {
                    Ok(ack) => inflight.push_back((i, ack)),
                    Err(e) if transient(e.kind()) => retry.push(i),
                    Err(e) => return Err(Error::js("object put", self.key_target(id), e)),
                }
            }
            while let Some((j, ack)) = inflight.pop_front() {
                self.settle(j, ack.await, &mut new, &mut retry, &items[j].0)?;
            }
            // Retries go one at a time: they are rare (a node went away).
            for i in retry {
                let (id, bytes) = &items[i];
                new[i] = self.put_retrying(id, bytes).await?;
            }
            Ok(new)
        })
    }

    pub(crate) fn check_put(&self, id: &ObjectId, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.max_value_size() {
            return Err(Error::TooLarge {
                bucket: self.name.clone(),
                id: hex(id),
                len: bytes.len(),
                max: self.max_value_size(),
            });
        }
        let actual = blake3::hash(bytes);
        if actual.as_bytes() != id {
            return Err(Error::WrongId {
                id: hex(id),
                actual: actual.to_hex().to_string(),
            });
        }
        Ok(())
    }

    pub(crate) fn key_target(&self, id: &ObjectId) -> String {
        format!("{}/{}", self.name, hex(id))
    }

    pub(crate) async fn publish(
        &self,
        id: &ObjectId,
        bytes: &[u8],
    ) -> Result<PublishAckFuture, async_nats::jetstream::context::PublishError> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, "0");
        self.conn
            .js
            .publish_with_headers(
                format!("$KV.{}.{}", self.name, hex(id)),
                headers,
                Bytes::copy_from_slice(bytes),
            )
            .await
    }

    /// Records the outcome of one acknowledgement: stored, already there
    /// (the stream refused the expected-sequence-0 publish), to retry, or a
    /// hard error.
    fn settle(
        &self,
        i: usize,
        ack: Result<
            async_nats::jetstream::publish::PublishAck,
            async_nats::jetstream::context::PublishError,
        >,
        new: &mut [bool],
        retry: &mut Vec<usize>,
        id: &ObjectId,
    ) -> Result<()> {
        match ack {
            Ok(_) => new[i] = true,
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => new[i] = false,
            Err(e) if transient(e.kind()) => retry.push(i),
            Err(e) => return Err(Error::js("object put", self.key_target(id), e)),
        }
        Ok(())
    }

    /// One put, retried on lost acknowledgements until the connection's
    /// timeout has passed three times over (a reconnect to another node
    /// takes up to a few seconds).
    pub(crate) async fn put_retrying(&self, id: &ObjectId, bytes: &[u8]) -> Result<bool> {
        let deadline = tokio::time::Instant::now() + self.conn.timeout * 3;
        loop {
            let res = match self.publish(id, bytes).await {
                Ok(ack) => ack.await,
                Err(e) => Err(e),
            };
            match res {
                Ok(_) => return Ok(true),
                Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => return Ok(false),
                Err(e) if transient(e.kind()) && tokio::time::Instant::now() < deadline => {
                    tracing::debug!("object put {} retried: {e}", hex(id));
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(Error::js("object put", self.key_target(id), e)),
            }
        }
    }

    /// The object's bytes, or `None` if the bucket has no object `id`.
    /// Bytes that do not hash to `id` are [`Error::Damaged`].
    pub fn get(&self, id: &ObjectId) -> Result<Option<Vec<u8>>> {
        let key = hex(id);
        let value = self
            .conn
            .block_on(self.kv.get(key.clone()))
            .map_err(|e| Error::js("object get", self.key_target(id), e))?;
        let Some(value) = value else {
            return Ok(None);
        };
        let actual = blake3::hash(&value);
        if actual.as_bytes() != id {
            return Err(Error::Damaged {
                bucket: self.name.clone(),
                id: key,
                len: value.len(),
                actual: actual.to_hex().to_string(),
            });
        }
        Ok(Some(value.to_vec()))
    }

    /// [`get_required`](Self::get_required) of each of `ids`, up to
    /// [`GET_WINDOW`] requests in flight at once; the results in order.
    pub fn get_many_required(&self, ids: &[ObjectId]) -> Result<Vec<Vec<u8>>> {
        use futures_util::StreamExt;
        let gets = ids
            .iter()
            .map(|id| async move { (id, self.kv.get(hex(id)).await) });
        let answers: Vec<_> = self.conn.block_on(
            futures_util::stream::iter(gets)
                .buffered(GET_WINDOW)
                .collect::<Vec<_>>(),
        );
        answers
            .into_iter()
            .map(|(id, answer)| {
                let value = answer.map_err(|e| Error::js("object get", self.key_target(id), e))?;
                let value = value.ok_or_else(|| Error::Missing {
                    bucket: self.name.clone(),
                    id: hex(id),
                })?;
                let actual = blake3::hash(&value);
                if actual.as_bytes() != id {
                    return Err(Error::Damaged {
                        bucket: self.name.clone(),
                        id: hex(id),
                        len: value.len(),
                        actual: actual.to_hex().to_string(),
                    });
                }
                Ok(value.to_vec())
            })
            .collect()
    }

    /// Like [`get`](Self::get), but a missing object is [`Error::Missing`]:
    /// for readers that were promised the object exists (a log names it).
    pub fn get_required(&self, id: &ObjectId) -> Result<Vec<u8>> {
        self.get(id)?.ok_or_else(|| Error::Missing {
            bucket: self.name.clone(),
            id: hex(id),
        })
    }

    /// Whether the bucket has object `id` (not verified: see `get`).
    pub fn contains(&self, id: &ObjectId) -> Result<bool> {
        let entry = self
            .conn
            .block_on(self.kv.entry(hex(id)))
            .map_err(|e| Error::js("object lookup", self.key_target(id), e))?;
        Ok(matches!(entry, Some(e) if e.operation == kv::Operation::Put))
    }

    /// How many messages the bucket's stream holds: with history 1 and one
    /// message per object, the number of objects stored.
    pub fn message_count(&self) -> Result<u64> {
        let name = format!("KV_{}", self.name);
        self.conn.block_on(async {
            let mut stream = self
                .conn
                .js
                .get_stream(&name)
                .await
                .map_err(|e| Error::js("stream info", &name, e))?;
            let info = stream
                .info()
                .await
                .map_err(|e| Error::js("stream info", &name, e))?;
            Ok(info.state.messages)
        })
    }
}

/// Failures after which the same publish may succeed: the ack was lost,
/// the connection is moving to another node, or the stream has no leader
/// for a moment (a node died and its replicas are electing one): the server
/// then answers "no responders", which async-nats reports as
/// `StreamNotFound`. Callers retry these only until a deadline, so a stream
/// that is really gone still surfaces as an error.
pub(crate) fn transient(kind: PublishErrorKind) -> bool {
    matches!(
        kind,
        PublishErrorKind::TimedOut
            | PublishErrorKind::BrokenPipe
            | PublishErrorKind::MaxAckPending
            | PublishErrorKind::StreamNotFound
    )
}
