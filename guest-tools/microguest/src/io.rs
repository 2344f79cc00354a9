//! Port I/O at CPL3 (IOPL=3): COM1 output and the VMM's exit port.
use core::arch::asm;

/// COM1 transmit holding register.
const COM1: u16 = 0x3f8;
/// The VMM's debug-exit port: a 32-bit write ends the VM, and the value
/// (0..=255) becomes the VMM's exit status.
pub const EXIT_PORT: u16 = 0xf4;

#[inline]
pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects; IOPL=3 permits it at CPL3.
    unsafe { asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack)) }
}

#[inline]
pub fn outl(port: u16, value: u32) {
    // SAFETY: as above.
    unsafe { asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack)) }
}

/// Writes bytes to COM1. The VMM's UART is always ready to transmit, so the
/// line status register is not polled (each poll would cost a VM exit).
pub fn write_bytes(bytes: &[u8]) {
    for &b in bytes {
        outb(COM1, b);
    }
}

pub fn print(s: &str) {
    write_bytes(s.as_bytes());
}

/// Ends the VM with `status` as the VMM's exit status.
pub fn exit(status: u32) -> ! {
    outl(EXIT_PORT, status);
    // The VMM stops the vCPU on the write above; never reached.
    loop {
        core::hint::spin_loop();
    }
}

/// `core::fmt` sink for COM1.
pub struct Console;

impl core::fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        print(s);
        Ok(())
    }
}

/// `print!`-like formatting to COM1.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use core::fmt::Write as _;
        let _ = write!($crate::io::Console, $($arg)*);
    }};
}
