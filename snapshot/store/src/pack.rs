//! Pack files: opening, appending stored values, reading and verifying
//! objects, and the zstd step.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Cursor;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{io_err, Result, StoreError};
use super::format::{
    decode_header_version, encode_header, pack_file_name, EntryHeader, Loc, ENTRY_LEN, FLAG_ZSTD,
    HEADER_LEN, PACK_MAGIC, PACK_VERSION_V1,
};
use super::index::read_upto;
use super::ObjectId;

/// The open pack files of one store handle.
pub(crate) struct PackFiles {
    dir: PathBuf,
    readers: HashMap<u32, Arc<File>>,
    writer: Option<(u32, File)>,
}

impl PackFiles {
    pub fn new(dir: PathBuf) -> PackFiles {
        PackFiles {
            dir,
            readers: HashMap::new(),
            writer: None,
        }
    }

    pub fn path(&self, n: u32) -> PathBuf {
        self.dir.join(pack_file_name(n))
    }

    /// Numbers of the pack files in the directory, sorted.
    pub fn on_disk(&self) -> Result<Vec<u32>> {
        let rd = std::fs::read_dir(&self.dir).map_err(io_err("list", &self.dir))?;
        let mut out = Vec::new();
        for e in rd {
            let e = e.map_err(io_err("list", &self.dir))?;
            let name = e.file_name();
            let n = name
                .to_str()
                .and_then(|n| n.strip_suffix(".pack"))
                .filter(|n| n.len() == 8)
                .and_then(|n| n.parse::<u32>().ok());
            if let Some(n) = n {
                out.push(n);
            }
        }
        out.sort_unstable();
        Ok(out)
    }

    /// A read handle on pack `n`, its header checked on first open.
    pub fn reader(&mut self, n: u32) -> Result<Arc<File>> {
        if let Some(f) = self.readers.get(&n) {
            return Ok(f.clone());
        }
        let path = self.path(n);
        let f = File::open(&path).map_err(io_err("open pack", &path))?;
        check_header(&f, &path, n)?;
        let f = Arc::new(f);
        self.readers.insert(n, f.clone());
        Ok(f)
    }

    /// Opens pack `n` for appending (creating it, or rewriting a header
    /// that a crash left incomplete) and returns its current length, or
    /// [`PACK_FULL`] for a version 1 pack (never appended to: its values
    /// have no entry headers, so the caller starts the next pack).
    /// Call only with the writers' lock held.
    pub fn open_writer(&mut self, n: u32) -> Result<u64> {
        if self.writer.as_ref().map(|(w, _)| *w) != Some(n) {
            let path = self.path(n);
            let f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(io_err("open pack for writing", &path))?;
            self.writer = Some((n, f));
        }
        let (_, f) = self.writer.as_ref().expect("just set");
        let path = self.path(n);
        let len = f.metadata().map_err(io_err("stat", &path))?.len();
        if len < HEADER_LEN {
            // New, or created by a writer that died before its header was
            // complete: no index record can point into it.
            f.set_len(0).map_err(io_err("truncate", &path))?;
            f.write_all_at(&encode_header(PACK_MAGIC, n), 0)
                .map_err(io_err("write", &path))?;
            return Ok(HEADER_LEN);
        }
        if check_header(f, &path, n)? == PACK_VERSION_V1 {
            return Ok(PACK_FULL);
        }
        Ok(len)
    }

    /// Writes `bytes` at `offset` of the pack opened by [`Self::open_writer`].
    pub fn write_at(&self, n: u32, bytes: &[u8], offset: u64) -> Result<()> {
        let (w, f) = self.writer.as_ref().expect("open_writer first");
        assert_eq!(*w, n, "write to the pack opened for writing");
        f.write_all_at(bytes, offset)
            .map_err(io_err("write", self.path(n)))
    }
}

/// What [`PackFiles::open_writer`] answers for a pack that must not grow.
pub(crate) const PACK_FULL: u64 = u64::MAX;

/// Checks pack `n`'s header; returns its format version.
pub(crate) fn check_header(f: &File, path: &Path, n: u32) -> Result<u32> {
    let mut h = [0u8; HEADER_LEN as usize];
    let got = read_upto(f, &mut h, 0).map_err(io_err("read", path))?;
    let bad = |detail: String| StoreError::BadHeader {
        path: path.to_path_buf(),
        detail,
    };
    let (version, found) = decode_header_version(&h[..got], PACK_MAGIC).map_err(bad)?;
    if found != n {
        return Err(bad(format!("header says pack {found}, file name says {n}")));
    }
    Ok(version)
}

/// Appends one pack entry for `id` (its header, then the stored form of
/// `data`: compressed at `level`, or as it is for `None`) to `out`;
/// returns the stored length and flags. The value starts [`ENTRY_LEN`]
/// bytes after where the entry starts.
pub(crate) fn append_entry(
    level: Option<i32>,
    id: &ObjectId,
    data: &[u8],
    out: &mut Vec<u8>,
) -> (usize, u8) {
    let start = out.len();
    out.extend_from_slice(&[0; ENTRY_LEN]);
    let (len, flags) = match level {
        Some(level) => append_stored(level, data, out),
        None => {
            out.extend_from_slice(data);
            (data.len(), 0)
        }
    };
    let h = EntryHeader {
        id: *id,
        raw_len: data.len() as u32,
        stored_len: len as u32,
        flags,
    };
    out[start..start + ENTRY_LEN].copy_from_slice(&h.encode());
    (len, flags)
}

/// Reads object `id` stored at `loc` in `file` and checks its BLAKE3.
pub(crate) fn read_object(file: &File, path: &Path, id: &ObjectId, loc: Loc) -> Result<Vec<u8>> {
    if loc.is_zero() {
        return Ok(vec![0; loc.raw_len as usize]);
    }
    let mut stored = vec![0u8; loc.stored_len as usize];
    let got = read_upto(file, &mut stored, loc.offset).map_err(io_err("read", path))?;
    if got < stored.len() {
        return Err(short_value(path, id, loc, got));
    }
    check_value(path, id, loc, stored)
}

/// The error for a value of which the pack holds only `got` bytes.
pub(crate) fn short_value(path: &Path, id: &ObjectId, loc: Loc, got: usize) -> StoreError {
    corrupt(path, id, loc)(format!(
        "the pack ends {got} bytes into the {}-byte value",
        loc.stored_len
    ))
}

fn corrupt<'a>(path: &'a Path, id: &'a ObjectId, loc: Loc) -> impl Fn(String) -> StoreError + 'a {
    move |detail| StoreError::Corrupt {
        id: *id,
        path: path.to_path_buf(),
        offset: loc.offset,
        detail,
    }
}

/// Object `id` from its `stored` bytes (read from `loc` in the pack at
/// `path`): decompressed if need be, its length and BLAKE3 checked.
pub(crate) fn check_value(
    path: &Path,
    id: &ObjectId,
    loc: Loc,
    stored: Vec<u8>,
) -> Result<Vec<u8>> {
    let corrupt = corrupt(path, id, loc);
    let raw = if loc.is_zstd() {
        decompress(&stored, loc.raw_len as usize)
            .map_err(|e| corrupt(format!("zstd frame does not decode: {e}")))?
    } else {
        stored
    };
    if raw.len() != loc.raw_len as usize {
        return Err(corrupt(format!(
            "decoded to {} bytes, the index says {}",
            raw.len(),
            loc.raw_len
        )));
    }
    let actual = ObjectId::of(&raw);
    if actual != *id {
        return Err(corrupt(format!("its bytes hash to {actual}")));
    }
    Ok(raw)
}

thread_local! {
    static COMPRESSOR: RefCell<Option<(i32, zstd::bulk::Compressor<'static>)>> =
        const { RefCell::new(None) };
    static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { RefCell::new(None) };
}

/// Appends the stored form of `data` to `out`: a zstd frame at `level` if
/// that is strictly smaller than `data`, else `data` itself. Returns the
/// stored length and flags.
pub(crate) fn append_stored(level: i32, data: &[u8], out: &mut Vec<u8>) -> (usize, u8) {
    let start = out.len();
    // Room for exactly data.len() bytes: a frame that does not fit is not
    // smaller, and zstd gives up on it.
    out.reserve_exact(data.len());
    let compressed = COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.as_ref().map(|(l, _)| *l) != Some(level) {
            *c = zstd::bulk::Compressor::new(level).ok().map(|z| (level, z));
        }
        let (_, z) = c.as_mut()?;
        let mut cur = Cursor::new(&mut *out);
        cur.set_position(start as u64);
        z.compress_to_buffer(data, &mut cur).ok()
    });
    match compressed {
        Some(n) if n < data.len() && out.len() == start + n => (n, FLAG_ZSTD),
        _ => {
            // Not smaller, or zstd failed: store the bytes as they are.
            out.truncate(start);
            out.extend_from_slice(data);
            (data.len(), 0)
        }
    }
}

pub(crate) fn decompress(frame: &[u8], raw_len: usize) -> std::io::Result<Vec<u8>> {
    DECOMPRESSOR.with(|d| {
        let mut d = d.borrow_mut();
        if d.is_none() {
            *d = Some(zstd::bulk::Decompressor::new()?);
        }
        d.as_mut().expect("just set").decompress(frame, raw_len)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_form_is_never_larger() {
        let mut out = vec![1, 2, 3];
        let text = b"hello hello hello hello hello hello hello hello".repeat(80);
        let (n, flags) = append_stored(1, &text, &mut out);
        assert_eq!(flags, FLAG_ZSTD);
        assert!(n < text.len() / 10, "{n}");
        assert_eq!(out.len(), 3 + n);
        assert_eq!(decompress(&out[3..], text.len()).unwrap(), text);

        let noise: Vec<u8> = (0..4096u32)
            .flat_map(|i| blake3::hash(&i.to_le_bytes()).as_bytes()[..1].to_vec())
            .collect();
        let (n, flags) = append_stored(1, &noise, &mut out);
        assert_eq!((n, flags), (4096, 0));
        assert_eq!(&out[out.len() - 4096..], &noise[..]);
    }
}
