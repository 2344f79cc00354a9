//! The decoders this build has, each with a name and a version hash.
//!
//! A decoder is a format's decoding code run with a set of options. The
//! default decoder of each format (`sqlite`, `json`, `kv`, `leveldb`) is
//! what the recorder lifts with; the variants are the same code with an
//! option that changes what it sees, for what-if lifts (`vmm changes
//! --decoder NAME`) and comparisons (`--compare-decoder A --compare-decoder
//! B`):
//!
//! - `sqlite-nowal`: the main database file alone, its WAL not applied.
//!   Committed transactions still in the WAL are invisible; they show up
//!   when a checkpoint copies them into the file (what a reader that
//!   ignores `-wal` files sees).
//! - `sqlite-rowid`: the guest's key-column hints ignored: rowid tables
//!   keyed by rowid, `WITHOUT ROWID` tables by their PRIMARY KEY.
//! - `json-leaves`: the guest's record-path hint ignored: one change per
//!   changed leaf, keyed by its JSON pointer, instead of one per record.
//!
//! Version hash: BLAKE3 over the decoder's name, format and options and
//! the hash of its format's source files taken at build time (`build.rs`),
//! first 16 hex digits. Two builds with the same decoding code give the
//! same hash; any change to that code gives another. A change's provenance
//! names it (`crate::provenance`), and `NAME@VERSION` on the command line
//! must match the build's (a log lifted by other code says so rather than
//! being silently re-derived with this one).
use std::sync::{Arc, OnceLock};

use super::{sqlite::apply_wal, Change, DecodeError, DecodeLimits, Format, SchemaHints};

/// What a decoder does differently from its format's default.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecoderOptions {
    /// Use the guest's schema hints (SQLite key columns, JSON record path).
    pub schema_hints: bool,
    /// SQLite: apply the committed frames of the WAL.
    pub wal: bool,
}

impl DecoderOptions {
    const DEFAULT: DecoderOptions = DecoderOptions {
        schema_hints: true,
        wal: true,
    };

    /// `hints=on,wal=on`: the options as hashed into the version.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!("hints={},wal={}", on(self.schema_hints), on(self.wal))
    }
}

/// One decoder: a format's code and its options.
#[derive(Debug)]
pub struct DecoderSpec {
    pub name: &'static str,
    pub format: Format,
    pub options: DecoderOptions,
    /// One line: what it does.
    pub about: &'static str,
    source_hash: &'static str,
}

static DECODERS: [DecoderSpec; 7] = [
    DecoderSpec {
        name: "sqlite",
        format: Format::Sqlite,
        options: DecoderOptions::DEFAULT,
        about: "SQLite databases: rollback journal or WAL (committed frames applied), \
                rows keyed by the guest's key-column hints, else rowid",
        source_hash: env!("DECODER_SRC_SQLITE"),
    },
    DecoderSpec {
        name: "sqlite-nowal",
        format: Format::Sqlite,
        options: DecoderOptions {
            schema_hints: true,
            wal: false,
        },
        about: "sqlite without the WAL: only what checkpoints copied into the main file",
        source_hash: env!("DECODER_SRC_SQLITE"),
    },
    DecoderSpec {
        name: "sqlite-rowid",
        format: Format::Sqlite,
        options: DecoderOptions {
            schema_hints: false,
            wal: true,
        },
        about: "sqlite ignoring the guest's key-column hints: rows keyed by rowid",
        source_hash: env!("DECODER_SRC_SQLITE"),
    },
    DecoderSpec {
        name: "json",
        format: Format::Json,
        options: DecoderOptions::DEFAULT,
        about: "JSON documents: one change per record under the guest's record-path hint, \
                else per leaf",
        source_hash: env!("DECODER_SRC_JSON"),
    },
    DecoderSpec {
        name: "json-leaves",
        format: Format::Json,
        options: DecoderOptions {
            schema_hints: false,
            wal: true,
        },
        about: "json ignoring the record-path hint: one change per leaf, keyed by JSON pointer",
        source_hash: env!("DECODER_SRC_JSON"),
    },
    DecoderSpec {
        name: "kv",
        format: Format::Kv,
        options: DecoderOptions::DEFAULT,
        about: "the VMMKV001 append-only key/value log",
        source_hash: env!("DECODER_SRC_KV"),
    },
    DecoderSpec {
        name: "leveldb",
        format: Format::LevelDb,
        options: DecoderOptions::DEFAULT,
        about: "LevelDB databases (write-ahead logs, MANIFEST, tables) or a lone log",
        source_hash: env!("DECODER_SRC_LEVELDB"),
    },
];

/// Every decoder of this build, defaults first within each format.
pub fn all() -> &'static [DecoderSpec] {
    &DECODERS
}

/// The decoder the recorder lifts `format` with.
pub fn default_for(format: Format) -> &'static DecoderSpec {
    DECODERS
        .iter()
        .find(|d| d.format == format && d.options == DecoderOptions::DEFAULT)
        .expect("every format has a default decoder")
}

/// The decoder named `name`.
pub fn find(name: &str) -> Option<&'static DecoderSpec> {
    DECODERS.iter().find(|d| d.name == name)
}

/// Why a `NAME[@VERSION]` names no decoder of this build.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("no decoder named '{name}' (this build has: {known}; `vmm changes --list-decoders` lists them)")]
    Unknown { name: String, known: String },
    #[error("this build has {name}@{have}, not {name}@{asked}: decoding code of another version is not in this build")]
    OtherVersion {
        name: String,
        asked: String,
        have: String,
    },
}

/// The decoder `NAME` or `NAME@VERSION` names (the version must be this
/// build's; a prefix of at least 4 digits is enough).
pub fn lookup(text: &str) -> Result<&'static DecoderSpec, LookupError> {
    let (name, asked) = match text.split_once('@') {
        Some((n, v)) => (n, Some(v)),
        None => (text, None),
    };
    let spec = find(name).ok_or_else(|| LookupError::Unknown {
        name: name.to_string(),
        known: DECODERS
            .iter()
            .map(|d| d.name)
            .collect::<Vec<_>>()
            .join(", "),
    })?;
    if let Some(asked) = asked {
        let have = spec.version();
        if asked.len() < 4 || !have.starts_with(&asked.to_ascii_lowercase()) {
            return Err(LookupError::OtherVersion {
                name: name.to_string(),
                asked: asked.to_string(),
                have: have.to_string(),
            });
        }
    }
    Ok(spec)
}

impl DecoderSpec {
    /// The version hash (see the module doc), computed once.
    pub fn version(&self) -> &'static str {
        static VERSIONS: OnceLock<Vec<String>> = OnceLock::new();
        let all = VERSIONS.get_or_init(|| DECODERS.iter().map(version_of).collect());
        let i = DECODERS
            .iter()
            .position(|d| std::ptr::eq(d, self))
            .expect("specs live in DECODERS");
        &all[i]
    }

    /// `name@version`.
    pub fn id(&self) -> String {
        format!("{}@{}", self.name, self.version())
    }

    /// The image this decoder reads of a file: for SQLite with `wal`, the
    /// database with the WAL's committed frames applied.
    pub fn image(&self, bytes: &Arc<Vec<u8>>, wal: Option<&[u8]>) -> Result<Arc<Vec<u8>>, String> {
        match wal {
            Some(wal) if self.options.wal && self.format == Format::Sqlite => apply_wal(bytes, wal)
                .map(Arc::new)
                .map_err(|e| format!("WAL: {e}")),
            _ => Ok(bytes.clone()),
        }
    }

    /// The changes between two images of a file.
    pub fn diff(
        &self,
        old: &[u8],
        new: &[u8],
        hints: &SchemaHints,
        limits: &DecodeLimits,
    ) -> Result<Vec<Change>, DecodeError> {
        let none = SchemaHints::default();
        let hints = if self.options.schema_hints {
            hints
        } else {
            &none
        };
        super::diff_with(self.format, old, new, hints, limits)
    }
}

fn version_of(d: &DecoderSpec) -> String {
    let mut h = blake3::Hasher::new_derive_key("vmm decoder version v1");
    for part in [
        d.name,
        d.format.as_str(),
        &d.options.describe(),
        d.source_hash,
    ] {
        h.update(part.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..16].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_versions_and_lookup() {
        for f in [Format::Sqlite, Format::Json, Format::Kv, Format::LevelDb] {
            assert_eq!(default_for(f).name, f.as_str());
        }
        let s = lookup("sqlite").unwrap();
        let v = s.version();
        assert_eq!(v.len(), 16);
        // Same code, other options: another version.
        assert_ne!(v, lookup("sqlite-nowal").unwrap().version());
        assert_eq!(
            lookup(&format!("sqlite@{}", &v[..6])).unwrap().name,
            "sqlite"
        );
        let e = lookup("sqlite@0000000000").unwrap_err().to_string();
        assert!(e.contains(&format!("this build has sqlite@{v}")), "{e}");
        let e = lookup("xml").unwrap_err().to_string();
        assert!(
            e.contains("no decoder named 'xml'") && e.contains("json-leaves"),
            "{e}"
        );
        let names: std::collections::BTreeSet<_> = all().iter().map(|d| d.name).collect();
        assert_eq!(names.len(), all().len());
    }

    #[test]
    fn options_change_what_is_decoded() {
        let old = br#"{"records":[{"id":1,"v":"a"}]}"#;
        let new = br#"{"records":[{"id":1,"v":"b"}]}"#;
        let hints = crate::lift::parse_schema(Format::Json, "/records:id");
        let limits = DecodeLimits::default();
        let per_record = lookup("json")
            .unwrap()
            .diff(old, new, &hints, &limits)
            .unwrap();
        let per_leaf = lookup("json-leaves")
            .unwrap()
            .diff(old, new, &hints, &limits)
            .unwrap();
        assert_eq!(
            (
                per_record[0].collection.as_str(),
                per_record[0].key.as_str()
            ),
            ("/records", "1")
        );
        assert_eq!(per_leaf[0].key, "/records/0/v", "{per_leaf:?}");
    }
}
