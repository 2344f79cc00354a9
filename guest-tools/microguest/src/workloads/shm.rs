//! Workloads on the shared memory region (`--shared-mem`): one VM writes a
//! message into it, another reads it, through the same host file.
//!
//! Mailbox layout at the start of the region (all little-endian):
//! `magic u64 "VMMSHMBX" | seq u64 | len u64 | fnv64 of the message u64 |
//! message bytes`. The writer fills the message first and the magic last;
//! the reader polls for the magic and the expected seq.
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use crate::cmdline::{parse_u64, Cmdline};
use crate::say;

const MAGIC: u64 = u64::from_le_bytes(*b"VMMSHMBX");
const HEADER: usize = 32;

/// The region announced as `shmem=NAME@ADDR:SIZE`: (address, size).
fn region(cmdline: &Cmdline) -> Option<(usize, usize)> {
    let spec = cmdline.get("shmem")?;
    let (addr, size) = spec.split_once('@')?.1.split_once(':')?;
    Some((parse_u64(addr)? as usize, parse_u64(size)? as usize))
}

fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `workload=shm-write seq=N msg=TEXT`
pub fn write(cmdline: &Cmdline) -> u32 {
    let Some((base, size)) = region(cmdline) else {
        say!("shm-write: no shared region (run with --shared-mem)\n");
        return crate::EXIT_GUEST_ERROR;
    };
    let msg = cmdline
        .get("msg")
        .unwrap_or("hello-from-the-other-vm")
        .as_bytes();
    if HEADER + msg.len() > size {
        return crate::EXIT_GUEST_ERROR;
    }
    let seq = cmdline.get_u64("seq", 1);
    let words = base as *mut u64;
    // SAFETY: the region is identity-mapped guest memory of `size` bytes.
    unsafe {
        write_volatile(words, 0);
        core::ptr::copy_nonoverlapping(msg.as_ptr(), (base + HEADER) as *mut u8, msg.len());
        write_volatile(words.add(1), seq);
        write_volatile(words.add(2), msg.len() as u64);
        write_volatile(words.add(3), fnv(msg));
        fence(Ordering::SeqCst);
        write_volatile(words, MAGIC);
    }
    say!("shm-write: seq={seq} bytes={}\n", msg.len());
    0
}

/// `workload=shm-read seq=N spins=S`: waits for message `seq`, checks it.
pub fn read(cmdline: &Cmdline) -> u32 {
    let Some((base, size)) = region(cmdline) else {
        say!("shm-read: no shared region (run with --shared-mem)\n");
        return crate::EXIT_GUEST_ERROR;
    };
    let seq = cmdline.get_u64("seq", 1);
    let spins = cmdline.get_u64("spins", 4_000_000_000);
    let words = base as *const u64;
    for _ in 0..spins {
        // SAFETY: as in `write`.
        let (magic, got) = unsafe { (read_volatile(words), read_volatile(words.add(1))) };
        if magic == MAGIC && got == seq {
            fence(Ordering::SeqCst);
            // SAFETY: as above; the length is checked against the region.
            let (len, sum) = unsafe {
                (
                    read_volatile(words.add(2)) as usize,
                    read_volatile(words.add(3)),
                )
            };
            if HEADER + len > size {
                say!("shm-read: bad length {len}\n");
                return 1;
            }
            // SAFETY: in bounds, checked just above.
            let msg = unsafe { core::slice::from_raw_parts((base + HEADER) as *const u8, len) };
            let ok = fnv(msg) == sum;
            say!(
                "shm-read: seq={seq} msg={} checksum {}\n",
                core::str::from_utf8(msg).unwrap_or("(not UTF-8)"),
                if ok { "ok" } else { "BAD" }
            );
            return u32::from(!ok);
        }
        core::hint::spin_loop();
    }
    say!("shm-read: no message {seq} arrived\n");
    1
}
