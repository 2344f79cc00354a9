//! Lazy restore: guest memory comes back on demand.
//!
//! The restored guest's RAM is fresh anonymous memory registered with a
//! userfaultfd (`uffd`) for missing-page faults. The vCPU starts at once;
//! the first touch of a page not yet in blocks the toucher (the vCPU
//! inside KVM_RUN, KVM's own get_user_pages, or a VMM device thread doing
//! DMA) until the *fault thread* here fills it: a zero page by
//! UFFDIO_ZEROPAGE without reading the store (with its zero neighbours, to
//! save faults), any other page by reading it from the content store
//! (BLAKE3 checked) and UFFDIO_COPY. Meanwhile the *prefetch thread*
//! (`prefetch`) fills every other non-zero page, hottest first, and when
//! all are in it unregisters the memory: from then on the remaining (zero)
//! pages fault like any fresh memory and nothing here runs any more.
//!
//! Both threads run independently of the vCPU thread, so a fault taken by
//! the vCPU thread itself (a snapshot capture reading memory) is served
//! too; a capture waits for [`LazyMemory::finish`] first anyway, to read
//! memory at full speed.
//!
//! A page that cannot be read (corrupt or lost object) must not hang the
//! VM: the error is kept ([`LazyMemory::error`]), the vCPU thread is kicked
//! out of KVM_RUN (the run loop then ends the run with that error), and
//! only then is the page filled with zeros so that nothing stays blocked.
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use snapshot::{PageList, PagesError, PAGE_SIZE};
use store::Store;
use vmm_sys_util::eventfd::EventFd;

use super::uffd::{Fill, Uffd};

mod prefetch;

pub use prefetch::HotPages;

/// Zero pages mapped with one fault at most (fault-around): a guest that
/// touches fresh memory takes one fault per 256 KiB instead of per page.
const ZERO_AROUND: usize = 64;
/// How often a failed lazy restore re-kicks the vCPU until it has seen
/// the error (one signal can land just before KVM_RUN is entered).
const KICK_INTERVAL: Duration = Duration::from_millis(5);

/// Why lazy memory could not be set up, or failed while serving.
#[derive(Debug, thiserror::Error)]
pub enum LazyError {
    /// No userfaultfd (EPERM without privilege, or no kernel support).
    #[error("userfaultfd is unavailable ({0}); as root, or with vm.unprivileged_userfaultfd=1 or access to /dev/userfaultfd, memory is restored lazily")]
    Unavailable(std::io::Error),
    /// Registering guest memory failed.
    #[error("registering guest memory at host address {addr:#x} ({len} bytes) with userfaultfd: {source}")]
    Register {
        addr: usize,
        len: usize,
        source: std::io::Error,
    },
    /// A page could not be read from the content store.
    #[error("snapshot {snapshot}: page {page} of memory region {region} (guest address {guest_addr:#x}) could not be read from the content store, so the VM was stopped: {source}")]
    Fetch {
        snapshot: String,
        region: usize,
        page: usize,
        guest_addr: u64,
        source: Box<PagesError>,
    },
    /// The kernel refused to map a page.
    #[error("snapshot {snapshot}: mapping page {page} of memory region {region} (guest address {guest_addr:#x}) failed, so the VM was stopped: {source}")]
    Fill {
        snapshot: String,
        region: usize,
        page: usize,
        guest_addr: u64,
        source: std::io::Error,
    },
    /// The fault or prefetch thread could not start, or panicked.
    #[error("lazy restore of snapshot {snapshot}: the {what} thread {how}")]
    Thread {
        snapshot: String,
        what: &'static str,
        how: String,
    },
}

/// One region of guest memory to restore lazily.
pub struct LazyRegion {
    /// Host address of its mapping (page aligned).
    pub host: usize,
    /// Its guest physical address (for error messages).
    pub guest_addr: u64,
    /// Its page list (one id per page of the mapping).
    pub list: PageList,
}

/// What a lazy restore did so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct LazyStats {
    /// Faults served by reading a page from the store.
    pub faults_copied: u64,
    /// Faults served with zero pages.
    pub faults_zero: u64,
    /// Pages filled by the prefetcher.
    pub prefetched_pages: u64,
    /// From the start until every non-zero page was in (0 while running).
    pub prefetch_us: u64,
}

struct Region {
    host: usize,
    guest_addr: u64,
    list: PageList,
    /// One bit per page: already filled (by either thread).
    done: Vec<AtomicU64>,
}

impl Region {
    fn pages(&self) -> usize {
        self.list.len()
    }

    fn is_done(&self, page: usize) -> bool {
        self.done[page / 64].load(Ordering::Relaxed) & (1 << (page % 64)) != 0
    }

    fn mark_done(&self, pages: std::ops::Range<usize>) {
        for p in pages {
            self.done[p / 64].fetch_or(1 << (p % 64), Ordering::Relaxed);
        }
    }

    fn addr(&self, page: usize) -> usize {
        self.host + page * PAGE_SIZE
    }
}

/// State shared by the VMM, the fault thread and the prefetch thread.
struct Shared {
    uffd: Uffd,
    store: Arc<Store>,
    snapshot: String,
    regions: Vec<Region>,
    /// Set to end both threads (drop, or the prefetch is complete).
    stop: AtomicBool,
    /// Wakes the fault thread's poll when `stop` is set.
    stop_fd: EventFd,
    /// True while the memory is registered: the fault thread holds it
    /// while serving so the prefetcher never unregisters under it.
    registered: Mutex<bool>,
    /// Set when every non-zero page is in (or the restore failed).
    complete: (Mutex<bool>, Condvar),
    error: Mutex<Option<LazyError>>,
    /// The thread running the vCPU, kicked when an error is set.
    vcpu: Mutex<Option<libc::pthread_t>>,
    /// The vCPU thread saw the error: stop kicking it.
    error_seen: AtomicBool,
    faults_copied: AtomicU64,
    faults_zero: AtomicU64,
    prefetched: AtomicU64,
    prefetch_us: AtomicU64,
}

/// Guest memory being restored lazily; dropping it stops its threads
/// (memory not yet filled then faults in as zeros: drop it only after the
/// VM is gone).
pub struct LazyMemory {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl LazyMemory {
    /// Registers `regions` (each `list.len()` pages of fresh, untouched
    /// anonymous memory) and starts the fault and prefetch threads.
    /// `hot`: pages to prefetch first, per region (e.g. those the last
    /// snapshot interval dirtied); the rest follow in address order.
    pub fn start(
        store: Arc<Store>,
        snapshot: &str,
        regions: Vec<LazyRegion>,
        hot: HotPages,
    ) -> Result<LazyMemory, LazyError> {
        let uffd = Uffd::open().map_err(LazyError::Unavailable)?;
        for r in &regions {
            let len = r.list.len() * PAGE_SIZE;
            uffd.register(r.host, len)
                .map_err(|source| LazyError::Register {
                    addr: r.host,
                    len,
                    source,
                })?;
        }
        let thread_err = |what, e: std::io::Error| LazyError::Thread {
            snapshot: snapshot.to_string(),
            what,
            how: format!("could not start: {e}"),
        };
        let shared = Arc::new(Shared {
            uffd,
            store,
            snapshot: snapshot.to_string(),
            regions: regions
                .into_iter()
                .map(|r| Region {
                    done: (0..r.list.len().div_ceil(64))
                        .map(|_| AtomicU64::new(0))
                        .collect(),
                    host: r.host,
                    guest_addr: r.guest_addr,
                    list: r.list,
                })
                .collect(),
            stop: AtomicBool::new(false),
            stop_fd: EventFd::new(libc::EFD_NONBLOCK).map_err(|e| thread_err("fault", e))?,
            registered: Mutex::new(true),
            complete: (Mutex::new(false), Condvar::new()),
            error: Mutex::new(None),
            vcpu: Mutex::new(None),
            error_seen: AtomicBool::new(false),
            faults_copied: AtomicU64::new(0),
            faults_zero: AtomicU64::new(0),
            prefetched: AtomicU64::new(0),
            prefetch_us: AtomicU64::new(0),
        });
        let mut threads = Vec::new();
        let s = shared.clone();
        threads.push(
            std::thread::Builder::new()
                .name("uffd-fault".into())
                .spawn(move || fault_loop(&s))
                .map_err(|e| thread_err("fault", e))?,
        );
        let s = shared.clone();
        let started = Instant::now();
        let spawned = std::thread::Builder::new()
            .name("uffd-prefetch".into())
            .spawn(move || prefetch::run(&s, hot, started));
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                // Without a prefetcher the fault thread alone would serve
                // the guest: correct but never complete. Refuse instead.
                let lazy = LazyMemory { shared, threads };
                drop(lazy);
                return Err(thread_err("prefetch", e));
            }
        }
        Ok(LazyMemory { shared, threads })
    }

    /// The thread that runs the vCPU (kicked out of KVM_RUN on an error);
    /// None when it leaves the run loop.
    pub fn set_vcpu_thread(&self, thread: Option<libc::pthread_t>) {
        *self.shared.vcpu.lock().expect("vcpu lock") = thread;
        if thread.is_some() && self.shared.error.lock().expect("error lock").is_some() {
            self.shared.kick();
        }
    }

    /// The error that stopped the lazy restore, if any (the vCPU thread
    /// asks after every interrupted KVM_RUN).
    pub fn error(&self) -> Option<LazyError> {
        let e = self.shared.error.lock().expect("error lock").take();
        if e.is_some() {
            self.shared.error_seen.store(true, Ordering::SeqCst);
        }
        e
    }

    /// Waits until every page is in (memory is then ordinary memory).
    pub fn finish(&self) -> Result<(), LazyError> {
        let (lock, cv) = &self.shared.complete;
        let mut done = lock.lock().expect("complete lock");
        while !*done {
            done = cv.wait(done).expect("complete lock");
        }
        drop(done);
        match self.error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Whether every page is in.
    pub fn is_complete(&self) -> bool {
        *self.shared.complete.0.lock().expect("complete lock")
    }

    pub fn stats(&self) -> LazyStats {
        let s = &self.shared;
        LazyStats {
            faults_copied: s.faults_copied.load(Ordering::Relaxed),
            faults_zero: s.faults_zero.load(Ordering::Relaxed),
            prefetched_pages: s.prefetched.load(Ordering::Relaxed),
            prefetch_us: s.prefetch_us.load(Ordering::Relaxed),
        }
    }
}

impl Drop for LazyMemory {
    fn drop(&mut self) {
        self.shared.request_stop();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Shared {
    fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.stop_fd.write(1);
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Records the first error and kicks the vCPU thread out of KVM_RUN.
    fn fail(&self, e: LazyError) {
        // Reported once, by the run that ends with it.
        tracing::debug!("lazy restore failed: {e}");
        {
            let mut slot = self.error.lock().expect("error lock");
            if slot.is_none() && !self.error_seen.load(Ordering::SeqCst) {
                *slot = Some(e);
            }
        }
        self.kick();
    }

    fn kick(&self) {
        if let Some(t) = *self.vcpu.lock().expect("vcpu lock") {
            // SAFETY: the vCPU thread clears this (under the same lock)
            // before it leaves the run loop, so `t` is alive; SIGRTMIN has
            // a no-op handler installed by the run loop.
            unsafe { libc::pthread_kill(t, vmm_sys_util::signal::SIGRTMIN()) };
        }
    }

    fn failed(&self) -> bool {
        self.error.lock().expect("error lock").is_some() || self.error_seen.load(Ordering::SeqCst)
    }

    /// Marks the restore complete and wakes [`LazyMemory::finish`].
    fn set_complete(&self) {
        let (lock, cv) = &self.complete;
        *lock.lock().expect("complete lock") = true;
        cv.notify_all();
    }

    fn region_of(&self, addr: usize) -> Option<(usize, &Region, usize)> {
        self.regions.iter().enumerate().find_map(|(i, r)| {
            (addr >= r.host && addr < r.host + r.pages() * PAGE_SIZE)
                .then(|| (i, r, (addr - r.host) / PAGE_SIZE))
        })
    }

    fn fill_error(&self, region: usize, page: usize, source: std::io::Error) -> LazyError {
        LazyError::Fill {
            snapshot: self.snapshot.clone(),
            region,
            page,
            guest_addr: self.regions[region].guest_addr + (page * PAGE_SIZE) as u64,
            source,
        }
    }

    fn fetch_error(&self, region: usize, page: usize, source: PagesError) -> LazyError {
        LazyError::Fetch {
            snapshot: self.snapshot.clone(),
            region,
            page,
            guest_addr: self.regions[region].guest_addr + (page * PAGE_SIZE) as u64,
            source: Box::new(source),
        }
    }

    /// Serves one fault at `addr`.
    fn serve(&self, addr: usize, buf: &mut [u8]) {
        let Some((ri, r, page)) = self.region_of(addr) else {
            return;
        };
        let at = r.addr(page);
        if r.is_done(page) {
            // Filled between the fault and now (its COPY woke the
            // toucher, but a fault queued just after still waits).
            let _ = self.uffd.wake(at, PAGE_SIZE);
            return;
        }
        let id = r.list.ids()[page];
        if id.is_zero_block() {
            let end = (page + ZERO_AROUND)
                .min(r.pages())
                .min((page / ZERO_AROUND + 1) * ZERO_AROUND);
            let run = (page..end)
                .take_while(|&p| r.list.ids()[p].is_zero_block() && !r.is_done(p))
                .count();
            match self.uffd.zeropage(at, run * PAGE_SIZE) {
                Ok(Fill::Done) => r.mark_done(page..page + run),
                Ok(Fill::Exists(n)) => {
                    r.mark_done(page..page + n / PAGE_SIZE);
                    if n == 0 {
                        let _ = self.uffd.wake(at, PAGE_SIZE);
                    }
                }
                Err(e) => return self.fail_and_release(ri, page, self.fill_error(ri, page, e)),
            }
            self.faults_zero.fetch_add(1, Ordering::Relaxed);
            return;
        }
        if let Err(e) = snapshot::restore_page(&self.store, &r.list, page, buf) {
            return self.fail_and_release(ri, page, self.fetch_error(ri, page, e));
        }
        // SAFETY: `buf` is one readable page; `at` is a page of a region
        // registered with this uffd (we hold `registered`).
        match unsafe { self.uffd.copy(at, buf.as_ptr(), PAGE_SIZE) } {
            Ok(Fill::Done) => r.mark_done(page..page + 1),
            Ok(Fill::Exists(_)) => {
                r.mark_done(page..page + 1);
                let _ = self.uffd.wake(at, PAGE_SIZE);
            }
            Err(e) => return self.fail_and_release(ri, page, self.fill_error(ri, page, e)),
        }
        self.faults_copied.fetch_add(1, Ordering::Relaxed);
    }

    /// After an error: the vCPU is kicked first (so it leaves KVM_RUN
    /// before running on), then the page is mapped as zeros so that no
    /// thread stays blocked on it.
    fn fail_and_release(&self, region: usize, page: usize, e: LazyError) {
        self.fail(e);
        let r = &self.regions[region];
        let _ = self.uffd.zeropage(r.addr(page), PAGE_SIZE);
        let _ = self.uffd.wake(r.addr(page), PAGE_SIZE);
        r.mark_done(page..page + 1);
    }
}

/// The fault thread: waits for faults (or stop) and serves them; after an
/// error, keeps kicking the vCPU until it saw the error.
fn fault_loop(s: &Shared) {
    let mut buf = vec![0u8; PAGE_SIZE];
    let mut faults = Vec::new();
    loop {
        let mut fds = [
            libc::pollfd {
                fd: s.uffd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: s.stop_fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let kicking = s.failed() && !s.error_seen.load(Ordering::SeqCst);
        let timeout = if kicking {
            KICK_INTERVAL.as_millis() as i32
        } else {
            -1
        };
        // SAFETY: two valid pollfds on descriptors that outlive the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, timeout) };
        if s.stopping() {
            return;
        }
        if kicking {
            s.kick();
        }
        if rc <= 0 {
            continue;
        }
        faults.clear();
        if s.uffd.read_faults(&mut faults).is_err() {
            continue;
        }
        let registered = s.registered.lock().expect("registered lock");
        if !*registered {
            // Unregistering woke every waiter: they fault as ordinary
            // memory now, nothing to serve.
            return;
        }
        for &addr in &faults {
            s.serve(addr, &mut buf);
        }
        drop(registered);
    }
}
