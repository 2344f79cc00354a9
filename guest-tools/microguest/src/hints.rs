//! Telling the host which disk extents hold which file (hint-proto over
//! the virtio-console hint channel). Without a channel (the VMM is not
//! recording) every call is a no-op.
use core::ptr::addr_of_mut;

use hint_proto::{Extent, Format, Role};

use crate::cmdline::Cmdline;
use crate::virtio_console::HintPort;

static mut PORT: Option<HintPort> = None;
static mut BUF: [u8; 4096] = [0; 4096];

/// Opens the hint channel if the VMM offers one.
pub fn init(cmdline: &Cmdline) {
    // SAFETY: single-threaded guest; called once before any hint.
    unsafe { *addr_of_mut!(PORT) = HintPort::open(cmdline) };
}

fn send(encode: impl FnOnce(&mut [u8]) -> Result<usize, hint_proto::EncodeError>) {
    // SAFETY: single-threaded guest; no other reference to PORT/BUF lives.
    unsafe {
        let Some(port) = (*addr_of_mut!(PORT)).as_mut() else {
            return;
        };
        let buf = &mut *addr_of_mut!(BUF);
        if let Ok(n) = encode(buf) {
            port.send(&buf[..n]);
        }
    }
}

/// Declares a file stored contiguously at `sector` (capacity `len` bytes).
pub fn file(id: u32, main_id: u32, format: Format, role: Role, path: &str, sector: u64, len: u64) {
    send(|b| hint_proto::encode_file(id, main_id, format, role, path, b));
    let extent = [Extent {
        file_offset: 0,
        sector,
        len,
    }];
    send(|b| hint_proto::encode_extents(id, &extent, b));
}

pub fn size(id: u32, size: u64, exists: bool) {
    send(|b| hint_proto::encode_size(id, size, exists, b));
}

pub fn schema(id: u32, text: &str) {
    send(|b| hint_proto::encode_schema(id, text, b));
}

/// Sends raw bytes on the hint channel (hostile-guest tests).
pub fn raw(bytes: &[u8]) {
    send(|b| {
        let n = bytes.len().min(b.len());
        b[..n].copy_from_slice(&bytes[..n]);
        Ok(n)
    });
}

/// Whether the VMM offered a hint channel.
pub fn available() -> bool {
    // SAFETY: single-threaded guest.
    unsafe { (*addr_of_mut!(PORT)).is_some() }
}
