//! PVH boot: load an ELF kernel and write the boot data it expects.
//!
//! The PVH ABI (Xen's "direct boot" protocol, also used by Linux vmlinux with
//! CONFIG_PVH and by our microguest) starts the vCPU in 32-bit protected mode
//! at the address in the ELF note XEN_ELFNOTE_PHYS32_ENTRY, with `ebx`
//! pointing at `hvm_start_info`, which in turn points at the command line and
//! an e820-style memory map. `vstate::vcpu` sets up that register state.
use std::io::Cursor;

use crate::memory::GuestMemory;
use linux_loader::cmdline::Cmdline;
use linux_loader::configurator::pvh::PvhBootConfigurator;
use linux_loader::configurator::{BootConfigurator, BootParams};
use linux_loader::elf::{Elf64_Ehdr, Elf64_Phdr, ET_EXEC, PT_LOAD};
use linux_loader::loader::elf::start_info::{hvm_memmap_table_entry, hvm_start_info};
use linux_loader::loader::elf::{Elf, Error as ElfError, PvhBootCapability};
use linux_loader::loader::{Error as LoaderError, KernelLoader};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use crate::error::{Result, VmmError};
use crate::memory::{
    CMDLINE_ADDR, CMDLINE_MAX, EBDA_START, HIMEM_START, MEMMAP_ADDR, MEMMAP_MAX_ENTRIES, MIB,
    START_INFO_ADDR,
};

const XEN_HVM_START_MAGIC: u32 = 0x336e_c578;
const E820_RAM: u32 = 1;

/// Where the kernel was put.
#[derive(Debug, Clone, Copy)]
pub struct LoadedKernel {
    /// 32-bit PVH entry point.
    pub entry: GuestAddress,
    /// First byte after the highest loaded segment.
    pub end: u64,
}

/// What a kernel file is, as far as booting it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelKind {
    /// An ELF with a PVH entry note: what `vmm run --kernel` boots.
    PvhElf {
        entry: u64,
    },
    /// An ELF without one (a vmlinux built without CONFIG_PVH).
    ElfWithoutPvh,
    /// A bzImage (its setup header's "HdrS"), with its boot protocol
    /// version (major, minor).
    BzImage {
        protocol: (u8, u8),
    },
    Unknown,
}

/// Xen's ELF note holding the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
const PT_NOTE: u32 = 4;

/// Tells what `image` is by its headers alone (bounded: every offset is
/// checked against the file).
pub fn kernel_kind(image: &[u8]) -> KernelKind {
    let u16_at = |o: usize| {
        image
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u32_at = |o: usize| {
        image
            .get(o..o + 4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    };
    let u64_at = |o: usize| {
        image
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    if image.get(0x202..0x206) == Some(b"HdrS") {
        let v = u16_at(0x206).unwrap_or(0);
        return KernelKind::BzImage {
            protocol: ((v >> 8) as u8, v as u8),
        };
    }
    if image.get(..4) != Some(b"\x7fELF") || image.get(4) != Some(&2) {
        return KernelKind::Unknown;
    }
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return KernelKind::Unknown;
    };
    for i in 0..phnum as usize {
        let ph = (phoff as usize).saturating_add(i * phentsize as usize);
        if u32_at(ph) != Some(PT_NOTE) {
            continue;
        }
        let (Some(off), Some(size)) = (u64_at(ph + 8), u64_at(ph + 32)) else {
            continue;
        };
        let (mut at, end) = (
            off as usize,
            (off.saturating_add(size) as usize).min(image.len()),
        );
        while at + 12 <= end {
            let (Some(namesz), Some(descsz), Some(kind)) =
                (u32_at(at), u32_at(at + 4), u32_at(at + 8))
            else {
                break;
            };
            let name = at + 12;
            let desc = name + (namesz as usize).next_multiple_of(4);
            if image.get(name..name + 4) == Some(b"Xen\0") && kind == XEN_ELFNOTE_PHYS32_ENTRY {
                let entry = match descsz {
                    4 => u32_at(desc).map(u64::from),
                    _ => u64_at(desc),
                };
                if let Some(entry) = entry {
                    return KernelKind::PvhElf { entry };
                }
            }
            at = desc.saturating_add((descsz as usize).next_multiple_of(4));
        }
    }
    KernelKind::ElfWithoutPvh
}

/// Loads the ELF `image` (named `name` in errors) into `mem`.
pub fn load_kernel(mem: &GuestMemory, image: &[u8], name: &str) -> Result<LoadedKernel> {
    if let KernelKind::BzImage { protocol } = kernel_kind(image) {
        return Err(VmmError::KernelBzImage {
            name: name.to_string(),
            protocol: format!("{}.{:02}", protocol.0, protocol.1),
        });
    }
    let end = check_segments(mem, image, name)?;
    let result = Elf::load(mem, None, &mut Cursor::new(image), None).map_err(|e| match e {
        LoaderError::Elf(ElfError::InvalidElfMagicNumber | ElfError::ReadElfHeader) => {
            VmmError::KernelNotElf(name.to_string())
        }
        other => VmmError::KernelBad {
            name: name.to_string(),
            reason: other.to_string(),
        },
    })?;
    match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(entry) => Ok(LoadedKernel { entry, end }),
        _ => Err(VmmError::KernelNoPvh(name.to_string())),
    }
}

/// Checks, before anything is copied, that every loadable segment lies in
/// RAM above the boot data; returns the end of the highest segment.
fn check_segments(mem: &GuestMemory, image: &[u8], name: &str) -> Result<u64> {
    let bad = |reason: String| VmmError::KernelBad {
        name: name.to_string(),
        reason,
    };
    let mut ehdr = Elf64_Ehdr::default();
    let ehdr_len = ehdr.as_slice().len();
    if image.len() < ehdr_len || &image[..4] != b"\x7fELF" {
        return Err(VmmError::KernelNotElf(name.to_string()));
    }
    ehdr.as_mut_slice().copy_from_slice(&image[..ehdr_len]);
    if ehdr.e_ident[4] != 2 {
        return Err(bad("not a 64-bit ELF (ELFCLASS64 expected)".into()));
    }
    if ehdr.e_type != ET_EXEC {
        return Err(bad(format!(
            "ELF type {} is not an executable image (a shared object or PIE program?); pass a vmlinux or the microguest",
            ehdr.e_type
        )));
    }
    let phdr_len = Elf64_Phdr::default().as_slice().len();
    let mut end = 0u64;
    for i in 0..ehdr.e_phnum as usize {
        let off = (ehdr.e_phoff as usize).saturating_add(i * phdr_len);
        let bytes = image
            .get(off..off.saturating_add(phdr_len))
            .ok_or_else(|| bad(format!("program header {i} lies past the end of the file")))?;
        let mut phdr = Elf64_Phdr::default();
        phdr.as_mut_slice().copy_from_slice(bytes);
        if phdr.p_type != PT_LOAD || phdr.p_filesz == 0 {
            continue;
        }
        if phdr.p_filesz > phdr.p_memsz
            || phdr.p_offset.saturating_add(phdr.p_filesz) > image.len() as u64
        {
            return Err(bad(format!("segment {i} points past the end of the file")));
        }
        if phdr.p_paddr < HIMEM_START {
            return Err(bad(format!(
                "segment {i} at {:#x} overlaps the boot data below 1 MiB",
                phdr.p_paddr
            )));
        }
        let seg_end = phdr
            .p_paddr
            .checked_add(phdr.p_memsz)
            .ok_or_else(|| bad(format!("segment {i} wraps around the address space")))?;
        end = end.max(seg_end);
    }
    if end == 0 {
        return Err(bad("no loadable segment".into()));
    }
    let low_ram_end = mem
        .find_region(GuestAddress(0))
        .map(|r| r.len())
        .unwrap_or(0);
    if end > low_ram_end {
        return Err(VmmError::MemoryTooSmall {
            name: name.to_string(),
            mem_mib: mem.iter().map(|r| r.len()).sum::<u64>() / MIB,
            end,
            need_mib: end.div_ceil(MIB) + 1,
        });
    }
    Ok(end)
}

/// Checks a command line against the PVH limit and builds it.
pub fn build_cmdline(line: &str) -> Result<Cmdline> {
    if line.len() + 1 > CMDLINE_MAX {
        return Err(VmmError::CmdlineTooLong {
            len: line.len(),
            max: CMDLINE_MAX - 1,
        });
    }
    let mut cmdline =
        Cmdline::new(CMDLINE_MAX).map_err(|e| VmmError::CmdlineInvalid(e.to_string()))?;
    if !line.is_empty() {
        cmdline
            .insert_str(line)
            .map_err(|e| VmmError::CmdlineInvalid(format!("{e}: {line:?}")))?;
    }
    Ok(cmdline)
}

/// Writes the command line, the memory map and `hvm_start_info`.
pub fn write_boot_data(mem: &GuestMemory, cmdline: &Cmdline) -> Result<()> {
    let setup = |e: String| VmmError::BootSetup(e);
    linux_loader::loader::load_cmdline(mem, GuestAddress(CMDLINE_ADDR), cmdline)
        .map_err(|e| setup(e.to_string()))?;

    let memmap = memory_map(mem);
    let mut start_info = hvm_start_info {
        magic: XEN_HVM_START_MAGIC,
        version: 1,
        cmdline_paddr: CMDLINE_ADDR,
        memmap_paddr: MEMMAP_ADDR,
        memmap_entries: memmap.len() as u32,
        ..Default::default()
    };
    start_info.nr_modules = 0;
    let mut params = BootParams::new(&start_info, GuestAddress(START_INFO_ADDR));
    params.set_sections(&memmap, GuestAddress(MEMMAP_ADDR));
    PvhBootConfigurator::write_bootparams::<GuestMemory>(&params, mem)
        .map_err(|e| setup(e.to_string()))
}

/// RAM below the EBDA, then RAM from 1 MiB in every region.
fn memory_map(mem: &GuestMemory) -> Vec<hvm_memmap_table_entry> {
    let ram = |addr: u64, size: u64| hvm_memmap_table_entry {
        addr,
        size,
        type_: E820_RAM,
        reserved: 0,
    };
    let mut map = vec![ram(0, EBDA_START)];
    for region in mem.iter() {
        let start = region.start_addr().0.max(HIMEM_START);
        let end = region.start_addr().0 + region.len();
        if end > start {
            map.push(ram(start, end - start));
        }
    }
    map.truncate(MEMMAP_MAX_ENTRIES);
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::create_guest_memory;

    #[test]
    fn microguest_has_a_pvh_entry() {
        let mem = create_guest_memory(16).unwrap();
        let k = load_kernel(&mem, crate::microguest::ELF, "microguest").unwrap();
        assert!(k.entry.0 >= HIMEM_START && k.entry.0 < k.end);
    }

    #[test]
    fn kernels_are_told_apart_by_their_headers() {
        let mem = create_guest_memory(16).unwrap();
        let k = load_kernel(&mem, crate::microguest::ELF, "microguest").unwrap();
        assert_eq!(
            kernel_kind(crate::microguest::ELF),
            KernelKind::PvhElf { entry: k.entry.0 }
        );
        // A bzImage: boot sector signature and the setup header's magic.
        let mut bz = vec![0u8; 0x400];
        bz[0x1fe..0x200].copy_from_slice(&[0x55, 0xaa]);
        bz[0x202..0x206].copy_from_slice(b"HdrS");
        bz[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        assert_eq!(kernel_kind(&bz), KernelKind::BzImage { protocol: (2, 15) });
        let err = load_kernel(&mem, &bz, "bzImage").unwrap_err().to_string();
        assert!(
            err.contains("is a bzImage (Linux boot protocol 2.15)"),
            "{err}"
        );
        // An ELF whose notes are not Xen's, and truncated headers.
        let mut elf = crate::microguest::ELF.to_vec();
        let at = elf.windows(4).position(|w| w == b"Xen\0").unwrap();
        elf[at..at + 4].copy_from_slice(b"Gnu\0");
        assert_eq!(kernel_kind(&elf), KernelKind::ElfWithoutPvh);
        for cut in [3, 16, 64, 200] {
            let k = kernel_kind(&crate::microguest::ELF[..cut]);
            assert!(
                k == KernelKind::Unknown || k == KernelKind::ElfWithoutPvh,
                "{cut}"
            );
        }
    }

    #[test]
    fn garbage_is_not_an_elf() {
        let mem = create_guest_memory(16).unwrap();
        let err = load_kernel(
            &mem,
            b"MZ this is not an ELF at all, not even close....................",
            "x",
        )
        .unwrap_err();
        assert!(matches!(err, VmmError::KernelNotElf(_)), "{err}");
    }

    #[test]
    fn cmdline_limit_is_enforced() {
        assert!(build_cmdline(&"a".repeat(CMDLINE_MAX - 1)).is_ok());
        assert!(matches!(
            build_cmdline(&"a".repeat(CMDLINE_MAX)),
            Err(VmmError::CmdlineTooLong { .. })
        ));
    }

    #[test]
    fn boot_data_is_where_the_guest_looks() {
        let mem = create_guest_memory(16).unwrap();
        write_boot_data(&mem, &build_cmdline("workload=hello").unwrap()).unwrap();
        let info: hvm_start_info =
            vm_memory::Bytes::read_obj(&mem, GuestAddress(START_INFO_ADDR)).unwrap();
        assert_eq!(info.magic, XEN_HVM_START_MAGIC);
        assert_eq!(info.memmap_entries, 2);
        let mut line = [0u8; 15];
        vm_memory::Bytes::read_slice(&mem, &mut line, GuestAddress(info.cmdline_paddr)).unwrap();
        assert_eq!(&line[..14], b"workload=hello");
        assert_eq!(line[14], 0);
    }
}
