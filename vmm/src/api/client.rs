//! The client side of the control socket, for `vmm snapshot create`,
//! `vmm mark`, `vmm pause` and `vmm resume`.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::Command;

/// Sends one command and returns the VMM's answer (`ok` true), or the
/// error it gave (or why it could not be asked).
pub fn request(socket: &Path, command: &Command) -> Result<Value, String> {
    let mut stream = UnixStream::connect(socket).map_err(|e| {
        format!(
            "cannot reach a VMM at {}: {e} (is it running with --api-sock {}?)",
            socket.display(),
            socket.display()
        )
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(|e| e.to_string())?;
    let mut line = serde_json::to_string(command).expect("commands serialize");
    line.push('\n');
    stream
        .write_all(line.as_bytes())
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .map_err(|e| format!("{}: {e}", socket.display()))?;
    let value: Value = serde_json::from_str(&answer)
        .map_err(|e| format!("the VMM's answer is not JSON ({e}): {answer}"))?;
    if value["ok"] == Value::Bool(true) {
        Ok(value)
    } else {
        Err(value["error"]
            .as_str()
            .unwrap_or("the VMM refused")
            .to_string())
    }
}
