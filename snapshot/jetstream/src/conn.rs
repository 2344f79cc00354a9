//! The connection: one client, one JetStream context and the small tokio
//! runtime that drives them behind a synchronous facade (the VMM is
//! synchronous). Also the one place that creates-or-opens our streams, so
//! the ownership marker is checked everywhere the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream, ErrorCode};
use bytes::Bytes;

use async_nats::jetstream::kv;

use crate::error::{check_name, Error, Result, MARKER};

/// A connection to a JetStream cluster. Cheap to clone; buckets and streams
/// opened from it share the connection and its runtime.
#[derive(Clone)]
pub struct Nats {
    pub(crate) conn: Arc<Conn>,
}

pub(crate) struct Conn {
    // Field order matters on drop: the client's tasks live on the runtime.
    pub(crate) client: async_nats::Client,
    pub(crate) js: jetstream::Context,
    pub(crate) urls: String,
    pub(crate) timeout: Duration,
    rt: tokio::runtime::Runtime,
}

impl Conn {
    /// Runs one async operation to completion on the connection's runtime.
    pub(crate) fn block_on<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }
}

impl std::fmt::Debug for Nats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Nats")
            .field("urls", &self.conn.urls)
            .finish()
    }
}

impl Nats {
    /// Connects to `urls` (`nats://host:port[,nats://host:port...]`, the
    /// `nats://` prefix optional) and checks that JetStream answers.
    /// Everything, the TCP connect, the handshake and the JetStream account
    /// query, must finish within `timeout`, else [`Error::Unreachable`]
    /// naming the URLs. The same `timeout` bounds every later JetStream
    /// request and publish acknowledgement.
    pub fn connect(urls: &str, timeout: Duration) -> Result<Nats> {
        let unreachable = |reason: String| Error::Unreachable {
            url: urls.to_string(),
            timeout,
            reason,
        };
        let addrs: Vec<async_nats::ServerAddr> = urls
            .split(',')
            .map(|u| u.trim().parse())
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| unreachable(format!("bad URL: {e}")))?;
        // One worker thread: the client's reader/writer tasks and pings must
        // keep running between our blocking calls, which a current_thread
        // runtime would only do inside `block_on`.
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("jetstream-client")
            .enable_all()
            .build()
            .map_err(|e| unreachable(format!("cannot start the client runtime: {e}")))?;
        let opts = async_nats::ConnectOptions::new()
            .connection_timeout(timeout)
            .request_timeout(Some(timeout));
        let (client, js) = rt.block_on(async {
            let connect = async {
                let client = opts
                    .connect(addrs.as_slice())
                    .await
                    .map_err(|e| e.to_string())?;
                let js = jetstream::ContextBuilder::new()
                    .timeout(timeout)
                    .build(client.clone());
                // A raw `$JS.API.INFO` request rather than `query_account`:
                // async-nats 0.46 cannot parse 2.9's account info reply.
                // Asked again (within the overall timeout) while JetStream
                // has no meta leader: a node just went away.
                loop {
                    let attempt = tokio::time::timeout(
                        Duration::from_secs(2),
                        client.request("$JS.API.INFO", Bytes::new()),
                    )
                    .await;
                    let reply = match attempt {
                        Ok(Ok(reply)) => reply,
                        Ok(Err(e)) => {
                            tracing::debug!("JetStream info request retried: {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                        Err(_) => continue,
                    };
                    let info: serde_json::Value = serde_json::from_slice(&reply.payload)
                        .map_err(|e| format!("JetStream answered garbage: {e}"))?;
                    match info.get("error") {
                        Some(err) if err.get("code").and_then(|c| c.as_u64()) == Some(503) => {
                            tracing::debug!("JetStream info retried: {err}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        Some(err) => return Err(format!("JetStream is not available: {err}")),
                        None => break,
                    }
                }
                Ok::<_, String>((client, js))
            };
            match tokio::time::timeout(timeout, connect).await {
                Ok(r) => r.map_err(unreachable),
                Err(_) => Err(unreachable("timed out".to_string())),
            }
        })?;
        Ok(Nats {
            conn: Arc::new(Conn {
                client,
                js,
                urls: urls.to_string(),
                timeout,
                rt,
            }),
        })
    }

    /// The URLs this connection was made with.
    pub fn urls(&self) -> &str {
        &self.conn.urls
    }
}

impl Nats {
    /// Opens or creates the KV bucket `name` for `kind` (`objects`,
    /// `manifests`) with history 1 and `replicas` copies.
    ///
    /// The bucket's stream is created here with the KV conventions (stream
    /// `KV_<name>`, subjects `$KV.<name>.>`, one message per key, rollup
    /// allowed, deletes denied, discard new) instead of with
    /// `create_key_value`: async-nats 0.46 first queries the account, and
    /// its account type requires fields (`reserved_memory`) that 2.9 does
    /// not send, so that call always fails against Debian's server.
    pub(crate) fn kv_bucket(
        &self,
        what: &'static str,
        kind: &str,
        name: &str,
        replicas: usize,
    ) -> Result<kv::Store> {
        check_name(what, name)?;
        let js = &self.conn.js;
        let stream_name = format!("KV_{name}");
        self.conn.block_on(async {
            open_or_create(js, self.conn.timeout, what, &stream_name, || async {
                js.create_stream(stream::Config {
                    name: stream_name.clone(),
                    description: Some(description(kind)),
                    subjects: vec![format!("$KV.{name}.>")],
                    max_messages_per_subject: 1,
                    storage: stream::StorageType::File,
                    num_replicas: replicas.max(1),
                    allow_rollup: true,
                    deny_delete: true,
                    // No direct get: on 2.9 any replica answers those, a
                    // lagging one with "no such key" for an object that was
                    // acked a moment ago. Reads go to the stream leader.
                    allow_direct: false,
                    discard: stream::DiscardPolicy::New,
                    ..Default::default()
                })
                .await
                .map(drop)
                .map_err(|e| Error::js("bucket create", name, e))
            })
            .await?;
            js.get_key_value(name)
                .await
                .map_err(|e| Error::js("bucket open", name, e))
        })
    }
}

/// What a stream or bucket is for, written after the marker in its
/// description (`vmm-jetstream/v1 objects`).
pub(crate) fn description(kind: &str) -> String {
    format!("{MARKER} {kind}")
}

/// Opens stream `name` if it exists and carries our marker, creates it with
/// `create` if it does not exist, refuses it otherwise. Creating a stream
/// that a racing process just created with the same config succeeds
/// (JetStream's create is idempotent for equal configs), so two hosts may
/// open the same record set at once.
impl Nats {
    /// The replica count of stream `name`, None if there is no such stream.
    pub fn stream_replicas(&self, name: &str) -> Result<Option<usize>> {
        let js = &self.conn.js;
        self.conn.block_on(async {
            match get_stream(js, name, self.conn.timeout).await {
                Ok(stream) => Ok(Some(stream.cached_info().config.num_replicas)),
                Err(e) => match e.kind() {
                    GetStreamErrorKind::JetStream(je)
                        if je.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                    {
                        Ok(None)
                    }
                    _ => Err(Error::js("stream lookup", name, e)),
                },
            }
        })
    }
}

/// Looks up stream `name`, retrying a request that timed out or found
/// JetStream without a leader (a node just went away and an election is
/// running) for up to 3x `timeout`.
pub(crate) async fn get_stream(
    js: &jetstream::Context,
    name: &str,
    timeout: std::time::Duration,
) -> std::result::Result<stream::Stream, jetstream::context::GetStreamError> {
    let deadline = tokio::time::Instant::now() + timeout * 3;
    loop {
        match js.get_stream(name).await {
            Err(e) if transient(&e) && tokio::time::Instant::now() < deadline => {
                tracing::debug!("stream lookup of {name} retried: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            other => return other,
        }
    }
}

fn transient(e: &jetstream::context::GetStreamError) -> bool {
    match e.kind() {
        GetStreamErrorKind::Request => true,
        GetStreamErrorKind::JetStream(j) => j.code() == 503,
        _ => false,
    }
}

pub(crate) async fn open_or_create<F, Fut>(
    js: &jetstream::Context,
    timeout: std::time::Duration,
    kind: &'static str,
    name: &str,
    create: F,
) -> Result<stream::Stream>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    // A create that times out (a loaded cluster, or several hosts creating
    // the same record set at once) may have landed or not: look again and
    // retry, within three timeouts in all.
    let deadline = tokio::time::Instant::now() + timeout * 3;
    loop {
        match get_stream(js, name, timeout).await {
            Ok(stream) => {
                check_ours(kind, name, stream.cached_info())?;
                return Ok(stream);
            }
            Err(e) => match e.kind() {
                GetStreamErrorKind::JetStream(je)
                    if je.error_code() == ErrorCode::STREAM_NOT_FOUND =>
                {
                    match create().await {
                        Ok(()) => {}
                        Err(e) if tokio::time::Instant::now() < deadline => {
                            tracing::debug!("create of {name} retried: {e}");
                            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                        }
                        Err(e) => return Err(e),
                    }
                }
                _ => return Err(Error::js("stream lookup", name, e)),
            },
        }
    }
}

fn check_ours(kind: &'static str, name: &str, info: &stream::Info) -> Result<()> {
    let found = info.config.description.clone();
    match &found {
        Some(d) if d.starts_with(MARKER) => Ok(()),
        _ => Err(Error::NotOurs {
            kind,
            name: name.to_string(),
            found,
        }),
    }
}
