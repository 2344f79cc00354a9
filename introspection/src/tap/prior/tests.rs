//! The whole path without a VM: a tap, hints and writes as a guest would
//! send them, runs on one image and one log.
use std::os::unix::fs::FileExt;
use std::path::Path;

use hint_proto::{Extent, Format as WireFormat, Role};

use crate::lift::SemanticEvent;
use crate::semantic::{Op, Source};
use crate::tap::BlockTap;
use changelog::log::{BarrierKind, LogReader, RecordKind};
use changelog::recording::RecordDir;

/// The file sits in block 8; its length never changes (padded JSON).
const AT: u64 = 8 * 4096;
const LEN: usize = 200;

fn doc(rows: &[(u32, &str)]) -> Vec<u8> {
    doc_of(rows, LEN)
}

fn doc_of(rows: &[(u32, &str)], len: usize) -> Vec<u8> {
    let rows: Vec<String> = rows
        .iter()
        .map(|(id, v)| format!(r#"{{"id":{id},"v":"{v}"}}"#))
        .collect();
    let mut d = format!(r#"{{"rows":[{}]}}"#, rows.join(",")).into_bytes();
    assert!(d.len() <= len);
    d.resize(len, b' ');
    d
}

fn hint(tap: &mut BlockTap, enc: impl FnOnce(&mut [u8]) -> Result<usize, hint_proto::EncodeError>) {
    let mut buf = [0u8; 256];
    let n = enc(&mut buf).unwrap();
    tap.record_hint(&buf[..n]).unwrap();
}

/// One recorded run: the guest hints `path` and, if given, writes `write`
/// into it. Returns the semantic events the run logged.
fn run(dir: &RecordDir, image: &Path, path: &str, write: Option<&[u8]>) -> Vec<SemanticEvent> {
    run_at(dir, image, path, AT, LEN, write)
}

/// [`run`] of a file of `size` bytes at byte `at` of the disk.
fn run_at(
    dir: &RecordDir,
    image: &Path,
    path: &str,
    at: u64,
    size: usize,
    write: Option<&[u8]>,
) -> Vec<SemanticEvent> {
    let (mut tap, _) = BlockTap::open(dir, "vm", image).unwrap();
    let from = tap.last_seq();
    hint(&mut tap, |b| {
        hint_proto::encode_file(1, 1, WireFormat::Json, Role::Main, path, b)
    });
    let ext = [Extent {
        file_offset: 0,
        sector: at / 512,
        len: 4096,
    }];
    hint(&mut tap, |b| hint_proto::encode_extents(1, &ext, b));
    hint(&mut tap, |b| {
        hint_proto::encode_size(1, size as u64, true, b)
    });
    hint(&mut tap, |b| hint_proto::encode_schema(1, "/rows:id", b));
    tap.barrier(BarrierKind::Flush).unwrap();
    if let Some(bytes) = write {
        let mut block = bytes.to_vec();
        block.resize(4096, 0);
        std::fs::File::options()
            .write(true)
            .open(image)
            .unwrap()
            .write_all_at(&block, at)
            .unwrap();
        tap.record_write(at, block).unwrap();
        tap.barrier(BarrierKind::Flush).unwrap();
    }
    tap.close().unwrap();
    let reader = LogReader::open(dir.log_dir("vm")).unwrap();
    reader
        .iter()
        .unwrap()
        .map(|r| r.unwrap())
        .filter(|r| r.seq > from)
        .filter_map(|r| match r.kind {
            RecordKind::Semantic { json } => Some(serde_json::from_str(&json).unwrap()),
            _ => None,
        })
        .collect()
}

fn ops(events: &[SemanticEvent]) -> Vec<(Op, String, Option<Source>)> {
    events
        .iter()
        .map(|e| match e {
            SemanticEvent::Change(c) => (c.op, c.key.clone(), c.source),
            SemanticEvent::DecodeError(e) => panic!("unexpected decode error: {}", e.reason),
        })
        .collect()
}

fn setup() -> (tempfile::TempDir, RecordDir, std::path::PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path().join("rec"));
    let image = tmp.path().join("disk.img");
    std::fs::write(&image, vec![0u8; 64 * 4096]).unwrap();
    (tmp, dir, image)
}

#[test]
fn reopening_a_file_in_a_new_run_logs_only_what_that_run_changed() {
    let (_tmp, dir, image) = setup();
    let first = run(&dir, &image, "app.json", Some(&doc(&[(1, "a"), (2, "b")])));
    assert_eq!(
        ops(&first),
        vec![
            (Op::Insert, "1".into(), None),
            (Op::Insert, "2".into(), None)
        ]
    );
    // Only reading it: nothing new.
    assert_eq!(ops(&run(&dir, &image, "app.json", None)), vec![]);
    // Rewriting it unchanged: nothing new either.
    let same = doc(&[(1, "a"), (2, "b")]);
    assert_eq!(ops(&run(&dir, &image, "app.json", Some(&same))), vec![]);
    // A real update: exactly that.
    let updated = doc(&[(1, "a"), (2, "c")]);
    assert_eq!(
        ops(&run(&dir, &image, "app.json", Some(&updated))),
        vec![(Op::Update, "2".into(), None)]
    );
}

#[test]
fn a_disk_changed_between_runs_is_reported_once_and_labelled() {
    let (_tmp, dir, image) = setup();
    run(&dir, &image, "app.json", Some(&doc(&[(1, "a"), (2, "b")])));
    // Changed outside recording: row 2 updated, row 3 added.
    let mut block = doc(&[(1, "a"), (2, "x"), (3, "c")]);
    block.resize(4096, 0);
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .write_all_at(&block, AT)
        .unwrap();
    let outside = Some(Source::OutsideRecording);
    let events = run(
        &dir,
        &image,
        "app.json",
        Some(&doc(&[(1, "z"), (2, "x"), (3, "c")])),
    );
    assert_eq!(
        ops(&events),
        vec![
            (Op::Update, "2".into(), outside),
            (Op::Insert, "3".into(), outside),
            (Op::Update, "1".into(), None),
        ]
    );
    // The outside changes sit at the base's barrier, before this run's.
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| match e {
            SemanticEvent::Change(c) => c.seq,
            SemanticEvent::DecodeError(e) => e.seq,
        })
        .collect();
    assert!(seqs[0] == seqs[1] && seqs[1] < seqs[2], "{seqs:?}");
    // And the next run has nothing to report.
    assert_eq!(ops(&run(&dir, &image, "app.json", None)), vec![]);
}

#[test]
fn a_file_new_to_the_log_is_inserted_even_on_a_disk_with_history() {
    let (_tmp, dir, image) = setup();
    run(&dir, &image, "app.json", Some(&doc(&[(1, "a")])));
    // Another file name at the same place: no past, so its rows are news.
    let events = run(&dir, &image, "other.json", None);
    assert_eq!(ops(&events), vec![(Op::Insert, "1".into(), None)]);
}

#[test]
fn a_file_that_moved_between_runs_is_read_as_the_last_run_left_it() {
    let (_tmp, dir, image) = setup();
    run(&dir, &image, "app.json", Some(&doc(&[(1, "a"), (2, "b")])));
    // Outside recording the file grows by a row and moves to block 20.
    let moved = 20 * 4096;
    let mut block = doc_of(&[(1, "a"), (2, "b"), (3, "c")], LEN + 100);
    block.resize(4096, 0);
    std::fs::File::options()
        .write(true)
        .open(&image)
        .unwrap()
        .write_all_at(&block, moved)
        .unwrap();
    // This run hints the new place and size; the last run's state is read
    // where and as long as its own hints said, so only row 3 is new.
    let events = run_at(&dir, &image, "app.json", moved, LEN + 100, None);
    assert_eq!(
        ops(&events),
        vec![(Op::Insert, "3".into(), Some(Source::OutsideRecording))]
    );
}
