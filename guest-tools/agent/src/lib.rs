//! `vmm-agent`: the Linux guest agent. It tells the VMM host which blocks of
//! the virtio disk hold which application file, in the hint protocol of the
//! `hint-proto` crate, over a virtio-console port.
//!
//! ```text
//! vmm-agent --port /dev/vport0p1 --file /data/app.db:sqlite \
//!           --file /data/doc.json:json:/records:id --interval 2
//! ```
//!
//! At start it sends, for every file: File (path, format, role), Schema (when
//! given), then Extents and Size. SQLite files get their `-journal` and `-wal`
//! siblings tracked too (Role::Journal / Role::Wal, `main_id` = the database's
//! id), whether or not they exist yet. Then every `--interval` seconds it
//! `stat`s each file and, when the file changed (device, inode, size, mtime or
//! ctime), maps it again with FIEMAP and sends Extents and/or Size for what
//! differs from what it last sent. A file that disappears gets an empty
//! Extents and `Size { exists: false }`. File ids: 1, 2, 3... in the order of
//! the `--file` arguments, an SQLite database followed by its journal and WAL.
//!
//! Extents FIEMAP marks as unknown, delayed, encoded, encrypted, inline, tail,
//! unaligned or unwritten are left out of the hints and reported on stderr
//! (see [`fiemap`]); more than `MAX_EXTENTS` after merging are cut, with a
//! warning. Main files must exist at start; they must be on a filesystem
//! with FIEMAP (ext4, xfs, btrfs without compression; not tmpfs).
//!
//! Errors: one line on stderr and exit status 2 for bad arguments, 1 for
//! anything else (port cannot be opened or written, file missing, no FIEMAP).
//!
//! # Static build
//!
//! For guest images, build a static binary (glibc's `libc.a` must be
//! installed); name the target explicitly so that the flag does not reach
//! build scripts and proc macros:
//!
//! ```text
//! RUSTFLAGS="-C target-feature=+crt-static" \
//!     cargo build --release -p vmm-agent --target x86_64-unknown-linux-gnu
//! ```
//!
//! The workspace's default flags are left alone.

pub mod agent;
pub mod cli;
pub mod fiemap;

pub use agent::{Agent, Tracked};
pub use cli::{Cli, FileSpec};

use std::io;
use std::path::PathBuf;

use hint_proto::{EncodeError, MAX_PATH};

/// What can go wrong.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The port cannot be opened.
    #[error("cannot open port {}: {source}", path.display())]
    PortOpen { path: PathBuf, source: io::Error },
    /// Writing to the port failed.
    #[error("cannot write to port {}: {source}", path.display())]
    PortWrite { path: PathBuf, source: io::Error },
    /// A tracked file cannot be read or mapped.
    #[error("{}: {source}", path.display())]
    File { path: PathBuf, source: io::Error },
    /// A tracked file is a directory, device, ...
    #[error("{}: not a regular file", path.display())]
    NotRegular { path: PathBuf },
    /// The same file named twice.
    #[error("{}: given more than once", path.display())]
    Duplicate { path: PathBuf },
    /// Hint paths are UTF-8.
    #[error("{}: path is not UTF-8", path.display())]
    NotUtf8 { path: PathBuf },
    /// Hint paths are at most MAX_PATH bytes.
    #[error("{}: path is longer than {MAX_PATH} bytes (with its -journal/-wal suffix)", path.display())]
    PathTooLong { path: PathBuf },
    /// The filesystem cannot tell where the file's blocks are.
    #[error("{}: the filesystem does not support FIEMAP (tmpfs?), so the file's disk blocks cannot be found", path.display())]
    NoFiemap { path: PathBuf },
    /// An encoder refused (a bug: inputs are checked before).
    #[error("cannot encode a hint: {0}")]
    Encode(#[from] EncodeError),
}

/// Runs the agent as the command line says: sends the hints, then (unless
/// `--once`) watches for changes forever. Warnings go to stderr.
pub fn run(cli: &Cli) -> Result<(), AgentError> {
    let port = std::fs::OpenOptions::new()
        .append(true)
        .open(&cli.port)
        .map_err(|source| AgentError::PortOpen {
            path: cli.port.clone(),
            source,
        })?;
    make_raw(&port).map_err(|source| AgentError::PortOpen {
        path: cli.port.clone(),
        source,
    })?;
    let mut agent = Agent::new(port, cli.port.clone(), &cli.files, cli.sector_offset)?;
    agent.poll()?;
    report(&mut agent);
    if cli.once {
        return Ok(());
    }
    loop {
        std::thread::sleep(cli.interval);
        agent.poll()?;
        report(&mut agent);
    }
}

/// A port that is a terminal (a virtio-console without multiport is
/// Linux's `/dev/hvc0`) gets raw mode: the line discipline would otherwise
/// turn each 0x0a of a binary hint into 0x0d 0x0a. Other files are left
/// alone.
fn make_raw(port: &std::fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let fd = port.as_raw_fd();
    // SAFETY: isatty/tcgetattr/tcsetattr on a descriptor we own, with a
    // termios value we own; no other memory is passed.
    unsafe {
        if libc::isatty(fd) != 1 {
            return Ok(());
        }
        let mut t: libc::termios = std::mem::zeroed();
        if libc::tcgetattr(fd, &mut t) != 0 {
            return Err(io::Error::last_os_error());
        }
        libc::cfmakeraw(&mut t);
        if libc::tcsetattr(fd, libc::TCSANOW, &t) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn report<W: io::Write>(agent: &mut Agent<W>) {
    for w in agent.take_warnings() {
        eprintln!("vmm-agent: warning: {w}");
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    /// Through a terminal in raw mode a hint's bytes arrive as written.
    #[test]
    fn a_terminal_port_passes_binary_unchanged() {
        let (mut master, mut slave) = (0, 0);
        // SAFETY: openpty writes two descriptors into our integers.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null(),
            )
        };
        assert_eq!(rc, 0, "{}", std::io::Error::last_os_error());
        // SAFETY: both descriptors are ours and open; the Files own them.
        let (mut master, mut slave) = unsafe {
            (
                std::fs::File::from_raw_fd(master),
                std::fs::File::from_raw_fd(slave),
            )
        };
        super::make_raw(&slave).unwrap();
        let hint = [0x56u8, 0x0a, 0x00, 0x0d, 0x0a, 0xff];
        slave.write_all(&hint).unwrap();
        let mut got = [0u8; 6];
        master.read_exact(&mut got).unwrap();
        assert_eq!(got, hint);
        // A plain file is left alone.
        super::make_raw(&tempfile::tempfile().unwrap()).unwrap();
    }
}
