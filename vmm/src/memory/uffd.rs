//! A minimal userfaultfd(2) binding: open, register a range for missing-page
//! faults, read fault events, and resolve them (UFFDIO_COPY, UFFDIO_ZEROPAGE,
//! UFFDIO_WAKE, UFFDIO_UNREGISTER).
//!
//! Why not the `userfaultfd` crate: its `userfaultfd-sys` runs bindgen at
//! build time, which needs `libclang.so`; these machines (and CI, the same
//! kind) have no libclang, only `libclang-cpp`. The kernel ABI used here is
//! five ioctls and four fixed structs from `<linux/userfaultfd.h>`, stable
//! since Linux 4.3.
use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;

const UFFD_API: u64 = 0xAA;
const UFFDIO: u32 = 0xAA;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// `_IO(USERFAULTFD_IOC, 0x00)` on /dev/userfaultfd.
const USERFAULTFD_IOC_NEW: libc::c_ulong = (UFFDIO as libc::c_ulong) << 8;

#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default, Clone, Copy)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

#[repr(C)]
#[derive(Default)]
struct UffdioZeropage {
    range: UffdioRange,
    mode: u64,
    zeropage: i64,
}

/// `struct uffd_msg` (packed, 32 bytes): the event byte, then for a page
/// fault the flags and the faulting address.
#[repr(C, packed)]
#[derive(Clone, Copy)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    flags: u64,
    address: u64,
    rest: u64,
}

const fn iowr(nr: u32, size: usize) -> libc::c_ulong {
    // _IOC(_IOC_READ | _IOC_WRITE, UFFDIO, nr, size)
    ((3u32 << 30) | ((size as u32) << 16) | (UFFDIO << 8) | nr) as libc::c_ulong
}

const fn ior(nr: u32, size: usize) -> libc::c_ulong {
    ((2u32 << 30) | ((size as u32) << 16) | (UFFDIO << 8) | nr) as libc::c_ulong
}

const UFFDIO_API_IOC: libc::c_ulong = iowr(0x3F, size_of::<UffdioApi>());
const UFFDIO_REGISTER: libc::c_ulong = iowr(0x00, size_of::<UffdioRegister>());
const UFFDIO_UNREGISTER: libc::c_ulong = ior(0x01, size_of::<UffdioRange>());
const UFFDIO_WAKE: libc::c_ulong = ior(0x02, size_of::<UffdioRange>());
const UFFDIO_COPY: libc::c_ulong = iowr(0x03, size_of::<UffdioCopy>());
const UFFDIO_ZEROPAGE: libc::c_ulong = iowr(0x04, size_of::<UffdioZeropage>());

/// What a COPY or ZEROPAGE of a range did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// The whole range is now mapped.
    Done,
    /// The first `n` bytes were mapped, then a page already present
    /// stopped it (another thread filled it first).
    Exists(usize),
}

/// A userfaultfd, non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// Opens a userfaultfd that also sees faults the kernel takes on our
    /// behalf (KVM's get_user_pages, a device thread's copy): through
    /// /dev/userfaultfd when we may open it, else the syscall (which needs
    /// CAP_SYS_PTRACE or `vm.unprivileged_userfaultfd=1` for such faults).
    pub fn open() -> io::Result<Uffd> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK;
        let fd = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open("/dev/userfaultfd")
        {
            Ok(dev) => {
                // SAFETY: USERFAULTFD_IOC_NEW takes the new fd's flags by
                // value and returns a new descriptor or -1.
                let fd = unsafe { libc::ioctl(dev.as_raw_fd(), USERFAULTFD_IOC_NEW, flags) };
                if fd < 0 {
                    Self::syscall(flags)?
                } else {
                    fd
                }
            }
            Err(_) => Self::syscall(flags)?,
        };
        // SAFETY: `fd` is a fresh descriptor we own.
        let uffd = Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        let mut api = UffdioApi {
            api: UFFD_API,
            ..Default::default()
        };
        uffd.ioctl(UFFDIO_API_IOC, &mut api)?;
        Ok(uffd)
    }

    fn syscall(flags: i32) -> io::Result<RawFd> {
        // SAFETY: userfaultfd(2) takes flags and returns a descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(fd as RawFd)
    }

    fn ioctl<T>(&self, req: libc::c_ulong, arg: &mut T) -> io::Result<()> {
        // SAFETY: every request used here takes a pointer to the matching
        // #[repr(C)] struct `T`, which lives across the call.
        let rc = unsafe { libc::ioctl(self.fd.as_raw_fd(), req, arg as *mut T) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Missing-page faults in `start..start+len` now come to this fd.
    pub fn register(&self, start: usize, len: usize) -> io::Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange {
                start: start as u64,
                len: len as u64,
            },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        self.ioctl(UFFDIO_REGISTER, &mut reg)
    }

    /// Faults in the range are the kernel's again (a missing page becomes
    /// a fresh zero page); threads waiting on it are woken.
    pub fn unregister(&self, start: usize, len: usize) -> io::Result<()> {
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        self.ioctl(UFFDIO_UNREGISTER, &mut range)
    }

    /// Wakes the threads waiting on a fault in the range.
    pub fn wake(&self, start: usize, len: usize) -> io::Result<()> {
        let mut range = UffdioRange {
            start: start as u64,
            len: len as u64,
        };
        self.ioctl(UFFDIO_WAKE, &mut range)
    }

    /// Maps a copy of `src` at `dst` (page aligned, whole pages) and wakes
    /// the threads waiting on it.
    ///
    /// # Safety
    /// `src` must be readable for `len` bytes; `dst..dst+len` must lie in a
    /// range registered here.
    pub unsafe fn copy(&self, dst: usize, src: *const u8, len: usize) -> io::Result<Fill> {
        fill(len, |at, rest| {
            let mut c = UffdioCopy {
                dst: (dst + at) as u64,
                // SAFETY (of the pointer arithmetic): `at < len`.
                src: src.wrapping_add(at) as u64,
                len: rest as u64,
                mode: 0,
                copy: 0,
            };
            (self.ioctl(UFFDIO_COPY, &mut c), c.copy)
        })
    }

    /// Maps the zero page over `dst..dst+len` and wakes waiters.
    pub fn zeropage(&self, dst: usize, len: usize) -> io::Result<Fill> {
        fill(len, |at, rest| {
            let mut z = UffdioZeropage {
                range: UffdioRange {
                    start: (dst + at) as u64,
                    len: rest as u64,
                },
                mode: 0,
                zeropage: 0,
            };
            (self.ioctl(UFFDIO_ZEROPAGE, &mut z), z.zeropage)
        })
    }

    /// Reads pending fault events into `out` (faulting addresses); returns
    /// how many. 0 when none is pending (the fd is non-blocking).
    pub fn read_faults(&self, out: &mut Vec<usize>) -> io::Result<usize> {
        const BATCH: usize = 64;
        let mut msgs = [UffdMsg {
            event: 0,
            reserved1: 0,
            reserved2: 0,
            reserved3: 0,
            flags: 0,
            address: 0,
            rest: 0,
        }; BATCH];
        // SAFETY: reading into our own array of plain-old-data messages.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                msgs.as_mut_ptr().cast(),
                size_of_val(&msgs),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(0),
                _ => Err(e),
            };
        }
        let count = n as usize / size_of::<UffdMsg>();
        out.extend(
            msgs[..count]
                .iter()
                .filter(|m| m.event == UFFD_EVENT_PAGEFAULT)
                .map(|m| m.address as usize),
        );
        Ok(count)
    }
}

impl AsRawFd for Uffd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Runs a COPY or ZEROPAGE (`op(offset, len)` returns the ioctl's result
/// and the bytes it reports) until the range is mapped. The kernel stops
/// early with EAGAIN (having mapped the reported bytes, or none when the
/// mapping was changing): go on from there. EEXIST means the page at the
/// current offset is already present (another thread filled it): the
/// caller learns how far the fill got.
fn fill(len: usize, mut op: impl FnMut(usize, usize) -> (io::Result<()>, i64)) -> io::Result<Fill> {
    let mut at = 0;
    loop {
        let (rc, done) = op(at, len - at);
        let Err(e) = rc else {
            return Ok(Fill::Done);
        };
        match e.raw_os_error() {
            Some(libc::EEXIST) => return Ok(Fill::Exists(at)),
            Some(libc::EAGAIN) => {
                at += done.max(0) as usize;
                if at >= len {
                    return Ok(Fill::Done);
                }
            }
            _ => return Err(e),
        }
    }
}

const _: () = assert!(size_of::<UffdMsg>() == 32);
