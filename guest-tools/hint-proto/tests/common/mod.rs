//! Helpers shared by the integration tests: a seeded PRNG and sample messages.
#![allow(dead_code)]

use hint_proto::*;

/// xorshift64*: small, seeded, deterministic.
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    pub fn bytes(&mut self, out: &mut [u8]) {
        out.iter_mut().for_each(|b| *b = self.next() as u8);
    }
}

/// One valid encoded message of every kind, in a stream.
pub fn sample_stream() -> Vec<u8> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; MAX_MESSAGE];
    let extents = [
        Extent {
            file_offset: 0,
            sector: 2048,
            len: 4096,
        },
        Extent {
            file_offset: 4096,
            sector: 9000,
            len: 8192,
        },
    ];
    let mut push =
        |n: Result<usize, EncodeError>, buf: &[u8]| out.extend_from_slice(&buf[..n.unwrap()]);
    push(
        encode_file(1, 1, Format::Sqlite, Role::Main, "/data/app.db", &mut buf),
        &buf,
    );
    push(
        encode_file(
            2,
            1,
            Format::Sqlite,
            Role::Wal,
            "/data/app.db-wal",
            &mut buf,
        ),
        &buf,
    );
    push(encode_extents(1, &extents, &mut buf), &buf);
    push(encode_size(1, 12288, true, &mut buf), &buf);
    push(encode_size(2, 0, false, &mut buf), &buf);
    push(encode_schema(1, "users=id;orders=id,line", &mut buf), &buf);
    push(encode_forget(2, &mut buf), &buf);
    out
}

/// Number of messages in [`sample_stream`].
pub const SAMPLE_COUNT: usize = 7;

/// Decodes every message of a stream that holds only valid messages.
pub fn decode_all(mut b: &[u8]) -> Vec<String> {
    let mut v = Vec::new();
    while !b.is_empty() {
        let (h, n) = decode(b).expect("valid message");
        v.push(format!("{h:?}"));
        b = &b[n..];
    }
    v
}
