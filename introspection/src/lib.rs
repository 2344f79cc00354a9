//! What the host learns about the guest's files.
//!
//! Owns: the block tap (the recorder: every completed guest write becomes a
//! change-log record and its blocks go to the store; hinted files are
//! lifted into semantic changes at barriers), the guest's file table from
//! its hints, the semantic decoders (sqlite incl. WAL, json, LevelDB, kv)
//! and audit queries over the semantic change log.
//!
//! Does not own: the virtio devices that produce writes (`vmm`), the change
//! log's format and the record directory (`changelog`), the content store
//! (`store`), or replay (`replay`).
//!
//! The modules:
//! - [`tap`]: the block tap ([`BlockTap`]), writes in, log records and
//!   semantic changes out.
//! - [`tap_recovery`]: at a tap's open, cutting back records a failed or
//!   crashed run left after the log's sync point that name missing blocks.
//! - [`decode`]: semantic decoders: two versions of a file in, row/key-level
//!   [`Change`]s out.
//! - [`semantic`]: the semantic change event ([`SemanticChange`]) and the
//!   decode-error event ([`DecodeErrorEvent`]).
//! - [`fsmap`]: files found without an agent: watched files mapped to
//!   disk blocks from the ext4 filesystem itself (`rsext4`), at barriers.
//! - [`lift`]: the guest's file table from its hints, and lifting hinted
//!   files into semantic changes at barriers.
//! - [`provenance`]: how each semantic change was derived (decoder and
//!   version hash, hashes of the blocks read and of the output).
//! - [`relift`]: lifting a recorded log again from the stored blocks, with
//!   the recorder's decoders or others (what-if, comparisons), and
//!   re-deriving one recorded change to check its provenance.
//! - [`query`]: audit queries over the semantic change log (changes,
//!   history, net change between two points), damage-tolerant.

pub mod decode;
pub mod fsmap;
pub mod lift;
pub mod provenance;
pub mod query;
pub mod relift;
pub mod semantic;
pub mod tap;
pub mod tap_recovery;

pub use semantic::{Change, DecodeErrorEvent, Format, Op, SemanticChange, Source};
pub use tap::{BlockTap, TapError, TapOpenReport, TapStats};
