//! A throwaway n-node JetStream cluster on 127.0.0.1 for tests and
//! benchmarks (of this crate and of the crates that plug it in).
//!
//! Each node gets free ports (bound to port 0, then released), its own
//! config file, JetStream store dir and log file in one temp dir; the nodes
//! route to each other. `start` returns once JetStream has a meta leader
//! and can place an n-replica stream. Nodes are SIGKILLed on drop.

use std::fmt::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream::stream;

use crate::conn::Nats;

/// How long `start` waits for the cluster to elect a meta leader and
/// place a replicated stream.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("nats-server is not installed (not found on PATH); install it with `apt-get install -y nats-server`")]
    NotInstalled,
    #[error("test cluster: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("test cluster at {urls} not ready within {}s: {last}; node logs in {dir}", READY_TIMEOUT.as_secs())]
    NotReady {
        urls: String,
        last: String,
        dir: PathBuf,
    },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> ClusterError {
    let what = what.into();
    move |source| ClusterError::Io { what, source }
}

struct Node {
    server: PathBuf,
    config: PathBuf,
    log: PathBuf,
    client_port: u16,
    child: Option<Child>,
}

/// A running local cluster; see the module doc.
pub struct TestCluster {
    nodes: Vec<Node>,
    // Dropped after the nodes are killed (fields drop in order; Drop kills).
    dir: tempfile::TempDir,
}

/// The server binary, looked up on PATH.
const SERVER: &str = "nats-server";

/// Whether the server binary `server` can be run.
pub fn server_installed(server: &Path) -> bool {
    Command::new(server)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

impl TestCluster {
    /// Starts an `n`-node cluster of the `nats-server` on PATH and waits
    /// until it is ready.
    pub fn start(n: usize) -> Result<TestCluster, ClusterError> {
        TestCluster::start_with(Path::new(SERVER), n)
    }

    /// Like [`start`](Self::start) with the server binary at `server`.
    pub fn start_with(server: &Path, n: usize) -> Result<TestCluster, ClusterError> {
        if !server_installed(server) {
            return Err(ClusterError::NotInstalled);
        }
        let dir = tempfile::Builder::new()
            .prefix("nats-cluster-")
            .tempdir()
            .map_err(io("create the cluster temp dir"))?;
        let mut ports = Vec::new();
        // Hold every listener until all ports are picked so no two nodes
        // get the same one.
        let mut held = Vec::new();
        for _ in 0..2 * n {
            let l = TcpListener::bind("127.0.0.1:0").map_err(io("bind a free port"))?;
            ports.push(l.local_addr().map_err(io("bind a free port"))?.port());
            held.push(l);
        }
        drop(held);
        let routes: Vec<String> = (0..n)
            .map(|i| format!("nats-route://127.0.0.1:{}", ports[2 * i + 1]))
            .collect();
        let mut nodes = Vec::new();
        for i in 0..n {
            let node_dir = dir.path().join(format!("n{i}"));
            std::fs::create_dir_all(node_dir.join("js")).map_err(io("create a node dir"))?;
            let mut conf = String::new();
            let _ = writeln!(conf, "listen: 127.0.0.1:{}", ports[2 * i]);
            let _ = writeln!(conf, "server_name: n{i}");
            let _ = writeln!(
                conf,
                "jetstream {{ store_dir: {:?} }}",
                node_dir.join("js").display().to_string()
            );
            let _ = writeln!(
                conf,
                "cluster {{ name: vmmtest, listen: 127.0.0.1:{}, routes: [{}] }}",
                ports[2 * i + 1],
                routes.join(", ")
            );
            let config = node_dir.join("nats.conf");
            std::fs::write(&config, conf).map_err(io("write a node config"))?;
            nodes.push(Node {
                server: server.to_path_buf(),
                config,
                log: node_dir.join("server.log"),
                client_port: ports[2 * i],
                child: None,
            });
        }
        let mut cluster = TestCluster { nodes, dir };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        cluster.wait_ready(n)?;
        Ok(cluster)
    }

    /// Starts `n` nodes, or prints why not and returns `None` when
    /// nats-server is not installed (the only reason a test may skip).
    /// Any other failure panics.
    pub fn start_or_skip(n: usize) -> Option<TestCluster> {
        match TestCluster::start(n) {
            Ok(c) => Some(c),
            Err(ClusterError::NotInstalled) => {
                eprintln!("SKIPPED: {}", ClusterError::NotInstalled);
                None
            }
            Err(e) => panic!("{e}"),
        }
    }

    fn spawn(&mut self, i: usize) -> Result<(), ClusterError> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(io("open a node log"))?;
        let err = log.try_clone().map_err(io("open a node log"))?;
        let child = Command::new(&node.server)
            .arg("-c")
            .arg(&node.config)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .map_err(io(format!("start nats-server node {i}")))?;
        node.child = Some(child);
        Ok(())
    }

    /// Retries creating (then deleting) an `n`-replica stream until one
    /// succeeds: that needs a meta leader and `n` live JetStream peers.
    fn wait_ready(&self, n: usize) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut last = String::from("no attempt");
        while Instant::now() < deadline {
            match Nats::connect(&self.urls(), Duration::from_secs(2)) {
                Ok(nats) => {
                    let js = nats.conn.js.clone();
                    let res = nats.conn.block_on(async move {
                        js.create_stream(stream::Config {
                            name: "ready-check".to_string(),
                            subjects: vec!["ready.check".to_string()],
                            num_replicas: n,
                            storage: stream::StorageType::Memory,
                            ..Default::default()
                        })
                        .await
                        .map_err(|e| e.to_string())?;
                        js.delete_stream("ready-check")
                            .await
                            .map_err(|e| e.to_string())
                    });
                    match res {
                        Ok(_) => return Ok(()),
                        Err(e) => last = e,
                    }
                }
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(ClusterError::NotReady {
            urls: self.urls(),
            last,
            dir: self.dir.path().to_path_buf(),
        })
    }

    /// The client URLs, comma-joined: `nats://127.0.0.1:P,...`.
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("nats://127.0.0.1:{}", n.client_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The client URL of node `i` alone.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// SIGKILLs node `i` (no clean shutdown) and reaps it.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its old ports and store dir. Returns at
    /// once; the node catches up with its streams in the background.
    pub fn restart(&mut self, i: usize) -> Result<(), ClusterError> {
        self.kill(i);
        self.spawn(i)
    }

    /// The temp dir holding configs, store dirs and node logs.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_server_binary_is_a_typed_error_saying_how_to_install_it() {
        let err = TestCluster::start_with(Path::new("/nonexistent/nats-server"), 3)
            .err()
            .expect("must fail");
        assert!(matches!(err, ClusterError::NotInstalled));
        assert!(
            err.to_string().contains("apt-get install -y nats-server"),
            "{err}"
        );
    }
}
