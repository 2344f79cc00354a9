//! Helpers shared by the end-to-end tests: run the `vmm` binary and inspect
//! what it printed.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Output};

pub const VMM: &str = env!("CARGO_BIN_EXE_vmm");

/// Runs `vmm` with `args` and a 60 s guest timeout guard for `run`.
pub fn vmm(args: &[&str]) -> Output {
    Command::new(VMM)
        .args(args)
        .output()
        .expect("the vmm binary runs")
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The microguest ELF that vmm/build.rs built (in <target>/microguest).
pub fn microguest_elf() -> PathBuf {
    let bin = PathBuf::from(VMM);
    let target = bin.parent().and_then(|p| p.parent()).expect("target dir");
    target.join("microguest/x86_64-unknown-linux-gnu/release/microguest")
}

/// A minimal 64-bit executable ELF with one loadable segment at `paddr` of
/// `memsz` bytes and no notes: well-formed, but not PVH-bootable.
pub fn elf_without_pvh(paddr: u64, memsz: u64) -> Vec<u8> {
    let mut elf = vec![0u8; 64 + 56 + 16];
    elf[..4].copy_from_slice(b"\x7fELF");
    elf[4] = 2; // ELFCLASS64
    elf[5] = 1; // little endian
    elf[6] = 1; // version
    elf[16..18].copy_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    elf[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86_64
    elf[20..24].copy_from_slice(&1u32.to_le_bytes());
    elf[24..32].copy_from_slice(&paddr.to_le_bytes()); // e_entry
    elf[32..40].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
    elf[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize
    elf[54..56].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
    elf[56..58].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
    let ph = &mut elf[64..120];
    ph[..4].copy_from_slice(&1u32.to_le_bytes()); // PT_LOAD
    ph[4..8].copy_from_slice(&5u32.to_le_bytes()); // R X
    ph[8..16].copy_from_slice(&120u64.to_le_bytes()); // p_offset
    ph[16..24].copy_from_slice(&paddr.to_le_bytes()); // p_vaddr
    ph[24..32].copy_from_slice(&paddr.to_le_bytes()); // p_paddr
    ph[32..40].copy_from_slice(&16u64.to_le_bytes()); // p_filesz
    ph[40..48].copy_from_slice(&memsz.to_le_bytes()); // p_memsz
    ph[48..56].copy_from_slice(&0x1000u64.to_le_bytes());
    elf
}

/// Asserts that a failed command printed exactly one `error:` line naming
/// `needle`, and exited with `status`.
pub fn assert_one_line_error(out: &Output, status: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "expected one error line, got: {err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(lines[0].contains(needle), "expected '{needle}' in: {err}");
}

/// The microguest's xorshift64 generator.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Parameters of the microguest's `blk-writes` workload.
#[derive(Clone, Copy)]
pub struct BlkWrites {
    pub seed: u64,
    pub writes: u64,
    pub max_blocks: u64,
    pub flush_every: u64,
    pub dup_every: u64,
}

impl BlkWrites {
    pub fn cmdline(&self) -> String {
        format!(
            "workload=blk-writes seed={} writes={} max_blocks={} flush_every={} dup_every={}",
            self.seed, self.writes, self.max_blocks, self.flush_every, self.dup_every
        )
    }

    /// Applies the workload to `image` on the host, as the guest does.
    pub fn apply(&self, image: &mut [u8]) {
        let span = image.len() as u64 / 4096;
        let mut rng = Rng::new(self.seed);
        for i in 0..self.writes {
            let nblocks = 1 + rng.next_u64() % self.max_blocks;
            let start = rng.next_u64() % (span - nblocks + 1);
            let fill_seed = if self.dup_every != 0 && i % self.dup_every == 0 {
                0xD00D
            } else {
                rng.next_u64()
            };
            let at = (start * 4096) as usize;
            let data = &mut image[at..at + nblocks as usize * 4096];
            for (j, block) in data.chunks_exact_mut(4096).enumerate() {
                let seed = fill_seed.wrapping_add(j as u64);
                block[..8].copy_from_slice(b"VMMBLK01");
                block[8..16].copy_from_slice(&seed.to_le_bytes());
                let mut fill = Rng::new(seed);
                for word in block[16..].chunks_exact_mut(8) {
                    word.copy_from_slice(&fill.next_u64().to_le_bytes());
                }
            }
        }
    }
}

/// A zero-filled raw disk image of `mib` MiB in `dir`.
pub fn blank_disk(dir: &std::path::Path, name: &str, mib: u64) -> PathBuf {
    let path = dir.join(name);
    let f = std::fs::File::create(&path).unwrap();
    f.set_len(mib << 20).unwrap();
    path
}

/// `vmm run --disk DISK --record REC --vm-id VM --cmdline CMDLINE` (plus
/// `extra`), which must succeed.
pub fn run_recorded(
    disk: &std::path::Path,
    rec: &std::path::Path,
    vm: &str,
    cmdline: &str,
    extra: &[&str],
) -> Output {
    let mut args = vec![
        "run",
        "--disk",
        disk.to_str().unwrap(),
        "--record",
        rec.to_str().unwrap(),
        "--vm-id",
        vm,
        "--cmdline",
        cmdline,
    ];
    args.extend_from_slice(extra);
    let out = vmm(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    out
}

/// The NDJSON of `vmm changes REC --json EXTRA...`, which must succeed.
pub fn changes_json(rec: &std::path::Path, extra: &[&str]) -> Vec<serde_json::Value> {
    let mut args = vec!["changes", rec.to_str().unwrap(), "--json"];
    args.extend_from_slice(extra);
    let out = vmm(&args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}
