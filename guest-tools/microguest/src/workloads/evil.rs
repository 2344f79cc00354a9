//! `workload=evil-blk`: a hostile driver. Sends malformed requests and
//! checks that each one fails cleanly (an error status, or no status when
//! the chain has no usable status byte) and that the device still works
//! afterwards. Exit 0 when every check passed.
use core::ptr::addr_of_mut;

use crate::cmdline::Cmdline;
use crate::say;
use crate::virtio_blk::{
    Desc, DESC_F_NEXT, DESC_F_WRITE, S_OK, T_DISCARD, T_GET_ID, T_IN, T_OUT, T_WRITE_ZEROES,
};

use super::blk;

const S_IOERR: u8 = 1;
const S_UNSUPP: u8 = 2;
/// Far outside any guest's memory.
const WILD: u64 = 0x7f00_0000_0000;

#[repr(C)]
struct Header {
    kind: u32,
    reserved: u32,
    sector: u64,
    status: u8,
}

static mut HDR: Header = Header {
    kind: 0,
    reserved: 0,
    sector: 0,
    status: 0xff,
};

fn header(kind: u32, sector: u64) -> (u64, u64) {
    // SAFETY: single-threaded; the device reads HDR only during submit.
    unsafe {
        let h = &mut *addr_of_mut!(HDR);
        h.kind = kind;
        h.sector = sector;
        h.status = 0xff;
        (h as *const Header as u64, &h.status as *const u8 as u64)
    }
}

fn status() -> u8 {
    // SAFETY: reading the byte the device wrote.
    unsafe { core::ptr::read_volatile(&(*addr_of_mut!(HDR)).status) }
}

fn desc(addr: u64, len: u32, flags: u16, next: u16) -> Desc {
    Desc {
        addr,
        len,
        flags,
        next,
    }
}

fn chain3(kind: u32, sector: u64, data: u64, len: u32, data_flags: u16) -> [Desc; 3] {
    let (hdr, st) = header(kind, sector);
    [
        desc(hdr, 16, DESC_F_NEXT, 1),
        Desc {
            addr: data,
            len,
            flags: data_flags | DESC_F_NEXT,
            next: 2,
        },
        desc(st, 1, DESC_F_WRITE, 0),
    ]
}

pub fn blk(cmdline: &Cmdline) -> u32 {
    let Some(mut dev) = blk::open(cmdline) else {
        return crate::EXIT_GUEST_ERROR;
    };
    let buf = blk::buffer();
    let data = buf.as_mut_ptr() as u64;
    let end = dev.capacity_sectors;
    let mut failed = 0;
    let mut check = |name: &str, ok: bool| {
        say!("evil-blk: {name}: {}\n", if ok { "ok" } else { "FAILED" });
        if !ok {
            failed += 1;
        }
    };

    let r = dev.submit_raw(&chain3(T_OUT, 0, WILD, 4096, 0), 0);
    check(
        "data buffer outside guest memory",
        r.is_ok() && status() == S_IOERR,
    );

    let r = dev.submit_raw(&chain3(T_IN, 0, data, 4096, 0), 0);
    check(
        "read into a device-readable buffer",
        r.is_ok() && status() == S_IOERR,
    );

    let r = dev.submit_raw(&chain3(T_OUT, end, data, 4096, 0), 0);
    check(
        "write past the end of the disk",
        r.is_ok() && status() == S_IOERR,
    );

    let r = dev.submit_raw(&chain3(T_IN, end - 1, data, 4096, DESC_F_WRITE), 0);
    check(
        "read straddling the end of the disk",
        r.is_ok() && status() == S_IOERR,
    );

    let r = dev.submit_raw(&chain3(T_OUT, 0, data, 1000, 0), 0);
    check(
        "write of a partial sector",
        r.is_ok() && status() == S_IOERR,
    );

    let r = dev.submit_raw(&chain3(99, 0, data, 4096, 0), 0);
    check("unknown request type", r.is_ok() && status() == S_UNSUPP);

    let r = dev.submit_raw(&chain3(T_OUT, 0, data, 0xffff_f000, 0), 0);
    check("oversized request", r.is_ok() && status() == S_IOERR);

    let (hdr, _) = header(T_OUT, 0);
    let descs = [
        desc(hdr, 16, DESC_F_NEXT, 1),
        desc(WILD, 1, DESC_F_WRITE, 0),
    ];
    let r = dev.submit_raw(&descs, 0);
    check("status byte outside guest memory", r == Ok(0));

    let descs = [
        desc(hdr, 16, DESC_F_NEXT, 1),
        desc(data, 512, DESC_F_NEXT, 0),
    ];
    let r = dev.submit_raw(&descs, 0);
    check("descriptor chain that loops", r == Ok(0));

    let descs = [desc(hdr, 16, DESC_F_NEXT, 200)];
    let r = dev.submit_raw(&descs, 0);
    check("next index outside the table", r == Ok(0));

    let id = &mut buf[..20];
    let r = dev.one(T_GET_ID, 0, id.as_mut_ptr(), 20);
    check(
        "GET_ID names the disk",
        r == Ok(S_OK) && id.starts_with(b"vmm-disk0"),
    );

    let r = dev.zero(T_WRITE_ZEROES, end, 8);
    check("write-zeroes past the end of the disk", r == Ok(S_IOERR));
    let r = dev.zero(T_DISCARD, 0, 0);
    check("discard of zero sectors", r == Ok(S_IOERR));
    let r = dev.zero(T_DISCARD, 0, 1 << 30);
    check("discard larger than the device allows", r == Ok(S_IOERR));

    // A read-only disk refuses writes; a writable one takes this one.
    let payload = &mut buf[..4096];
    payload.fill(0x5a);
    let w = dev.write(8, payload);
    if dev.read_only {
        check("write to a read-only disk", w.ok() == Some(S_IOERR));
    } else {
        check("valid write after the abuse", w.ok() == Some(S_OK));
        payload.fill(0);
        let r = dev.read(8, payload);
        check(
            "valid read returns the data",
            r.ok() == Some(S_OK) && payload.iter().all(|b| *b == 0x5a),
        );
    }
    if failed == 0 {
        say!("evil-blk: all checks passed\n");
        0
    } else {
        say!("evil-blk: {failed} checks failed\n");
        1
    }
}
