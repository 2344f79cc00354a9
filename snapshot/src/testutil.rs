//! Test memory images shared by the unit tests of `pages` and `manifest`.

use crate::pages::PAGE_SIZE;

/// Deterministic guest-memory image of `pages` pages: by `page % 8`,
/// 0-2 unique random pages, 3-4 zero pages, 5-6 copies of one of 16
/// shared pages, 7 a unique text-like (compressible) page.
pub(crate) fn memory(seed: u64, pages: usize) -> Vec<u8> {
    let mut mem = vec![0u8; pages * PAGE_SIZE];
    for (p, page) in mem.chunks_exact_mut(PAGE_SIZE).enumerate() {
        fill_page(page, seed, p as u64, p % 8);
    }
    mem
}

/// Fills one page as [`memory`] does for kind `kind` (see there).
pub(crate) fn fill_page(page: &mut [u8], seed: u64, n: u64, kind: usize) {
    match kind {
        0..=2 => random(page, seed, n),
        3 | 4 => page.fill(0),
        5 | 6 => random(page, seed ^ 0xd0d0, (n / 8) % 16),
        _ => {
            let line = format!("seed {seed} page {n}: counter=1234 state=ok; ");
            for (d, s) in page.iter_mut().zip(line.bytes().cycle()) {
                *d = s;
            }
        }
    }
}

/// Fills `page` with BLAKE3 XOF output keyed by (seed, n).
pub(crate) fn random(page: &mut [u8], seed: u64, n: u64) {
    let mut h = blake3::Hasher::new();
    h.update(&seed.to_le_bytes());
    h.update(&n.to_le_bytes());
    h.finalize_xof().fill(page);
}

/// Small xorshift generator for picking pages.
pub(crate) struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Sets page `p` in a KVM-layout dirty bitmap.
pub(crate) fn mark(bitmap: &mut [u64], p: usize) {
    bitmap[p / 64] |= 1 << (p % 64);
}

/// Writes to `count` random pages of `mem` (new random content, zeros,
/// or a copy of a shared page), marking each in `bitmap`; round `round`
/// makes the content differ between calls.
pub(crate) fn mutate(mem: &mut [u8], bitmap: &mut [u64], rng: &mut Rng, count: usize, round: u64) {
    let pages = mem.len() / PAGE_SIZE;
    for _ in 0..count {
        let p = rng.below(pages);
        let page = &mut mem[p * PAGE_SIZE..(p + 1) * PAGE_SIZE];
        let kind = rng.below(8);
        fill_page(page, 1000 + round, rng.next(), kind);
        mark(bitmap, p);
    }
}
