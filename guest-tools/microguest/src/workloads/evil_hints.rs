//! `workload=evil-hints`: a hostile guest on the hint channel. Sends hints
//! that lie (extents outside the disk, files overlapping each other, a
//! file that is not what its hint says), garbage and malformed messages,
//! then writes and flushes so that the host tries to lift. The host must
//! record errors and stay up; the guest just checks its own I/O still works.
use hint_proto::{Format, Role};

use crate::cmdline::Cmdline;
use crate::hints;
use crate::say;
use crate::workloads::blk;

pub fn run(cmdline: &Cmdline) -> u32 {
    if !hints::available() {
        say!("evil-hints: no hint channel (run with --record)\n");
        return crate::EXIT_GUEST_ERROR;
    }
    let Some(mut dev) = blk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let disk = dev.capacity_sectors;
    // Outside the disk, and wrapping around u64.
    hints::file(10, 10, Format::Kv, Role::Main, "outside.kv", disk + 8, 4096);
    hints::file(
        11,
        11,
        Format::Kv,
        Role::Main,
        "wrap.kv",
        u64::MAX / 512,
        1 << 20,
    );
    // Two files over the same blocks.
    hints::file(12, 12, Format::Json, Role::Main, "a.json", 64, 8192);
    hints::file(13, 13, Format::Json, Role::Main, "b.json", 72, 8192);
    // A "database" over random data: decoding it must fail cleanly.
    hints::file(14, 14, Format::Sqlite, Role::Main, "lies.db", 256, 65536);
    hints::size(14, 65536, true);
    // Hints for files never declared, garbage, a truncated message, and a
    // header claiming an oversized payload.
    hints::size(99, 1, true);
    hints::raw(b"this is not a hint at all");
    hints::raw(&[b'V', b'H', 1, 2, 0, 0, 0]);
    hints::raw(&[b'V', b'H', 1, 1, 0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0]);
    hints::raw(&[b'V', b'H', 9, 1, 0, 0, 0, 0, 0, 0, 0, 0]);

    let buf = blk::buffer();
    let mut x = 0x1234_5678_9abc_def1u64;
    for word in buf[..65536].chunks_exact_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        word.copy_from_slice(&x.to_le_bytes());
    }
    let ok = dev.write(256, &buf[..65536]).ok() == Some(0) && dev.flush().ok() == Some(0);
    say!(
        "evil-hints: sent; disk I/O {}\n",
        if ok { "ok" } else { "FAILED" }
    );
    u32::from(!ok)
}
