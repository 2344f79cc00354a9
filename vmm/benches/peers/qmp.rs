//! A minimal QMP client (QEMU's JSON control protocol) over a Unix socket:
//! enough to stop a VM, migrate it to a file and watch for events.
//!
//! QMP interleaves asynchronous events (`{"event": ..}`) with command
//! replies on the same stream; events read while waiting for a reply are
//! kept, so that a later [`Qmp::wait_event`] still sees them.
use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

pub struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    events: Vec<Value>,
}

fn proto(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what)
}

impl Qmp {
    /// Connects to QEMU's QMP socket at `path` (retrying while QEMU starts
    /// and creates it) and leaves capabilities negotiation mode.
    pub fn connect(path: &Path, timeout: Duration) -> io::Result<Qmp> {
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match UnixStream::connect(path) {
                Ok(s) => break s,
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_micros(500)),
            }
        };
        stream.set_read_timeout(Some(timeout))?;
        let mut qmp = Qmp {
            reader: BufReader::new(stream.try_clone()?),
            writer: stream,
            events: Vec::new(),
        };
        let greeting = qmp.read()?;
        if greeting.get("QMP").is_none() {
            return Err(proto(format!("not a QMP greeting: {greeting}")));
        }
        qmp.execute("qmp_capabilities", None)?;
        Ok(qmp)
    }

    fn read(&mut self) -> io::Result<Value> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            return Err(proto("QEMU closed its QMP socket".into()));
        }
        serde_json::from_str(&line).map_err(|e| proto(format!("bad QMP line {line:?}: {e}")))
    }

    /// Runs a command; its `return` value, or its `error` as an error.
    pub fn execute(&mut self, command: &str, arguments: Option<Value>) -> io::Result<Value> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        writeln!(self.writer, "{msg}")?;
        loop {
            let v = self.read()?;
            if v.get("event").is_some() {
                self.events.push(v);
            } else if let Some(r) = v.get("return") {
                return Ok(r.clone());
            } else if let Some(e) = v.get("error") {
                return Err(proto(format!("QMP {command}: {e}")));
            }
        }
    }

    /// Waits for event `name` (or returns it if it already came); its
    /// wall-clock timestamp, which QEMU takes when the event happens.
    pub fn wait_event(&mut self, name: &str) -> io::Result<SystemTime> {
        let pos = self.events.iter().position(|e| e["event"] == name);
        let event = match pos {
            Some(i) => self.events.remove(i),
            None => loop {
                let v = self.read()?;
                if v["event"] == name {
                    break v;
                }
                if v.get("event").is_some() {
                    self.events.push(v);
                }
            },
        };
        let ts = &event["timestamp"];
        let secs = ts["seconds"].as_u64().unwrap_or(0);
        let micros = ts["microseconds"].as_u64().unwrap_or(0);
        Ok(UNIX_EPOCH + Duration::from_secs(secs) + Duration::from_micros(micros))
    }

    /// Polls `query-migrate` until the migration ends; its final reply
    /// (`status` "completed", with QEMU's own `total-time` in ms).
    pub fn wait_migration(&mut self) -> io::Result<Value> {
        loop {
            let r = self.execute("query-migrate", None)?;
            match r["status"].as_str() {
                Some("completed") => return Ok(r),
                Some("failed") | Some("cancelled") => {
                    return Err(proto(format!("migration ended: {r}")))
                }
                _ => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    }
}
