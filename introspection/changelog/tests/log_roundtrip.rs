//! Change log: append, sync, reopen, read back, seek, rollover, indexes.

mod common;

use changelog::{LogError, LogOptions, LogReader, LogWriter, RecordKind};
use common::*;

/// Writes seqs `from..=to` with `kind(seq)` at `ts(seq)`, a frame per `batch`.
fn write_range(w: &mut LogWriter, from: u64, to: u64, batch: u64) {
    for seq in from..=to {
        assert_eq!(w.append_at(ts(seq), kind(seq)).unwrap(), seq);
        if seq % batch == 0 {
            w.commit().unwrap();
        }
    }
    w.sync().unwrap();
}

#[test]
fn roundtrip_all_kinds_across_reopen() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(
        (report.last_seq, report.truncated_bytes, report.segments),
        (0, 0, 0)
    );
    write_range(&mut w, 1, 23, 4);
    w.close().unwrap();

    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(report.last_seq, 23);
    assert_eq!(report.truncated_bytes, 0);
    assert_eq!(w.next_seq(), 24);
    write_range(&mut w, 24, 30, 3);
    drop(w);

    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.vm_id(), Some("vm-1"));
    assert_eq!((reader.first_seq(), reader.last_seq()), (Some(1), 30));
    let all = read_all(&dir);
    let want: Vec<_> = (1..=30).map(expected).collect();
    assert_eq!(all, want);
    let report = changelog::verify(&dir).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!((report.records, report.last_seq), (30, 30));
}

#[test]
fn seq_is_gap_free_across_clean_reopens_and_drop_discards_pending() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let mut next = 1;
    for round in 0..4 {
        let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
        assert_eq!(report.last_seq, next - 1, "round {round}");
        assert_eq!(report.skipped_seqs, None, "a sealed log has no gap");
        for _ in 0..3 {
            // The host clock: seqs stay gap-free, times never go back.
            assert_eq!(w.append(kind(next)).unwrap(), next);
            next += 1;
        }
        assert_eq!(w.pending(), 3);
        w.close().unwrap();
    }
    let all = read_all(&dir);
    assert_eq!(
        all.iter().map(|r| r.seq).collect::<Vec<_>>(),
        (1..next).collect::<Vec<_>>()
    );
    assert!(all.windows(2).all(|p| p[0].ts_ns <= p[1].ts_ns));

    // Dropped without close: what was only buffered is not written for
    // the caller, and its seqs are not handed out again.
    let (mut w, _) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(w.append(kind(next)).unwrap(), next);
    drop(w);
    assert_eq!(read_all(&dir).len() as u64, next - 1);
    let (w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(report.was_sealed, Some(false));
    assert!(w.next_seq() > next, "seq {next} was handed out");
}

#[test]
fn segments_roll_over_and_seek_uses_rebuilt_indexes() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", small_segments()).unwrap();
    write_range(&mut w, 1, 200, 5);
    w.close().unwrap();
    let segs = files_with_ext(&dir, "seg");
    assert!(
        segs.len() >= 5,
        "expected several segments, got {}",
        segs.len()
    );
    assert!(segs
        .iter()
        .all(|s| std::fs::metadata(s).unwrap().len() <= 2048));
    assert_eq!(files_with_ext(&dir, "idx").len(), segs.len());

    let check = |dir: &std::path::Path| {
        let r = LogReader::open(dir).unwrap();
        assert_eq!(r.segment_count(), segs.len());
        for from in [0, 1, 2, 57, 58, 100, 199, 200] {
            let got: Vec<_> = r.iter_from(from).unwrap().map(Result::unwrap).collect();
            let want: Vec<_> = (from.max(1)..=200).map(expected).collect();
            assert_eq!(got, want, "from seq {from}");
        }
        assert_eq!(r.iter_from(201).unwrap().count(), 0);
        assert_eq!(r.find_seq_at_time(ts(1) - 1).unwrap(), None);
        assert_eq!(r.find_seq_at_time(ts(1)).unwrap(), Some(1));
        assert_eq!(r.find_seq_at_time(ts(123) + 5).unwrap(), Some(123));
        assert_eq!(r.find_seq_at_time(ts(150)).unwrap(), Some(150));
        assert_eq!(r.find_seq_at_time(u64::MAX).unwrap(), Some(200));
    };
    check(&dir);

    // Without indexes (and with a damaged one), readers rebuild them in memory.
    for idx in files_with_ext(&dir, "idx") {
        std::fs::remove_file(idx).unwrap();
    }
    check(&dir);
    assert!(
        files_with_ext(&dir, "idx").is_empty(),
        "readers never write"
    );
    std::fs::write(dir.join("00000002.idx"), b"not an index").unwrap();
    check(&dir);

    // The writer rewrites missing and damaged ones.
    let (w, report) = LogWriter::open_with(&dir, "vm-1", small_segments()).unwrap();
    assert_eq!(report.rebuilt_indexes.len(), segs.len());
    assert_eq!(files_with_ext(&dir, "idx").len(), segs.len());
    drop(w);
    check(&dir);

    // A stale index (another segment's) is not trusted.
    std::fs::copy(dir.join("00000003.idx"), dir.join("00000002.idx")).unwrap();
    check(&dir);
    assert!(changelog::verify(&dir).unwrap().is_ok());
}

#[test]
fn batches_of_marks_are_stored_compressed_and_hashes_raw() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let (mut w, _) = LogWriter::open(&dir, "vm-1").unwrap();
    for i in 0..100 {
        w.append_at(
            i,
            RecordKind::Mark {
                name: format!("checkpoint-{i:05}"),
            },
        )
        .unwrap();
    }
    w.commit().unwrap();
    w.append_at(
        100,
        RecordKind::BlockWrite {
            sector: 0,
            len: 64 * 4096,
            blocks: hashes(64, 7),
        },
    )
    .unwrap();
    w.close().unwrap();

    let r = LogReader::open(&dir).unwrap();
    let frames = r.frames().unwrap();
    assert_eq!(frames.len(), 2);
    assert!(frames[0].compressed);
    assert!(
        frames[0].stored_len * 2 < frames[0].raw_len,
        "{:?}",
        frames[0]
    );
    assert_eq!((frames[0].first_seq, frames[0].count), (1, 100));
    assert!(!frames[1].compressed);
    let all = read_all(&dir);
    assert_eq!(all.len(), 101);
    assert_eq!(
        all[42].kind,
        RecordKind::Mark {
            name: "checkpoint-00042".into()
        }
    );
    let v = changelog::verify(&dir).unwrap();
    assert_eq!((v.frames, v.compressed_frames, v.records), (2, 1, 101));
}

#[test]
fn big_batches_commit_by_themselves() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let opts = LogOptions {
        frame_max_bytes: 1000,
        ..LogOptions::default()
    };
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", opts).unwrap();
    write_range(&mut w, 1, 150, u64::MAX);
    drop(w);
    let frames = LogReader::open(&dir).unwrap().frames().unwrap();
    assert!(frames.len() >= 5, "{} frames", frames.len());
    assert!(frames.iter().all(|f| f.raw_len < 1000 + 200));
    assert_eq!(read_all(&dir), (1..=150).map(expected).collect::<Vec<_>>());
}

#[test]
fn bad_arguments_are_refused_without_side_effects() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let (mut w, _) = LogWriter::open(&dir, "vm-1").unwrap();
    assert!(matches!(
        LogWriter::open(&dir, "vm-1"),
        Err(LogError::Locked { .. })
    ));
    let misaligned = RecordKind::BlockWrite {
        sector: 3,
        len: 4096,
        blocks: hashes(1, 0),
    };
    assert!(matches!(
        w.append_at(5, misaligned),
        Err(LogError::InvalidRecord(_))
    ));
    let short = RecordKind::BlockWrite {
        sector: 8,
        len: 8192,
        blocks: hashes(1, 0),
    };
    assert!(matches!(
        w.append_at(5, short),
        Err(LogError::InvalidRecord(_))
    ));
    let long = RecordKind::Mark {
        name: "x".repeat(257),
    };
    assert!(matches!(
        w.append_at(5, long),
        Err(LogError::InvalidRecord(_))
    ));
    assert_eq!(w.append_at(10, kind(1)).unwrap(), 1);
    let e = w.append_at(9, kind(2)).unwrap_err();
    assert!(
        matches!(
            e,
            LogError::TimeWentBackwards {
                ts_ns: 9,
                last_ts_ns: 10
            }
        ),
        "{e}"
    );
    assert_eq!(w.append_at(10, kind(2)).unwrap(), 2);
    w.close().unwrap();
    let e = LogWriter::open(&dir, "vm-2").unwrap_err();
    assert!(matches!(e, LogError::VmIdMismatch { .. }), "{e}");
    assert!(LogWriter::open(&dir, "").is_err());
    assert!(matches!(
        LogReader::open(&dir)
            .unwrap()
            .iter_from(1)
            .map(|i| i.count()),
        Ok(2)
    ));
}
