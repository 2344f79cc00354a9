//! The SQLite side of the VFS: the `sqlite3_io_methods` and `sqlite3_vfs`
//! callbacks over the state of the parent module.

use alloc::alloc::{alloc_zeroed, dealloc, Layout};
use alloc::boxed::Box;
use alloc::vec::Vec;
use core::ffi::{c_char, c_int, c_void, CStr};
use core::ptr::{self, addr_of_mut, null_mut};
use libsqlite3_sys as ffi;

use super::*;

// ------------------------------------------------------------ sqlite3_file

/// What SQLite allocates per open file (`szOsFile` bytes).
#[repr(C)]
struct File {
    base: ffi::sqlite3_file,
    /// Index into `State::files`, or `MEMORY`.
    slot: usize,
    mem: *mut Vec<u8>,
}

const MEMORY: usize = usize::MAX;

unsafe fn file<'a>(p: *mut ffi::sqlite3_file) -> &'a mut File {
    &mut *(p as *mut File)
}

unsafe extern "C" fn x_close(p: *mut ffi::sqlite3_file) -> c_int {
    let f = file(p);
    if f.slot == MEMORY && !f.mem.is_null() {
        drop(Box::from_raw(f.mem));
        f.mem = null_mut();
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_read(
    p: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let f = file(p);
    let buf = core::slice::from_raw_parts_mut(buf as *mut u8, amt as usize);
    let off = off as u64;
    if f.slot == MEMORY {
        let data = &*f.mem;
        let avail = (data.len() as u64)
            .saturating_sub(off)
            .min(buf.len() as u64) as usize;
        if avail > 0 {
            buf[..avail].copy_from_slice(&data[off as usize..off as usize + avail]);
        }
        buf[avail..].fill(0);
        return if avail < buf.len() {
            ffi::SQLITE_IOERR_SHORT_READ
        } else {
            ffi::SQLITE_OK
        };
    }
    match state() {
        Some(st) => st.read(f.slot, buf, off),
        None => ffi::SQLITE_IOERR_READ,
    }
}

unsafe extern "C" fn x_write(
    p: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    let f = file(p);
    let data = core::slice::from_raw_parts(buf as *const u8, amt as usize);
    let off = off as u64;
    if f.slot == MEMORY {
        let v = &mut *f.mem;
        let end = off as usize + data.len();
        if v.len() < end {
            v.resize(end, 0);
        }
        v[off as usize..end].copy_from_slice(data);
        return ffi::SQLITE_OK;
    }
    match state() {
        Some(st) => st.write(f.slot, data, off),
        None => ffi::SQLITE_IOERR_WRITE,
    }
}

unsafe extern "C" fn x_truncate(p: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    let f = file(p);
    if f.slot == MEMORY {
        (*f.mem).resize(size as usize, 0);
        return ffi::SQLITE_OK;
    }
    match state() {
        Some(st) => st.truncate(f.slot, size as u64),
        None => ffi::SQLITE_IOERR_TRUNCATE,
    }
}

unsafe extern "C" fn x_sync(p: *mut ffi::sqlite3_file, _flags: c_int) -> c_int {
    let f = file(p);
    if f.slot == MEMORY {
        return ffi::SQLITE_OK;
    }
    match state() {
        Some(st) => match st.sync(f.slot) {
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => {
                st.note(e);
                ffi::SQLITE_IOERR_FSYNC
            }
        },
        None => ffi::SQLITE_IOERR_FSYNC,
    }
}

unsafe extern "C" fn x_file_size(p: *mut ffi::sqlite3_file, out: *mut ffi::sqlite3_int64) -> c_int {
    let f = file(p);
    let size = if f.slot == MEMORY {
        (*f.mem).len() as u64
    } else {
        state().map_or(0, |st| st.files[f.slot].size)
    };
    *out = size as ffi::sqlite3_int64;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_lock(_p: *mut ffi::sqlite3_file, _level: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_check_reserved_lock(_p: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    *out = 0;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_file_control(
    _p: *mut ffi::sqlite3_file,
    _op: c_int,
    _arg: *mut c_void,
) -> c_int {
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn x_sector_size(_p: *mut ffi::sqlite3_file) -> c_int {
    BLOCK as c_int
}

unsafe extern "C" fn x_device_characteristics(_p: *mut ffi::sqlite3_file) -> c_int {
    // Writing a block never disturbs its neighbours: the cache writes whole
    // 4 KiB blocks holding their current content.
    ffi::SQLITE_IOCAP_POWERSAFE_OVERWRITE
}

unsafe extern "C" fn x_shm_map(
    p: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    let f = file(p);
    *out = null_mut();
    let Some(st) = state() else {
        return ffi::SQLITE_IOERR_SHMMAP;
    };
    if f.slot == MEMORY {
        return ffi::SQLITE_IOERR_SHMMAP;
    }
    let shm = &mut st.files[f.slot].shm;
    let (region, size) = (region as usize, size as usize);
    while shm.len() <= region {
        if extend == 0 {
            return ffi::SQLITE_OK;
        }
        let layout = Layout::from_size_align(size, 8).unwrap();
        let mem = alloc_zeroed(layout);
        if mem.is_null() {
            return ffi::SQLITE_IOERR_NOMEM;
        }
        shm.push((mem, size));
    }
    *out = shm[region].0 as *mut c_void;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_lock(
    _p: *mut ffi::sqlite3_file,
    _o: c_int,
    _n: c_int,
    _f: c_int,
) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_shm_barrier(_p: *mut ffi::sqlite3_file) {
    core::sync::atomic::fence(core::sync::atomic::Ordering::SeqCst);
}

unsafe extern "C" fn x_shm_unmap(p: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    let f = file(p);
    if delete != 0 && f.slot != MEMORY {
        if let Some(st) = state() {
            for (mem, size) in st.files[f.slot].shm.drain(..) {
                dealloc(mem, Layout::from_size_align(size, 8).unwrap());
            }
        }
    }
    ffi::SQLITE_OK
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 2,
    xClose: Some(x_close),
    xRead: Some(x_read),
    xWrite: Some(x_write),
    xTruncate: Some(x_truncate),
    xSync: Some(x_sync),
    xFileSize: Some(x_file_size),
    xLock: Some(x_lock),
    xUnlock: Some(x_lock),
    xCheckReservedLock: Some(x_check_reserved_lock),
    xFileControl: Some(x_file_control),
    xSectorSize: Some(x_sector_size),
    xDeviceCharacteristics: Some(x_device_characteristics),
    xShmMap: Some(x_shm_map),
    xShmLock: Some(x_shm_lock),
    xShmBarrier: Some(x_shm_barrier),
    xShmUnmap: Some(x_shm_unmap),
    xFetch: None,
    xUnfetch: None,
};

// ------------------------------------------------------------- sqlite3_vfs

unsafe extern "C" fn x_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: ffi::sqlite3_filename,
    p: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    let f = p as *mut File;
    // SQLite calls xClose only if pMethods is set: set it on success only.
    ptr::write(
        f,
        File {
            base: ffi::sqlite3_file {
                pMethods: ptr::null(),
            },
            slot: MEMORY,
            mem: null_mut(),
        },
    );
    let f = &mut *f;
    match slot(name) {
        Some(i) => {
            let Some(st) = state() else {
                return ffi::SQLITE_CANTOPEN;
            };
            let df = &mut st.files[i];
            if !df.exists {
                if flags & ffi::SQLITE_OPEN_CREATE == 0 {
                    return ffi::SQLITE_CANTOPEN;
                }
                df.exists = true;
                df.size = 0;
            }
            f.slot = i;
        }
        None if name.is_null() || flags & ffi::SQLITE_OPEN_DELETEONCLOSE != 0 => {
            f.mem = Box::into_raw(Box::new(Vec::new()));
        }
        None => return ffi::SQLITE_CANTOPEN,
    }
    f.base.pMethods = &IO_METHODS;
    if !out_flags.is_null() {
        *out_flags = flags;
    }
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_delete(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _sync_dir: c_int,
) -> c_int {
    let (Some(i), Some(st)) = (slot(name), state()) else {
        return ffi::SQLITE_IOERR_DELETE_NOENT;
    };
    match st.delete(i) {
        Ok(()) => ffi::SQLITE_OK,
        Err(e) => {
            st.note(e);
            ffi::SQLITE_IOERR_DELETE
        }
    }
}

unsafe extern "C" fn x_access(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    _flags: c_int,
    out: *mut c_int,
) -> c_int {
    *out = match (slot(name), state()) {
        (Some(i), Some(st)) => c_int::from(st.files[i].exists),
        _ => 0,
    };
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_full_pathname(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n_out: c_int,
    out: *mut c_char,
) -> c_int {
    let bytes = CStr::from_ptr(name).to_bytes_with_nul();
    if bytes.len() > n_out as usize {
        return ffi::SQLITE_CANTOPEN;
    }
    ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, out, bytes.len());
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_randomness(
    _vfs: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let out = core::slice::from_raw_parts_mut(out as *mut u8, n as usize);
    match state() {
        Some(st) => {
            for chunk in out.chunks_mut(8) {
                let r = st.rng.next().to_le_bytes();
                chunk.copy_from_slice(&r[..chunk.len()]);
            }
        }
        None => out.fill(0),
    }
    n
}

unsafe extern "C" fn x_sleep(_vfs: *mut ffi::sqlite3_vfs, us: c_int) -> c_int {
    us
}

fn now_ms() -> i64 {
    match state() {
        Some(st) => {
            st.clock_ms += 1;
            st.clock_ms
        }
        None => 212_570_827_200_000,
    }
}

unsafe extern "C" fn x_current_time(_vfs: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    *out = now_ms() as f64 / 86_400_000.0;
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_current_time_i64(
    _vfs: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    *out = now_ms();
    ffi::SQLITE_OK
}

unsafe extern "C" fn x_get_last_error(
    _vfs: *mut ffi::sqlite3_vfs,
    _n: c_int,
    _out: *mut c_char,
) -> c_int {
    0
}

static mut VFS: ffi::sqlite3_vfs = ffi::sqlite3_vfs {
    iVersion: 2,
    szOsFile: core::mem::size_of::<File>() as c_int,
    mxPathname: 64,
    pNext: null_mut(),
    zName: VFS_NAME.as_ptr(),
    pAppData: null_mut(),
    xOpen: Some(x_open),
    xDelete: Some(x_delete),
    xAccess: Some(x_access),
    xFullPathname: Some(x_full_pathname),
    xDlOpen: None,
    xDlError: None,
    xDlSym: None,
    xDlClose: None,
    xRandomness: Some(x_randomness),
    xSleep: Some(x_sleep),
    xCurrentTime: Some(x_current_time),
    xGetLastError: Some(x_get_last_error),
    xCurrentTimeInt64: Some(x_current_time_i64),
    xSetSystemCall: None,
    xGetSystemCall: None,
    xNextSystemCall: None,
};

/// Called by `sqlite3_initialize` (SQLITE_OS_OTHER=1 leaves it to us).
#[no_mangle]
extern "C" fn sqlite3_os_init() -> c_int {
    // SAFETY: VFS is a static that lives forever.
    unsafe { ffi::sqlite3_vfs_register(addr_of_mut!(VFS), 1) }
}

#[no_mangle]
extern "C" fn sqlite3_os_end() -> c_int {
    ffi::SQLITE_OK
}
