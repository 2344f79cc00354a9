//! Process exit without waiting on KVM's teardown.
//!
//! Closing the last reference to a VM (`close(vmfd)`, or the exit that does
//! it) runs `kvm_destroy_vm`, which on this host spends 7-11 ms, nearly
//! all of it asleep in SRCU grace periods (memslot and MMU-notifier
//! teardown, `srcu_barrier`) and stopping KVM's per-VM kernel thread;
//! measured with `perf record -e sched:sched_switch -g`. With the in-kernel
//! PIT it was ~20 ms. Nothing of it is anything the user can use: the
//! guest has ended, its output is out, the recording is closed.
//!
//! So at the very end of `vmm run`/`vmm restore`, the VM and guest memory
//! are handed to a *reaper*: a process cloned with `CLONE_VM` (it shares
//! our address space, so guest memory stays mapped and nothing is copied)
//! and its own copy of the file table, in which it closes every file but
//! the VM's. It asks for SIGKILL when we exit (`PR_SET_PDEATHSIG`) and
//! waits. Our exit then drops only references (the VM file and the address
//! space live on in the reaper): whoever waits for us sees us exit at once,
//! and the reaper's own exit runs KVM's teardown and unmaps guest memory
//! behind it.
//!
//! Only for a process about to exit: what is handed over is never freed
//! until then. Where the reaper cannot be made, the teardown happens here,
//! as before.
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// Stack of the reaper: it only makes a few system calls.
const REAPER_STACK: usize = 64 * 1024;
/// How long we wait for the reaper to close its copies of our files. On a
/// loaded host it may not run for a while; past this we exit anyway, and
/// a reader of our stdout or stderr then sees EOF only after the teardown.
const CLOSED_WAIT: libc::timespec = libc::timespec {
    tv_sec: 0,
    tv_nsec: 50_000_000,
};

/// What the reaper needs; lives in leaked memory (it reads it after our
/// stack frames are gone, while this process exits).
struct ReaperArgs {
    parent: libc::pid_t,
    keep_fd: RawFd,
    /// Set to 1 (and woken) once the reaper closed every other file.
    closed: AtomicU32,
}

/// Hands `bundle` (holding the VM file `keep_fd` and guest memory) to a
/// reaper that releases it after this process has exited; drops it here
/// when no reaper can be made. Call only right before the process exits,
/// on the thread that will exit last (the main thread): the reaper is
/// killed when the thread that made it exits.
pub fn release_after_exit<T>(keep_fd: RawFd, bundle: T) {
    if spawn_reaper(keep_fd) {
        // The reaper holds the VM and the mapping now; dropping them here
        // would run the very teardown we are leaving behind.
        std::mem::forget(bundle);
    } else {
        drop(bundle);
    }
}

fn spawn_reaper(keep_fd: RawFd) -> bool {
    // SAFETY: an anonymous private mapping for the reaper's stack; it is
    // never unmapped (the address space goes with both processes).
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            REAPER_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return false;
    }
    let args = Box::leak(Box::new(ReaperArgs {
        // SAFETY: getpid has no preconditions.
        parent: unsafe { libc::getpid() },
        keep_fd,
        closed: AtomicU32::new(0),
    }));
    // SAFETY: the child runs `reaper` on its own stack (the top of the
    // mapping above, stacks grow down) in our address space (CLONE_VM),
    // with a copy of our file table (no CLONE_FILES). `reaper` makes only
    // raw system calls and touches nothing but `args`, which is leaked and
    // never written again, so running beside us (and after us) is sound.
    let pid = unsafe {
        libc::clone(
            reaper,
            stack.cast::<u8>().add(REAPER_STACK).cast(),
            libc::CLONE_VM,
            (args as *mut ReaperArgs).cast(),
        )
    };
    if pid < 0 {
        tracing::debug!(
            "no reaper for the VM's teardown ({}): tearing down before exit",
            std::io::Error::last_os_error()
        );
        return false;
    }
    // Exit only once the reaper holds no pipe of ours: if it were killed
    // before closing them, its exit would close them only after the
    // teardown, and a reader of our output would wait for it after all.
    let deadline = std::time::Instant::now()
        + std::time::Duration::new(CLOSED_WAIT.tv_sec as u64, CLOSED_WAIT.tv_nsec as u32);
    while args.closed.load(Ordering::Acquire) == 0 && std::time::Instant::now() < deadline {
        // SAFETY: FUTEX_WAIT on a live, aligned u32 with a timeout; it
        // returns at once when the value is no longer 0.
        unsafe {
            libc::syscall(
                libc::SYS_futex,
                args.closed.as_ptr(),
                libc::FUTEX_WAIT,
                0u32,
                &CLOSED_WAIT,
            )
        };
    }
    true
}

/// The reaper: keeps the VM file, closes every other file of its copy of
/// the table (so that no pipe, lock or socket outlives our exit), and
/// sleeps until SIGKILL, sent when the thread that cloned it exits.
///
/// No Rust runtime here, no allocation, no locks: a sibling of our address
/// space that shares our thread's TLS, so even errno is best left alone
/// (the calls below do not fail on valid arguments).
extern "C" fn reaper(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked ReaperArgs `spawn_reaper` passed.
    let args = unsafe { &*(arg as *const ReaperArgs) };
    // SAFETY: plain system calls on this process's own state.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // The parent may have exited before the line above took effect.
        if libc::getppid() != args.parent {
            return 0;
        }
        let fd = args.keep_fd as libc::c_uint;
        if fd > 0 {
            libc::syscall(libc::SYS_close_range, 0, fd - 1, 0);
        }
        libc::syscall(libc::SYS_close_range, fd + 1, libc::c_uint::MAX, 0);
        args.closed.store(1, Ordering::Release);
        libc::syscall(libc::SYS_futex, args.closed.as_ptr(), libc::FUTEX_WAKE, 1);
        loop {
            libc::pause();
        }
    }
}
