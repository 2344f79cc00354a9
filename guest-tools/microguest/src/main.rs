//! The microguest: the test VM that runs on every machine of ours.
//!
//! A `#![no_std]` ELF booted by the PVH entry in `boot.rs`, which leaves it at
//! CPL3 (native speed on PVM) with IOPL=3. It reads its kernel command line
//! from `hvm_start_info`, runs the workload the command line selects, writes
//! to COM1 and ends by writing its status to the VMM's exit port.
#![no_std]
#![no_main]

extern crate alloc;

mod boot;
mod cmdline;
mod disk;
mod heap;
mod hints;
mod io;
mod layout;
mod libc;
mod mem;
mod smp;
mod sqlite;
mod virtio;
mod virtio_blk;
mod virtio_console;
mod workloads;

use cmdline::Cmdline;

/// `hvm_start_info` magic ("xEn3" with the 0x80 bit set on the 'e').
const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;

/// Exit status used when the microguest itself cannot go on.
pub const EXIT_GUEST_ERROR: u32 = 0x70;

/// The first 32 bytes of `hvm_start_info` (PVH ABI, version 1).
#[repr(C)]
struct HvmStartInfo {
    magic: u32,
    version: u32,
    flags: u32,
    nr_modules: u32,
    modlist_paddr: u64,
    cmdline_paddr: u64,
}

/// Called by the boot stub at CPL3 with the physical address of `hvm_start_info`.
#[no_mangle]
extern "C" fn microguest_main(start_info: u64) -> ! {
    // SAFETY: the VMM placed hvm_start_info at this identity-mapped address.
    let info = unsafe { &*(start_info as *const HvmStartInfo) };
    if info.magic != XEN_HVM_START_MAGIC {
        io::print("microguest: bad hvm_start_info magic\n");
        io::exit(EXIT_GUEST_ERROR);
    }
    // SAFETY: checked above that start_info is hvm_start_info; once.
    unsafe { heap::init(start_info) };
    // SAFETY: the VMM wrote a NUL-terminated command line at cmdline_paddr.
    let line = unsafe { cmdline::from_paddr(info.cmdline_paddr) };
    let cmdline = Cmdline::new(line);
    hints::init(&cmdline);
    let status = workloads::run(&cmdline);
    io::exit(status)
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo) -> ! {
    use core::fmt::Write;
    let _ = writeln!(io::Console, "microguest panic: {info}");
    io::exit(EXIT_GUEST_ERROR)
}

/// The prebuilt `core` for the host target is compiled for unwinding and
/// references this symbol; with `panic = "abort"` it is never called.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
