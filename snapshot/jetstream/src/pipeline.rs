//! Objects sent ahead of the barrier that will need them.
//!
//! A recording replicated synchronously must not complete a guest FLUSH
//! before the cluster acknowledged every block the flushed writes name.
//! Sending those blocks only at the flush puts the whole upload on the
//! guest's critical path; a [`PutPipeline`] publishes each block as soon
//! as the write is recorded and keeps its acknowledgement pending, so that
//! at the flush most acks are already in. [`PutPipeline::settle`] waits
//! for all of them (publishing again what a lost ack left unknown); only
//! after it returns are the blocks [`PutPipeline::acknowledged`].
use std::collections::{HashSet, VecDeque};
use std::future::IntoFuture;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use bytes::Bytes;

use crate::error::{Error, Result};
use crate::objects::{transient, ObjectId, WINDOW};
use crate::ObjectBucket;

/// Puts in flight, and what was acknowledged since the last `forget`.
pub struct PutPipeline {
    bucket: ObjectBucket,
    inflight: VecDeque<(ObjectId, Bytes, PublishAckFuture)>,
    /// Published in this round (in flight or acknowledged): not again.
    sent: HashSet<ObjectId>,
    /// Acknowledged (stored now or before) in this round.
    acked: HashSet<ObjectId>,
    /// Whose ack was lost: published again, one at a time, by `settle`.
    retry: Vec<(ObjectId, Bytes)>,
    /// Objects this pipeline stored that the bucket did not have.
    pub new_objects: u64,
}

impl ObjectBucket {
    /// A pipeline of puts into this bucket.
    pub fn pipeline(&self) -> PutPipeline {
        PutPipeline {
            bucket: self.clone(),
            inflight: VecDeque::new(),
            sent: HashSet::new(),
            acked: HashSet::new(),
            retry: Vec::new(),
            new_objects: 0,
        }
    }
}

impl PutPipeline {
    /// Publishes object `id` unless this round already did; returns
    /// without waiting for its acknowledgement (unless [`WINDOW`] puts are
    /// in flight: then the oldest is waited for).
    pub fn put(&mut self, id: ObjectId, bytes: Vec<u8>) -> Result<()> {
        if self.sent.contains(&id) {
            return Ok(());
        }
        self.bucket.check_put(&id, &bytes)?;
        let bytes = Bytes::from(bytes);
        if self.inflight.len() >= WINDOW {
            let (oid, obytes, ack) = self.inflight.pop_front().expect("window is not empty");
            let res = self.bucket.conn.block_on(ack.into_future());
            self.take(oid, obytes, res)?;
        }
        let bucket = &self.bucket;
        match bucket.conn.block_on(bucket.publish(&id, &bytes)) {
            Ok(ack) => self.inflight.push_back((id, bytes, ack)),
            Err(e) if transient(e.kind()) => self.retry.push((id, bytes)),
            Err(e) => return Err(Error::js("object put", bucket.key_target(&id), e)),
        }
        self.sent.insert(id);
        Ok(())
    }

    fn take(
        &mut self,
        id: ObjectId,
        bytes: Bytes,
        res: std::result::Result<
            async_nats::jetstream::publish::PublishAck,
            async_nats::jetstream::context::PublishError,
        >,
    ) -> Result<()> {
        match res {
            Ok(_) => {
                self.new_objects += 1;
                self.acked.insert(id);
            }
            Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                self.acked.insert(id);
            }
            Err(e) if transient(e.kind()) => self.retry.push((id, bytes)),
            Err(e) => return Err(Error::js("object put", self.bucket.key_target(&id), e)),
        }
        Ok(())
    }

    /// Waits until every object put so far is acknowledged.
    pub fn settle(&mut self) -> Result<()> {
        while let Some((id, bytes, ack)) = self.inflight.pop_front() {
            let res = self.bucket.conn.block_on(ack.into_future());
            self.take(id, bytes, res)?;
        }
        for (id, bytes) in std::mem::take(&mut self.retry) {
            let bucket = &self.bucket;
            if bucket.conn.block_on(bucket.put_retrying(&id, &bytes))? {
                self.new_objects += 1;
            }
            self.acked.insert(id);
        }
        Ok(())
    }

    /// Whether `id` was acknowledged in this round.
    pub fn acknowledged(&self, id: &ObjectId) -> bool {
        self.acked.contains(id)
    }

    /// Starts a new round: what was acknowledged is forgotten (the records
    /// that needed it are in the cluster), so memory stays bounded by one
    /// barrier's writes. Call after [`Self::settle`].
    pub fn forget(&mut self) {
        debug_assert!(self.inflight.is_empty() && self.retry.is_empty());
        self.sent.clear();
        self.acked.clear();
    }
}
