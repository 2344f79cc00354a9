//! Where a machine's kernel comes from and its serial output goes.
use std::io::Write;
use std::sync::{Arc, Mutex};

use super::{KernelSource, SerialOutput};
use crate::devices::serial::SerialOut;
use crate::error::{Result, VmmError};

pub(super) fn read_kernel(
    kernel: &KernelSource,
) -> Result<(std::borrow::Cow<'static, [u8]>, String)> {
    match kernel {
        KernelSource::Microguest => Ok((crate::microguest::ELF.into(), "microguest".into())),
        KernelSource::File(path) => {
            let bytes = std::fs::read(path).map_err(|source| VmmError::KernelRead {
                path: path.clone(),
                source,
            })?;
            Ok((bytes.into(), path.display().to_string()))
        }
    }
}

pub(super) fn open_serial(serial: &SerialOutput) -> Result<SerialOut> {
    Ok(match serial {
        SerialOutput::Stdout => Box::new(std::io::stdout()),
        SerialOutput::File(path) => {
            Box::new(
                std::fs::File::create(path).map_err(|source| VmmError::SerialOutput {
                    path: path.clone(),
                    source,
                })?,
            )
        }
        SerialOutput::Capture(buf) => Box::new(CaptureWriter(buf.clone())),
    })
}

struct CaptureWriter(Arc<Mutex<Vec<u8>>>);

impl Write for CaptureWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
