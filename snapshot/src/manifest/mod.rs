//! Snapshot manifests: what a snapshot is made of, in one versioned file.
//!
//! A [`Manifest`] names the VM's opaque state blobs (vCPU, irqchip, PIT,
//! clock, devices: bytes the VMM writes and reads back), its memory and
//! shared regions as page lists in the content store ([`PagesRef`]), and
//! the disk's position in its change log. Memory page lists are always
//! complete: an incremental snapshot's lists are the parent's merged with
//! the pages dirtied since, so any snapshot restores on its own; `kind`
//! and `parent` record where it came from, and [`SnapshotStats`] how much
//! was new.
//!
//! The file format is documented beside its code in `manifest/format.rs`
//! ([`encode`], [`decode`]), the directory layout in `manifest/dir.rs`
//! ([`SnapshotDir`]: atomic writes, listing, subtree deletion), the disks a
//! snapshot was taken with and their BLAKE3 in `manifest/disks.rs`
//! ([`DiskRecord`], [`fingerprint`]), the guest's hinted files in
//! `manifest/guest_files.rs` ([`GuestFile`]), consistency checks and chain merge
//! in [`check`] and [`merge`].

mod check;
mod dir;
mod disks;
mod error;
mod format;
mod guest_files;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use store::clock::now_ns;

use crate::pages::{id_bytes, CaptureStats, PagesRef};

pub use check::{check, live_objects, merge, CheckReport};
pub use dir::{SnapshotDir, SnapshotSummary};
pub use disks::{
    absolute_disk_path, fingerprint, resolve_disk_path, DiskRecord, DiskTree, PathResolution,
    TREE_LEAF,
};
pub use error::{ManifestError, Result};
pub use format::{decode, encode, FORMAT_VERSION, HEADER_LEN, MAGIC, OLDEST_VERSION};
pub use guest_files::{GuestExtent, GuestFile};

/// A snapshot manifest (serialized field by field in this order; see
/// `manifest/format.rs`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Unique, sortable id; also the file name (see [`new_snapshot_id`]).
    pub id: String,
    /// The snapshot this one was taken relative to.
    pub parent: Option<String>,
    /// Creation time, nanoseconds since the Unix epoch.
    pub created_ns: u64,
    /// The VM it was taken from.
    pub vm_id: String,
    /// Full or incremental.
    pub kind: SnapshotKind,
    /// Opaque VM, vCPU and device state, written and read by the VMM.
    pub state: Vec<StateBlob>,
    /// Guest memory regions.
    pub memory: Vec<MemoryRegion>,
    /// Shared-memory regions mapped into this VM.
    pub shared: Vec<SharedRegion>,
    /// Where the disk was in its change log.
    pub disk: Option<DiskPosition>,
    /// What capturing this snapshot found and stored.
    pub stats: SnapshotStats,
    /// Free-form key/value notes (who, why, merged_from, ...).
    pub annotations: BTreeMap<String, String>,
    /// The files the guest's hints had described (format version 2):
    /// `None` when the VM did not decode hints (or the manifest is
    /// version 1), else the table, possibly empty. See `guest_files.rs`.
    pub guest_files: Option<Vec<GuestFile>>,
}

/// How a snapshot was captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SnapshotKind {
    /// Every page read.
    Full,
    /// Only the pages dirtied since `parent` read; the rest taken from it.
    Incremental,
}

/// One piece of opaque state (e.g. `vcpu0.regs`, `irqchip`, `virtio-blk0`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateBlob {
    /// Unique name within the manifest.
    pub name: String,
    /// The writer's own version of this blob's layout.
    pub version: u32,
    /// The bytes.
    pub bytes: Vec<u8>,
}

/// A guest memory region and its pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryRegion {
    /// Guest physical address of its first byte.
    pub guest_addr: u64,
    /// Length in bytes (`pages.pages * 4096`).
    pub size: u64,
    /// Its page list.
    pub pages: PagesRef,
}

/// A shared-memory region (mapped into several VMs) and its pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedRegion {
    /// The region's name (`--shared-mem NAME,...`).
    pub name: String,
    /// Length in bytes (`pages.pages * 4096`).
    pub size: u64,
    /// Its page list.
    pub pages: PagesRef,
}

/// The disk's position in its change log at the snapshot point.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskPosition {
    /// The VM id the change log is recorded under.
    pub log_vm_id: String,
    /// Sequence number of the last record applied.
    pub seq: u64,
    /// The disk state checksum after it.
    #[serde(with = "id_bytes")]
    pub checksum: [u8; 32],
}

/// Totals over the snapshot's regions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Pages in all regions.
    pub pages: u64,
    /// Zero pages among them.
    pub zero_pages: u64,
    /// Pages read and hashed by the capture.
    pub hashed_pages: u64,
    /// Pages that differ from the parent (from zero memory without one).
    pub changed_pages: u64,
    /// Objects the capture added to the store.
    pub new_objects: u64,
    /// Bytes they take in the store.
    pub new_bytes: u64,
}

impl SnapshotStats {
    /// Adds one region's capture.
    pub fn add_capture(&mut self, c: &CaptureStats) {
        self.pages += c.pages;
        self.zero_pages += c.zero_pages;
        self.hashed_pages += c.hashed_pages;
        self.changed_pages += c.changed_pages;
        self.new_objects += c.new_objects;
        self.new_bytes += c.new_objects_bytes;
    }
}

/// Which region of a manifest, for messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegionName {
    /// `memory[index]`, at a guest physical address.
    Memory {
        /// Index in [`Manifest::memory`].
        index: usize,
        /// Its guest physical address.
        guest_addr: u64,
    },
    /// A shared region by name.
    Shared(String),
}

impl fmt::Display for RegionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegionName::Memory { index, guest_addr } => {
                write!(f, "memory[{index}] (guest address {guest_addr:#x})")
            }
            RegionName::Shared(name) => write!(f, "shared region {name:?}"),
        }
    }
}

impl RegionName {
    /// Where byte `offset` of the region is, for messages.
    pub fn locate(&self, offset: u64) -> String {
        match self {
            RegionName::Memory { guest_addr, .. } => {
                format!("guest address {:#x}", guest_addr + offset)
            }
            RegionName::Shared(_) => format!("offset {offset:#x}"),
        }
    }
}

impl Manifest {
    /// A new, empty manifest with a fresh id and the current time.
    pub fn new(vm_id: impl Into<String>, kind: SnapshotKind, parent: Option<String>) -> Manifest {
        Manifest {
            id: new_snapshot_id(),
            parent,
            created_ns: now_ns(),
            vm_id: vm_id.into(),
            kind,
            state: Vec::new(),
            memory: Vec::new(),
            shared: Vec::new(),
            disk: None,
            stats: SnapshotStats::default(),
            annotations: BTreeMap::new(),
            guest_files: None,
        }
    }

    /// The state blob named `name`.
    pub fn state_blob(&self, name: &str) -> Option<&StateBlob> {
        self.state.iter().find(|b| b.name == name)
    }

    /// Every region's page list with its name: memory, then shared.
    pub fn regions(&self) -> Vec<(RegionName, &PagesRef)> {
        let mem = self.memory.iter().enumerate().map(|(index, r)| {
            let name = RegionName::Memory {
                index,
                guest_addr: r.guest_addr,
            };
            (name, &r.pages)
        });
        let shared = self
            .shared
            .iter()
            .map(|r| (RegionName::Shared(r.name.clone()), &r.pages));
        mem.chain(shared).collect()
    }

    /// Checks what can be checked without the store: ids, kind and parent,
    /// region sizes, unique state blob names.
    pub fn validate(&self) -> Result<()> {
        let invalid = |detail: String| ManifestError::Invalid {
            id: self.id.clone(),
            detail,
        };
        validate_id(&self.id)?;
        match (&self.parent, self.kind) {
            (None, SnapshotKind::Incremental) => {
                return Err(invalid(
                    "an incremental snapshot needs a parent; set `parent` or make it Full".into(),
                ))
            }
            (Some(p), _) if p == &self.id => {
                return Err(invalid("it names itself as its parent".into()))
            }
            (Some(p), _) => validate_id(p)?,
            (None, SnapshotKind::Full) => {}
        }
        for (name, pages) in self.regions() {
            let size = match &name {
                RegionName::Memory { index, .. } => self.memory[*index].size,
                RegionName::Shared(n) => {
                    self.shared
                        .iter()
                        .find(|r| &r.name == n)
                        .expect("listed")
                        .size
                }
            };
            if size != pages.bytes() {
                return Err(invalid(format!(
                    "{name} is {size} bytes but its page list has {} pages ({} bytes)",
                    pages.pages,
                    pages.bytes()
                )));
            }
        }
        let mut names = std::collections::HashSet::new();
        for b in &self.state {
            if !names.insert(b.name.as_str()) {
                return Err(invalid(format!("two state blobs are named {:?}", b.name)));
            }
        }
        Ok(())
    }
}

/// A new snapshot id: the UTC time to the nanosecond and 8 random hex
/// digits, e.g. `20261121T061302.123456789Z-1a2b3c4d`. Ids sort by
/// creation time as plain strings.
pub fn new_snapshot_id() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let ns = now_ns();
    let mut h = blake3::Hasher::new();
    h.update(&ns.to_le_bytes());
    h.update(&std::process::id().to_le_bytes());
    h.update(&COUNTER.fetch_add(1, Ordering::Relaxed).to_le_bytes());
    h.update(format!("{:?}", std::thread::current().id()).as_bytes());
    let r = h.finalize();
    let suffix = u32::from_le_bytes(r.as_bytes()[..4].try_into().expect("4 bytes"));

    let secs = ns / 1_000_000_000;
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let s = secs % 86_400;
    format!(
        "{y:04}{mo:02}{d:02}T{:02}{:02}{:02}.{:09}Z-{suffix:08x}",
        s / 3600,
        s / 60 % 60,
        s % 60,
        ns % 1_000_000_000
    )
}

/// (year, month, day) of a day number since 1970-01-01 (proleptic
/// Gregorian; Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Longest id accepted.
pub const MAX_ID_LEN: usize = 128;

/// Checks that `id` can be used as a file name: 1 to 128 characters from
/// `A-Z a-z 0-9 . _ -`, starting with a letter or digit.
pub fn validate_id(id: &str) -> Result<()> {
    let bad = |reason: &str| {
        Err(ManifestError::InvalidId {
            id: id.to_string(),
            reason: reason.to_string(),
        })
    };
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return bad("it must be 1 to 128 characters long");
    }
    if !id.as_bytes()[0].is_ascii_alphanumeric() {
        return bad("it must start with a letter or a digit");
    }
    if !id
        .bytes()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'.' | b'_' | b'-'))
    {
        return bad("only letters, digits, '.', '_' and '-' are allowed");
    }
    Ok(())
}
