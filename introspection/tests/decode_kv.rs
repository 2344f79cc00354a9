//! Oracle tests of the KV decoder: a seeded workload appends puts and
//! deletes to a fixed extent with the shared encoder, compacts when full,
//! sometimes tears its last write; the expected changes come from the
//! in-memory map it maintains.

use std::collections::{BTreeMap, BTreeSet};

use introspection::decode::kv::{self, encode_delete, encode_header, encode_put, record_len};
use introspection::decode::{self, blob_value, sort_changes, Change, Format, Op, SchemaHints};
use serde_json::Value;

const EXTENT: usize = 32 * 1024;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn bytes(&mut self, max: usize) -> Vec<u8> {
        let n = self.below(max as u64) as usize;
        if self.below(4) == 0 {
            (0..n).map(|_| self.next() as u8).collect() // often not UTF-8
        } else {
            (0..n).map(|_| b'a' + self.below(26) as u8).collect()
        }
    }
}

/// The guest side: a log in a fixed extent, and the live map it stands for.
struct Store {
    ext: Vec<u8>,
    end: usize,
    generation: u64,
    live: BTreeMap<Vec<u8>, Vec<u8>>,
    /// Compaction leaves stale bytes behind a 4-byte zero terminator (kept
    /// after every append) instead of zero-filling everything: the decoder
    /// must stop at the terminator.
    lazy_zero: bool,
}

impl Store {
    fn new(lazy_zero: bool) -> Store {
        let mut ext = vec![0u8; EXTENT];
        ext[..16].copy_from_slice(&encode_header(1));
        Store {
            ext,
            end: 16,
            generation: 1,
            live: BTreeMap::new(),
            lazy_zero,
        }
    }

    fn compact(&mut self) {
        self.generation += 1;
        let mut at = 16;
        let mut fresh = vec![0u8; EXTENT];
        fresh[..16].copy_from_slice(&encode_header(self.generation));
        for (k, v) in &self.live {
            at += encode_put(&mut fresh[at..], k, v).expect("live set fits");
        }
        if self.lazy_zero {
            self.ext[..at].copy_from_slice(&fresh[..at]);
            if at + 4 <= EXTENT {
                self.ext[at..at + 4].fill(0);
            }
        } else {
            self.ext = fresh;
        }
        self.end = at;
    }

    fn append(&mut self, key: &[u8], value: Option<&[u8]>) {
        let need = record_len(key.len(), value.map_or(0, <[u8]>::len));
        if self.end + need + 4 > EXTENT {
            self.compact();
        }
        let out = &mut self.ext[self.end..];
        self.end += match value {
            Some(v) => encode_put(out, key, v),
            None => encode_delete(out, key),
        }
        .expect("fits after compaction");
        if self.lazy_zero {
            self.ext[self.end..self.end + 4].fill(0);
        }
        match value {
            Some(v) => {
                self.live.insert(key.to_vec(), v.to_vec());
            }
            None => {
                self.live.remove(key);
            }
        }
    }
}

fn render(v: &[u8]) -> Value {
    match std::str::from_utf8(v) {
        Ok(s) => Value::String(s.into()),
        Err(_) => blob_value(v),
    }
}

fn expected(a: &BTreeMap<Vec<u8>, Vec<u8>>, b: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Change> {
    let keys: BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for k in keys {
        let (x, y) = (a.get(k), b.get(k));
        let op = match (x, y) {
            (Some(x), Some(y)) if x == y => continue,
            (Some(_), Some(_)) => Op::Update,
            (Some(_), None) => Op::Delete,
            _ => Op::Insert,
        };
        out.push(Change {
            collection: String::new(),
            key: kv::render_key(k),
            op,
            before: x.map(|v| render(v)),
            after: y.map(|v| render(v)),
        });
    }
    sort_changes(&mut out);
    out
}

#[test]
fn oracle_append_compact_tear() {
    let (mut versions, mut changes, mut compactions, mut tears) = (0, 0, 0, 0);
    for (seed, lazy) in [(1u64, false), (2, true), (3, false), (4, true)] {
        let mut rng = Rng(seed);
        let mut s = Store::new(lazy);
        let mut prev_img = vec![0u8; EXTENT]; // blank: no log yet
        let mut prev_live = BTreeMap::new();
        for step in 0..400 {
            let gen = s.generation;
            for _ in 0..1 + rng.below(8) {
                let key = if rng.below(3) == 0 || s.live.is_empty() {
                    rng.bytes(12)
                } else {
                    let i = rng.below(s.live.len() as u64) as usize;
                    s.live.keys().nth(i).unwrap().clone()
                };
                let live: usize = s
                    .live
                    .iter()
                    .map(|(k, v)| record_len(k.len(), v.len()))
                    .sum();
                if rng.below(4) == 0 || live > EXTENT / 3 {
                    s.append(&key, None);
                } else {
                    let max = if rng.below(10) == 0 { 3000 } else { 40 };
                    let v = rng.bytes(max);
                    s.append(&key, Some(&v));
                }
            }
            compactions += usize::from(s.generation != gen);
            let mut img = s.ext.clone();
            if rng.below(5) == 0 {
                // A torn append: part of a record past the valid end.
                let mut rec = vec![0u8; record_len(3, 10)];
                encode_put(&mut rec, b"new", b"0123456789").unwrap();
                let cut = 1 + rng.below(rec.len() as u64 - 1) as usize;
                if s.end + cut <= EXTENT {
                    img[s.end..s.end + cut].copy_from_slice(&rec[..cut]);
                    tears += 1;
                }
            }
            let mut got = decode::diff(Format::Kv, &prev_img, &img, &SchemaHints::default())
                .unwrap_or_else(|e| panic!("seed {seed} step {step}: {e}"));
            sort_changes(&mut got);
            let want = expected(&prev_live, &s.live);
            assert_eq!(got, want, "seed {seed} step {step}");
            let log = kv::parse(&img).unwrap();
            assert_eq!(log.generation, s.generation);
            assert_eq!(log.end, s.end);
            changes += got.len();
            versions += 1;
            prev_img = img;
            prev_live = s.live.clone();
        }
    }
    eprintln!(
        "kv: {versions} versions, {changes} changes, {compactions} compactions, {tears} torn appends"
    );
    assert!(compactions >= 4 && tears > 50 && changes > 1000);
}

#[test]
fn rendering_and_garbage() {
    let mut f = [0u8; 128];
    f[..16].copy_from_slice(&encode_header(9));
    let n = encode_put(&mut f[16..], &[0xff, 0x00], &[0xc3, 0x28]).unwrap();
    let got = decode::diff(Format::Kv, &[], &f[..16 + n], &SchemaHints::default()).unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].key, "0xff00");
    assert_eq!(got[0].after, Some(serde_json::json!({"$blob": "c328"})));
    assert!(decode::diff(
        Format::Kv,
        &[],
        b"VMMKV002xxxxxxxx",
        &SchemaHints::default()
    )
    .is_err());
    assert!(decode::diff(Format::Kv, &[], &[1, 2, 3], &SchemaHints::default()).is_err());
}
