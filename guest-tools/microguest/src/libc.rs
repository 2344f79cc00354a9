//! The C library functions the SQLite amalgamation needs besides the memory
//! functions of `mem.rs` and the allocator of `heap.rs`: a freestanding
//! `sqlite3.c` (see `.cargo/config.toml`) links against exactly memchr,
//! strchr, strcmp, strcspn, strlen, strncmp, strrchr, strspn and fabs.
//!
//! LLVM's loop-idiom pass may turn a plain "count bytes up to NUL" loop into
//! a call to `strlen` itself, so `strlen` reads through `read_volatile`; the
//! other loops have shapes LLVM does not rewrite (checked in the disassembly:
//! none of these functions calls a libc symbol).
use core::ffi::c_char;

/// # Safety
/// `s` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strlen(s: *const c_char) -> usize {
    let mut n = 0;
    while core::ptr::read_volatile(s.add(n)) != 0 {
        n += 1;
    }
    n
}

/// # Safety
/// Standard C `memchr` contract.
#[no_mangle]
pub unsafe extern "C" fn memchr(s: *const u8, c: i32, n: usize) -> *mut u8 {
    let c = c as u8;
    for i in 0..n {
        if *s.add(i) == c {
            return s.add(i) as *mut u8;
        }
    }
    core::ptr::null_mut()
}

/// # Safety
/// `s` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strchr(s: *const c_char, c: i32) -> *mut c_char {
    let c = c as u8;
    let mut p = s as *const u8;
    loop {
        let b = *p;
        if b == c {
            return p as *mut c_char;
        }
        if b == 0 {
            return core::ptr::null_mut();
        }
        p = p.add(1);
    }
}

/// # Safety
/// `s` must be a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn strrchr(s: *const c_char, c: i32) -> *mut c_char {
    let c = c as u8;
    let mut p = s as *const u8;
    let mut last = core::ptr::null_mut();
    loop {
        let b = *p;
        if b == c {
            last = p as *mut c_char;
        }
        if b == 0 {
            return last;
        }
        p = p.add(1);
    }
}

/// # Safety
/// `a` and `b` must be NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn strcmp(a: *const c_char, b: *const c_char) -> i32 {
    let (a, b) = (a as *const u8, b as *const u8);
    let mut i = 0;
    loop {
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y || x == 0 {
            return i32::from(x) - i32::from(y);
        }
        i += 1;
    }
}

/// # Safety
/// `a` and `b` must be NUL-terminated or at least `n` bytes long.
#[no_mangle]
pub unsafe extern "C" fn strncmp(a: *const c_char, b: *const c_char, n: usize) -> i32 {
    let (a, b) = (a as *const u8, b as *const u8);
    for i in 0..n {
        let (x, y) = (*a.add(i), *b.add(i));
        if x != y || x == 0 {
            return i32::from(x) - i32::from(y);
        }
    }
    0
}

/// Whether byte `c` occurs in the NUL-terminated `set`.
unsafe fn in_set(set: *const u8, c: u8) -> bool {
    let mut p = set;
    while *p != 0 {
        if *p == c {
            return true;
        }
        p = p.add(1);
    }
    false
}

/// # Safety
/// `s` and `accept` must be NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn strspn(s: *const c_char, accept: *const c_char) -> usize {
    let (s, set) = (s as *const u8, accept as *const u8);
    let mut n = 0;
    while *s.add(n) != 0 && in_set(set, *s.add(n)) {
        n += 1;
    }
    n
}

/// # Safety
/// `s` and `reject` must be NUL-terminated strings.
#[no_mangle]
pub unsafe extern "C" fn strcspn(s: *const c_char, reject: *const c_char) -> usize {
    let (s, set) = (s as *const u8, reject as *const u8);
    let mut n = 0;
    while *s.add(n) != 0 && !in_set(set, *s.add(n)) {
        n += 1;
    }
    n
}

#[no_mangle]
pub extern "C" fn fabs(x: f64) -> f64 {
    f64::from_bits(x.to_bits() & !(1u64 << 63))
}

/// The prebuilt `alloc` is compiled for unwinding and its landing pads call
/// this; with `panic = "abort"` nothing unwinds, so it is never reached.
#[no_mangle]
pub extern "C" fn _Unwind_Resume() -> ! {
    crate::io::exit(crate::EXIT_GUEST_ERROR)
}
