//! The seeded workloads `sqlite`, `json` and `kv`, as data: what each one
//! does, step by step, as a pure function of its parameters.
//!
//! This file is shared: the microguest executes these steps, and host tests
//! include the same file (`#[path = ".../spec/mod.rs"] mod spec;`, with
//! `extern crate alloc;` at their crate root) to run the same SQL with
//! SQLite on the host, or to apply the same JSON/KV operations to their own
//! model, and compare. So it depends on nothing but `core` and `alloc`.
#![allow(dead_code)]

use alloc::string::String;
use alloc::vec::Vec;

/// xorshift64, the generator of every microguest workload.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// In `lo..hi` (hi > lo).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo)
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut v = Vec::with_capacity(n + 8);
        while v.len() < n {
            v.extend_from_slice(&self.next().to_le_bytes());
        }
        v.truncate(n);
        v
    }

    /// `n` characters of lowercase words and spaces (ASCII).
    pub fn text(&mut self, n: usize) -> String {
        let mut s = String::with_capacity(n);
        while s.len() < n {
            let w = WORDS[self.below(WORDS.len() as u64) as usize];
            s.push_str(w);
            s.push(' ');
        }
        s.truncate(n);
        s
    }

    pub fn pick<'a>(&mut self, list: &[&'a str]) -> &'a str {
        list[self.below(list.len() as u64) as usize]
    }
}

const WORDS: [&str; 16] = [
    "alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet",
    "kilo", "lima", "mike", "november", "oscar", "papa",
];

/// First names, some with characters a JSON or SQL writer must escape or
/// encode (quote, backslash, non-ASCII, control).
pub const FIRST: [&str; 12] = [
    "Alice",
    "Bob",
    "Carol",
    "Dave",
    "Eve",
    "Zoë",
    "Łukasz",
    "O\"Neil",
    "Back\\slash",
    "Tab\tby",
    "Ünal",
    "Mallory",
];
pub const LAST: [&str; 8] = [
    "Smith", "Jones", "Müller", "García", "Nguyễn", "Kowalski", "Okafor", "Tanaka",
];

/// FNV-1a 64, the checksum of the summary lines.
pub struct Fnv(pub u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
        }
    }

    /// The checksum of a key-value map's live pairs (length-prefixed, in
    /// key order), as the kv and leveldb summaries print it.
    pub fn of_map(map: &alloc::collections::BTreeMap<Vec<u8>, Vec<u8>>) -> u64 {
        let mut h = Fnv::default();
        for (k, v) in map {
            h.write(&(k.len() as u32).to_le_bytes());
            h.write(k);
            h.write(&(v.len() as u32).to_le_bytes());
            h.write(v);
        }
        h.0
    }
}

// ------------------------------------------------------------------ SQLite

mod data;
mod sqlite;

pub use data::*;
pub use sqlite::*;
