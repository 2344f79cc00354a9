//! Serving control-socket requests on the vCPU thread, which owns the
//! machine: the VM is stopped between two KVM_RUNs while a request runs.
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde_json::{json, Value};
use snapshot::SnapshotKind;

use super::snapshot::SnapshotInfo;
use super::Machine;
use crate::api::{self, Api, Command, Request};
use crate::error::VmmError;

/// How often a paused VM looks for a stop signal.
const PAUSED_SIGNAL_POLL: Duration = Duration::from_millis(20);

impl Machine {
    /// Answers `request`; a pause holds the VM here, answering further
    /// requests, until a resume. A snapshot is answered when it is durable,
    /// maybe after the VM resumed (see `Machine::snapshot_then`).
    pub(super) fn serve(&mut self, request: Request, api: Option<&Api>) {
        let mut next = Some(request);
        let mut paused = false;
        while let Some(Request { command, reply }) = next.take() {
            let answer = match command {
                Command::Status => json!({
                    "ok": true,
                    "state": if paused { "paused" } else { "running" },
                    "vcpus": self.vcpus.len(),
                    "mem_mib": self.mem_mib,
                    "disks": self.disk_configs.len(),
                    "recording": self.recorder.is_some(),
                    "snapshots": self.snapshots.is_some(),
                }),
                Command::Pause => {
                    paused = true;
                    json!({ "ok": true, "state": "paused" })
                }
                Command::Resume => {
                    paused = false;
                    json!({ "ok": true, "state": "running" })
                }
                Command::Snapshot {
                    kind,
                    stop_the_world,
                } => {
                    // A paused guest writes nothing: pre-copying it would
                    // only wait for a resume that the client sends after
                    // the answer.
                    self.api_snapshot(&kind, stop_the_world || paused, reply.clone());
                    Value::Null
                }
                Command::Mark { name } => self.api_mark(&name),
            };
            if !answer.is_null() {
                let _ = reply.send(answer);
            }
            if paused {
                // Held here until the next request (a resume, usually).
                next = api.and_then(next_while_paused);
            }
        }
    }

    /// Starts a snapshot, pre-copied while the guest runs unless
    /// `stop_the_world`; `reply` gets its answer once it is durable (or
    /// failed).
    fn api_snapshot(
        &mut self,
        kind: &str,
        stop_the_world: bool,
        reply: std::sync::mpsc::Sender<Value>,
    ) {
        let kind = match kind {
            "full" => SnapshotKind::Full,
            "incremental" => SnapshotKind::Incremental,
            other => {
                let _ = reply.send(api::error(format!(
                    "snapshot kind '{other}': use full or incremental"
                )));
                return;
            }
        };
        let tell = reply.clone();
        let on_durable = Box::new(move |done: Result<&SnapshotInfo, &VmmError>| {
            let _ = tell.send(match done {
                Ok(info) => snapshot_answer(info),
                Err(e) => api::error(e.to_string()),
            });
        });
        let started = if stop_the_world {
            self.snapshot_then(kind, Some(on_durable))
        } else {
            self.start_precopy(kind, on_durable)
        };
        if let Err(e) = started {
            let _ = reply.send(api::error(e.to_string()));
        }
    }

    fn api_mark(&mut self, name: &str) -> Value {
        let Some(recorder) = &self.recorder else {
            return api::error(
                "this VM is not recording (start it with --record) so it has no log to mark",
            );
        };
        for t in &mut self.virtio {
            if let Err(e) = t.stop() {
                return api::error(e.to_string());
            }
        }
        match recorder.mark(name) {
            Ok(seq) => json!({ "ok": true, "seq": seq }),
            Err(e) => api::error(e.to_string()),
        }
    }
}

/// The next request for a paused VM; None when a stop signal arrived (the
/// run loop then ends the run) or the server is gone.
fn next_while_paused(api: &Api) -> Option<Request> {
    loop {
        if crate::shutdown::requested().is_some() {
            return None;
        }
        match api.requests.recv_timeout(PAUSED_SIGNAL_POLL) {
            Ok(request) => return Some(request),
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

/// The answer to a snapshot request, sent once it is durable.
fn snapshot_answer(info: &SnapshotInfo) -> Value {
    json!({
        "ok": true,
        "durable": true,
        "id": info.id,
        "path": info.path,
        "kind": format!("{:?}", info.kind).to_lowercase(),
        "pages": info.stats.pages,
        "hashed_pages": info.stats.hashed_pages,
        "changed_pages": info.stats.changed_pages,
        "new_objects": info.stats.new_objects,
        "new_bytes": info.stats.new_bytes,
        "mode": if info.rounds == 0 { "stop-the-world" } else { "precopy" },
        "rounds": info.rounds,
        "pause_us": info.pause_us,
        "disk_hash_us": info.disk_hash_us,
        "durable_us": info.durable_us,
    })
}
