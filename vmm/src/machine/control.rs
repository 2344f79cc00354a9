//! Serving control-socket requests on the vCPU thread, which owns the
//! machine: the VM is stopped between two KVM_RUNs while a request runs.
use std::sync::mpsc::RecvTimeoutError;
use std::time::Duration;

use serde_json::{json, Value};
use snapshot::SnapshotKind;

use super::snapshot::SnapshotInfo;
use super::Machine;
use crate::api::{self, Api, Command, Request};

/// How often a paused VM looks for a stop signal.
const PAUSED_SIGNAL_POLL: Duration = Duration::from_millis(20);

impl Machine {
    /// Answers `request`; a pause holds the VM here, answering further
    /// requests, until a resume. Snapshots taken are added to `taken`.
    pub(super) fn serve(
        &mut self,
        request: Request,
        api: Option<&Api>,
        taken: &mut Vec<SnapshotInfo>,
    ) {
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
                Command::Snapshot { kind } => self.api_snapshot(&kind, taken),
                Command::Mark { name } => self.api_mark(&name),
            };
            let _ = reply.send(answer);
            if paused {
                // Held here until the next request (a resume, usually).
                next = api.and_then(next_while_paused);
            }
        }
    }

    fn api_snapshot(&mut self, kind: &str, taken: &mut Vec<SnapshotInfo>) -> Value {
        let kind = match kind {
            "full" => SnapshotKind::Full,
            "incremental" => SnapshotKind::Incremental,
            other => {
                return api::error(format!("snapshot kind '{other}': use full or incremental"))
            }
        };
        match self.snapshot(kind) {
            Ok(info) => {
                let dir = self
                    .snapshots
                    .as_ref()
                    .map(|c| c.config.dir.clone())
                    .unwrap_or_default();
                let answer = json!({
                    "ok": true,
                    "id": info.id,
                    "path": dir.join("snapshots").join(format!("{}.snap", info.id)),
                    "kind": format!("{:?}", info.kind).to_lowercase(),
                    "pages": info.stats.pages,
                    "hashed_pages": info.stats.hashed_pages,
                    "new_objects": info.stats.new_objects,
                    "pause_us": info.pause_us,
                });
                taken.push(info);
                answer
            }
            Err(e) => api::error(e.to_string()),
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
                return api::error(e);
            }
        }
        match recorder.mark(name) {
            Ok(seq) => json!({ "ok": true, "seq": seq }),
            Err(e) => api::error(e),
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
