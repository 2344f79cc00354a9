//! Change-log records in a JetStream stream: one stream per record set, one
//! subject per VM.
//!
//! Format: stream `vmm-<NAME>` (description `vmm-jetstream/v1 log`, file
//! storage, `replicas` copies, limits retention) holds subjects
//! `vmm.<NAME>.log.<vm>`. A message body is a batch of records, each a
//! little-endian u32 length followed by that many bytes; the body ends
//! exactly after the last record. `append` writes a batch of one.
//!
//! One writer per VM: every message carries
//! `Nats-Expected-Last-Subject-Sequence` = the stream sequence of the VM's
//! last message as this writer knows it, so a second writer (or a writer
//! whose view is stale) is refused by the stream and gets
//! [`Error::Conflict`]. That check needs the previous message's sequence
//! before the next publish, so it cannot be pipelined message by message on
//! a 2.9 server (no atomic batch publish before 2.12). `append_many`
//! therefore packs many records into each message (up to the max payload):
//! one round trip per ~1 MiB, and a batch is stored whole or not at all.
//! Each message also carries `Nats-Msg-Id` =
//! `<writer>-<vm>-<expected>-<hash of body>` (`writer` unique per
//! `LogStream`), so a publish whose ack was lost can be sent again: the
//! stream's duplicate window answers with the first copy's sequence instead
//! of storing it twice. The body hash keeps a *different* batch from ever
//! being taken for a duplicate (it would be acked without being stored):
//! after a lost ack that had in fact landed, the next batch is refused as
//! [`Error::Conflict`] instead.
//!
//! Reading fetches one message at a time from the stream leader ("the next
//! message of the VM's subject at or after sequence N", a 2.9 message-get
//! request), from a stream sequence up to the VM's last message at the
//! time `read` was called. No consumer: creating one needs the meta
//! leader, which with a node down could outlast any timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::header::{HeaderMap, NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_ID};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::stream::{self, LastRawMessageErrorKind};
use bytes::Bytes;
use futures_util::StreamExt;

use crate::conn::{description, open_or_create, Conn, Nats};
use crate::error::{check_name, Error, Result};
use crate::objects::transient;

/// One record read back: the stream sequence of the message that holds it,
/// its index in that message's batch, and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    pub index: u32,
    pub data: Vec<u8>,
}

/// The change logs of one record set.
pub struct LogStream {
    pub(crate) conn: Arc<Conn>,
    pub(crate) stream_name: String,
    prefix: String,
    stream: stream::Stream,
    /// Unique per `LogStream`: makes message ids of two writers distinct.
    writer: String,
    /// Per VM, the stream sequence of its last message as this writer knows
    /// it (`None` until fetched on first use, then advanced by our own
    /// acks). One lock per VM: VMs append in parallel, one VM's batches
    /// go out one after the other.
    tails: Mutex<HashMap<String, Arc<Mutex<Option<u64>>>>>,
    max_body: usize,
}

impl Nats {
    /// Opens the record set `name` (stream `vmm-<name>`), creating it with
    /// `replicas` copies if absent; a stream of that name without our
    /// marker is refused ([`Error::NotOurs`]).
    pub fn log_stream(&self, name: &str, replicas: usize) -> Result<LogStream> {
        check_name("record set name", name)?;
        let conn = &self.conn;
        let stream_name = format!("vmm-{name}");
        let prefix = format!("vmm.{name}.log");
        let stream = conn.block_on(open_or_create(
            &conn.js,
            conn.timeout,
            "stream",
            &stream_name,
            || async {
                conn.js
                    .create_stream(stream::Config {
                        name: stream_name.clone(),
                        description: Some(description("log")),
                        subjects: vec![format!("{prefix}.*")],
                        storage: stream::StorageType::File,
                        num_replicas: replicas,
                        // Reads go to the stream leader (see conn::kv_bucket).
                        allow_direct: false,
                        ..Default::default()
                    })
                    .await
                    .map(drop)
                    .map_err(|e| Error::js("stream create", &stream_name, e))
            },
        ))?;
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        // Unique per LogStream: process, time, and a per-process counter.
        static OPENED: AtomicU64 = AtomicU64::new(0);
        let n = OPENED.fetch_add(1, Ordering::Relaxed);
        let seed = format!("{}-{nanos}-{n}", std::process::id());
        let writer = blake3::hash(seed.as_bytes()).to_hex()[..16].to_string();
        Ok(LogStream {
            conn: conn.clone(),
            stream_name,
            prefix,
            stream,
            writer,
            tails: Mutex::new(HashMap::new()),
            max_body: conn.client.server_info().max_payload.saturating_sub(4096),
        })
    }
}

impl std::fmt::Debug for LogStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStream")
            .field("stream_name", &self.stream_name)
            .field("urls", &self.conn.urls)
            .finish()
    }
}

impl LogStream {
    /// The stream's name (`vmm-<NAME>`).
    pub fn name(&self) -> &str {
        &self.stream_name
    }

    fn subject(&self, vm: &str) -> String {
        format!("{}.{vm}", self.prefix)
    }

    /// Appends one record to `vm`'s log and returns its stream sequence,
    /// once the cluster acknowledged it (a quorum of replicas has it).
    pub fn append(&self, vm: &str, record: &[u8]) -> Result<u64> {
        self.append_many(vm, &[record])
    }

    /// Appends records to `vm`'s log, packed into as few messages as the
    /// max payload allows, and returns the stream sequence of the last
    /// message once every message is acknowledged. On an error, a prefix of
    /// the messages may be stored (each message whole or not at all). An
    /// empty batch sends nothing and returns the last sequence known (0 for
    /// a VM without records).
    pub fn append_many(&self, vm: &str, records: &[&[u8]]) -> Result<u64> {
        check_name("VM name", vm)?;
        let slot = self
            .tails
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(vm.to_string())
            .or_default()
            .clone();
        let mut known = slot.lock().unwrap_or_else(|p| p.into_inner());
        let mut tail = match *known {
            Some(t) => t,
            None => self.last(vm)?.unwrap_or(0),
        };
        // Checked before anything is sent, so a refused batch stores nothing.
        if let Some(r) = records.iter().find(|r| 4 + r.len() > self.max_body) {
            return Err(Error::RecordTooLarge {
                stream: self.stream_name.clone(),
                vm: vm.to_string(),
                len: r.len(),
                max: self.max_body - 4,
            });
        }
        let subject = self.subject(vm);
        let mut body = Vec::new();
        let mut rest = records;
        while !rest.is_empty() {
            body.clear();
            while let Some((r, more)) = rest.split_first() {
                if !body.is_empty() && body.len() + 4 + r.len() > self.max_body {
                    break;
                }
                body.extend_from_slice(&(r.len() as u32).to_le_bytes());
                body.extend_from_slice(r);
                rest = more;
            }
            tail = self.publish(vm, &subject, tail, Bytes::copy_from_slice(&body))?;
            *known = Some(tail);
        }
        Ok(tail)
    }

    /// Publishes one message expecting `expected` as the subject's last
    /// sequence; retries lost acks with the same message id.
    fn publish(&self, vm: &str, subject: &str, expected: u64, body: Bytes) -> Result<u64> {
        let mut headers = HeaderMap::new();
        headers.insert(NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, expected.to_string());
        let digest = blake3::hash(&body).to_hex();
        let msg_id = format!("{}-{vm}-{expected}-{}", self.writer, &digest[..32]);
        headers.insert(NATS_MESSAGE_ID, msg_id);
        let js = &self.conn.js;
        self.conn.block_on(async {
            let deadline = tokio::time::Instant::now() + self.conn.timeout * 3;
            loop {
                let res = match js
                    .publish_with_headers(subject.to_string(), headers.clone(), body.clone())
                    .await
                {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match res {
                    Ok(ack) => return Ok(ack.sequence),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => {
                        return Err(Error::Conflict {
                            stream: self.stream_name.clone(),
                            vm: vm.to_string(),
                            expected,
                        })
                    }
                    Err(e) if transient(e.kind()) && tokio::time::Instant::now() < deadline => {
                        tracing::debug!("append to {subject} retried: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(Error::js("append", subject, e)),
                }
            }
        })
    }

    /// The stream sequence of `vm`'s last message, `None` if it has none.
    pub fn last(&self, vm: &str) -> Result<Option<u64>> {
        check_name("VM name", vm)?;
        let subject = self.subject(vm);
        // Like appends, a request that times out while a node is gone (a
        // leader election) is retried until 3x the timeout.
        self.conn.block_on(async {
            let deadline = tokio::time::Instant::now() + self.conn.timeout * 3;
            loop {
                match self.stream.get_last_raw_message_by_subject(&subject).await {
                    Ok(msg) => return Ok(Some(msg.sequence)),
                    Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                        return Ok(None)
                    }
                    Err(e)
                        if (e.kind() == LastRawMessageErrorKind::Other
                            || matches!(e.kind(), LastRawMessageErrorKind::JetStream(j) if j.code() == 503))
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tracing::debug!("last message of {subject} retried: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    Err(e) => return Err(Error::js("last message", subject, e)),
                }
            }
        })
    }

    /// The VMs that have records, sorted.
    pub fn vms(&self) -> Result<Vec<String>> {
        let filter = format!("{}.*", self.prefix);
        let mut vms = self.conn.block_on(async {
            let mut subjects = self
                .stream
                .info_with_subjects(&filter)
                .await
                .map_err(|e| Error::js("stream info", &self.stream_name, e))?;
            let mut vms = Vec::new();
            while let Some(s) = subjects.next().await {
                let (subject, _count) =
                    s.map_err(|e| Error::js("stream info", &self.stream_name, e))?;
                if let Some(vm) = subject.strip_prefix(&format!("{}.", self.prefix)) {
                    vms.push(vm.to_string());
                }
            }
            Ok::<_, Error>(vms)
        })?;
        vms.sort();
        Ok(vms)
    }

    /// `vm`'s records in order, from the message at stream sequence `from`
    /// (or the first after it) to its last message as of this call. Pass
    /// 0 or 1 for all, `seq + 1` to continue after a record of message `seq`.
    pub fn read(&self, vm: &str, from: u64) -> Result<Records<'_>> {
        let end = self.last(vm)?.unwrap_or(0);
        Ok(Records {
            log: self,
            subject: self.subject(vm),
            next: from.max(1),
            end,
            pending: VecDeque::new(),
            done: end == 0 || from > end,
        })
    }
}

/// Iterator over a VM's records, from [`LogStream::read`].
///
/// Each message is fetched from the stream leader by "the next message of
/// this subject at or after sequence N" (a 2.9 message-get request), not
/// through a consumer: creating a consumer needs the cluster's meta leader
/// and, with a node down, could outlast any timeout; a message get needs
/// only the stream's leader, like an append.
pub struct Records<'a> {
    log: &'a LogStream,
    subject: String,
    /// The stream sequence to read from next.
    next: u64,
    end: u64,
    pending: VecDeque<Record>,
    done: bool,
}

impl Records<'_> {
    fn fetch(&mut self) -> Result<()> {
        let stream = &self.log.stream_name;
        let (subject, from) = (self.subject.clone(), self.next);
        let res = self.log.conn.block_on(async {
            let deadline = tokio::time::Instant::now() + self.log.conn.timeout * 3;
            loop {
                let res = self
                    .log
                    .stream
                    .raw_message_builder()
                    .sequence(from)
                    .next_by_subject(subject.clone())
                    .send()
                    .await;
                match res {
                    Err(e)
                        if (e.kind() == LastRawMessageErrorKind::Other
                            || matches!(e.kind(), LastRawMessageErrorKind::JetStream(j) if j.code() == 503))
                            && tokio::time::Instant::now() < deadline =>
                    {
                        tracing::debug!("read of {subject} at {from} retried: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    other => return other,
                }
            }
        });
        let msg = match res {
            Ok(msg) => msg,
            Err(e) if e.kind() == LastRawMessageErrorKind::NoMessageFound => {
                self.done = true;
                return Ok(());
            }
            Err(e) => return Err(Error::js("read", &self.subject, e)),
        };
        let seq = msg.sequence;
        let records = split_batch(&msg.payload).ok_or_else(|| Error::Malformed {
            stream: stream.clone(),
            seq,
            what: "record lengths do not add up to the message body".to_string(),
        })?;
        for (index, data) in records.into_iter().enumerate() {
            self.pending.push_back(Record {
                seq,
                index: index as u32,
                data: data.to_vec(),
            });
        }
        self.next = seq + 1;
        if seq >= self.end {
            self.done = true;
        }
        Ok(())
    }
}

impl Iterator for Records<'_> {
    type Item = Result<Record>;

    fn next(&mut self) -> Option<Result<Record>> {
        loop {
            if let Some(r) = self.pending.pop_front() {
                return Some(Ok(r));
            }
            if self.done {
                return None;
            }
            if let Err(e) = self.fetch() {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// Splits a message body into its records; `None` if the lengths do not
/// end exactly at the end of the body.
fn split_batch(mut body: &[u8]) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_le_bytes(body.get(..4)?.try_into().ok()?) as usize;
        let rec = body.get(4..4 + len)?;
        out.push(rec);
        body = &body[4 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::split_batch;

    #[test]
    fn batch_framing_round_trips_and_rejects_short_bodies() {
        let mut body = Vec::new();
        for r in [&b"ab"[..], b"", b"xyz"] {
            body.extend_from_slice(&(r.len() as u32).to_le_bytes());
            body.extend_from_slice(r);
        }
        assert_eq!(split_batch(&body).unwrap(), vec![&b"ab"[..], b"", b"xyz"]);
        assert!(split_batch(&body[..body.len() - 1]).is_none());
        assert!(split_batch(&[1, 0]).is_none());
        assert_eq!(split_batch(&[]).unwrap(), Vec::<&[u8]>::new());
    }
}
