//! Change log: damage in the middle, torn tails, verify, the documented format.

mod common;

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;

use changelog::{LogError, LogOptions, LogReader, LogWriter, RecordKind};
use common::*;

#[test]
fn flipped_bit_in_a_middle_frame_is_found_and_never_truncated() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 8, LogOptions::default());
    let bad = &frames[3];
    let seg = bad.segment.clone();
    flip_bit(&seg, bad.offset + 56 + 20);
    let len_before = file_len(&seg);

    let v = changelog::verify(&dir).unwrap();
    let p = v.problem.clone().expect("verify finds the damage");
    assert_eq!(
        (p.seq, p.offset, p.torn_tail),
        (Some(16), bad.offset, false),
        "{p}"
    );
    assert_eq!(p.segment, seg);
    assert!(p.reason.contains("CRC"), "{p}");
    assert_eq!((v.records, v.last_seq), (15, 15));

    let mut it = LogReader::open(&dir).unwrap().iter().unwrap();
    for seq in 1..=15 {
        assert_eq!(it.next().unwrap().unwrap(), expected(seq));
    }
    match it.next() {
        Some(Err(LogError::Corrupt { seq, offset, .. })) => {
            assert_eq!((seq, offset), (Some(16), bad.offset))
        }
        other => panic!("expected a Corrupt error at seq 16, got {other:?}"),
    }
    assert!(it.next().is_none());
    // Seeking past the damaged frame still reads what follows it.
    let after: Vec<_> = LogReader::open(&dir)
        .unwrap()
        .iter_from(21)
        .unwrap()
        .collect();
    assert_eq!(after.len(), 20);

    let e = LogWriter::open(&dir, "vm-1").unwrap_err();
    assert!(matches!(e, LogError::Corrupt { seq: Some(16), .. }), "{e}");
    assert!(e.to_string().contains("not a torn tail"), "{e}");
    assert_eq!(file_len(&seg), len_before, "nothing was cut");
}

#[test]
fn flipped_bit_in_a_middle_frame_header() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 6, LogOptions::default());
    flip_bit(&frames[2].segment, frames[2].offset + 9);
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert_eq!(
        (p.seq, p.offset, p.torn_tail),
        (Some(11), frames[2].offset, false),
        "{p}"
    );
    assert!(LogWriter::open(&dir, "vm-1").is_err());
}

#[test]
fn damage_in_an_earlier_segment_is_reported_by_verify_and_the_reader() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_log(&dir, 30, small_segments());
    let segs = files_with_ext(&dir, "seg");
    assert!(segs.len() > 3);
    let bad = frames.iter().find(|f| f.segment == segs[1]).unwrap();
    flip_bit(&bad.segment, bad.offset + 60);
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert_eq!(
        (p.seq, &p.segment, p.torn_tail),
        (Some(bad.first_seq), &segs[1], false)
    );
    let r = LogReader::open(&dir).unwrap();
    let first_err = r.iter().unwrap().position(|x| x.is_err()).unwrap();
    assert_eq!(first_err as u64, bad.first_seq - 1);
}

/// The seq the next append gets after an open that reported `skipped`: above
/// every seq handed out before the crash.
fn next_after(report: &changelog::OpenReport, handed_out: u64) -> u64 {
    let (first, last) = report.skipped_seqs.expect("a crash's seqs are skipped");
    assert_eq!(first, report.last_seq + 1);
    assert!(
        last >= handed_out,
        "seqs up to {handed_out} were handed out"
    );
    last + 1
}

#[test]
fn torn_tail_is_cut_and_appends_continue() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_crashed_log(&dir, 6, 3, LogOptions::default());
    let last = frames.last().unwrap();
    let seg = last.segment.clone();
    let len = file_len(&seg);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .set_len(len - 10)
        .unwrap();

    // Readers stop quietly before the unfinished frame; verify calls it a torn tail.
    assert_eq!(read_all(&dir), (1..=25).map(expected).collect::<Vec<_>>());
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(p.torn_tail && p.offset == last.offset, "{p}");

    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(report.truncated_bytes, 56 + u64::from(last.stored_len) - 10);
    assert_eq!(report.last_seq, 25);
    assert_eq!(report.was_sealed, Some(false));
    assert_eq!(report.truncated_segment, Some((seg.clone(), last.offset)));
    assert!(report.tail_reason.is_some());
    assert_eq!(file_len(&seg), last.offset);
    // Seqs 26..=30 were in the torn frame: never handed out again.
    let next = next_after(&report, 30);
    assert_eq!(w.append_at(ts(next), kind(next)).unwrap(), next);
    w.append_at(ts(next + 1), kind(next + 1)).unwrap();
    w.close().unwrap();
    let want: Vec<_> = (1..=25).chain([next, next + 1]).map(expected).collect();
    assert_eq!(read_all(&dir), want);
    assert!(changelog::verify(&dir).unwrap().is_ok());
    // Reading from a seq inside the gap starts at the first record after it.
    let from_gap: Vec<_> = LogReader::open(&dir)
        .unwrap()
        .iter_from(27)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(from_gap, vec![next, next + 1]);
}

#[test]
fn crc_bad_last_frame_and_zeroed_tail_are_torn_tails() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let frames = make_crashed_log(&dir, 4, 2, LogOptions::default());
    let last = frames.last().unwrap();
    // The file grew but the data never made it: zeros after the last frame.
    let f = OpenOptions::new().write(true).open(&last.segment).unwrap();
    let end = file_len(&last.segment);
    f.write_all_at(&[0u8; 4096], end).unwrap();
    let (w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!((report.truncated_bytes, report.last_seq), (4096, 20));
    drop(w);
    // A last frame whose data fails its CRC, after the last sync point,
    // with nothing valid after it.
    flip_bit(&last.segment, last.offset + 70);
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(p.torn_tail, "{p}");
    let (mut w, report) = LogWriter::open(&dir, "vm-1").unwrap();
    assert_eq!(report.truncated_bytes, 56 + u64::from(last.stored_len));
    assert_eq!(report.last_seq, 15);
    let next = next_after(&report, 20);
    assert_eq!(w.append_at(ts(next), kind(next)).unwrap(), next);
    w.close().unwrap();
    let want: Vec<_> = (1..=15).chain([next]).map(expected).collect();
    assert_eq!(read_all(&dir), want);
}

#[test]
fn torn_new_segment_is_removed() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    make_crashed_log(&dir, 10, 2, small_segments());
    let segs = files_with_ext(&dir, "seg");
    let next_seg = dir.join(format!("{:08}.seg", segs.len() + 1));
    std::fs::write(&next_seg, b"VMMCLOG\0\x01").unwrap();
    assert_eq!(
        read_all(&dir).len(),
        50,
        "readers ignore a segment still being created"
    );
    let (mut w, report) = LogWriter::open_with(&dir, "vm-1", small_segments()).unwrap();
    assert_eq!(report.removed_segments, vec![next_seg.clone()]);
    assert_eq!((report.truncated_bytes, report.last_seq), (9, 50));
    assert!(!next_seg.exists());
    let next = next_after(&report, 50);
    for seq in next..next + 30 {
        w.append_at(ts(seq), kind(seq)).unwrap();
        w.commit().unwrap();
    }
    w.close().unwrap();
    let want: Vec<_> = (1..=50).chain(next..next + 30).map(expected).collect();
    assert_eq!(read_all(&dir), want);
    assert!(changelog::verify(&dir).unwrap().is_ok());
}

#[test]
fn missing_middle_segment_is_a_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    make_log(&dir, 30, small_segments());
    let segs = files_with_ext(&dir, "seg");
    std::fs::remove_file(&segs[2]).unwrap();
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert!(p.reason.contains("missing"), "{p}");
    assert!(!p.torn_tail);
}

#[test]
fn verify_with_reports_the_callers_problem_at_its_seq() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    make_log(&dir, 4, LogOptions::default());
    let v = changelog::verify_with(&dir, |r| match &r.kind {
        RecordKind::SnapshotTaken { id } if id == "snap-13" => Err("snapshot not in store".into()),
        _ => Ok(()),
    })
    .unwrap();
    let p = v.problem.unwrap();
    assert_eq!(
        (p.seq, p.reason.as_str()),
        (Some(13), "snapshot not in store")
    );
    assert_eq!(v.last_seq, 12);
}

/// Reads the segment by the format documented in `changelog::log`, then
/// appends a hand-built frame holding a reserved `Hint` record.
#[test]
fn documented_format_and_unknown_record_types() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let opts = LogOptions {
        compress: false,
        ..LogOptions::default()
    };
    make_log(&dir, 2, opts);
    let seg = dir.join("00000001.seg");
    let data = std::fs::read(&seg).unwrap();
    let u32_at = |o: usize| u32::from_le_bytes(data[o..o + 4].try_into().unwrap());
    let u64_at = |o: usize| u64::from_le_bytes(data[o..o + 8].try_into().unwrap());
    assert_eq!(&data[0..8], b"VMMCLOG\0");
    assert_eq!(u64_at(16), 1);
    assert_eq!(&data[24..28], b"vm-1");
    assert_eq!(crc32fast::hash(&data[..92]), u32_at(92));
    let (mut off, mut chain, mut seq) = (96usize, 0u32, 1u64);
    while off < data.len() {
        assert_eq!(&data[off..off + 4], b"VLFR");
        assert_eq!((u64_at(off + 8), u32_at(off + 28)), (seq, chain));
        let (count, stored) = (u32_at(off + 16), u32_at(off + 20) as usize);
        let body = &data[off + 56..off + 56 + stored];
        assert_eq!(crc32fast::hash(body), u32_at(off + 48));
        let mut p = 0;
        for _ in 0..count {
            let len = u32::from_le_bytes(body[p..p + 4].try_into().unwrap()) as usize;
            let crc = u32::from_le_bytes(body[p + 4..p + 8].try_into().unwrap());
            let mut h = crc32fast::Hasher::new();
            h.update(&chain.to_le_bytes());
            h.update(&body[p + 8..p + 9 + len]);
            assert_eq!(h.finalize(), crc, "record {seq}");
            assert_eq!(body[p + 8], kind(seq).type_code());
            assert_eq!(
                u64::from_le_bytes(body[p + 9..p + 17].try_into().unwrap()),
                ts(seq)
            );
            (chain, seq, p) = (crc, seq + 1, p + 9 + len);
        }
        off += 56 + stored;
    }
    // Append a frame with one record of a type this version does not know
    // (seq 11), built by hand.
    const UNKNOWN_TYPE: u8 = 77;
    let mut payload = ts(11).to_le_bytes().to_vec();
    payload.extend_from_slice(b"hint body");
    let mut h = crc32fast::Hasher::new();
    h.update(&chain.to_le_bytes());
    h.update(&[UNKNOWN_TYPE]);
    h.update(&payload);
    let mut raw = (payload.len() as u32).to_le_bytes().to_vec();
    raw.extend_from_slice(&h.finalize().to_le_bytes());
    raw.push(UNKNOWN_TYPE);
    raw.extend_from_slice(&payload);
    let mut hdr = vec![0u8; 56];
    hdr[0..4].copy_from_slice(b"VLFR");
    hdr[8..16].copy_from_slice(&11u64.to_le_bytes());
    hdr[16..20].copy_from_slice(&1u32.to_le_bytes());
    hdr[20..24].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    hdr[24..28].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    hdr[28..32].copy_from_slice(&chain.to_le_bytes());
    hdr[32..40].copy_from_slice(&ts(11).to_le_bytes());
    hdr[40..48].copy_from_slice(&ts(11).to_le_bytes());
    hdr[48..52].copy_from_slice(&crc32fast::hash(&raw).to_le_bytes());
    let hcrc = crc32fast::hash(&hdr[..52]);
    hdr[52..56].copy_from_slice(&hcrc.to_le_bytes());
    hdr.extend_from_slice(&raw);
    OpenOptions::new()
        .write(true)
        .open(&seg)
        .unwrap()
        .write_all_at(&hdr, data.len() as u64)
        .unwrap();

    let got: Vec<_> = LogReader::open(&dir)
        .unwrap()
        .iter_from(9)
        .unwrap()
        .collect();
    assert_eq!(got.len(), 3);
    match &got[2] {
        Err(
            e @ LogError::UnknownRecordType {
                seq: 11, code: 77, ..
            },
        ) => {
            assert!(e.to_string().contains("seq 11"), "{e}")
        }
        other => panic!("expected UnknownRecordType at seq 11, got {other:?}"),
    }
    let p = changelog::verify(&dir).unwrap().problem.unwrap();
    assert_eq!((p.seq, p.torn_tail), (Some(11), false));
    // A whole, CRC-correct frame is never cut as a torn tail.
    assert!(matches!(
        LogWriter::open(&dir, "vm-1"),
        Err(LogError::UnknownRecordType { .. })
    ));
}
