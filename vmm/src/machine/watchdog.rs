//! `--timeout`: a thread that kicks the vCPU out of KVM_RUN when time is up.
//!
//! A signal interrupts KVM_RUN with EINTR. One signal can be lost if it lands
//! just before the vCPU thread enters KVM_RUN, so the watchdog repeats it
//! until the run loop has stopped (`disarm` joins it before returning, so the
//! target thread always exists while signals are sent).
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use vmm_sys_util::signal::{register_signal_handler, SIGRTMIN};

const KICK_INTERVAL: Duration = Duration::from_millis(5);

pub struct Watchdog {
    fired: Arc<AtomicBool>,
    stop: Sender<()>,
    thread: JoinHandle<()>,
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

impl Watchdog {
    /// Starts counting `timeout` for the calling (vCPU) thread.
    pub fn arm(timeout: Duration) -> Self {
        // Registering the same no-op handler again is harmless.
        let _ = register_signal_handler(SIGRTMIN(), on_kick);
        // SAFETY: pthread_self has no preconditions.
        let target = unsafe { libc::pthread_self() };
        let fired = Arc::new(AtomicBool::new(false));
        let (stop, stopped) = mpsc::channel::<()>();
        let flag = fired.clone();
        let thread = std::thread::spawn(move || {
            if stopped.recv_timeout(timeout) != Err(RecvTimeoutError::Timeout) {
                return;
            }
            flag.store(true, Ordering::SeqCst);
            while stopped.recv_timeout(KICK_INTERVAL) == Err(RecvTimeoutError::Timeout) {
                // SAFETY: `target` is alive: `disarm` joins this thread
                // before the vCPU thread can leave `Machine::run`.
                unsafe { libc::pthread_kill(target, SIGRTMIN()) };
            }
        });
        Self {
            fired,
            stop,
            thread,
        }
    }

    pub fn fired(&self) -> bool {
        self.fired.load(Ordering::SeqCst)
    }

    pub fn disarm(self) {
        let _ = self.stop.send(());
        drop(self.stop);
        let _ = self.thread.join();
    }
}
