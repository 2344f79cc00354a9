//! Synchronous replication of a recording to a NATS JetStream cluster
//! (`vmm run --record DIR --replicate nats://HOST:PORT/NAME`): after each
//! barrier is durable in the record directory, the records since the
//! cluster's copy ended, and every block they name, are pushed, and the
//! guest's FLUSH completes only once the cluster acknowledged them all (a
//! quorum of replicas stored them). A push that fails is a recording
//! failure like a full disk: the guest gets I/O errors, the run exits 122,
//! and the next run catches the cluster up from the local log.
//!
//! The blocks go ahead: each write's blocks are published as soon as the
//! write is recorded ([`Replica::stage`]), their acknowledgements left
//! pending, so a barrier waits for what is still in flight and the
//! records, not for the whole upload.
use std::time::Duration;

use changelog::log::LogError;
use changelog::recording::RecordDir;
use introspection::TapError;
use jetstream::push::{push_from, push_log, PushError, PushReport};
use jetstream::{PutPipeline, Remote, RemoteAppend, RemoteUrl};
use store::{is_all_zero, ObjectId, Store, BLOCK_SIZE};

use super::error::RecorderError;

/// How long the cluster may take to answer one request.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Where a recording is replicated to.
#[derive(Debug, Clone)]
pub struct ReplicaConfig {
    pub url: RemoteUrl,
    /// Copies the cluster keeps, when it creates the record set.
    pub replicas: usize,
}

pub struct Replica {
    remote: Remote,
    dir: RecordDir,
    store: Store,
    vm: String,
    /// The writer of the cluster's copy, which knows where it ends: a
    /// barrier's push reads nothing from the cluster.
    out: RemoteAppend,
    /// Blocks sent ahead of their barrier.
    ahead: PutPipeline,
}

impl Replica {
    /// Connects (an unreachable cluster fails here, before the VM starts)
    /// and catches the cluster's copy of `vm`'s log up with the local one
    /// (a copy that is not a prefix of the local log is refused).
    pub fn open(
        config: &ReplicaConfig,
        dir: &RecordDir,
        vm: &str,
    ) -> Result<Replica, RecorderError> {
        let err = |source: Box<dyn std::error::Error + Send + Sync>| RecorderError::Replicate {
            url: config.url.to_string(),
            source,
        };
        let remote =
            Remote::open(&config.url, config.replicas, TIMEOUT).map_err(|e| err(Box::new(e)))?;
        let store = dir.open_store().map_err(|e| err(Box::new(e)))?;
        if dir.log_dir(vm).is_dir() {
            push_log(dir, &store, vm, &remote).map_err(|e| err(Box::new(e)))?;
        }
        let out = remote.appender(vm).map_err(|e| err(Box::new(e)))?;
        let ahead = remote.objects().pipeline();
        Ok(Replica {
            ahead,
            remote,
            dir: dir.clone(),
            store,
            vm: vm.to_string(),
            out,
        })
    }

    /// Sends the blocks of a write just recorded (whole blocks; all-zero
    /// ones are never stored) without waiting for the cluster.
    pub fn stage(&mut self, data: &[u8]) -> Result<(), TapError> {
        for block in data.chunks_exact(BLOCK_SIZE) {
            if is_all_zero(block) {
                continue;
            }
            let id = ObjectId::of(block).0;
            self.ahead
                .put(id, block.to_vec())
                .map_err(|e| self.backend_error(Box::new(e)))?;
        }
        Ok(())
    }

    fn backend_error(&self, source: Box<dyn std::error::Error + Send + Sync>) -> TapError {
        TapError::Log(LogError::Backend {
            location: self.remote.url().to_string(),
            source,
        })
    }

    /// Pushes what the local log has and the cluster lacks: waits for the
    /// blocks sent ahead, sends any other block the records name, then the
    /// records.
    pub fn push(&mut self) -> Result<PushReport, TapError> {
        self.ahead
            .settle()
            .map_err(|e| self.backend_error(Box::new(e)))?;
        let ahead = &self.ahead;
        let report = push_from(
            &self.dir,
            &self.store,
            &self.vm,
            &self.remote,
            &mut self.out,
            &|id| ahead.acknowledged(&id.0),
        )
        .map_err(|e| match e {
            PushError::Log(e) => TapError::Log(e),
            PushError::Store(e) => TapError::Store(e),
            other => TapError::Log(LogError::Backend {
                location: self.remote.url().to_string(),
                source: Box::new(other),
            }),
        })?;
        self.ahead.forget();
        Ok(report)
    }
}
