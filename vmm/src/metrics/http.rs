//! `--metrics ADDR`: the live counters over HTTP (tiny_http) on a thread of
//! their own. The socket is bound before the VM starts, so an address in
//! use fails the run at once (exit 125) instead of after the guest ran;
//! dropping the server stops its thread.
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use thiserror::Error;

use super::counters::Counters;
use super::exposition;

#[derive(Debug, Error)]
pub enum MetricsError {
    #[error("--metrics {addr}: cannot listen there: {source}")]
    Bind {
        addr: String,
        source: std::io::Error,
    },
    #[error("--metrics {addr}: starting the HTTP server: {reason}")]
    Serve { addr: String, reason: String },
}

/// A running metrics endpoint.
pub struct MetricsServer {
    server: Arc<tiny_http::Server>,
    stop: Arc<AtomicBool>,
    addr: SocketAddr,
    thread: Option<JoinHandle<()>>,
}

/// How long the serving thread waits for a request before checking
/// whether it should stop.
const POLL: Duration = Duration::from_millis(100);

impl MetricsServer {
    /// Binds `addr` (e.g. `127.0.0.1:9100`; port 0 picks a free one) and
    /// serves `counters` at every path (`/metrics` by convention).
    pub fn start(addr: &str, counters: Arc<Counters>) -> Result<Self, MetricsError> {
        let listener = TcpListener::bind(addr).map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let bound = listener.local_addr().map_err(|source| MetricsError::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let server =
            tiny_http::Server::from_listener(listener, None).map_err(|e| MetricsError::Serve {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        let server = Arc::new(server);
        let registry = exposition::registry(counters);
        let serving = server.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metrics-http".into())
            .spawn(move || serve(&serving, &registry, &stopping))
            .map_err(|e| MetricsError::Serve {
                addr: addr.to_string(),
                reason: e.to_string(),
            })?;
        tracing::info!("metrics at http://{bound}/metrics");
        Ok(MetricsServer {
            server,
            stop,
            addr: bound,
            thread: Some(thread),
        })
    }

    /// The address bound (the port chosen when 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

fn serve(
    server: &tiny_http::Server,
    registry: &prometheus_client::registry::Registry,
    stop: &AtomicBool,
) {
    // `unblock` alone does not end a `recv_timeout` loop (it then answers
    // "no request yet"), hence the flag.
    while !stop.load(Ordering::Relaxed) {
        let request = match server.recv_timeout(POLL) {
            Ok(Some(r)) => r,
            Ok(None) => continue,
            // `unblock` (the server stopping) or the listener failing.
            Err(_) => return,
        };
        let body = exposition::render(registry);
        let header =
            tiny_http::Header::from_bytes("Content-Type", exposition::CONTENT_TYPE).expect("ASCII");
        let response = tiny_http::Response::from_string(body).with_header(header);
        // A client that went away is its own problem.
        let _ = request.respond(response);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
