//! SIGINT and SIGTERM as a request to stop cleanly, not a kill.
//!
//! The `vmm` commands that own a VM or write a file ([`install`]) turn both
//! signals into a flag. The handler only stores the signal number (nothing
//! else is safe in a handler); whoever does the work polls [`requested`]:
//! the run loop, kicked out of KVM_RUN by the watchdog thread
//! (`machine::watchdog`), stops the vCPU, lets the devices finish, closes
//! the recording with its final barrier and removes the control socket;
//! a replay stops and removes its temporary file. The process then exits
//! with [`exit_status`] (130 for SIGINT, 143 for SIGTERM), as a shell
//! reports a process killed by that signal.
//!
//! The handlers are one-shot (SA_RESETHAND): a second Ctrl-C while the
//! clean stop is under way kills the process the ordinary way.
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

static REQUESTED: AtomicI32 = AtomicI32::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(signal: libc::c_int) {
    // The first signal is the one reported; an atomic store is all a
    // handler may do here.
    let _ = REQUESTED.compare_exchange(0, signal, Ordering::SeqCst, Ordering::SeqCst);
}

/// Handles SIGINT and SIGTERM from now on by recording them for
/// [`requested`].
pub fn install() -> std::io::Result<()> {
    for signal in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: a zeroed sigaction is a valid starting point; the handler
        // only does an atomic store (async-signal-safe) and lives forever.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(libc::c_int) as usize;
            action.sa_flags = libc::SA_RESTART | libc::SA_RESETHAND;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    INSTALLED.store(true, Ordering::SeqCst);
    Ok(())
}

/// Whether [`install`] was called (a process that did not install the
/// handlers is killed by these signals and never needs to poll).
pub fn installed() -> bool {
    INSTALLED.load(Ordering::SeqCst)
}

/// The stop signal received, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// The process exit status for stopping on `signal`: 128 + its number
/// (130 for SIGINT, 143 for SIGTERM).
pub fn exit_status(signal: i32) -> i32 {
    match signal {
        libc::SIGINT => crate::error::exit::SIGINT,
        libc::SIGTERM => crate::error::exit::SIGTERM,
        n => 128 + n,
    }
}

/// "SIGINT", "SIGTERM" (or "signal N").
pub fn name(signal: i32) -> String {
    match signal {
        libc::SIGINT => "SIGINT".into(),
        libc::SIGTERM => "SIGTERM".into(),
        n => format!("signal {n}"),
    }
}
