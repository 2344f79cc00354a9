//! The connection: one client, one JetStream context and the small tokio
//! runtime that drives them behind a synchronous facade (the VMM is
//! synchronous). Also the one place that creates-or-opens our streams, so
//! the ownership marker is checked everywhere the same way.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, context::GetStreamErrorKind, stream, ErrorCode};

use crate::error::{Error, Result, MARKER};

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
                js.query_account()
                    .await
                    .map_err(|e| format!("JetStream is not available: {e}"))?;
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
pub(crate) async fn open_or_create<F, Fut>(
    js: &jetstream::Context,
    kind: &'static str,
    name: &str,
    create: F,
) -> Result<stream::Stream>
where
    F: FnOnce() -> Fut,
    Fut: Future<Output = Result<()>>,
{
    match js.get_stream(name).await {
        Ok(stream) => {
            check_ours(kind, name, stream.cached_info())?;
            Ok(stream)
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(je) if je.error_code() == ErrorCode::STREAM_NOT_FOUND => {
                create().await?;
                let stream = js
                    .get_stream(name)
                    .await
                    .map_err(|e| Error::js("stream lookup", name, e))?;
                check_ours(kind, name, stream.cached_info())?;
                Ok(stream)
            }
            _ => Err(Error::js("stream lookup", name, e)),
        },
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
