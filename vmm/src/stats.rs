//! What one run cost: exits, time, and the VMM's own memory overhead.
use crate::memory::GuestMemory;
use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RunStats {
    pub exit_status: u8,
    /// Building the machine: KVM objects, memory, kernel load.
    pub build_us: u64,
    /// From the machine being built to the guest ending.
    pub run_us: u64,
    pub vcpu_exits: u64,
    pub pio_exits: u64,
    pub mmio_exits: u64,
    pub serial_bytes: u64,
    /// Resident memory of the whole VMM process.
    pub rss_kib: u64,
    /// Guest pages resident in host memory (touched by the guest or the VMM).
    pub guest_resident_kib: u64,
    /// Of the process's memory, how much is on transparent huge pages
    /// (guest RAM where the host allows them; see `crate::memory`). Filled
    /// only by `vmm run --stats`: reading it walks every page table of the
    /// process (/proc/self/smaps_rollup), a cost a plain run need not pay.
    pub huge_kib: u64,
    /// `rss_kib - guest_resident_kib`: what the VMM itself costs.
    pub vmm_overhead_kib: u64,
    /// The VMM's private memory: anonymous resident memory minus the
    /// guest's (guest memory is anonymous too). The rest of the overhead
    /// is the binary's own pages, shared by every VMM process on the host.
    pub vmm_private_kib: u64,
    /// Wall clock (Unix epoch, microseconds) when the vCPU was first
    /// entered: a benchmark that spawned the process measures "start ->
    /// guest running" against it.
    pub vcpu_start_unix_us: u64,
    /// How the recorder got the disk's state at open (with --record):
    /// trusted the log's saved state (`fast`) or hashed the image, and why.
    pub record_open: Option<introspection::tap::OpenPath>,
    /// What a lazy restore did (None for a boot or an eager restore).
    pub lazy_restore: Option<crate::memory::lazy::LazyStats>,
}

/// Fills the memory fields from /proc/self/status and mincore(2).
pub fn fill_memory(stats: &mut RunStats, mem: &GuestMemory) {
    stats.rss_kib = self_status_kib("VmRSS:").unwrap_or(0);
    stats.guest_resident_kib = crate::memory::resident_bytes(mem) / 1024;
    stats.vmm_overhead_kib = stats.rss_kib.saturating_sub(stats.guest_resident_kib);
    stats.vmm_private_kib = self_status_kib("RssAnon:")
        .unwrap_or(0)
        .saturating_sub(stats.guest_resident_kib);
}

fn self_status_kib(field: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
