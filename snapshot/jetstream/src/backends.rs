//! The project's storage seams on JetStream: [`Remote`] is an object
//! backend (`store::ObjectBackend`) and a log backend
//! (`changelog::LogBackend`), and [`RemoteAppend`] writes one VM's log
//! (`changelog::LogAppend`). Records travel in their message form
//! (`changelog::log::wire`), packed by [`LogStream::append_many`]; blocks
//! go to the object bucket under their BLAKE3 id.
//!
//! A record set is named by a URL, `nats://HOST:PORT[,HOST:PORT...]/NAME`:
//! stream `vmm-NAME` (see `log.rs`), bucket `NAME-objects` (`objects.rs`),
//! bucket `NAME-snapshots` for manifests.
//!
//! Durability: every append and put returns after the stream leader
//! acknowledged it, i.e. once a quorum of replicas stored it (see the crate
//! doc for what that means on a 2.9 server); `sync` therefore has nothing
//! left to wait for.
use std::sync::Arc;
use std::time::Duration;

use changelog::log::{wire, CutReport, LogError, RecordKind};
use changelog::{
    Checkpoint, DiskState, Hlc, HlcClock, LogAppend, LogBackend, NodeId, Record as LogRecord,
    Records,
};
use store::{is_all_zero, ObjectBackend, ObjectId, PutReport, StoreError};

use crate::{Error, LogStream, ManifestBucket, Nats, ObjectBucket, RemoteUrl};

/// A record set in a cluster: its log stream and its buckets.
pub struct Remote {
    url: RemoteUrl,
    logs: Arc<LogStream>,
    objects: ObjectBucket,
    manifests: ManifestBucket,
    checkpoints: Arc<ManifestBucket>,
    _nats: Nats,
}

impl std::fmt::Debug for Remote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Remote({})", self.url)
    }
}

impl Remote {
    /// Connects to the cluster and opens (creating them with `replicas`
    /// copies if absent) the record set's stream and buckets. A record set
    /// that exists with another replica count is refused: writing into it
    /// would not keep the copies asked for.
    pub fn open(url: &RemoteUrl, replicas: usize, timeout: Duration) -> Result<Remote, Error> {
        let nats = Nats::connect(&url.servers, timeout)?;
        if let Some(have) = nats.stream_replicas(&format!("vmm-{}", url.name))? {
            if have != replicas {
                return Err(Error::ReplicasDiffer {
                    name: url.name.clone(),
                    have,
                    asked: replicas,
                });
            }
        }
        Remote::on(nats, url, replicas)
    }

    fn on(nats: Nats, url: &RemoteUrl, replicas: usize) -> Result<Remote, Error> {
        Ok(Remote {
            logs: Arc::new(nats.log_stream(&url.name, replicas)?),
            objects: nats.object_bucket(&format!("{}-objects", url.name), replicas)?,
            manifests: nats.manifest_bucket(&format!("{}-snapshots", url.name), replicas)?,
            checkpoints: Arc::new(
                nats.checkpoint_bucket(&format!("{}-checkpoints", url.name), replicas)?,
            ),
            url: url.clone(),
            _nats: nats,
        })
    }

    /// Opens a record set that exists (a reader must not create one): its
    /// buckets are opened with the log stream's replica count.
    pub fn open_existing(url: &RemoteUrl, timeout: Duration) -> Result<Remote, Error> {
        let nats = Nats::connect(&url.servers, timeout)?;
        let replicas = nats
            .stream_replicas(&format!("vmm-{}", url.name))?
            .ok_or_else(|| Error::NoRecordSet {
                url: url.servers.clone(),
                name: url.name.clone(),
            })?;
        Remote::on(nats, url, replicas)
    }

    pub fn url(&self) -> &RemoteUrl {
        &self.url
    }

    /// The log stream's retention limits.
    pub fn retention(&self) -> Result<crate::Retention, Error> {
        self.logs.retention()
    }

    /// Sets the log stream's retention limits (see `retention.rs`).
    pub fn set_retention(&self, r: crate::Retention) -> Result<(), Error> {
        self.logs.set_retention(r)
    }

    /// The record set's object bucket.
    pub fn objects(&self) -> &ObjectBucket {
        &self.objects
    }

    /// The bucket of snapshot manifests.
    pub fn manifests(&self) -> &ManifestBucket {
        &self.manifests
    }

    /// Objects stored in the bucket (each once, whoever put it).
    pub fn object_count(&self) -> Result<u64, Error> {
        self.objects.message_count()
    }

    /// A writer of `vm`'s log, continuing after its last record (its
    /// clock resumes from that record's stamp), stamping as this host.
    pub fn appender(&self, vm: &str) -> Result<RemoteAppend, LogError> {
        let last = LogBackend::last_seq(self, vm)?;
        let mut clock = HlcClock::new(NodeId::local());
        if last > 0 {
            if let Some(r) = self.records(vm, last)?.last().transpose()? {
                clock.observe(r.hlc());
            }
        }
        let last_checkpoint = self.checkpoints(vm)?.last().map_or(0, |c| c.seq);
        Ok(RemoteAppend {
            logs: Arc::clone(&self.logs),
            checkpoints: Arc::clone(&self.checkpoints),
            location: self.url.to_string(),
            vm: vm.to_string(),
            pending: Vec::new(),
            last_seq: last,
            clock,
            last_checkpoint,
        })
    }

    fn log_err(&self, e: Error) -> LogError {
        log_err(&self.url.to_string(), e)
    }

    fn store_err(&self, e: Error) -> StoreError {
        StoreError::Backend {
            location: self.url.to_string(),
            source: Box::new(e),
        }
    }
}

fn log_err(location: &str, e: Error) -> LogError {
    LogError::Backend {
        location: location.to_string(),
        source: Box::new(e),
    }
}

impl ObjectBackend for Remote {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn put_hashed(&self, items: &[&[u8]], ids: &[ObjectId]) -> store::Result<PutReport> {
        // All-zero objects are never stored (their ids say their length).
        let stored: Vec<(ObjectId, &[u8])> = items
            .iter()
            .zip(ids)
            .filter(|(item, _)| !is_all_zero(item))
            .map(|(item, id)| (*id, *item))
            .collect();
        let batch: Vec<([u8; 32], &[u8])> = stored.iter().map(|(id, b)| (id.0, *b)).collect();
        let new = self
            .objects
            .put_many(&batch)
            .map_err(|e| self.store_err(e))?;
        let mut report = PutReport::default();
        for ((_, bytes), fresh) in stored.iter().zip(new) {
            if fresh {
                report.new_objects += 1;
                report.new_raw_bytes += bytes.len() as u64;
                report.new_stored_bytes += bytes.len() as u64;
            }
        }
        Ok(report)
    }

    fn get(&self, id: &ObjectId) -> store::Result<Vec<u8>> {
        if let Some(len) = id.zero_len() {
            return Ok(vec![0; len]);
        }
        self.objects
            .get_required(&id.0)
            .map_err(|e| self.store_err(e))
    }

    fn get_many(&self, ids: &[ObjectId]) -> store::Result<Vec<Vec<u8>>> {
        let stored: Vec<[u8; 32]> = ids
            .iter()
            .filter(|id| id.zero_len().is_none())
            .map(|id| id.0)
            .collect();
        let mut fetched = self
            .objects
            .get_many_required(&stored)
            .map_err(|e| self.store_err(e))?
            .into_iter();
        Ok(ids
            .iter()
            .map(|id| match id.zero_len() {
                Some(len) => vec![0; len],
                None => fetched.next().expect("one answer per stored id"),
            })
            .collect())
    }

    fn contains(&self, id: &ObjectId) -> store::Result<bool> {
        if id.zero_len().is_some() {
            return Ok(true);
        }
        self.objects.contains(&id.0).map_err(|e| self.store_err(e))
    }

    fn sync(&self) -> store::Result<()> {
        Ok(())
    }
}

impl LogBackend for Remote {
    fn location(&self) -> String {
        self.url.to_string()
    }

    fn checkpoints(&self, vm: &str) -> Result<Vec<Checkpoint>, LogError> {
        read_checkpoints(&self.checkpoints, vm).map_err(|e| self.log_err(e))
    }

    fn vm_ids(&self) -> Result<Vec<String>, LogError> {
        self.logs.vms().map_err(|e| self.log_err(e))
    }

    fn last_seq(&self, vm: &str) -> Result<u64, LogError> {
        // The last message holds the last records; read just it.
        let Some(last_msg) = self.logs.last(vm).map_err(|e| self.log_err(e))? else {
            return Ok(0);
        };
        let mut last = 0;
        for record in self.logs.read(vm, last_msg).map_err(|e| self.log_err(e))? {
            let record = record.map_err(|e| self.log_err(e))?;
            last = decode(&self.url.to_string(), &record.data)?.seq;
        }
        Ok(last)
    }

    fn records(&self, vm: &str, from: u64) -> Result<Records<'_>, LogError> {
        let location = self.url.to_string();
        let iter = self.logs.read(vm, 1).map_err(|e| self.log_err(e))?;
        Ok(Box::new(
            iter.map(move |r| {
                r.map_err(|e| log_err(&location, e))
                    .and_then(|r| decode(&location, &r.data))
            })
            .filter(move |r| r.as_ref().map_or(true, |r| r.seq >= from)),
        ))
    }
}

fn decode(location: &str, bytes: &[u8]) -> Result<LogRecord, LogError> {
    wire::decode(bytes).map_err(|e| LogError::Backend {
        location: location.to_string(),
        source: Box::new(e),
    })
}

/// Bytes of one VM's checkpoint list at most: well below a message's
/// 1 MiB limit.
const MAX_CHECKPOINT_LIST: usize = 512 << 10;

/// `vm`'s checkpoints in the record set's checkpoint bucket (key = VM id,
/// value = the JSON list, by seq); none if it has none.
fn read_checkpoints(bucket: &ManifestBucket, vm: &str) -> Result<Vec<Checkpoint>, Error> {
    let Some(bytes) = bucket.get(vm)? else {
        return Ok(Vec::new());
    };
    match serde_json::from_slice::<Vec<Checkpoint>>(&bytes) {
        Ok(list) => Ok(list),
        // Derived data: an unreadable list is not used.
        Err(e) => {
            tracing::warn!(
                "the checkpoint list of VM {vm} in {} is unreadable: {e}",
                bucket.name()
            );
            Ok(Vec::new())
        }
    }
}

/// Writes one VM's log in a cluster (see the module doc).
pub struct RemoteAppend {
    logs: Arc<LogStream>,
    checkpoints: Arc<ManifestBucket>,
    /// The seq of the newest checkpoint in the cluster (0: none).
    last_checkpoint: u64,
    location: String,
    vm: String,
    /// Records appended and not yet sent, in their message form.
    pending: Vec<Vec<u8>>,
    last_seq: u64,
    /// Stamps appended records; its last stamp is the last record's.
    clock: HlcClock,
}

impl RemoteAppend {
    /// Queues `kind` as the next record, stamped `hlc` (already checked).
    fn push(&mut self, hlc: Hlc, kind: RecordKind) -> u64 {
        let record = LogRecord::new(self.last_seq + 1, hlc, kind);
        self.pending.push(wire::encode(&record));
        self.last_seq = record.seq;
        record.seq
    }
}

impl RemoteAppend {
    /// The seq of the newest checkpoint in the cluster (0: none).
    pub fn last_checkpoint(&self) -> u64 {
        self.last_checkpoint
    }
}

impl LogAppend for RemoteAppend {
    fn location(&self) -> String {
        format!("{} (VM {})", self.location, self.vm)
    }

    fn append(&mut self, kind: RecordKind) -> Result<u64, LogError> {
        let ts_ns = store::clock::now_ns().max(self.clock.last_physical());
        self.append_at(ts_ns, kind)
    }

    fn append_at(&mut self, ts_ns: u64, kind: RecordKind) -> Result<u64, LogError> {
        kind.validate().map_err(LogError::InvalidRecord)?;
        let last_ts_ns = self.clock.last_physical();
        if ts_ns < last_ts_ns {
            return Err(LogError::TimeWentBackwards { ts_ns, last_ts_ns });
        }
        let hlc = self.clock.tick(ts_ns);
        Ok(self.push(hlc, kind))
    }

    fn append_stamped(&mut self, hlc: Hlc, kind: RecordKind) -> Result<u64, LogError> {
        kind.validate().map_err(LogError::InvalidRecord)?;
        if !self.clock.accepts(hlc) {
            return Err(LogError::ClockWentBackwards {
                hlc,
                last: self.clock.last().unwrap_or_default(),
            });
        }
        self.clock.observe(hlc);
        Ok(self.push(hlc, kind))
    }

    fn last_hlc(&self) -> Option<Hlc> {
        self.clock.last()
    }

    fn commit(&mut self) -> Result<(), LogError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let batch: Vec<&[u8]> = self.pending.iter().map(Vec::as_slice).collect();
        self.logs
            .append_many(&self.vm, &batch)
            .map_err(|e| log_err(&self.location, e))?;
        self.pending.clear();
        Ok(())
    }

    fn sync(&mut self) -> Result<(), LogError> {
        // An acknowledged append is stored by a quorum already.
        self.commit()
    }

    fn last_seq(&self) -> u64 {
        self.last_seq
    }

    fn add_checkpoint(&mut self, cp: &Checkpoint) -> Result<(), LogError> {
        let mut list = read_checkpoints(&self.checkpoints, &self.vm)
            .map_err(|e| log_err(&self.location, e))?;
        if !list.iter().any(|c| c.seq == cp.seq) {
            list.push(cp.clone());
            list.sort_by_key(|c| c.seq);
            // The newest that fit one value; older ones are dropped first
            // (a replay then starts from an older point only).
            let mut bytes = serde_json::to_vec(&list).expect("checkpoints serialize");
            while bytes.len() > MAX_CHECKPOINT_LIST && list.len() > 1 {
                list.remove(0);
                bytes = serde_json::to_vec(&list).expect("checkpoints serialize");
            }
            self.checkpoints
                .replace(&self.vm, &bytes)
                .map_err(|e| log_err(&self.location, e))?;
        }
        self.last_checkpoint = self.last_checkpoint.max(cp.seq);
        Ok(())
    }

    fn close(
        mut self: Box<Self>,
        _at_last_barrier: Option<(u64, &DiskState)>,
    ) -> Result<(), LogError> {
        self.commit()
    }

    fn abandon(self: Box<Self>) -> Result<Option<CutReport>, LogError> {
        // What was not sent is dropped; what was sent is acknowledged.
        Ok(None)
    }
}
