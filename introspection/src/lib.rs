//! What the host learns about the guest.
//!
//! Owns: the block tap (every completed guest write becomes a change-log
//! record), the change-log format, guest hints, the semantic decoders
//! (sqlite, json, kv) and audit queries over the semantic change log.
//!
//! Does not own: the virtio devices that produce writes (`vmm`), the content
//! store that keeps block data (`snapshot`), or replay (`replay`).
