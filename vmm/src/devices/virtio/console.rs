//! virtio-console as the hint channel: the guest writes hint-proto
//! messages to port 0's transmit queue; the device cuts the byte stream
//! into messages and hands each to a [`HintSink`] (the recorder).
//!
//! The byte stream is untrusted: chains are bounded like the block
//! device's, the reassembly buffer is bounded, and garbage is skipped up to
//! the next magic. Nothing the guest sends can stop the VMM.
use hint_proto::StreamParser;
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use super::{IrqLine, VirtioDevice, INT_VRING};
use crate::memory::GuestMemory;
use crate::recording::RecordResult;

const VIRTIO_ID_CONSOLE: u32 = 3;
const QUEUE_SIZE: u16 = 64;
/// Queue 0 is port 0's receive queue (host to guest: unused), 1 its
/// transmit queue.
const TRANSMITQ: u16 = 1;
/// Bytes accepted from one descriptor chain.
const MAX_CHAIN_BYTES: usize = 64 << 10;
/// Bytes kept while waiting for the rest of a message.
const PARSER_BUFFER: usize = 2 * hint_proto::MAX_MESSAGE;
const MAX_WARNINGS: u64 = 20;

/// Receives the hint messages a guest sends, in order.
pub trait HintSink: Send {
    fn hint(&mut self, message: Vec<u8>) -> RecordResult<()>;
}

#[derive(Debug, Default, Clone, Copy)]
pub struct ConsoleCounters {
    pub messages: u64,
    pub bytes: u64,
    pub skipped_bytes: u64,
    pub errors: u64,
}

pub struct Console {
    sink: Option<Box<dyn HintSink>>,
    mem: Option<GuestMemory>,
    queues: Vec<Queue>,
    /// Reassembles messages from the byte stream (bounded; resyncs on
    /// garbage at the next magic).
    parser: Box<StreamParser<PARSER_BUFFER>>,
    counters: ConsoleCounters,
}

impl Console {
    pub fn new(sink: Option<Box<dyn HintSink>>) -> Self {
        Self {
            sink,
            mem: None,
            queues: Vec::new(),
            parser: Box::new(StreamParser::new()),
            counters: ConsoleCounters::default(),
        }
    }

    pub fn counters(&self) -> ConsoleCounters {
        self.counters
    }

    fn warn(&mut self, what: &str) {
        self.counters.errors += 1;
        if self.counters.errors <= MAX_WARNINGS {
            tracing::warn!("guest hint channel: {what}");
        }
    }

    /// Feeds guest bytes to the stream parser; every complete message goes
    /// to the sink, every error is counted (and reported, up to a limit).
    fn consume(&mut self, bytes: &[u8]) {
        let mut messages = Vec::new();
        let mut errors = Vec::new();
        self.parser.feed(bytes, |m| match m {
            Ok(hint) => match hint.to_vec() {
                Ok(wire) => messages.push(wire),
                Err(e) => errors.push(format!("re-encoding a hint: {e}")),
            },
            Err(e) => errors.push(e.to_string()),
        });
        for e in errors {
            self.warn(&format!("skipped bytes: {e}"));
        }
        for message in messages {
            self.counters.messages += 1;
            if let Some(sink) = self.sink.as_mut() {
                if let Err(e) = sink.hint(message) {
                    self.warn(&format!("recording a hint failed: {e}"));
                }
            }
        }
        self.counters.skipped_bytes = self.parser.stats().skipped_bytes;
    }
}

impl VirtioDevice for Console {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_CONSOLE
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE, QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        0
    }

    fn read_config(&self, _offset: u64, data: &mut [u8]) {
        data.fill(0);
    }

    fn activate(&mut self, mem: GuestMemory, queues: Vec<Queue>, _acked: u64) {
        self.queues = queues;
        self.mem = Some(mem);
    }

    fn process_queue(&mut self, index: u16, irq: &IrqLine) {
        if index != TRANSMITQ {
            return; // the host never sends on the receive queue
        }
        let Some(mem) = self.mem.clone() else { return };
        let Some(mut queue) = self.queues.get_mut(TRANSMITQ as usize).map(std::mem::take) else {
            return;
        };
        let mut completed = false;
        while let Some(chain) = queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let mut taken = 0usize;
            for desc in chain {
                if desc.is_write_only() {
                    continue;
                }
                let len = (desc.len() as usize).min(MAX_CHAIN_BYTES - taken);
                let mut buf = vec![0u8; len];
                if mem.read_slice(&mut buf, desc.addr()).is_err() {
                    self.warn("buffer outside guest memory");
                    break;
                }
                taken += len;
                self.counters.bytes += len as u64;
                self.consume(&buf);
                if taken == MAX_CHAIN_BYTES {
                    break;
                }
            }
            if queue.add_used(&mem, head, 0).is_err() {
                self.warn("used ring outside guest memory");
                break;
            }
            completed = true;
        }
        if completed && queue.needs_notification(&mem).unwrap_or(true) {
            irq.signal(INT_VRING);
        }
        self.queues[TRANSMITQ as usize] = queue;
    }

    fn reset(&mut self) {
        self.queues.clear();
        self.mem = None;
        self.parser.clear();
    }

    fn active_queues(&self) -> Vec<virtio_queue::QueueState> {
        self.queues.iter().map(|q| q.state()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    struct Collect(Arc<Mutex<Vec<Vec<u8>>>>);

    impl HintSink for Collect {
        fn hint(&mut self, message: Vec<u8>) -> RecordResult<()> {
            self.0.lock().unwrap().push(message);
            Ok(())
        }
    }

    #[test]
    fn stream_is_cut_into_messages_and_garbage_skipped() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let mut console = Console::new(Some(Box::new(Collect(got.clone()))));
        let mut a = [0u8; 64];
        let n = hint_proto::encode_size(7, 4096, true, &mut a).unwrap();
        let mut stream = b"garbage VH\\x09".to_vec();
        stream.extend_from_slice(&a[..n]);
        stream.extend_from_slice(&a[..n]);
        // Fed in awkward pieces.
        for piece in stream.chunks(5) {
            console.consume(piece);
        }
        let got = got.lock().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0], &a[..n]);
        assert!(console.counters.skipped_bytes > 0);
    }
}
