//! The disk as rsext4 sees it: reads from the image, writes kept in memory.
//!
//! rsext4 is a read-write driver: mounting replays the ext4 journal by
//! writing the logged blocks home (and updates the superblock). Here every
//! write lands in an in-memory overlay that later reads see, so the mapper
//! gets the filesystem as of its last committed journal transaction while
//! the guest's disk is never touched.
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;

use rsext4::{
    BlockIo, Clock, DeviceCapabilities, DeviceGeometry, Ext4Error, Ext4Result, Ext4Timestamp,
    SectorId,
};

const SECTOR: usize = 512;
/// Most sectors the overlay holds (journal replay of a hostile journal
/// cannot make it grow past this): 64 MiB.
const MAX_OVERLAY_SECTORS: usize = 128 * 1024;

pub(super) struct Overlay<'a> {
    image: &'a File,
    sectors: u64,
    written: HashMap<u64, Box<[u8; SECTOR]>>,
}

impl<'a> Overlay<'a> {
    pub(super) fn new(image: &'a File, disk_bytes: u64) -> Self {
        Self {
            image,
            sectors: disk_bytes / SECTOR as u64,
            written: HashMap::new(),
        }
    }

    fn check(&self, sector: SectorId, count: u32, buf_len: usize) -> Ext4Result<()> {
        let end = sector.raw().checked_add(count as u64);
        if end.is_none_or(|end| end > self.sectors) || buf_len < count as usize * SECTOR {
            return Err(Ext4Error::invalid_input());
        }
        Ok(())
    }
}

impl BlockIo for Overlay<'_> {
    fn write(&mut self, buffer: &[u8], sector: SectorId, count: u32) -> Ext4Result<()> {
        self.check(sector, count, buffer.len())?;
        for (i, chunk) in buffer.chunks_exact(SECTOR).take(count as usize).enumerate() {
            let key = sector.raw() + i as u64;
            if !self.written.contains_key(&key) && self.written.len() >= MAX_OVERLAY_SECTORS {
                return Err(Ext4Error::no_space());
            }
            let mut block = Box::new([0u8; SECTOR]);
            block.copy_from_slice(chunk);
            self.written.insert(key, block);
        }
        Ok(())
    }

    fn read(&mut self, buffer: &mut [u8], sector: SectorId, count: u32) -> Ext4Result<()> {
        self.check(sector, count, buffer.len())?;
        let len = count as usize * SECTOR;
        self.image
            .read_exact_at(&mut buffer[..len], sector.raw() * SECTOR as u64)
            .map_err(|_| Ext4Error::io())?;
        if !self.written.is_empty() {
            for (i, chunk) in buffer[..len].chunks_exact_mut(SECTOR).enumerate() {
                if let Some(b) = self.written.get(&(sector.raw() + i as u64)) {
                    chunk.copy_from_slice(&b[..]);
                }
            }
        }
        Ok(())
    }

    fn geometry(&self) -> DeviceGeometry {
        DeviceGeometry::new(SECTOR as u32, self.sectors)
    }

    fn capabilities(&self) -> DeviceCapabilities {
        DeviceCapabilities {
            read_only: false,
            flush: true,
            barrier: false,
            fua: false,
            discard: false,
        }
    }

    fn flush(&mut self) -> Ext4Result<()> {
        Ok(())
    }
}

impl Clock for Overlay<'_> {
    fn now(&self) -> Ext4Result<Ext4Timestamp> {
        Ok(Ext4Timestamp::default())
    }
}
