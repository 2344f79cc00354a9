//! One virtio-blk request: parsed from a descriptor chain, checked, executed.
//!
//! Layout (virtio 1.x, 5.2.6): a device-readable 16-byte header
//! `{type u32, reserved u32, sector u64}`, data buffers (device-readable for
//! OUT, device-writable for IN and GET_ID), and a final device-writable
//! status byte. Everything in the chain comes from the guest and is checked
//! here: directions, lengths, sector ranges, and that every buffer lies in
//! guest memory. A request that fails a check completes with IOERR (or
//! UNSUPP), never with a host error.
use crate::memory::GuestMemory;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend};

use super::disk::{DiskImage, SECTOR_SIZE};

pub const VIRTIO_BLK_T_IN: u32 = 0;
pub const VIRTIO_BLK_T_OUT: u32 = 1;
pub const VIRTIO_BLK_T_FLUSH: u32 = 4;
pub const VIRTIO_BLK_T_GET_ID: u32 = 8;
pub const VIRTIO_BLK_T_DISCARD: u32 = 11;
pub const VIRTIO_BLK_T_WRITE_ZEROES: u32 = 13;
/// Most sectors one DISCARD or WRITE_ZEROES segment may cover (4 MiB).
pub const MAX_ZERO_SECTORS: u32 = 8192;
/// Most segments in one DISCARD or WRITE_ZEROES request.
pub const MAX_ZERO_SEGMENTS: u32 = 16;
pub const VIRTIO_BLK_S_OK: u8 = 0;
pub const VIRTIO_BLK_S_IOERR: u8 = 1;
pub const VIRTIO_BLK_S_UNSUPP: u8 = 2;
/// Length of the GET_ID answer.
pub const ID_BYTES: usize = 20;
/// Largest data transfer we accept in one request (bounds host buffers).
pub const MAX_REQUEST_BYTES: u32 = 4 << 20;
/// Longest descriptor chain we accept (header + data + status).
pub const MAX_CHAIN_LEN: usize = 130;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestType {
    In,
    Out,
    Flush,
    GetId,
    /// Both zero the range here: a discarded range reads back as zeros.
    Discard,
    WriteZeroes,
    Unsupported(u32),
}

/// A checked request: buffers are in guest memory and point the right way.
#[derive(Debug)]
pub struct Request {
    pub kind: RequestType,
    pub sector: u64,
    pub data: Vec<(GuestAddress, u32)>,
    pub data_len: u32,
    pub status_addr: GuestAddress,
}

/// Why a chain could not become a request. `NoStatus` chains cannot even be
/// answered: they complete with a used length of 0.
#[derive(Debug, PartialEq, Eq)]
pub enum ParseError {
    NoStatus(&'static str),
    Invalid(&'static str, GuestAddress),
}

impl Request {
    pub fn parse(
        chain: DescriptorChain<&GuestMemory>,
        mem: &GuestMemory,
    ) -> Result<Self, ParseError> {
        let mut descs = Vec::new();
        let mut chain_cut = false;
        for desc in chain {
            if descs.len() == MAX_CHAIN_LEN {
                chain_cut = true;
                break;
            }
            descs.push(desc);
        }
        let Some(last) = descs.last() else {
            return Err(ParseError::NoStatus("empty descriptor chain"));
        };
        // The iterator stops at the queue size: a chain that still points
        // on is looping or longer than any real request.
        if chain_cut || last.has_next() {
            return Err(ParseError::NoStatus(
                "descriptor chain loops or is too long",
            ));
        }
        if descs.len() < 2 {
            return Err(ParseError::NoStatus("chain has no header and status"));
        }
        if !last.is_write_only() || last.len() < 1 || !in_memory(mem, last.addr(), 1) {
            return Err(ParseError::NoStatus(
                "status descriptor is not a writable guest buffer",
            ));
        }
        let status_addr = last.addr();
        let head = descs[0];
        if head.is_write_only() || head.len() < 16 {
            return Err(ParseError::Invalid(
                "bad request header descriptor",
                status_addr,
            ));
        }
        let kind_raw: u32 = mem
            .read_obj(head.addr())
            .map_err(|_| ParseError::Invalid("header outside guest memory", status_addr))?;
        let sector_addr = head.addr().checked_add(8).ok_or(ParseError::Invalid(
            "header outside guest memory",
            status_addr,
        ))?;
        let sector: u64 = mem
            .read_obj(sector_addr)
            .map_err(|_| ParseError::Invalid("header outside guest memory", status_addr))?;
        let kind = match kind_raw {
            VIRTIO_BLK_T_IN => RequestType::In,
            VIRTIO_BLK_T_OUT => RequestType::Out,
            VIRTIO_BLK_T_FLUSH => RequestType::Flush,
            VIRTIO_BLK_T_GET_ID => RequestType::GetId,
            VIRTIO_BLK_T_DISCARD => RequestType::Discard,
            VIRTIO_BLK_T_WRITE_ZEROES => RequestType::WriteZeroes,
            other => RequestType::Unsupported(other),
        };
        let device_writes = matches!(kind, RequestType::In | RequestType::GetId);
        let mut data = Vec::with_capacity(descs.len() - 2);
        let mut data_len = 0u32;
        for d in &descs[1..descs.len() - 1] {
            if d.is_write_only() != device_writes {
                return Err(ParseError::Invalid(
                    "data buffer points the wrong way",
                    status_addr,
                ));
            }
            if !in_memory(mem, d.addr(), d.len()) {
                return Err(ParseError::Invalid(
                    "data buffer outside guest memory",
                    status_addr,
                ));
            }
            data_len = data_len
                .checked_add(d.len())
                .filter(|n| *n <= MAX_REQUEST_BYTES)
                .ok_or(ParseError::Invalid(
                    "request larger than 4 MiB",
                    status_addr,
                ))?;
            data.push((d.addr(), d.len()));
        }
        Ok(Self {
            kind,
            sector,
            data,
            data_len,
            status_addr,
        })
    }

    /// The byte range on disk this request covers, if it lies on the disk.
    pub fn disk_range(&self, disk: &DiskImage) -> Option<(u64, u64)> {
        if u64::from(self.data_len) % SECTOR_SIZE != 0 {
            return None;
        }
        let start = self.sector.checked_mul(SECTOR_SIZE)?;
        let end = start.checked_add(u64::from(self.data_len))?;
        (end <= disk.len()).then_some((start, end))
    }

    /// The byte ranges a DISCARD or WRITE_ZEROES request names: its data is
    /// 16-byte segments `{sector u64, num_sectors u32, flags u32}`, each
    /// checked against the disk and the limits the device advertises.
    pub fn zero_ranges(
        &self,
        mem: &GuestMemory,
        disk: &DiskImage,
    ) -> Result<Vec<(u64, u64)>, &'static str> {
        if self.data_len == 0
            || !self.data_len.is_multiple_of(16)
            || self.data_len > MAX_ZERO_SEGMENTS * 16
        {
            return Err("zeroing request with a bad segment list");
        }
        let data = self
            .gather(mem)
            .ok_or("zeroing segments outside guest memory")?;
        data.chunks_exact(16)
            .map(|seg| {
                let sector = u64::from_le_bytes(seg[..8].try_into().expect("8 bytes"));
                let sectors = u32::from_le_bytes(seg[8..12].try_into().expect("4 bytes"));
                let flags = u32::from_le_bytes(seg[12..16].try_into().expect("4 bytes"));
                if sectors == 0 || sectors > MAX_ZERO_SECTORS || flags & !1 != 0 {
                    return Err("zeroing segment of a bad size or with unknown flags");
                }
                let start = sector
                    .checked_mul(SECTOR_SIZE)
                    .ok_or("zeroing past the end of the disk")?;
                let end = start + u64::from(sectors) * SECTOR_SIZE;
                if end > disk.len() {
                    return Err("zeroing past the end of the disk");
                }
                Ok((start, end))
            })
            .collect()
    }

    /// Gathers the data buffers into one host buffer.
    pub fn gather(&self, mem: &GuestMemory) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; self.data_len as usize];
        let mut at = 0;
        for &(addr, len) in &self.data {
            mem.read_slice(&mut buf[at..at + len as usize], addr).ok()?;
            at += len as usize;
        }
        Some(buf)
    }

    /// Scatters `bytes` into the data buffers; returns how many were written.
    pub fn scatter(&self, mem: &GuestMemory, bytes: &[u8]) -> Option<u32> {
        let mut at = 0usize;
        for &(addr, len) in &self.data {
            let n = (len as usize).min(bytes.len() - at);
            mem.write_slice(&bytes[at..at + n], addr).ok()?;
            at += n;
            if at == bytes.len() {
                break;
            }
        }
        Some(at as u32)
    }
}

fn in_memory(mem: &GuestMemory, addr: GuestAddress, len: u32) -> bool {
    len == 0 || GuestMemoryBackend::check_range(mem, addr, len as usize)
}
