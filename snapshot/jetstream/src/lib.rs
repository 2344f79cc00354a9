//! NATS JetStream storage backend: a new, self-contained crate that the
//! change-log and object-store backends plug into.
//!
//! Owns: the connection to a JetStream cluster behind a synchronous facade
//! ([`Nats`], with its own small tokio runtime), content-addressed objects
//! in a KV bucket ([`ObjectBucket`], `objects.rs`), change-log records in a
//! stream with one subject per VM ([`LogStream`], `log.rs`), snapshot
//! manifests in a KV bucket ([`ManifestBucket`], `manifests.rs`), the
//! ownership marker that keeps us off streams we did not create, and a
//! local n-node test cluster ([`cluster::TestCluster`]). The wire formats
//! are documented in each module.
//!
//! Does not own: what records, objects and manifests contain (the
//! `changelog`, `store` and `snapshot` crates encode them; here they are
//! bytes), block size, compression, retention policy, or the choice between
//! local and remote storage. It depends on no other crate of the project.
//!
//! Server compatibility: JetStream API of nats-server 2.9 (Debian's), see
//! the comment on async-nats in Cargo.toml.

pub mod cluster;
mod conn;
mod error;
mod log;
mod manifests;
mod objects;

pub use conn::Nats;
pub use error::{Error, Result, MARKER};
pub use log::{LogStream, Record, Records};
pub use manifests::ManifestBucket;
pub use objects::{hex, ObjectBucket, ObjectId};
