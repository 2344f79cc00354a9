//! Retention of a record set's change logs by the engine's own limits:
//! the log stream's `max_age` and `max_bytes`, past which JetStream
//! removes the oldest messages itself (discard-old). Blocks and
//! checkpoints are not aged out: checkpoint maps name blocks of any age,
//! and a block is shared by every log that wrote it.
//!
//! What stays replayable: a record whose log still holds every record
//! since some checkpoint at or before it (see `replay::base`); the
//! records between the oldest one kept and the first checkpoint at or
//! after it are not (at most one checkpoint interval, `vmm run
//! --checkpoint-every`).
use std::time::Duration;

use serde::Serialize;

use crate::conn::get_stream;
use crate::error::{Error, Result};
use crate::LogStream;

/// Limits of a log stream (None: unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Retention {
    /// Messages older than this are removed.
    #[serde(with = "secs")]
    pub max_age: Option<Duration>,
    /// The oldest messages are removed beyond this many bytes.
    pub max_bytes: Option<u64>,
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}

impl LogStream {
    /// The stream's limits now.
    pub fn retention(&self) -> Result<Retention> {
        let conn = &self.conn;
        let stream = conn.block_on(get_stream(&conn.js, &self.stream_name, conn.timeout));
        let stream = stream.map_err(|e| Error::js("stream lookup", &self.stream_name, e))?;
        let config = &stream.cached_info().config;
        Ok(Retention {
            max_age: (!config.max_age.is_zero()).then_some(config.max_age),
            max_bytes: u64::try_from(config.max_bytes).ok().filter(|b| *b > 0),
        })
    }

    /// Sets the stream's limits (the engine applies them from then on).
    pub fn set_retention(&self, r: Retention) -> Result<()> {
        let conn = &self.conn;
        let name = &self.stream_name;
        conn.block_on(async {
            let stream = get_stream(&conn.js, name, conn.timeout)
                .await
                .map_err(|e| Error::js("stream lookup", name, e))?;
            let mut config = stream.cached_info().config.clone();
            config.max_age = r.max_age.unwrap_or(Duration::ZERO);
            // JetStream wants the duplicate window (which lets a publish
            // whose ack was lost be sent again) within the age limit.
            if let Some(age) = r.max_age {
                config.duplicate_window = config.duplicate_window.min(age);
            }
            config.max_bytes = r.max_bytes.map_or(-1, |b| b.min(i64::MAX as u64) as i64);
            config.discard = async_nats::jetstream::stream::DiscardPolicy::Old;
            conn.js
                .update_stream(config)
                .await
                .map(drop)
                .map_err(|e| Error::js("stream update", name, e))
        })
    }
}
