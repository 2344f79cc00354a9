//! The control socket of a running VMM (`vmm run --api-sock PATH`).
//!
//! Protocol: newline-delimited JSON over a Unix stream socket. Each request
//! is one object with a `cmd`; each answer is one object with `ok` and
//! either the result or `error`:
//! ```text
//! {"cmd":"status"}                        {"ok":true,"state":"running",...}
//! {"cmd":"pause"}                         {"ok":true,"state":"paused"}
//! {"cmd":"resume"}                        {"ok":true,"state":"running"}
//! {"cmd":"snapshot","kind":"full"}        {"ok":true,"id":"...","path":"...",...}
//! {"cmd":"snapshot","kind":"incremental"}
//! {"cmd":"snapshot","kind":"full","stop_the_world":true}
//! {"cmd":"mark","name":"before-upgrade"}  {"ok":true,"seq":4711}
//! ```
//! The server (a tokio runtime on its own thread) hands each request to the
//! vCPU thread, which owns the machine, and kicks it out of KVM_RUN with a
//! signal until it answers. Requests are bounded (one line, 4 KiB).
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixListener;
use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::error::{Result, VmmError};

pub mod client;

const MAX_REQUEST: usize = 4096;
const KICK_INTERVAL: Duration = Duration::from_millis(2);

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    Status,
    Pause,
    Resume,
    Snapshot {
        #[serde(default = "full")]
        kind: String,
        /// Capture memory with the VM stopped throughout, instead of
        /// pre-copying it while the guest runs.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        stop_the_world: bool,
    },
    Mark {
        name: String,
    },
}

fn full() -> String {
    "full".into()
}

/// A request waiting for the vCPU thread's answer.
pub struct Request {
    pub command: Command,
    pub reply: Sender<Value>,
}

/// The server side, as the vCPU thread sees it.
pub struct Api {
    pub requests: Receiver<Request>,
    path: PathBuf,
}

impl Drop for Api {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// The answer for a failed request.
pub fn error(message: impl Into<String>) -> Value {
    serde_json::json!({ "ok": false, "error": message.into() })
}

impl Api {
    /// Listens on `path` for the calling thread, which must be the vCPU
    /// thread. A socket left there by a VMM that is gone is replaced; a
    /// live one, or any other file, is refused.
    pub fn start(path: &Path) -> Result<Self> {
        let bad = |e: std::io::Error| VmmError::Api(format!("{}: {e}", path.display()));
        // Two VMMs starting on one path take turns: the second then finds
        // the first's socket live, instead of removing it as stale.
        let turn = lock_dir_of(path);
        claim(path)?;
        let _ = register_signal_handler(SIGRTMIN(), on_kick);
        // SAFETY: pthread_self has no preconditions.
        let vcpu = unsafe { libc::pthread_self() } as usize;
        let std_listener = std::os::unix::net::UnixListener::bind(path).map_err(bad)?;
        drop(turn);
        let (tx, rx) = mpsc::channel::<Request>();
        // From here on, dropping `api` removes the socket.
        let api = Self {
            requests: rx,
            path: path.to_path_buf(),
        };
        std_listener.set_nonblocking(true).map_err(bad)?;
        std::thread::Builder::new()
            .name("api".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a tokio runtime");
                rt.block_on(serve(std_listener, tx, vcpu));
            })
            .map_err(bad)?;
        Ok(api)
    }
}

/// An exclusive flock on the directory of `path`, held while the returned
/// file is open. None when the directory cannot be opened or another
/// holder keeps it past a second (some other tool's lock): `claim` still
/// runs, only without the turn-taking.
fn lock_dir_of(path: &Path) -> Option<std::fs::File> {
    use std::os::fd::AsRawFd;
    const PATIENCE: Duration = Duration::from_secs(1);
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let file = std::fs::File::open(dir).ok()?;
    let started = std::time::Instant::now();
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            return Some(file);
        }
        let busy = std::io::Error::last_os_error().raw_os_error() == Some(libc::EWOULDBLOCK);
        if !busy || started.elapsed() > PATIENCE {
            return None;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Makes `path` free for a new socket. A socket whose server is gone (its
/// VMM was killed: connecting is refused) is stale and removed; one that
/// answers belongs to a running VMM and is refused, naming it.
fn claim(path: &Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(VmmError::Api(format!("{}: {e}", path.display()))),
    };
    if !meta.file_type().is_socket() {
        return Err(VmmError::Api(format!(
            "{} already exists and is not a socket; remove it or choose another --api-sock path",
            path.display()
        )));
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(stream) => Err(VmmError::Api(format!(
            "{} is in use by a running VMM ({}); stop it or choose another --api-sock path",
            path.display(),
            peer(&stream).map_or("its pid is unknown".into(), crate::lock::describe_pid)
        ))),
        Err(e) if e.raw_os_error() == Some(libc::ECONNREFUSED) => {
            std::fs::remove_file(path)
                .map_err(|e| VmmError::Api(format!("removing stale {}: {e}", path.display())))?;
            tracing::warn!(
                "replaced the stale control socket {} (the VMM that served it is gone)",
                path.display()
            );
            Ok(())
        }
        Err(e) => Err(VmmError::Api(format!(
            "{} exists and cannot be checked ({e}); remove it if no VMM serves it",
            path.display()
        ))),
    }
}

/// The pid of the process at the other end of a Unix socket.
fn peer(stream: &std::os::unix::net::UnixStream) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut cred = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: SO_PEERCRED fills a `ucred` of the size passed.
    let rc = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut cred as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    (rc == 0 && cred.pid > 0).then_some(cred.pid as u32)
}

async fn serve(listener: std::os::unix::net::UnixListener, tx: Sender<Request>, vcpu: usize) {
    let Ok(listener) = UnixListener::from_std(listener) else {
        return;
    };
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let tx = tx.clone();
        tokio::spawn(async move {
            let (read, mut write) = stream.into_split();
            let mut lines = BufReader::new(read.take(1 << 20)).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let answer = if line.len() > MAX_REQUEST {
                    error(format!("request longer than {MAX_REQUEST} bytes"))
                } else {
                    match serde_json::from_str::<Command>(&line) {
                        Ok(command) => ask(&tx, command, vcpu).await,
                        Err(e) => error(format!(
                            "not a request ({e}); send one JSON object per line with a cmd of status, pause, resume, snapshot or mark"
                        )),
                    }
                };
                let mut out = answer.to_string();
                out.push('\n');
                if write.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Hands `command` to the vCPU thread and waits for its answer, kicking
/// the vCPU out of guest mode until it looks.
async fn ask(tx: &Sender<Request>, command: Command, vcpu: usize) -> Value {
    let (reply, answer) = mpsc::channel();
    if tx.send(Request { command, reply }).is_err() {
        return error("the VM has stopped");
    }
    loop {
        match answer.try_recv() {
            Ok(v) => return v,
            Err(mpsc::TryRecvError::Disconnected) => return error("the VM has stopped"),
            Err(mpsc::TryRecvError::Empty) => {
                // SAFETY: the vCPU thread lives as long as the machine; a
                // signal to an exited thread id is what the Disconnected
                // check above prevents.
                unsafe { libc::pthread_kill(vcpu as libc::pthread_t, SIGRTMIN()) };
                tokio::time::sleep(KICK_INTERVAL).await;
            }
        }
    }
}
