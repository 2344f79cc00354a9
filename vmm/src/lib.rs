//! The KVM machine.
//!
//! Owns: guest memory (`memory`) and the region shared between VMs
//! (`shared`), booting a PVH ELF kernel (`boot`), the KVM VM and its vCPUs
//! with their saved state (`vstate`), the emulated devices (`devices`:
//! serial, virtio-mmio, virtio-blk, the virtio-console hint channel), the
//! machine that ties them together, runs, snapshots and restores
//! (`machine`), the glue that feeds the recorder (`recording`), the control
//! socket (`api`), run statistics (`stats`) and resource metrics
//! (`metrics`), and the what-if search over VM configurations (`tune`:
//! cost, target, which configurations to run). The built-in test VM, the
//! microguest, is embedded by `microguest`.
//!
//! Does not own: what is recorded about the guest (`introspection`), the
//! change log (`changelog`), the content store (`store`), snapshots
//! (`snapshot`), or replay (`replay`). The `vmm`
//! command-line tool lives in `main.rs` and `cli/`.

pub mod api;
pub mod boot;
pub mod devices;
pub mod disk_serve;
pub mod error;
pub mod lock;
pub mod machine;
pub mod memory;
pub mod metrics;
pub mod microguest;
pub mod recording;
pub mod shared;
pub mod shutdown;
pub mod stats;
pub mod teardown;
pub mod tune;
pub mod vstate;

pub use error::VmmError;

/// This build of the VMM: crate version and git commit (see `build.rs`),
/// recorded at every barrier.
pub const BUILD_VERSION: &str = env!("VMM_BUILD_VERSION");
pub use machine::{DiskConfig, KernelSource, Machine, RunOutcome, SerialOutput, VmConfig};
