//! The file table across snapshots: saved into a manifest, restored into
//! the recorder of the restored VM (or clone), whose guest will not hint
//! its files again.
//!
//! Restoring has two halves: the table itself ([`FileTable::from_guest_files`],
//! validated by the same rules as live hints), and the decoder's baseline
//! ([`Lifter::baseline`] then [`Differ::seed`]): the hinted files as the
//! restored disk holds them, so that the first barrier after the restore
//! reports only what changed since the snapshot, not every row as new.
use std::collections::BTreeSet;

use hint_proto::{Extent, Format as WireFormat, Hint, Role};
use snapshot::{GuestExtent, GuestFile};

use super::{Differ, FileTable, HintError, Lifter, ReadDisk, Version};

fn role_name(role: Role) -> &'static str {
    role.name()
}

fn role_of(name: &str) -> Option<Role> {
    [Role::Main, Role::Journal, Role::Wal]
        .into_iter()
        .find(|r| r.name() == name)
}

impl FileTable {
    /// The table as a manifest stores it.
    pub fn to_guest_files(&self) -> Vec<GuestFile> {
        self.files
            .iter()
            .map(|(id, f)| GuestFile {
                id: *id,
                main_id: f.main_id,
                path: f.path.clone(),
                format: f.format.as_str().to_string(),
                role: role_name(f.role).to_string(),
                extents: f
                    .extents
                    .iter()
                    .map(|e| GuestExtent {
                        file_offset: e.file_offset,
                        sector: e.sector,
                        len: e.len,
                    })
                    .collect(),
                size: f.size,
                exists: f.exists,
                schema: f.schema_text.clone(),
            })
            .collect()
    }

    /// The table a manifest saved, for a disk of `disk_bytes`, checked by
    /// the rules live hints follow (a damaged or foreign table is refused,
    /// naming the file).
    pub fn from_guest_files(disk_bytes: u64, files: &[GuestFile]) -> Result<FileTable, HintError> {
        let mut table = FileTable::new(disk_bytes);
        for f in files {
            let format =
                WireFormat::from_name(&f.format).ok_or_else(|| HintError::UnknownFormat {
                    file_id: f.id,
                    path: f.path.clone(),
                    format: f.format.clone(),
                })?;
            let role = role_of(&f.role).ok_or_else(|| HintError::UnknownRole {
                file_id: f.id,
                path: f.path.clone(),
                role: f.role.clone(),
            })?;
            table.apply(&Hint::File {
                file_id: f.id,
                main_id: f.main_id,
                format,
                role,
                path: &f.path,
            })?;
            let extents = f
                .extents
                .iter()
                .map(|e| Extent {
                    file_offset: e.file_offset,
                    sector: e.sector,
                    len: e.len,
                })
                .collect();
            table.set_extents(f.id, extents)?;
            if let Some(text) = &f.schema {
                table.apply(&Hint::Schema {
                    file_id: f.id,
                    text,
                })?;
            }
            let file = table.file_mut(f.id)?;
            file.size = f.size;
            file.exists = f.exists;
        }
        Ok(table)
    }
}

impl Lifter {
    /// A lifter for a restored VM, with the table its snapshot saved.
    pub fn restored(table: FileTable) -> Lifter {
        Lifter {
            table,
            cache: Default::default(),
        }
    }

    /// Every main file's version as the disk holds it now, to seed a
    /// [`Differ`] with; a file that is not at a consistent point (a hot
    /// journal) or cannot be read comes back as an `Err` saying so.
    pub fn baseline(&mut self, read: ReadDisk<'_>) -> Vec<Version> {
        let all: BTreeSet<u32> = self.table.files.keys().copied().collect();
        let mains: Vec<(u32, super::FileInfo)> = self
            .table
            .files()
            .filter(|(_, f)| f.role == Role::Main && f.exists && !f.extents.is_empty())
            .map(|(id, f)| (*id, f.clone()))
            .collect();
        let none = BTreeSet::new();
        mains
            .into_iter()
            .map(|(id, main)| {
                let bytes = match self.current_version(id, &main, &none, &all, read) {
                    Ok(Some(b)) => Ok(b),
                    Ok(None) => Err("its journal is hot at the snapshot (mid-transaction)".into()),
                    Err(e) => Err(format!("reading the file from the disk: {e}")),
                };
                Version {
                    id,
                    file: main.path.clone(),
                    format: main.format,
                    schema: main.schema.clone(),
                    bytes,
                    at: None,
                }
            })
            .collect()
    }
}

impl Differ {
    /// Takes `versions` (from [`Lifter::baseline`]) as each file's last
    /// state without reporting changes. A file without a usable version
    /// is marked unknown: its next good version becomes its baseline, with
    /// a decode-error event saying that changes up to it are unknown.
    /// Returns the files left unknown and why.
    pub fn seed(&mut self, versions: Vec<Version>) -> Vec<(String, String)> {
        let mut unknown = Vec::new();
        for v in versions {
            let Some(decoder) = self.decoder(v.format) else {
                continue;
            };
            let image = v
                .bytes
                .as_ref()
                .map_err(String::clone)
                .and_then(|b| Differ::image(decoder, &v, b));
            match image {
                Ok((image, base)) => {
                    self.remember(v.id, image, base);
                }
                Err(reason) => {
                    self.unseeded.insert(v.id);
                    unknown.push((v.file, reason));
                }
            }
        }
        unknown
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(
        t: &mut FileTable,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, hint_proto::EncodeError>,
    ) {
        let mut buf = [0u8; 256];
        let n = encode(&mut buf).unwrap();
        let (h, _) = hint_proto::decode(&buf[..n]).unwrap();
        t.apply(&h).unwrap();
    }

    fn table() -> FileTable {
        let mut t = FileTable::new(1 << 20);
        apply(&mut t, |b| {
            hint_proto::encode_file(1, 1, WireFormat::Sqlite, Role::Main, "app.db", b)
        });
        let ext = [Extent {
            file_offset: 0,
            sector: 8,
            len: 8192,
        }];
        apply(&mut t, |b| hint_proto::encode_extents(1, &ext, b));
        apply(&mut t, |b| hint_proto::encode_size(1, 4096, true, b));
        apply(&mut t, |b| hint_proto::encode_schema(1, "t=a,b", b));
        apply(&mut t, |b| {
            hint_proto::encode_file(2, 1, WireFormat::Sqlite, Role::Journal, "app.db-journal", b)
        });
        t
    }

    /// The hint `encode` writes, applied to `t`: the error, if refused.
    fn refused(
        t: &mut FileTable,
        encode: impl FnOnce(&mut [u8]) -> Result<usize, hint_proto::EncodeError>,
    ) -> HintError {
        let mut buf = [0u8; 256];
        let n = encode(&mut buf).unwrap();
        let (h, _) = hint_proto::decode(&buf[..n]).unwrap();
        t.apply(&h).expect_err("the hint is refused")
    }

    #[test]
    fn a_refused_hint_names_its_file_and_changes_nothing() {
        let mut t = table();
        let before = t.to_guest_files();
        let e = refused(&mut t, |b| hint_proto::encode_size(9, 1, true, b));
        assert_eq!(e, HintError::UnknownFile(9));
        assert_eq!(
            e.to_string(),
            "hint for file 9, which no File hint declared"
        );
        let past = [Extent {
            file_offset: 0,
            sector: 2048,
            len: 4096,
        }];
        let e = refused(&mut t, |b| hint_proto::encode_extents(1, &past, b));
        assert_eq!(
            e.to_string(),
            "file 1: extent at sector 2048 of 4096 bytes lies outside the 1048576-byte disk"
        );
        assert_eq!(t.to_guest_files(), before);
    }

    #[test]
    fn a_table_survives_the_manifest_round_trip() {
        let t = table();
        let saved = t.to_guest_files();
        assert_eq!(saved.len(), 2);
        assert_eq!(saved[0].schema.as_deref(), Some("t=a,b"));
        let back = FileTable::from_guest_files(1 << 20, &saved).unwrap();
        assert_eq!(back.to_guest_files(), saved);
        let f = back.get(1).unwrap();
        assert_eq!(f.schema.key_columns["t"], vec!["a", "b"]);
        assert_eq!((f.size, f.exists, f.extents.len()), (Some(4096), true, 1));
    }

    #[test]
    fn a_saved_table_is_checked_like_hints() {
        let mut saved = table().to_guest_files();
        // On a smaller disk the extent lies outside it.
        let e = FileTable::from_guest_files(4096, &saved).err().unwrap();
        assert!(
            matches!(
                e,
                HintError::ExtentOutside {
                    disk_bytes: 4096,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("outside the 4096-byte disk"), "{e}");
        saved[1].extents = saved[0].extents.clone();
        let e = FileTable::from_guest_files(1 << 20, &saved).err().unwrap();
        assert!(
            matches!(
                e,
                HintError::ExtentOverlap {
                    file_id: 2,
                    other_id: 1,
                    ..
                }
            ),
            "{e:?}"
        );
        saved[1].role = "sidecar".into();
        let e = FileTable::from_guest_files(1 << 20, &saved).err().unwrap();
        assert_eq!(
            e.to_string(),
            "saved file 2 (app.db-journal): unknown role \"sidecar\""
        );
    }

    fn json(id: u32, bytes: Result<&[u8], &str>) -> Version {
        Version {
            id,
            file: format!("f{id}.json"),
            format: crate::semantic::Format::Json,
            schema: Default::default(),
            bytes: bytes
                .map(|b| super::super::FileBytes {
                    bytes: std::sync::Arc::new(b.to_vec()),
                    wal: None,
                    reads: Vec::new(),
                })
                .map_err(String::from),
            at: None,
        }
    }

    #[test]
    fn a_seeded_differ_reports_only_later_changes_and_unknown_states_honestly() {
        let mut d = Differ::default();
        let unknown = d.seed(vec![
            json(1, Ok(br#"{"a":1}"#)),
            json(2, Err("its journal is hot")),
        ]);
        assert_eq!(
            unknown,
            vec![("f2.json".into(), "its journal is hot".into())]
        );
        let out = d.diff(vec![json(1, Ok(br#"{"a":2}"#)), json(2, Ok(br#"{"b":1}"#))]);
        assert_eq!(out.len(), 2);
        match &out[0] {
            super::super::Lifted::Changes { changes, .. } => {
                assert_eq!(changes.len(), 1, "only a changed: {changes:?}");
                assert_eq!(changes[0].op, crate::semantic::Op::Update);
            }
            _ => panic!("f1 has a change"),
        }
        match &out[1] {
            super::super::Lifted::Error { reason, .. } => {
                assert!(reason.contains("unknown"), "{reason}")
            }
            _ => panic!("f2's first state is a baseline, not inserts"),
        }
        // From then on f2 is diffed normally.
        let out = d.diff(vec![json(2, Ok(br#"{"b":2}"#))]);
        assert!(
            matches!(&out[0], super::super::Lifted::Changes { changes, .. } if changes.len() == 1)
        );
    }
}
