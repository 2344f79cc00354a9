//! The microguest ELF, built by `build.rs` from `guest-tools/microguest` and
//! embedded so that `vmm run` without `--kernel` always has a VM to boot.

/// The microguest image (a PVH-bootable ELF).
pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/microguest.elf"));
