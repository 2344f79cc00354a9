//! The KVM machine.
//!
//! Owns: guest memory (`memory`), booting a PVH ELF kernel (`boot`), the KVM
//! VM and its vCPUs (`vstate`), the emulated devices (`devices`), and the
//! machine that ties them together and runs until the guest ends (`machine`).
//! The built-in test VM, the microguest, is embedded by `microguest`.
//!
//! Does not own: what is recorded about the guest (`introspection`), the
//! content store and snapshots (`snapshot`), or replay (`replay`). The `vmm`
//! command-line tool lives in `main.rs` and `cli/`.

pub mod api;
pub mod boot;
pub mod devices;
pub mod error;
pub mod machine;
pub mod memory;
pub mod microguest;
pub mod recording;
pub mod shared;
pub mod stats;
pub mod vstate;

pub use error::VmmError;
pub use machine::{DiskConfig, KernelSource, Machine, RunOutcome, SerialOutput, VmConfig};
