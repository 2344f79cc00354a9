//! virtio-blk: a raw disk image as a virtio block device, with every
//! completed write and flush handed to a [`WriteTap`] (the recorder).
//!
//! Durability contract: a FLUSH completes (status OK reaches the guest) only
//! after the disk image is fdatasync'ed and the tap has made everything up to
//! this barrier durable. A crash of the VMM process therefore loses nothing
//! the guest was told is safe. Once the tap has failed for good
//! ([`WriteTap::failed`]), every write, zeroing and flush completes with
//! IOERR (the image is not touched); reads are still served.
pub mod disk;
pub mod rate;
pub mod request;

use crate::memory::GuestMemory;
use crate::metrics::Counters;
use crate::recording::RecordResult;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use virtio_queue::{Queue, QueueT};
use vm_memory::Bytes;

use self::disk::DiskImage;
use self::rate::TokenBucket;
use self::request::{ParseError, Request, RequestType, ID_BYTES};
use self::request::{VIRTIO_BLK_S_IOERR, VIRTIO_BLK_S_OK, VIRTIO_BLK_S_UNSUPP};
use super::{DeviceError, DeviceKind, IrqLine, VirtioDevice, INT_VRING};

const VIRTIO_ID_BLOCK: u32 = 2;
const VIRTIO_BLK_F_RO: u64 = 1 << 5;
const VIRTIO_BLK_F_BLK_SIZE: u64 = 1 << 6;
const VIRTIO_BLK_F_FLUSH: u64 = 1 << 9;
const VIRTIO_BLK_F_DISCARD: u64 = 1 << 13;
const VIRTIO_BLK_F_WRITE_ZEROES: u64 = 1 << 14;
const QUEUE_SIZE: u16 = 256;
/// Guest misbehaviour is reported this many times, then only counted.
const MAX_WARNINGS: u64 = 20;

/// Receives the device's completed writes and flushes, in guest order.
pub trait WriteTap: Send {
    /// `data` was written at byte `offset`; both are 4 KiB-aligned. The
    /// tap may record it later (asynchronously), but in order, and must
    /// have recorded it durably before `flush` returns.
    fn write(&mut self, offset: u64, data: Vec<u8>) -> RecordResult<()>;
    /// A flush barrier: returns once everything before it is durable.
    fn flush(&mut self) -> RecordResult<()>;
    /// The device is stopping: hand off anything buffered (no barrier).
    fn close(&mut self) -> RecordResult<()>;
    /// Recording failed for good: every later write and flush gets an I/O
    /// error (the tap reported the failure itself, once).
    fn failed(&self) -> bool {
        false
    }
}

/// Counters a test or benchmark can read after a run.
#[derive(Debug, Default, Clone, Copy)]
pub struct BlockCounters {
    pub reads: u64,
    pub writes: u64,
    pub flushes: u64,
    pub bytes_written: u64,
    pub errors: u64,
    /// Writes and flushes refused because recording had failed.
    pub tap_refused: u64,
}

pub struct Block {
    disk: DiskImage,
    tap: Option<Box<dyn WriteTap>>,
    id: [u8; ID_BYTES],
    mem: Option<GuestMemory>,
    queue: Option<Queue>,
    counters: BlockCounters,
    /// The machine's live counters (guest bytes read and written).
    live: Option<Arc<Counters>>,
    /// The IOPS limit (`--disk-iops`), when there is one.
    limit: Option<TokenBucket>,
}

impl Block {
    pub fn new(disk: DiskImage, id: &str, tap: Option<Box<dyn WriteTap>>) -> Self {
        let mut id_bytes = [0u8; ID_BYTES];
        let n = id.len().min(ID_BYTES);
        id_bytes[..n].copy_from_slice(&id.as_bytes()[..n]);
        Self {
            disk,
            tap,
            id: id_bytes,
            mem: None,
            queue: None,
            counters: BlockCounters::default(),
            live: None,
            limit: None,
        }
    }

    /// Limits the guest's requests to `iops` a second (see [`rate`]).
    pub fn limited_to(mut self, iops: Option<u64>) -> Self {
        self.limit = iops.map(|n| TokenBucket::new(n, std::time::Instant::now()));
        self
    }

    /// Waits for the IOPS limit's token for one request.
    fn throttle(&mut self) {
        let Some(bucket) = self.limit.as_mut() else {
            return;
        };
        let wait = bucket.take(std::time::Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
            self.count_live(|c| &c.throttled_ns, wait.as_nanos() as u64);
        }
    }

    /// Also counts the guest's bytes read and written into `live`.
    pub fn counting_into(mut self, live: Arc<Counters>) -> Self {
        self.live = Some(live);
        self
    }

    fn count_live(&self, pick: impl Fn(&Counters) -> &AtomicU64, bytes: u64) {
        if let Some(live) = &self.live {
            Counters::add(pick(live), bytes);
        }
    }

    pub fn counters(&self) -> BlockCounters {
        self.counters
    }

    fn warn(&mut self, what: &str) {
        self.counters.errors += 1;
        if self.counters.errors <= MAX_WARNINGS {
            tracing::warn!(disk = %self.disk.path().display(), "guest sent a bad request: {what}");
        }
        if self.counters.errors == MAX_WARNINGS {
            tracing::warn!("further bad requests on this disk are counted, not reported");
        }
    }

    /// Executes a checked request; returns (status, bytes written to guest buffers).
    fn execute(&mut self, mem: &GuestMemory, req: &Request) -> (u8, u32) {
        let changes_disk = matches!(
            req.kind,
            RequestType::Out | RequestType::Discard | RequestType::WriteZeroes | RequestType::Flush
        );
        if changes_disk && self.tap.as_ref().is_some_and(|t| t.failed()) {
            // Nothing more can be recorded: refuse rather than let the disk
            // drift from its log, or acknowledge a flush that is not durable.
            self.counters.tap_refused += 1;
            return (VIRTIO_BLK_S_IOERR, 0);
        }
        match req.kind {
            RequestType::In => {
                let Some((start, end)) = req.disk_range(&self.disk) else {
                    self.warn("read past the end of the disk or not whole sectors");
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let mut buf = vec![0u8; (end - start) as usize];
                if let Err(e) = self.disk.read_at(&mut buf, start) {
                    tracing::error!(disk = %self.disk.path().display(), "read failed: {e}");
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                self.counters.reads += 1;
                self.count_live(|c| &c.guest_read_bytes, buf.len() as u64);
                match req.scatter(mem, &buf) {
                    Some(n) => (VIRTIO_BLK_S_OK, n),
                    None => (VIRTIO_BLK_S_IOERR, 0),
                }
            }
            RequestType::Out => {
                if self.disk.read_only() {
                    self.warn("write to a read-only disk");
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let Some((start, end)) = req.disk_range(&self.disk) else {
                    self.warn("write past the end of the disk or not whole sectors");
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                let Some(buf) = req.gather(mem) else {
                    return (VIRTIO_BLK_S_IOERR, 0);
                };
                if let Err(e) = self.disk.write_at(&buf, start) {
                    tracing::error!(disk = %self.disk.path().display(), "write failed: {e}");
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                self.counters.writes += 1;
                self.counters.bytes_written += buf.len() as u64;
                self.count_live(|c| &c.guest_written_bytes, buf.len() as u64);
                if !self.tap_write(start, end, buf) {
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            RequestType::Discard | RequestType::WriteZeroes => {
                if self.disk.read_only() {
                    self.warn("zeroing a read-only disk");
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                let ranges = match req.zero_ranges(mem, &self.disk) {
                    Ok(r) => r,
                    Err(what) => {
                        self.warn(what);
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                };
                for (start, end) in ranges {
                    let zeros = vec![0u8; (end - start) as usize];
                    if let Err(e) = self.disk.write_at(&zeros, start) {
                        tracing::error!(disk = %self.disk.path().display(), "zeroing failed: {e}");
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                    self.counters.writes += 1;
                    self.counters.bytes_written += zeros.len() as u64;
                    self.count_live(|c| &c.guest_written_bytes, zeros.len() as u64);
                    if !self.tap_write(start, end, zeros) {
                        return (VIRTIO_BLK_S_IOERR, 0);
                    }
                }
                (VIRTIO_BLK_S_OK, 0)
            }
            RequestType::Flush => {
                self.counters.flushes += 1;
                if let Err(e) = self.disk.sync() {
                    tracing::error!(disk = %self.disk.path().display(), "flush failed: {e}");
                    return (VIRTIO_BLK_S_IOERR, 0);
                }
                // A failing tap reports its failure itself, once.
                match self.tap.as_mut().map_or(Ok(()), |t| t.flush()) {
                    Ok(()) => (VIRTIO_BLK_S_OK, 0),
                    Err(e) => {
                        tracing::debug!("recording a flush failed: {e}");
                        (VIRTIO_BLK_S_IOERR, 0)
                    }
                }
            }
            RequestType::GetId => match req.scatter(mem, &self.id) {
                Some(n) => (VIRTIO_BLK_S_OK, n),
                None => (VIRTIO_BLK_S_IOERR, 0),
            },
            RequestType::Unsupported(t) => {
                self.warn(&format!("unsupported request type {t}"));
                (VIRTIO_BLK_S_UNSUPP, 0)
            }
        }
    }

    /// Hands a completed write to the tap in whole 4 KiB blocks. A write that
    /// is not block-aligned (the device advertises 4 KiB blocks, but the
    /// guest may ignore that) is widened by reading its blocks back.
    /// Returns whether the tap took it (a failing tap reports its failure
    /// itself, once; a failed read-back is reported here).
    #[must_use]
    fn tap_write(&mut self, start: u64, end: u64, buf: Vec<u8>) -> bool {
        let Some(tap) = self.tap.as_mut() else {
            return true;
        };
        let block = store::BLOCK_SIZE as u64;
        let (a_start, a_end) = (start / block * block, end.div_ceil(block) * block);
        let taken = if (a_start, a_end) == (start, end) {
            tap.write(start, buf)
        } else {
            let mut whole = vec![0u8; (a_end - a_start) as usize];
            if let Err(e) = self.disk.read_at(&mut whole, a_start) {
                tracing::error!(disk = %self.disk.path().display(), "reading back an unaligned write: {e}");
                return false;
            }
            tap.write(a_start, whole)
        };
        if let Err(e) = &taken {
            tracing::debug!("recording a write failed: {e}");
        }
        taken.is_ok()
    }
}

impl VirtioDevice for Block {
    fn device_type(&self) -> u32 {
        VIRTIO_ID_BLOCK
    }

    fn queue_max_sizes(&self) -> &[u16] {
        &[QUEUE_SIZE]
    }

    fn features(&self) -> u64 {
        let writable = if self.disk.read_only() {
            VIRTIO_BLK_F_RO
        } else {
            VIRTIO_BLK_F_DISCARD | VIRTIO_BLK_F_WRITE_ZEROES
        };
        VIRTIO_BLK_F_FLUSH | VIRTIO_BLK_F_BLK_SIZE | writable
    }

    /// Config space (virtio 1.x, 5.2.4): capacity (u64, sectors) at 0,
    /// blk_size at 20, and the DISCARD / WRITE_ZEROES limits at 36..60.
    fn read_config(&self, offset: u64, data: &mut [u8]) {
        let mut config = [0u8; 60];
        config[..8].copy_from_slice(&self.disk.sectors().to_le_bytes());
        config[20..24].copy_from_slice(&(store::BLOCK_SIZE as u32).to_le_bytes());
        let put =
            |c: &mut [u8; 60], at: usize, v: u32| c[at..at + 4].copy_from_slice(&v.to_le_bytes());
        put(&mut config, 36, request::MAX_ZERO_SECTORS); // max_discard_sectors
        put(&mut config, 40, request::MAX_ZERO_SEGMENTS); // max_discard_seg
        put(&mut config, 44, (store::BLOCK_SIZE / 512) as u32); // discard_sector_alignment
        put(&mut config, 48, request::MAX_ZERO_SECTORS); // max_write_zeroes_sectors
        put(&mut config, 52, request::MAX_ZERO_SEGMENTS); // max_write_zeroes_seg
        config[56] = 1; // write_zeroes_may_unmap
        for (i, b) in data.iter_mut().enumerate() {
            *b = usize::try_from(offset)
                .ok()
                .and_then(|o| config.get(o + i))
                .copied()
                .unwrap_or(0);
        }
    }

    fn activate(&mut self, mem: GuestMemory, queues: Vec<Queue>, _acked: u64) {
        self.queue = queues.into_iter().next();
        self.mem = Some(mem);
    }

    fn process_queue(&mut self, index: u16, irq: &IrqLine) {
        let (Some(mem), Some(mut queue)) = (self.mem.clone(), self.queue.take()) else {
            return;
        };
        if index != 0 || !queue.ready() {
            self.queue = Some(queue);
            return;
        }
        let mut completed = false;
        while let Some(chain) = queue.pop_descriptor_chain(&mem) {
            let head = chain.head_index();
            let used_len = match Request::parse(chain, &mem) {
                Ok(req) => {
                    if !matches!(req.kind, RequestType::GetId | RequestType::Unsupported(_)) {
                        self.throttle();
                    }
                    let (status, written) = self.execute(&mem, &req);
                    // The status address was checked when the request was parsed.
                    let _ = mem.write_obj(status, req.status_addr);
                    written + 1
                }
                Err(ParseError::Invalid(what, status_addr)) => {
                    self.warn(what);
                    let _ = mem.write_obj(VIRTIO_BLK_S_IOERR, status_addr);
                    1
                }
                Err(ParseError::NoStatus(what)) => {
                    self.warn(what);
                    0
                }
            };
            if queue.add_used(&mem, head, used_len).is_err() {
                self.warn("used ring outside guest memory");
                break;
            }
            completed = true;
        }
        if completed && queue.needs_notification(&mem).unwrap_or(true) {
            irq.signal(INT_VRING);
        }
        self.queue = Some(queue);
    }

    fn reset(&mut self) {
        self.queue = None;
        self.mem = None;
    }

    fn active_queues(&self) -> Vec<virtio_queue::QueueState> {
        self.queue.iter().map(|q| q.state()).collect()
    }

    fn stop(&mut self) -> Result<(), DeviceError> {
        let closed = self.tap.as_mut().map_or(Ok(()), |t| t.close());
        closed.map_err(|source| DeviceError::Stop {
            device: DeviceKind(VIRTIO_ID_BLOCK),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::RecorderError;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use vm_memory::GuestAddress;

    /// A tap whose first write fails for good.
    struct FailingTap(Arc<AtomicBool>);

    impl WriteTap for FailingTap {
        fn write(&mut self, _offset: u64, _data: Vec<u8>) -> RecordResult<()> {
            self.0.store(true, Ordering::SeqCst);
            Err(RecorderError::Failed(
                "recording failed: store: disk full".into(),
            ))
        }
        fn flush(&mut self) -> RecordResult<()> {
            Err(RecorderError::Failed("recording failed".into()))
        }
        fn close(&mut self) -> RecordResult<()> {
            Ok(())
        }
        fn failed(&self) -> bool {
            self.0.load(Ordering::SeqCst)
        }
    }

    fn request(kind: RequestType, sector: u64, len: u32) -> Request {
        Request {
            kind,
            sector,
            data: if len == 0 {
                Vec::new()
            } else {
                vec![(GuestAddress(0x10_0000), len)]
            },
            data_len: len,
            status_addr: GuestAddress(0x18_0000),
        }
    }

    #[test]
    fn after_the_tap_fails_writes_and_flushes_get_ioerr_and_reads_still_work() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("disk.img");
        std::fs::write(&path, vec![0x11u8; 64 * 1024]).unwrap();
        let disk = DiskImage::open(&path, false).unwrap();
        let failed = Arc::new(AtomicBool::new(false));
        let mut block = Block::new(disk, "d", Some(Box::new(FailingTap(failed.clone()))));
        let mem = crate::memory::create_guest_memory(crate::memory::MIN_MEM_MIB).unwrap();
        mem.write_slice(&[0x22u8; 4096], GuestAddress(0x10_0000))
            .unwrap();

        // The write that fails to record: IOERR, and the tap is failed now.
        let write = request(RequestType::Out, 0, 4096);
        assert_eq!(block.execute(&mem, &write).0, VIRTIO_BLK_S_IOERR);
        assert!(failed.load(Ordering::SeqCst));
        // Every later write and flush is refused without touching the image.
        let later = request(RequestType::Out, 8, 4096);
        assert_eq!(block.execute(&mem, &later).0, VIRTIO_BLK_S_IOERR);
        let flush = request(RequestType::Flush, 0, 0);
        assert_eq!(block.execute(&mem, &flush).0, VIRTIO_BLK_S_IOERR);
        assert_eq!(block.counters().tap_refused, 2);
        let image = std::fs::read(&path).unwrap();
        assert!(image[4096..8192].iter().all(|&b| b == 0x11));
        // Reads are still served.
        let read = request(RequestType::In, 16, 4096);
        assert_eq!(block.execute(&mem, &read), (VIRTIO_BLK_S_OK, 4096));
    }
}
