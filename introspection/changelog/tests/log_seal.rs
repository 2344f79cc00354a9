//! Change log: the seal of a clean close, the sync point of a crashed
//! writer, cuts back to it, and seqs that are never handed out twice.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use changelog::{LogError, LogOptions, LogReader, LogWriter};
use common::*;

fn seqs(dir: &std::path::Path) -> Vec<u64> {
    read_all(dir).into_iter().map(|r| r.seq).collect()
}

#[test]
fn last_frame_damage_of_a_sealed_log_is_refused_not_cut() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 4, LogOptions::default());
    let last = frames.last().unwrap();
    let len = file_len(&last.segment);
    flip_bit(&last.segment, last.offset + 70);

    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(!p.torn_tail, "a sealed log has no torn tail: {p}");
    match LogWriter::open(&dir, "vm-1") {
        Err(LogError::Corrupt {
            offset,
            seq,
            reason,
            ..
        }) => {
            assert_eq!((offset, seq), (last.offset, Some(16)));
            assert!(reason.contains("sealed"), "{reason}");
        }
        other => panic!("expected damage to be refused, got {other:?}"),
    }
    assert_eq!(file_len(&last.segment), len, "nothing was cut");
    // Refused again on every open: the acknowledged records stay.
    assert!(LogWriter::open(&dir, "vm-1").is_err());

    // Bytes after a sealed end are damage too (a sealed log never grows).
    flip_bit(&last.segment, last.offset + 70);
    let f = OpenOptions::new().write(true).open(&last.segment).unwrap();
    f.write_all_at(&[0u8; 512], len).unwrap();
    let err = LogWriter::open(&dir, "vm-1").unwrap_err();
    assert!(matches!(err, LogError::Corrupt { .. }), "{err}");
    f.set_len(len).unwrap();
    let (w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(
        (report.was_sealed, report.last_seq, report.skipped_seqs),
        (Some(true), 20, None)
    );
    assert_eq!(w.next_seq(), 21, "a sealed log continues without a gap");
}

#[test]
fn damage_before_a_crashed_logs_sync_point_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    // Every frame synced (acknowledged), then the writer died.
    let frames = make_crashed_log(&dir, 4, 4, LogOptions::default());
    let last = frames.last().unwrap();
    flip_bit(&last.segment, last.offset + 70);
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(!p.torn_tail, "{p}");
    let err = LogWriter::open(&dir, "vm-1").unwrap_err();
    match &err {
        LogError::Corrupt { offset, seq, .. } => {
            assert_eq!((*offset, *seq), (last.offset, Some(16)));
            assert!(err.to_string().contains("sync point"), "{err}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
    // A segment cut shorter than what was synced is damage as well.
    flip_bit(&last.segment, last.offset + 70);
    let f = OpenOptions::new().write(true).open(&last.segment).unwrap();
    f.set_len(file_len(&last.segment) - 3).unwrap();
    assert!(matches!(
        LogWriter::open(&dir, "vm-1"),
        Err(LogError::Corrupt { .. })
    ));
}

#[test]
fn a_cut_to_the_sync_point_never_reuses_seqs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let opts = small_segments();
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", opts.clone()).unwrap();
    for seq in 1..=10 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        w.commit().unwrap();
    }
    w.sync().unwrap();
    // Committed frames (into new segments) and buffered records after the
    // sync point: a failed caller abandons them.
    for seq in 11..=40 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        if seq < 38 {
            w.commit().unwrap();
        }
    }
    let segs_before = files_with_ext(&dir, "seg").len();
    let cut = w.abandon().unwrap().expect("records after the sync point");
    assert_eq!((cut.seqs, cut.last_seq), ((11, 40), 10));
    assert!(files_with_ext(&dir, "seg").len() < segs_before);
    assert_eq!(seqs(&dir), (1..=10).collect::<Vec<_>>());
    assert!(changelog::verify(&dir).unwrap().is_ok());

    let (mut w, report) = LogWriter::open_with(&dir, "vm-1", opts.clone()).unwrap();
    assert_eq!(report.was_sealed, Some(false));
    let (first, last) = report.skipped_seqs.unwrap();
    assert_eq!(first, 11);
    assert!(last >= 40, "seqs up to 40 were handed out: {last}");
    let next = w.next_seq();
    assert_eq!(next, last + 1);
    // Enough records that the gap frame and later ones span segments.
    for seq in next..next + 20 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        w.commit().unwrap();
    }
    w.close().unwrap();
    let want: Vec<u64> = (1..=10).chain(next..next + 20).collect();
    assert_eq!(seqs(&dir), want);
    assert!(changelog::verify(&dir).unwrap().is_ok());
    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.last_seq(), next + 19);
    assert_eq!(
        reader.iter_from(20).unwrap().next().unwrap().unwrap().seq,
        next
    );
}

#[test]
fn a_gap_that_starts_a_segment_is_read_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    // The frame after the gap does not fit the last segment: it starts one.
    make_crashed_log(&dir, 3, 3, small_segments());
    let opts = LogOptions {
        compress: false,
        ..small_segments()
    };
    let (mut w, report) = LogWriter::open_with(&dir, "vm-1", opts).unwrap();
    let next = w.next_seq();
    assert_eq!(report.skipped_seqs, Some((16, next - 1)));
    let big = changelog::RecordKind::Mark {
        name: "x".repeat(200),
    };
    for i in 0..12 {
        w.append_at(ts(next + i), big.clone()).unwrap();
    }
    w.close().unwrap();
    let frames = LogReader::open(&dir).unwrap().frames().unwrap();
    let gap_frame = frames.iter().find(|f| f.first_seq == next).unwrap();
    assert_eq!(gap_frame.offset, 96, "the gap frame starts a segment");
    let got = seqs(&dir);
    assert_eq!(got.len(), 27);
    assert_eq!(got[15], next);
    assert!(changelog::verify(&dir).unwrap().is_ok());
}

#[test]
fn a_frame_claiming_an_undeclared_gap_is_damage() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 3, LogOptions::default());
    // Rewrite the middle frame's first seq (and its header CRC): a gap no
    // frame declared. The chain CRC still links, the seq check catches it.
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&frames[1].segment)
        .unwrap();
    let mut h = [0u8; 56];
    f.read_exact_at(&mut h, frames[1].offset).unwrap();
    h[8..16].copy_from_slice(&100u64.to_le_bytes());
    let crc = crc32fast::hash(&h[..52]);
    h[52..56].copy_from_slice(&crc.to_le_bytes());
    f.write_all_at(&h, frames[1].offset).unwrap();
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(p.reason.contains("expected seq 6"), "{p}");
}

#[test]
fn logs_without_a_seal_file_still_open_and_cut_torn_tails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 3, LogOptions::default());
    // A log written before seals existed.
    std::fs::remove_file(dir.join("SEAL")).unwrap();
    let last = frames.last().unwrap();
    let f = OpenOptions::new().write(true).open(&last.segment).unwrap();
    f.set_len(file_len(&last.segment) - 5).unwrap();
    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!((report.was_sealed, report.last_seq), (None, 10));
    assert!(report.truncated_bytes > 0);
    // Its first seal: later opens know where it ends.
    w.append_at(ts(11), kind(11)).unwrap();
    w.close().unwrap();
    assert!(dir.join("SEAL").exists());
    assert_eq!(seqs(&dir), (1..=11).collect::<Vec<_>>());
}

#[test]
fn readers_do_not_stop_quietly_inside_a_sealed_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 3, LogOptions::default());
    let last = frames.last().unwrap();
    let f = OpenOptions::new().write(true).open(&last.segment).unwrap();
    f.set_len(file_len(&last.segment) - 5).unwrap();
    let results: Vec<_> = LogReader::open(&dir).unwrap().iter().unwrap().collect();
    assert_eq!(results.len(), 11, "10 records, then the error");
    match results.last().unwrap() {
        Err(LogError::Corrupt { offset, reason, .. }) => {
            assert_eq!(*offset, last.offset);
            assert!(reason.contains("sealed"), "{reason}");
        }
        other => panic!("expected damage, got {other:?}"),
    }
}

#[test]
fn a_log_whose_first_records_were_lost_starts_after_its_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    // The first run's records never reached the file, and it died.
    let (mut w, _) = LogWriter::open(&dir, "vm-1").unwrap();
    w.append_at(ts(1), kind(1)).unwrap();
    drop(w);
    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    let next = w.next_seq();
    assert_eq!(report.skipped_seqs, Some((1, next - 1)));
    w.append_at(ts(next), kind(next)).unwrap();
    w.close().unwrap();
    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.first_seq(), Some(next));
    // Reading "from the start" (seq 1) reads from its first record.
    let got: Vec<u64> = reader
        .iter_from(1)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(got, vec![next]);
    assert!(changelog::verify(&dir).unwrap().is_ok());
}
