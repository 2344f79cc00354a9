//! HLC stamps in the change log: written and read back, kept across
//! reopens by hosts with other clocks, and logs of format version 1
//! (built here byte by byte from their documented layout) still read and
//! continued.

mod common;

use std::path::Path;

use changelog::log::{FORMAT_VERSION, OLDEST_FORMAT_VERSION};
use changelog::{Hlc, LogError, LogOptions, LogReader, LogWriter, NodeId, RecordKind};
use common::*;

const A: NodeId = NodeId(0xaaaa);
const B: NodeId = NodeId(0xbbbb);

fn on(node: NodeId) -> LogOptions {
    LogOptions {
        node,
        ..LogOptions::default()
    }
}

fn mark(name: &str) -> RecordKind {
    RecordKind::Mark { name: name.into() }
}

fn stamps(dir: &Path) -> Vec<Hlc> {
    read_all(dir).iter().map(|r| r.hlc()).collect()
}

#[test]
fn stamps_round_trip_and_count_within_one_ns() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", on(A)).unwrap();
    assert_eq!(w.last_hlc(), None);
    w.append_at(100, mark("a")).unwrap();
    w.append_at(100, mark("b")).unwrap();
    w.append_at(100, mark("c")).unwrap();
    w.commit().unwrap();
    w.append_at(200, mark("d")).unwrap();
    // A copy keeps its stamp, from whatever node took it.
    w.append_stamped(Hlc::new(200, 5, B), mark("e")).unwrap();
    assert_eq!(w.last_hlc(), Some(Hlc::new(200, 5, B)));
    let e = w
        .append_stamped(Hlc::new(200, 4, B), mark("x"))
        .unwrap_err();
    assert!(matches!(e, LogError::ClockWentBackwards { .. }), "{e}");
    assert!(e.to_string().contains("200.4@000000000000bbbb"), "{e}");
    // The writer's own next stamp is after the copy.
    w.append_at(200, mark("f")).unwrap();
    w.close().unwrap();

    let want = [
        Hlc::new(100, 0, A),
        Hlc::new(100, 1, A),
        Hlc::new(100, 2, A),
        Hlc::new(200, 0, A),
        Hlc::new(200, 5, B),
        Hlc::new(200, 6, A),
    ];
    assert_eq!(stamps(&dir), want);
    let all = read_all(&dir);
    assert!(all.iter().all(|r| r.ts_ns == r.hlc().physical_ns));
    // Time points resolve on the physical part, whatever the counter.
    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.find_seq_at_time(100).unwrap(), Some(3));
    assert_eq!(reader.find_seq_at_time(199).unwrap(), Some(3));
    assert_eq!(reader.find_seq_at_time(200).unwrap(), Some(6));
    assert!(changelog::verify(&dir).unwrap().is_ok());
}

#[test]
fn a_host_whose_clock_is_behind_continues_after_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    // Host A's clock ran an hour ahead.
    let ahead = store::clock::now_ns() + 3_600_000_000_000;
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", on(A)).unwrap();
    w.append_at(ahead, mark("a")).unwrap();
    w.append_at(ahead, mark("b")).unwrap();
    w.close().unwrap();

    // Host B, with a right clock, continues the log: it resumes from the
    // log's last stamp and says how far behind its clock is.
    let (mut w, report) = LogWriter::open_with(&dir, "vm-1", on(B)).unwrap();
    assert!(
        report.clock_behind_ns > 3_500_000_000_000,
        "{}",
        report.clock_behind_ns
    );
    assert_eq!(w.last_hlc(), Some(Hlc::new(ahead, 1, A)));
    w.append(mark("c")).unwrap();
    w.append(mark("d")).unwrap();
    w.close().unwrap();
    assert_eq!(
        stamps(&dir),
        [
            Hlc::new(ahead, 0, A),
            Hlc::new(ahead, 1, A),
            Hlc::new(ahead, 2, B),
            Hlc::new(ahead, 3, B),
        ]
    );
}

// ---- format version 1, by hand ----

/// A version-1 segment header (see the `log` module doc).
fn v1_segment_header(vm: &str, first_seq: u64) -> Vec<u8> {
    let mut b = vec![0u8; 96];
    b[0..8].copy_from_slice(b"VMMCLOG\0");
    b[8..10].copy_from_slice(&1u16.to_le_bytes());
    b[10..12].copy_from_slice(&(vm.len() as u16).to_le_bytes());
    b[16..24].copy_from_slice(&first_seq.to_le_bytes());
    b[24..24 + vm.len()].copy_from_slice(vm.as_bytes());
    let crc = crc32fast::hash(&b[..92]);
    b[92..96].copy_from_slice(&crc.to_le_bytes());
    b
}

/// An uncompressed version-1 frame of `records` (type, ts_ns, body),
/// chained to `chain`; returns it and the chain after it.
fn v1_frame(first_seq: u64, chain: u32, records: &[(u8, u64, Vec<u8>)]) -> (Vec<u8>, u32) {
    let mut raw = Vec::new();
    let mut chain_now = chain;
    for (code, ts, body) in records {
        let mut payload = ts.to_le_bytes().to_vec();
        payload.extend_from_slice(body);
        let mut h = crc32fast::Hasher::new();
        h.update(&chain_now.to_le_bytes());
        h.update(&[*code]);
        h.update(&payload);
        chain_now = h.finalize();
        raw.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        raw.extend_from_slice(&chain_now.to_le_bytes());
        raw.push(*code);
        raw.extend_from_slice(&payload);
    }
    let mut hdr = vec![0u8; 56];
    hdr[0..4].copy_from_slice(b"VLFR");
    hdr[8..16].copy_from_slice(&first_seq.to_le_bytes());
    hdr[16..20].copy_from_slice(&(records.len() as u32).to_le_bytes());
    hdr[20..24].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    hdr[24..28].copy_from_slice(&(raw.len() as u32).to_le_bytes());
    hdr[28..32].copy_from_slice(&chain.to_le_bytes());
    hdr[32..40].copy_from_slice(&records[0].1.to_le_bytes());
    hdr[40..48].copy_from_slice(&records[records.len() - 1].1.to_le_bytes());
    hdr[48..52].copy_from_slice(&crc32fast::hash(&raw).to_le_bytes());
    let hcrc = crc32fast::hash(&hdr[..52]);
    hdr[52..56].copy_from_slice(&hcrc.to_le_bytes());
    hdr.extend_from_slice(&raw);
    (hdr, chain_now)
}

/// A version-1 log of seqs 1..=5 in two frames: marks, a barrier, marks,
/// the last two at the same ns. Returns the records' (seq, ts, kind).
fn write_v1_log(dir: &Path) -> Vec<(u64, u64, RecordKind)> {
    std::fs::create_dir_all(dir).unwrap();
    let recs = vec![
        (1, 1_000, mark("one")),
        (2, 1_010, kind(1)),
        (3, 1_020, mark("three")),
        (4, 1_030, mark("four")),
        (5, 1_030, mark("five")),
    ];
    let body = |k: &RecordKind| -> (u8, Vec<u8>) {
        match k {
            RecordKind::Mark { name } => (3, name.as_bytes().to_vec()),
            RecordKind::Barrier { disk_checksum, .. } => {
                let mut b = vec![0u8];
                b.extend_from_slice(disk_checksum);
                (2, b)
            }
            other => panic!("not used here: {other:?}"),
        }
    };
    let frame_of = |rs: &[(u64, u64, RecordKind)]| -> Vec<(u8, u64, Vec<u8>)> {
        rs.iter()
            .map(|(_, ts, k)| {
                let (code, b) = body(k);
                (code, *ts, b)
            })
            .collect()
    };
    let mut seg = v1_segment_header("vm-1", 1);
    let (f1, chain) = v1_frame(1, 0, &frame_of(&recs[..2]));
    let (f2, _) = v1_frame(3, chain, &frame_of(&recs[2..]));
    seg.extend_from_slice(&f1);
    seg.extend_from_slice(&f2);
    std::fs::write(dir.join("00000001.seg"), seg).unwrap();
    recs
}

fn segment_version(path: &Path) -> u16 {
    let b = std::fs::read(path).unwrap();
    u16::from_le_bytes([b[8], b[9]])
}

#[test]
fn a_version_1_log_reads_with_legacy_stamps() {
    assert_eq!((OLDEST_FORMAT_VERSION, FORMAT_VERSION), (1, 2));
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    let recs = write_v1_log(&dir);
    let all = read_all(&dir);
    assert_eq!(all.len(), 5);
    for (r, (seq, ts, kind)) in all.iter().zip(&recs) {
        assert_eq!((r.seq, r.ts_ns, &r.kind), (*seq, *ts, kind));
        assert_eq!(r.hlc(), Hlc::legacy(*ts));
        assert!(r.node.is_legacy());
    }
    let report = changelog::verify(&dir).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!(report.records, 5);
    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.find_seq_at_time(1_025).unwrap(), Some(3));
    assert_eq!(reader.find_seq_at_time(1_030).unwrap(), Some(5));
    assert_eq!(reader.iter_from(4).unwrap().count(), 2);
}

#[test]
fn a_version_1_log_is_continued_in_a_version_2_segment() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = log_dir(&tmp);
    write_v1_log(&dir);
    let (mut w, report) = LogWriter::open_with(&dir, "vm-1", on(A)).unwrap();
    assert_eq!(report.last_seq, 5);
    assert_eq!(w.last_hlc(), Some(Hlc::legacy(1_030)));
    // At the same ns as the last old record: ordered after it.
    assert_eq!(w.append_at(1_030, mark("six")).unwrap(), 6);
    w.append_at(1_040, mark("seven")).unwrap();
    w.close().unwrap();
    let segs = files_with_ext(&dir, "seg");
    assert_eq!(
        segs.len(),
        2,
        "new frames never go into a version-1 segment"
    );
    assert_eq!(segment_version(&segs[0]), 1);
    assert_eq!(segment_version(&segs[1]), FORMAT_VERSION);

    // Reopened: appends go on in the version-2 segment.
    let (mut w, _) = LogWriter::open_with(&dir, "vm-1", on(B)).unwrap();
    w.append_at(1_050, mark("eight")).unwrap();
    w.close().unwrap();
    assert_eq!(files_with_ext(&dir, "seg").len(), 2);

    let got = stamps(&dir);
    assert_eq!(
        got[4..],
        [
            Hlc::legacy(1_030),
            Hlc::new(1_030, 1, A),
            Hlc::new(1_040, 0, A),
            Hlc::new(1_050, 0, B),
        ]
    );
    assert!(got.windows(2).all(|w| w[0] <= w[1]), "{got:?}");
    let report = changelog::verify(&dir).unwrap();
    assert!(report.is_ok(), "{:?}", report.problem);
    assert_eq!((report.records, report.segments), (8, 2));
    let reader = LogReader::open(&dir).unwrap();
    assert_eq!(reader.find_seq_at_time(1_030).unwrap(), Some(6));
    assert_eq!(reader.find_seq_at_time(1_045).unwrap(), Some(7));
    let from_6: Vec<u64> = reader
        .iter_from(6)
        .unwrap()
        .map(|r| r.unwrap().seq)
        .collect();
    assert_eq!(from_6, [6, 7, 8]);
}
