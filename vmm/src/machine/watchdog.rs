//! A thread that kicks the vCPU out of KVM_RUN when the run must end:
//! `--timeout` expired, or SIGINT/SIGTERM asked for a clean stop
//! (`crate::shutdown`, polled here because a signal handler may not do
//! more than set a flag, and may run on any thread).
//!
//! A signal interrupts KVM_RUN with EINTR. One signal can be lost if it lands
//! just before the vCPU thread enters KVM_RUN, so the watchdog repeats it
//! until the run loop has stopped (`disarm` joins it before returning, so the
//! target thread always exists while signals are sent).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

use crate::shutdown;

const KICK_INTERVAL: Duration = Duration::from_millis(5);
/// How often a stop signal is looked for: the delay before a Ctrl-C is
/// acted on.
const SIGNAL_POLL: Duration = Duration::from_millis(10);

pub struct Watchdog {
    fired: Arc<AtomicBool>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the no-op SIGRTMIN handler that makes a kick interrupt
/// KVM_RUN (EINTR) instead of ending the process; for kickers other than
/// the watchdog (a failed lazy restore).
pub fn install_kick_handler() {
    // Registering the same no-op handler again is harmless.
    let _ = register_signal_handler(SIGRTMIN(), on_kick);
}

impl Watchdog {
    /// Starts watching for the calling (vCPU) thread: `timeout`, and stop
    /// signals when their handlers are installed. None when there is
    /// nothing to watch.
    pub fn arm(timeout: Option<Duration>) -> Option<Self> {
        let signals = shutdown::installed();
        if timeout.is_none() && !signals {
            return None;
        }
        // Registering the same no-op handler again is harmless.
        let _ = register_signal_handler(SIGRTMIN(), on_kick);
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = fired.clone();
        let deadline = timeout.map(|t| Instant::now() + t);
        let thread = std::thread::spawn(move || {
            loop {
                let mut wait =
                    deadline.map_or(SIGNAL_POLL, |d| d.saturating_duration_since(Instant::now()));
                if signals {
                    wait = wait.min(SIGNAL_POLL);
                }
                if stopped.recv_timeout(wait) != Err(RecvTimeoutError::Timeout) {
                    return;
                }
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    flag.store(true, Ordering::SeqCst);
                    break;
                }
                if shutdown::requested().is_some() {
                    break;
                }
            }
            while stopped.recv_timeout(KICK_INTERVAL) == Err(RecvTimeoutError::Timeout) {
                // SAFETY: `target` is alive: `disarm` joins this thread
                // before the vCPU thread can leave `Machine::run`.
                unsafe { libc::pthread_kill(target, SIGRTMIN()) };
            }
        });
        Some(Self {
            fired,
            stop,
            thread,
        })
    }

    /// Whether the timeout expired.
    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn disarm(self) {
        let _ = self.stop.send(());
        drop(self.stop);
        let _ = self.thread.join();
    }
}
