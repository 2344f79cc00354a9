//! NATS JetStream storage backend: a new, self-contained crate that the
//! change-log and object-store backends plug into.
//!
//! Owns: the connection to a JetStream cluster behind a synchronous facade
//! ([`Nats`], with its own small tokio runtime), content-addressed objects
//! in a KV bucket ([`ObjectBucket`], `objects.rs`), change-log records in a
//! stream with one subject per VM ([`LogStream`], `log.rs`), snapshot
//! manifests in a KV bucket ([`ManifestBucket`], `manifests.rs`), the
//! fleet's worker adverts and job queues ([`WorkQueue`], `queue.rs`), the
//! ownership marker that keeps us off streams we did not create, and a
//! local n-node test cluster ([`cluster::TestCluster`]). The wire formats
//! are documented in each module.
//!
//! It also implements the project's storage seams on those
//! ([`Remote`]: `store::ObjectBackend` and `changelog::LogBackend`;
//! [`RemoteAppend`]: `changelog::LogAppend`; `backends.rs`).
//!
//! Does not own: what records, objects and manifests contain (the
//! `changelog`, `store` and `snapshot` crates encode them; below the
//! seams they are bytes), block size, compression, retention policy, or
//! the choice between local and remote storage.
//!
//! A guest FLUSH in synchronous mode maps to: `put_many` of the blocks the
//! barrier depends on (pipelined, returns once all are acked), then
//! `append_many` of the records up to and including the barrier (one
//! message per ~1 MiB, fenced against a second writer):
//!
//! ```no_run
//! # fn main() -> jetstream::Result<()> {
//! use std::time::Duration;
//! let nats = jetstream::Nats::connect("nats://10.0.0.1:4222,nats://10.0.0.2:4222", Duration::from_secs(5))?;
//! let objects = nats.object_bucket("vmm-demo-objects", 3)?;
//! let log = nats.log_stream("demo", 3)?;
//! let block = vec![0xabu8; 4096];
//! let id = *blake3::hash(&block).as_bytes();
//! objects.put_many(&[(id, &block[..])])?;
//! let seq = log.append_many("vm1", &[b"write 0 -> id", b"barrier"])?;
//! for record in log.read("vm1", 0)? {
//!     let record = record?;
//!     assert!(record.seq <= seq);
//! }
//! # Ok(())
//! # }
//! ```
//!
//! What an acknowledgement means: `append`, `put` and `put_many` return
//! only after the stream leader answered the publish, which it does once a
//! quorum of the stream's replicas (2 of 3) has stored the message. On 2.9
//! the servers write to their store files at once but fsync on their own
//! interval (`sync_interval` only became configurable in 2.10), so an ack
//! survives the kill or loss of any one node, not a simultaneous power loss
//! of a quorum of hosts.
//!
//! Server compatibility: JetStream API of nats-server 2.9 (Debian's), see
//! the comment on async-nats in Cargo.toml.

mod backends;
pub mod cluster;
mod conn;
mod error;
mod log;
mod manifests;
mod objects;
mod pipeline;
pub mod push;
mod queue;
mod retention;
mod url;

pub use backends::{Remote, RemoteAppend};
pub use conn::Nats;
pub use error::{Error, Result, MARKER};
pub use log::{LogStream, Record, Records};
pub use manifests::ManifestBucket;
pub use objects::{hex, ObjectBucket, ObjectId};
pub use pipeline::PutPipeline;
pub use queue::{Advert, EventFeed, Job, JobInbox, WorkQueue};
pub use retention::Retention;
pub use url::{ClusterUrl, RemoteUrl};
