use std::sync::Arc;

use hint_proto::{Extent, Format as WireFormat, Role};

use super::super::{Differ, FileBytes, Lifted, Lifter, Version};
use crate::semantic::{Format, Op};

fn json(id: u32, bytes: &[u8]) -> Version {
    Version {
        id,
        file: format!("f{id}.json"),
        format: Format::Json,
        schema: crate::lift::parse_schema(Format::Json, "/rows:id"),
        bytes: Ok(FileBytes {
            bytes: Arc::new(bytes.to_vec()),
            wal: None,
            reads: Vec::new(),
        }),
        at: None,
    }
}

const ROWS: &[u8] = br#"{"rows":[{"id":1,"v":"a"},{"id":2,"v":"b"}]}"#;

fn changes(out: &[Lifted]) -> Vec<(Op, String)> {
    out.iter()
        .flat_map(|l| match l {
            Lifted::Changes { changes, .. } => changes
                .iter()
                .map(|c| (c.op, c.key.clone()))
                .collect::<Vec<_>>(),
            Lifted::Error { reason, .. } => panic!("unexpected error event: {reason}"),
        })
        .collect()
}

#[test]
fn an_unchanged_file_with_a_past_yields_nothing_and_real_changes_yield_only_themselves() {
    let mut d = Differ::default();
    assert!(d.seed_prior(vec![json(1, ROWS)]).is_empty());
    assert!(d.diff(vec![json(1, ROWS)]).is_empty(), "no phantom inserts");
    let updated = br#"{"rows":[{"id":1,"v":"a"},{"id":2,"v":"c"}]}"#;
    let out = d.diff(vec![json(1, updated)]);
    assert_eq!(changes(&out), vec![(Op::Update, "2".to_string())]);
}

#[test]
fn a_file_without_a_past_is_inserted_row_by_row() {
    let mut d = Differ::default();
    let out = d.diff(vec![json(1, ROWS)]);
    assert_eq!(
        changes(&out),
        vec![(Op::Insert, "1".into()), (Op::Insert, "2".into())]
    );
}

#[test]
fn an_undecodable_past_is_replaced_by_the_first_state_and_said_so() {
    let mut d = Differ::default();
    d.seed_prior(vec![json(1, b"\x01\x02 not json at all")]);
    let out = d.diff(vec![json(1, ROWS)]);
    match &out[..] {
        [Lifted::Error { reason, .. }] => {
            assert!(reason.contains("last recorded run"), "{reason}");
            assert!(reason.contains("unknown"), "{reason}");
        }
        _ => panic!("one labelled baseline event expected"),
    }
    // From there on the file is diffed against that state.
    let out = d.diff(vec![json(1, br#"{"rows":[{"id":1,"v":"a"}]}"#)]);
    assert_eq!(changes(&out), vec![(Op::Delete, "2".to_string())]);
}

#[test]
fn a_decode_error_after_the_first_diff_keeps_the_good_state() {
    let mut d = Differ::default();
    d.seed_prior(vec![json(1, ROWS)]);
    assert!(d.diff(vec![json(1, ROWS)]).is_empty());
    // Not tentative any more: a bad version is an error, the baseline stays.
    let out = d.diff(vec![json(1, b"{ broken")]);
    assert!(matches!(&out[..], [Lifted::Error { .. }]));
    assert!(d.diff(vec![json(1, ROWS)]).is_empty());
}

#[test]
fn an_earlier_state_is_read_through_the_given_reader_without_touching_the_cache() {
    let mut lifter = Lifter::new(1 << 20);
    let mut buf = [0u8; 256];
    let mut hint = |enc: &dyn Fn(&mut [u8]) -> usize| {
        let n = enc(&mut buf);
        let (h, _) = hint_proto::decode(&buf[..n]).unwrap();
        lifter.table.apply(&h).unwrap();
    };
    hint(&|b| hint_proto::encode_file(1, 1, WireFormat::Json, Role::Main, "f.json", b).unwrap());
    let ext = [Extent {
        file_offset: 0,
        sector: 8,
        len: 4096,
    }];
    hint(&|b| hint_proto::encode_extents(1, &ext, b).unwrap());
    hint(&|b| hint_proto::encode_size(1, 5, true, b).unwrap());
    let now = |off: u64, len: usize| -> std::io::Result<Vec<u8>> {
        assert_eq!(off, 8 * 512);
        Ok(b"[new]"[..len].to_vec())
    };
    let then = |_: u64, len: usize| -> std::io::Result<Vec<u8>> { Ok(b"[old]"[..len].to_vec()) };
    let written = Default::default();
    let hinted = [1].into_iter().collect();
    let v = lifter.versions(&written, &hinted, &mut { now });
    assert_eq!(&v[0].bytes.as_ref().unwrap().bytes[..], b"[new]");
    let old = lifter.version_with(1, &mut { then }).unwrap();
    assert_eq!(&old.bytes.unwrap().bytes[..], b"[old]");
    // The cache still holds the disk's bytes: a barrier without writes to
    // the file reuses them.
    let v = lifter.versions(&written, &[1].into_iter().collect(), &mut { now });
    assert_eq!(&v[0].bytes.as_ref().unwrap().bytes[..], b"[new]");
    assert!(lifter.version_with(9, &mut { then }).is_none());
}
