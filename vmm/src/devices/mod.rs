//! Emulated devices. Each device is a small state machine driven by the
//! machine's run loop on port I/O or MMIO exits.
pub mod persist;
pub mod serial;
pub mod virtio;

/// Where virtio-mmio device windows start (in the MMIO gap below 4 GiB),
/// one 4 KiB window per device.
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
/// First interrupt line for virtio devices (COM1 has 4).
pub const VIRTIO_FIRST_IRQ: u32 = 5;
/// IRQs 5..=15 on the PIC/IOAPIC path we set up.
pub const MAX_VIRTIO_DEVICES: usize = 11;

/// The debug-exit port: a 32-bit write of `status` ends the VM and the VMM
/// exits with `min(status, 255)`. (QEMU's isa-debug-exit lives at the same
/// port; ours passes the value through unchanged.)
pub const EXIT_PORT: u16 = 0xf4;

/// The snapshot-request port: a guest that writes 1 (full) or 2
/// (incremental) here is snapshotted at that instruction and then goes on.
/// Tests use it to snapshot at an exact point of a workload; admins use the
/// control socket instead.
pub const SNAPSHOT_PORT: u16 = 0xf5;

/// Exit status the VMM uses for a guest-written status above 255, so that a
/// failure never wraps around to success.
pub fn exit_status_from_guest(value: u32) -> u8 {
    value.min(255) as u8
}
