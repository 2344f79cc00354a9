//! The relift and verify seams on a log written here (no VM): a JSON file
//! rewritten at two barriers.
use changelog::disk_state::{hash_block, DiskState};
use changelog::log::{BarrierKind, RecordKind};
use changelog::recording::RecordDir;
use changelog::LogWriter;
use hint_proto::{Extent, Format as WireFormat, Role};

use super::*;
use crate::decode::registry;

const DISK: u64 = 1 << 20;

fn hint(encode: impl FnOnce(&mut [u8]) -> Result<usize, hint_proto::EncodeError>) -> RecordKind {
    let mut buf = [0u8; 256];
    let n = encode(&mut buf).unwrap();
    RecordKind::Hint {
        message: buf[..n].to_vec(),
    }
}

fn block(text: &str) -> Vec<u8> {
    let mut b = text.as_bytes().to_vec();
    b.resize(BLOCK as usize, 0);
    b
}

/// A record directory with VM `vm0`: doc.json at block 2, written at two
/// barriers; returns it and the seqs of the barriers.
fn recorded(tmp: &std::path::Path) -> (RecordDir, Vec<u64>) {
    let dir = RecordDir::new(tmp);
    let store = dir.open_store().unwrap();
    let (mut log, _) = LogWriter::open(dir.log_dir("vm0"), "vm0").unwrap();
    let mut state = DiskState::zeroed(DISK / BLOCK);
    log.append(RecordKind::Mark {
        name: format!("vmm:base bytes={DISK}"),
    })
    .unwrap();
    log.append(hint(|b| {
        hint_proto::encode_file(1, 1, WireFormat::Json, Role::Main, "doc.json", b)
    }))
    .unwrap();
    let ext = [Extent {
        file_offset: 0,
        sector: 16,
        len: BLOCK,
    }];
    log.append(hint(|b| hint_proto::encode_extents(1, &ext, b)))
        .unwrap();
    log.append(hint(|b| hint_proto::encode_schema(1, "/r:id", b)))
        .unwrap();
    let mut barriers = Vec::new();
    for doc in [
        r#"{"r":[{"id":1,"v":"a"}]}"#,
        r#"{"r":[{"id":1,"v":"b"},{"id":2,"v":"c"}]}"#,
    ] {
        let data = block(doc);
        store.put(&data).unwrap();
        let h = hash_block(&data);
        state.apply_block_write(16, &[h]).unwrap();
        log.append(RecordKind::BlockWrite {
            sector: 16,
            len: BLOCK as u32,
            blocks: vec![h],
        })
        .unwrap();
        barriers.push(
            log.append(RecordKind::Barrier {
                kind: BarrierKind::Flush,
                disk_checksum: state.checksum(),
            })
            .unwrap(),
        );
    }
    store.sync().unwrap();
    log.sync().unwrap();
    (dir, barriers)
}

/// Appends `events` to vm0's log as the recorder would.
fn append(dir: &RecordDir, events: &[SemanticEvent]) {
    let (mut log, _) = LogWriter::open(dir.log_dir("vm0"), "vm0").unwrap();
    for e in events {
        let json = serde_json::to_string(e).unwrap();
        log.append(RecordKind::Semantic { json }).unwrap();
    }
    log.sync().unwrap();
}

#[test]
fn a_relifted_step_verifies_and_an_altered_change_does_not() {
    let tmp = tempfile::tempdir().unwrap();
    let (dir, barriers) = recorded(tmp.path());
    let store = dir.open_store().unwrap();
    let json = registry::lookup("json").unwrap();
    let leaves = registry::lookup("json-leaves").unwrap();
    let mut lists = relift(
        &dir,
        &store,
        "vm0",
        &[json, leaves],
        DecodeLimits::default(),
    )
    .unwrap();
    let per_leaf = lists.pop().unwrap();
    let events = lists.pop().unwrap();
    // Per record: 1 insert, then 1 update and 1 insert; per leaf, more.
    let keys: Vec<(u64, String)> = events
        .iter()
        .map(|e| match e {
            SemanticEvent::Change(c) => (c.seq, c.key.clone()),
            SemanticEvent::DecodeError(e) => panic!("{e}"),
        })
        .collect();
    let (b1, b2) = (barriers[0], barriers[1]);
    assert_eq!(keys, [(b1, "1".into()), (b2, "1".into()), (b2, "2".into())]);
    assert!(per_leaf.len() > events.len(), "{}", per_leaf.len());
    let SemanticEvent::Change(second) = &events[1] else {
        unreachable!()
    };
    let p = second.provenance.as_deref().unwrap();
    assert_eq!(p.base.as_ref().unwrap().seq, Some(b1));
    assert_eq!((p.reads.blocks, p.decoder.as_str()), (1, "json"));

    // Logged as the recorder logs them, every step verifies.
    append(&dir, &events);
    for seq in [b1, b2] {
        let checks =
            verify_change(&dir, &store, "vm0", seq, None, DecodeLimits::default()).unwrap();
        assert_eq!(checks.len(), 1);
        assert_eq!(checks[0].reads.len(), 1);
    }
    let e = verify_change(
        &dir,
        &store,
        "vm0",
        b2,
        Some("other.json"),
        DecodeLimits::default(),
    )
    .unwrap_err();
    assert!(matches!(e, VerifyError::NoChange { .. }), "{e}");

    // A second log whose change was altered before it was logged.
    let tmp2 = tempfile::tempdir().unwrap();
    let (dir2, _) = recorded(tmp2.path());
    let mut altered = events.clone();
    if let SemanticEvent::Change(c) = &mut altered[2] {
        c.after = Some(serde_json::json!({"id": 2, "v": "forged"}));
    }
    append(&dir2, &altered);
    let store2 = dir2.open_store().unwrap();
    let e = verify_change(&dir2, &store2, "vm0", b2, None, DecodeLimits::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the change /r[2] as stored hashes to"),
        "{e}"
    );
    // One left out of the log: the step no longer re-derives whole.
    let tmp3 = tempfile::tempdir().unwrap();
    let (dir3, _) = recorded(tmp3.path());
    append(&dir3, &events[..2]);
    let store3 = dir3.open_store().unwrap();
    let e = verify_change(&dir3, &store3, "vm0", b2, None, DecodeLimits::default()).unwrap_err();
    assert!(
        e.to_string()
            .contains("the decoder re-derives 2 changes (step hash"),
        "{e}"
    );
}

#[test]
fn a_barrier_whose_checksum_does_not_match_the_writes_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    let store = dir.open_store().unwrap();
    let (mut log, _) = LogWriter::open(dir.log_dir("vm0"), "vm0").unwrap();
    log.append(RecordKind::Mark {
        name: format!("vmm:base bytes={DISK}"),
    })
    .unwrap();
    log.append(RecordKind::Barrier {
        kind: BarrierKind::Flush,
        disk_checksum: [9; 32],
    })
    .unwrap();
    log.sync().unwrap();
    let e = relift(&dir, &store, "vm0", &[], DecodeLimits::default()).unwrap_err();
    assert!(matches!(e, ReliftError::Checksum { seq: 2, .. }), "{e}");
}
