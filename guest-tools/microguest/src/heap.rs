//! The heap: the guest RAM above the image, managed by `talc`.
//!
//! Rust's `alloc` (the `#[global_allocator]`) and the C `malloc`/`free`/
//! `realloc` that SQLite calls share it. The microguest is single-threaded
//! with interrupts off, so the allocator needs no lock.
//!
//! The heap is the RAM region of the PVH memory map that holds the end of
//! the image, from the first page after `__image_end` (see `link.ld`) to the
//! end of that region (at most 3 GiB, the identity map's RAM). Pages are only
//! touched when allocated, so a big heap costs the host nothing until used.
use core::alloc::{GlobalAlloc, Layout};
use core::cell::UnsafeCell;
use core::ptr::{self, null_mut};
use core::sync::atomic::{AtomicUsize, Ordering};

use talc::base::Talc;
use talc::source::Manual;
use talc::DefaultBinning;

extern "C" {
    /// End of the loaded image (`link.ld`).
    static __image_end: u8;
}

/// The end of the identity-mapped RAM below the MMIO gap.
const RAM_LIMIT: u64 = 0xc000_0000;
const E820_RAM: u32 = 1;

struct Heap(UnsafeCell<Talc<Manual, DefaultBinning>>);

// SAFETY: the microguest runs on one vCPU without interrupts: the allocator
// is never entered twice at once.
unsafe impl Sync for Heap {}

#[global_allocator]
static HEAP: Heap = Heap(UnsafeCell::new(Talc::new(Manual)));

#[allow(clippy::mut_from_ref)]
fn talc() -> &'static mut Talc<Manual, DefaultBinning> {
    // SAFETY: single-threaded, and no caller keeps the reference across a
    // call that could re-enter the allocator.
    unsafe { &mut *HEAP.0.get() }
}

/// Bytes the heap was given (0: no heap).
static CAPACITY: AtomicUsize = AtomicUsize::new(0);

/// Bytes of RAM the heap manages: what the VM's memory size leaves above
/// the image (workloads size their caches by it).
pub fn capacity() -> usize {
    CAPACITY.load(Ordering::Relaxed)
}

/// Hands the RAM above the image to the allocator. `start_info` is the
/// physical address of `hvm_start_info` (version >= 1 carries the memory
/// map); without a memory map there is no heap and allocations fail.
///
/// # Safety
/// `start_info` must point at a valid `hvm_start_info`; call once.
pub unsafe fn init(start_info: u64) {
    let info = start_info as *const u8;
    let version = ptr::read_unaligned(info.add(4) as *const u32);
    if version < 1 {
        return;
    }
    let memmap = ptr::read_unaligned(info.add(40) as *const u64);
    let entries = ptr::read_unaligned(info.add(48) as *const u32);
    let start = ((&raw const __image_end) as u64 + 0xfff) & !0xfff;
    for i in 0..u64::from(entries.min(128)) {
        // hvm_memmap_table_entry: addr u64, size u64, type u32, reserved u32.
        let entry = (memmap + i * 24) as *const u8;
        let addr = ptr::read_unaligned(entry as *const u64);
        let size = ptr::read_unaligned(entry.add(8) as *const u64);
        let kind = ptr::read_unaligned(entry.add(16) as *const u32);
        let end = addr.saturating_add(size).min(RAM_LIMIT);
        if kind == E820_RAM && addr <= start && start < end {
            let bytes = (end - start) as usize;
            talc().claim(start as *mut u8, bytes);
            CAPACITY.store(bytes, Ordering::Relaxed);
            return;
        }
    }
}

unsafe impl GlobalAlloc for Heap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        talc().allocate(layout).map_or(null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        talc().deallocate(ptr, layout);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if talc().try_realloc_in_place(ptr, layout, new_size) {
            return ptr;
        }
        let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
        let new = self.alloc(new_layout);
        if !new.is_null() {
            ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
            self.dealloc(ptr, layout);
        }
        new
    }
}

// ---- C allocation functions (SQLite's mem1.c calls these) ----
//
// Each block starts with a 16-byte header holding the size the caller asked
// for, so that `free` and `realloc` know the layout; the pointer returned is
// 16-byte aligned like glibc's.

const HEADER: usize = 16;

fn c_layout(size: usize) -> Option<Layout> {
    let total = size.max(1).checked_add(HEADER)?;
    Layout::from_size_align(total, HEADER).ok()
}

/// # Safety
/// Standard C `malloc` contract.
#[no_mangle]
pub unsafe extern "C" fn malloc(size: usize) -> *mut u8 {
    let Some(layout) = c_layout(size) else {
        return null_mut();
    };
    match talc().allocate(layout) {
        Some(p) => {
            let base = p.as_ptr();
            (base as *mut usize).write(size.max(1));
            base.add(HEADER)
        }
        None => null_mut(),
    }
}

/// # Safety
/// Standard C `free` contract.
#[no_mangle]
pub unsafe extern "C" fn free(ptr: *mut u8) {
    if ptr.is_null() {
        return;
    }
    let base = ptr.sub(HEADER);
    let size = (base as *const usize).read();
    // The layout was valid when the block was allocated.
    let layout = Layout::from_size_align_unchecked(size + HEADER, HEADER);
    talc().deallocate(base, layout);
}

/// # Safety
/// Standard C `realloc` contract.
#[no_mangle]
pub unsafe extern "C" fn realloc(ptr: *mut u8, size: usize) -> *mut u8 {
    if ptr.is_null() {
        return malloc(size);
    }
    let base = ptr.sub(HEADER);
    let old = (base as *const usize).read();
    let Some(new_layout) = c_layout(size) else {
        return null_mut();
    };
    let old_layout = Layout::from_size_align_unchecked(old + HEADER, HEADER);
    if talc().try_realloc_in_place(base, old_layout, new_layout.size()) {
        (base as *mut usize).write(size.max(1));
        return ptr;
    }
    let new = malloc(size);
    if !new.is_null() {
        ptr::copy_nonoverlapping(ptr, new, old.min(size));
        free(ptr);
    }
    new
}
