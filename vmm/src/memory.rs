//! Guest physical memory: layout and allocation.
//!
//! Layout (x86_64):
//! ```text
//! 0x0000_0000 .. 0x0009_fc00   RAM (low memory; boot data lives here)
//!     0x6000                   hvm_start_info
//!     0x7000                   PVH memory map (e820-style entries)
//!     0x2_0000                 kernel command line (NUL-terminated)
//! 0x0009_fc00 .. 0x0010_0000   reserved (EBDA, VGA, BIOS)
//! 0x0010_0000 .. min(top, 3G)  RAM (the kernel is loaded at 1 MiB)
//! 0xc000_0000 .. 0x1_0000_0000 MMIO gap (device windows), never RAM
//! 0x1_0000_0000 ..             RAM above 4 GiB when the guest has more than 3 GiB
//! ```
//! Memory is an anonymous private mapping with MAP_NORESERVE: pages the guest
//! never touches cost the host nothing.
//!
//! Where the host's THP mode allows it (`madvise` or `always`), guest RAM
//! asks for transparent huge pages ([`advise_huge`]): a memory-heavy guest
//! runs ~1.25x faster on them here (fewer host faults, and KVM maps the
//! guest's own 2 MiB pages with 2 MiB host mappings). Dirty tracking is
//! unaffected: with KVM_MEM_LOG_DIRTY_PAGES on, KVM maps the slot at 4 KiB
//! and logs 4 KiB pages, and the VMM's own bitmap is per 4 KiB page too;
//! snapshots read and hash 4 KiB pages whatever backs them.
pub mod lazy;
mod uffd;

use vm_memory::bitmap::AtomicBitmap;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

/// Guest memory with a dirty bitmap: every write the VMM itself makes
/// (virtio DMA, boot data) marks its page, which KVM's dirty log cannot
/// see. Incremental snapshots OR it with KVM's log.
pub type GuestMemory = vm_memory::GuestMemoryMmap<AtomicBitmap>;

use crate::error::{Result, VmmError};

pub const MIB: u64 = 1 << 20;
/// Smallest guest: room for the boot data and a small kernel at 1 MiB.
pub const MIN_MEM_MIB: u64 = 2;
/// Largest guest this VMM lays out (1 TiB).
pub const MAX_MEM_MIB: u64 = 1 << 20;

pub const START_INFO_ADDR: u64 = 0x6000;
pub const MEMMAP_ADDR: u64 = 0x7000;
/// Room for memory map entries between MEMMAP_ADDR and CMDLINE_ADDR.
pub const MEMMAP_MAX_ENTRIES: usize = 128;
pub const CMDLINE_ADDR: u64 = 0x2_0000;
/// Longest kernel command line, including its NUL (Linux's x86 limit).
pub const CMDLINE_MAX: usize = 2048;
pub const EBDA_START: u64 = 0x9_fc00;
pub const HIMEM_START: u64 = 0x10_0000;
pub const MMIO_GAP_START: u64 = 0xc000_0000;
pub const MMIO_GAP_END: u64 = 0x1_0000_0000;

/// Guest RAM ranges for a guest of `mem_mib` MiB.
pub fn ram_ranges(mem_mib: u64) -> Vec<(GuestAddress, usize)> {
    let size = mem_mib * MIB;
    if size <= MMIO_GAP_START {
        vec![(GuestAddress(0), size as usize)]
    } else {
        vec![
            (GuestAddress(0), MMIO_GAP_START as usize),
            (GuestAddress(MMIO_GAP_END), (size - MMIO_GAP_START) as usize),
        ]
    }
}

/// Total memory of this host in MiB, from /proc/meminfo.
pub fn host_mem_mib() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024)
}

/// Checks `mem_mib` against our limits and the host, then maps guest memory.
pub fn create_guest_memory(mem_mib: u64) -> Result<GuestMemory> {
    if !(MIN_MEM_MIB..=MAX_MEM_MIB).contains(&mem_mib) {
        return Err(VmmError::MemoryOutOfRange(mem_mib));
    }
    if let Some(host_mib) = host_mem_mib() {
        if mem_mib > host_mib {
            return Err(VmmError::MemoryTooLarge { mem_mib, host_mib });
        }
    }
    GuestMemory::from_ranges(&ram_ranges(mem_mib)).map_err(|e| VmmError::MemoryAlloc {
        mem_mib,
        reason: e.to_string(),
    })
}

/// Where the host's THP mode is shown (`always [madvise] never`).
const THP_ENABLED: &str = "/sys/kernel/mm/transparent_hugepage/enabled";

/// Whether the host gives transparent huge pages to memory that asks for
/// them: its THP mode is `always` or `madvise` (read once).
pub fn thp_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        std::fs::read_to_string(THP_ENABLED).is_ok_and(|mode| thp_mode_allows(&mode))
    })
}

/// Whether a THP mode line (the selected mode in brackets) lets
/// MADV_HUGEPAGE memory have huge pages.
fn thp_mode_allows(mode: &str) -> bool {
    mode.contains("[always]") || mode.contains("[madvise]")
}

/// Asks for transparent huge pages on `len` bytes at `host` when the host
/// allows them. Only a hint: a failure costs speed, not correctness, so
/// it is logged and ignored.
pub fn advise_huge(host: *mut u8, len: usize) {
    if !thp_available() {
        return;
    }
    // SAFETY: MADV_HUGEPAGE only sets a flag on the mapping; it neither
    // changes nor frees its content.
    let rc = unsafe { libc::madvise(host.cast(), len, libc::MADV_HUGEPAGE) };
    if rc != 0 {
        tracing::debug!(
            "madvise(MADV_HUGEPAGE) on guest memory at {host:p} ({len} bytes): {}",
            std::io::Error::last_os_error()
        );
    }
}

/// [`advise_huge`] on every region of `mem`.
pub fn advise_huge_all(mem: &GuestMemory) {
    for region in mem.iter() {
        if let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) {
            advise_huge(host, region.len() as usize);
        }
    }
}

/// Bytes of this process's anonymous memory on transparent huge pages
/// (AnonHugePages of /proc/self/smaps_rollup): nearly all of it guest RAM.
pub fn huge_bytes() -> u64 {
    let Ok(rollup) = std::fs::read_to_string("/proc/self/smaps_rollup") else {
        return 0;
    };
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("AnonHugePages:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

/// Bytes of guest memory resident in host RAM (pages the guest touched), by
/// `mincore(2)` over every region.
pub fn resident_bytes(mem: &GuestMemory) -> u64 {
    let page = page_size();
    let mut total = 0u64;
    for region in mem.iter() {
        let Ok(host) = region.get_host_address(vm_memory::MemoryRegionAddress(0)) else {
            continue;
        };
        let len = region.len() as usize;
        let mut vec = vec![0u8; len.div_ceil(page)];
        // SAFETY: `host..host+len` is the region's own live mapping and `vec`
        // has one byte per page of it.
        let rc = unsafe { libc::mincore(host.cast(), len, vec.as_mut_ptr()) };
        if rc == 0 {
            total += vec.iter().filter(|b| **b & 1 != 0).count() as u64 * page as u64;
        }
    }
    total
}

pub fn page_size() -> usize {
    // SAFETY: sysconf has no memory effects.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 {
        v as usize
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_guest_is_one_range() {
        assert_eq!(ram_ranges(128), vec![(GuestAddress(0), 128 << 20)]);
    }

    #[test]
    fn big_guest_skips_mmio_gap() {
        let r = ram_ranges(4096);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0], (GuestAddress(0), MMIO_GAP_START as usize));
        assert_eq!(r[1].0, GuestAddress(MMIO_GAP_END));
        assert_eq!(r[0].1 + r[1].1, 4096 << 20);
    }

    #[test]
    fn thp_modes_that_allow_huge_pages() {
        assert!(thp_mode_allows("always [madvise] never\n"));
        assert!(thp_mode_allows("[always] madvise never\n"));
        assert!(!thp_mode_allows("always madvise [never]\n"));
    }

    #[test]
    fn out_of_range_sizes_are_refused() {
        assert!(matches!(
            create_guest_memory(1),
            Err(VmmError::MemoryOutOfRange(1))
        ));
        assert!(matches!(
            create_guest_memory(MAX_MEM_MIB + 1),
            Err(VmmError::MemoryOutOfRange(_))
        ));
    }
}
