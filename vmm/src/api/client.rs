//! The client side of the control socket, for `vmm snapshot create`,
//! `vmm mark`, `vmm pause` and `vmm resume`.
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use thiserror::Error;

use super::Command;

/// Why a command got no `ok` answer.
#[derive(Debug, Error)]
pub enum ClientError {
    #[error("cannot reach a VMM at {}: {source} (is it running with --api-sock {}?)", .socket.display(), .socket.display())]
    Connect {
        socket: PathBuf,
        source: std::io::Error,
    },
    /// Sending the command or reading the answer failed.
    #[error("{}: {source}", .socket.display())]
    Io {
        socket: PathBuf,
        source: std::io::Error,
    },
    #[error("the VMM's answer is not JSON ({source}): {answer}")]
    NotJson {
        answer: String,
        source: serde_json::Error,
    },
    /// The VMM answered with an error: its message.
    #[error("{0}")]
    Refused(String),
}

/// Sends one command and returns the VMM's answer (`ok` true), or the
/// error it gave (or why it could not be asked).
pub fn request(socket: &Path, command: &Command) -> Result<Value, ClientError> {
    let io = |source| ClientError::Io {
        socket: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| ClientError::Connect {
        socket: socket.to_path_buf(),
        source,
    })?;
    stream
        .set_read_timeout(Some(Duration::from_secs(600)))
        .map_err(io)?;
    let mut line = serde_json::to_string(command).expect("commands serialize");
    line.push('\n');
    stream.write_all(line.as_bytes()).map_err(io)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(io)?;
    let value: Value = match serde_json::from_str(&answer) {
        Ok(v) => v,
        Err(source) => return Err(ClientError::NotJson { answer, source }),
    };
    if value["ok"] == Value::Bool(true) {
        Ok(value)
    } else {
        Err(ClientError::Refused(
            value["error"]
                .as_str()
                .unwrap_or("the VMM refused")
                .to_string(),
        ))
    }
}
