//! Where a replay starts: an empty disk (the log carries its own base), or
//! a given image that must be a state the log passed through.
//!
//! For an image, its state checksum is compared with the log's barriers:
//! the replay starts after the latest barrier (at or before the target)
//! whose checksum equals the image's. So the original image starts after
//! the log's base, and an image replayed earlier to seq B starts after B
//! (a nearer base means less to replay). An image that matches no barrier
//! is refused: the log cannot say what it holds.
use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use changelog::disk_state::DiskState;
use changelog::log::RecordKind;
use changelog::LogBackend;
use introspection::tap::parse_base_mark;

use crate::ReplayError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Base {
    /// An all-zero disk of the size the log's base mark records.
    Empty,
    Image(PathBuf),
}

impl FromStr for Base {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "" => Err("empty --base: use 'empty' or an image path".into()),
            "empty" => Ok(Base::Empty),
            path => Ok(Base::Image(PathBuf::from(path))),
        }
    }
}

/// Writes the base into `out` (a new file) and says where replay starts.
pub fn prepare(
    logs: &dyn LogBackend,
    vm: &str,
    base: &Base,
    until: u64,
    out: &Path,
) -> Result<u64, ReplayError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ReplayError::Image { path, source }
    };
    match base {
        Base::Empty => {
            let mut size = None;
            for record in logs.records(vm, 1)? {
                let record = record?;
                if let RecordKind::Mark { name } = &record.kind {
                    if let Some(bytes) = parse_base_mark(name) {
                        size = Some(bytes);
                        break;
                    }
                }
            }
            let size = size.ok_or(ReplayError::NoBaseSize)?;
            File::create(out)
                .and_then(|f| f.set_len(size))
                .map_err(io(out))?;
            Ok(1)
        }
        Base::Image(image) => {
            std::fs::copy(image, out).map_err(io(image))?;
            let checksum = DiskState::from_image(out)
                .map_err(|e| ReplayError::ImageState {
                    path: image.clone(),
                    reason: e.to_string(),
                })?
                .checksum();
            let mut start = None;
            for record in logs.records(vm, 1)? {
                let record = record?;
                if record.seq > until {
                    break;
                }
                if let RecordKind::Barrier { disk_checksum, .. } = record.kind {
                    if disk_checksum == checksum {
                        start = Some(record.seq + 1);
                    }
                }
            }
            start.ok_or_else(|| ReplayError::BaseNotInLog(image.clone()))
        }
    }
}
