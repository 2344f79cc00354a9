//! Emulated devices. Each device is a small state machine driven by the
//! machine's run loop on port I/O or MMIO exits.
pub mod serial;

/// The debug-exit port: a 32-bit write of `status` ends the VM and the VMM
/// exits with `min(status, 255)`. (QEMU's isa-debug-exit lives at the same
/// port; ours passes the value through unchanged.)
pub const EXIT_PORT: u16 = 0xf4;

/// Exit status the VMM uses for a guest-written status above 255, so that a
/// failure never wraps around to success.
pub fn exit_status_from_guest(value: u32) -> u8 {
    value.min(255) as u8
}
