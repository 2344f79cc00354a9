//! The `json` and `kv` workloads as data (see the parent module).
#![allow(dead_code)]

use alloc::collections::BTreeSet;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::*;

// -------------------------------------------------------------------- JSON

#[derive(Clone, Copy, Debug)]
pub struct JsonParams {
    pub seed: u64,
    /// Records of the first document.
    pub records: u64,
    /// Document writes in all, the first one included.
    pub rewrites: u64,
    /// Record operations between two writes.
    pub ops: u64,
}

impl Default for JsonParams {
    fn default() -> Self {
        Self {
            seed: 1,
            records: 200,
            rewrites: 8,
            ops: 60,
        }
    }
}

/// A record of the document's `records` array.
#[derive(Clone, Debug, PartialEq)]
pub struct JsonRecord {
    pub id: u64,
    pub name: String,
    pub qty: i64,
    /// Two decimals, |price| < 100000.
    pub price: f64,
    pub active: bool,
    pub tags: Vec<String>,
    pub note: Option<String>,
}

#[derive(Clone, Debug)]
pub enum JsonOp {
    /// Insert a new record, or replace the record with this id.
    Put(JsonRecord),
    /// Set `qty` and `price` of an existing record.
    Patch {
        id: u64,
        qty: i64,
        price: f64,
    },
    Delete(u64),
}

/// The JSON workload: `next_round` gives the operations applied before each
/// document write (round 0: the first `records` inserts).
///
/// The document is `{"version":N,"records":[...]}` with N the write number
/// (1-based) and the live records in ascending id order, each
/// `{"id":..,"name":..,"qty":..,"price":..,"active":..,"tags":[..],"note":..}`.
pub struct JsonScript {
    p: JsonParams,
    rng: Rng,
    live: BTreeSet<u64>,
    next_id: u64,
    round: u64,
}

impl JsonScript {
    pub fn new(p: JsonParams) -> Self {
        Self {
            rng: Rng::new(p.seed ^ 0x0015_0000),
            p,
            live: BTreeSet::new(),
            next_id: 1,
            round: 0,
        }
    }

    fn record(&mut self, id: u64) -> JsonRecord {
        let name = format!("{} {}", self.rng.pick(&FIRST), self.rng.pick(&LAST));
        let ntags = self.rng.below(4);
        let tags = (0..ntags)
            .map(|_| String::from(self.rng.pick(&WORDS)))
            .collect();
        let note = match self.rng.below(4) {
            0 => None,
            1 => Some(String::from("line one\nline two \"quoted\" \u{1} end")),
            _ => {
                let n = self.rng.range(5, 120) as usize;
                Some(self.rng.text(n))
            }
        };
        JsonRecord {
            id,
            name,
            qty: self.rng.below(10_000) as i64 - 100,
            price: self.price(),
            active: self.rng.below(2) == 0,
            tags,
            note,
        }
    }

    fn price(&mut self) -> f64 {
        (self.rng.below(20_000_000) as f64 - 10_000_000.0) / 100.0
    }

    fn pick_live(&mut self) -> Option<u64> {
        if self.live.is_empty() {
            return None;
        }
        let n = self.rng.below(self.live.len() as u64) as usize;
        self.live.iter().nth(n).copied()
    }

    /// Operations before the next write, or None after the last write.
    pub fn next_round(&mut self) -> Option<Vec<JsonOp>> {
        if self.round >= self.p.rewrites.max(1) {
            return None;
        }
        let mut ops = Vec::new();
        if self.round == 0 {
            for _ in 0..self.p.records {
                let id = self.next_id;
                self.next_id += 1;
                self.live.insert(id);
                ops.push(JsonOp::Put(self.record(id)));
            }
        } else {
            for _ in 0..self.p.ops {
                let r = self.rng.below(100);
                let target = self.pick_live();
                match (r, target) {
                    (0..=34, _) | (_, None) => {
                        let id = self.next_id;
                        self.next_id += 1;
                        self.live.insert(id);
                        ops.push(JsonOp::Put(self.record(id)));
                    }
                    (35..=59, Some(id)) => {
                        let qty = self.rng.below(1000) as i64;
                        let price = self.price();
                        ops.push(JsonOp::Patch { id, qty, price });
                    }
                    (60..=74, Some(id)) => ops.push(JsonOp::Put(self.record(id))),
                    (_, Some(id)) => {
                        self.live.remove(&id);
                        ops.push(JsonOp::Delete(id));
                    }
                }
            }
        }
        self.round += 1;
        Some(ops)
    }
}

// ---------------------------------------------------------------------- KV

#[derive(Clone, Copy, Debug)]
pub struct KvParams {
    pub seed: u64,
    /// Operations in all.
    pub ops: u64,
    /// Operations appended between two flushes.
    pub batch: u64,
    /// Keys are `user:NNNNN` with NNNNN below this.
    pub keys: u64,
    /// After a batch, compact when the log (header and records) is longer
    /// than this many bytes.
    pub compact_at: u64,
}

impl Default for KvParams {
    fn default() -> Self {
        Self {
            seed: 1,
            ops: 3000,
            batch: 20,
            keys: 400,
            compact_at: 128 << 10,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum KvOp {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

/// The KV workload: batches of puts (80%) and deletes (20%, possibly of
/// absent keys) over `keys` keys; values mostly short, some up to 4000 bytes.
pub struct KvScript {
    p: KvParams,
    rng: Rng,
    done: u64,
}

impl KvScript {
    pub fn new(p: KvParams) -> Self {
        Self {
            rng: Rng::new(p.seed ^ 0x0000_4b56),
            p: KvParams {
                batch: p.batch.max(1),
                keys: p.keys.max(1),
                ..p
            },
            done: 0,
        }
    }

    pub fn next_batch(&mut self) -> Option<Vec<KvOp>> {
        if self.done >= self.p.ops {
            return None;
        }
        let n = self.p.batch.min(self.p.ops - self.done);
        let mut ops = Vec::new();
        for _ in 0..n {
            let key = format!("user:{:05}", self.rng.below(self.p.keys)).into_bytes();
            if self.rng.below(100) < 20 {
                ops.push(KvOp::Delete(key));
            } else {
                let r = self.rng.below(100);
                let len = if r < 80 {
                    self.rng.below(64)
                } else if r < 95 {
                    self.rng.range(64, 512)
                } else {
                    self.rng.range(512, 4000)
                };
                ops.push(KvOp::Put(key, self.rng.bytes(len as usize)));
            }
        }
        self.done += n;
        Some(ops)
    }
}
