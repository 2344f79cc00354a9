//! The kernel command line: `key=value` words separated by spaces.

/// Longest command line the microguest reads (the VMM enforces the same limit).
pub const MAX_LEN: usize = 2048;

/// Reads the NUL-terminated command line at a guest physical address.
///
/// # Safety
/// `paddr` must be 0 or point at readable, identity-mapped memory.
pub unsafe fn from_paddr(paddr: u64) -> &'static str {
    if paddr == 0 {
        return "";
    }
    let base = paddr as *const u8;
    let mut len = 0;
    while len < MAX_LEN && *base.add(len) != 0 {
        len += 1;
    }
    core::str::from_utf8(core::slice::from_raw_parts(base, len)).unwrap_or("")
}

pub struct Cmdline<'a> {
    line: &'a str,
}

impl<'a> Cmdline<'a> {
    pub fn new(line: &'a str) -> Self {
        Self { line }
    }

    pub fn line(&self) -> &'a str {
        self.line
    }

    /// The value of the last `key=value` word for `key`.
    pub fn get(&self, key: &str) -> Option<&'a str> {
        self.line
            .split_ascii_whitespace()
            .rev()
            .filter_map(|word| word.split_once('='))
            .filter(|(k, _)| *k == key)
            .map(|(_, v)| v)
            .next()
    }

    /// Every value given for `key`, in order.
    pub fn get_all<'k>(&self, key: &'k str) -> impl Iterator<Item = &'a str> + 'k
    where
        'a: 'k,
    {
        self.line
            .split_ascii_whitespace()
            .filter_map(|word| word.split_once('='))
            .filter(move |(k, _)| *k == key)
            .map(|(_, v)| v)
    }

    /// A numeric value (decimal or 0x-prefixed hex), or `default`.
    pub fn get_u64(&self, key: &str, default: u64) -> u64 {
        self.get(key).and_then(parse_u64).unwrap_or(default)
    }
}

pub fn parse_u64(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}
