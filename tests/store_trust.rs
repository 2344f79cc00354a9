//! Content-store trust: `vmm store verify --deep` catches pack damage,
//! index damage and a deleted pack (naming the object and the log seq that
//! needs it), and after `vmm store repair` the log replays up to exactly
//! the barrier the report names, and no further.
mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use changelog::log::LogReader;
use changelog::recording::RecordDir;
use changelog::RecordKind;
use common::*;

const WORKLOAD: BlkWrites = BlkWrites {
    seed: 33,
    writes: 60,
    max_blocks: 8,
    flush_every: 5,
    dup_every: 4,
};

/// A recorded run, and what its log references.
struct Recorded {
    _tmp: tempfile::TempDir,
    rec: PathBuf,
    /// Each block object with the first seq that needs it.
    first_seq: HashMap<[u8; 32], u64>,
    /// Barrier seqs in order.
    barriers: Vec<u64>,
    /// Block objects in the order the log first needs them.
    order: Vec<[u8; 32]>,
}

impl Recorded {
    fn new() -> Recorded {
        let tmp = tempfile::tempdir().unwrap();
        let disk = blank_disk(tmp.path(), "disk.img", 4);
        let rec = tmp.path().join("rec");
        run_recorded(&disk, &rec, "vm0", &WORKLOAD.cmdline(), &[]);
        let reader = LogReader::open(RecordDir::new(&rec).log_dir("vm0")).unwrap();
        let (mut first_seq, mut barriers, mut order) = (HashMap::new(), Vec::new(), Vec::new());
        for r in reader.iter().unwrap() {
            let r = r.unwrap();
            match r.kind {
                RecordKind::BlockWrite { blocks, .. } => {
                    for b in blocks {
                        if b != changelog::ZERO_BLOCK_HASH && !first_seq.contains_key(&b) {
                            first_seq.insert(b, r.seq);
                            order.push(b);
                        }
                    }
                }
                RecordKind::Barrier { .. } => barriers.push(r.seq),
                _ => {}
            }
        }
        Recorded {
            _tmp: tmp,
            rec,
            first_seq,
            barriers,
            order,
        }
    }

    fn dir(&self) -> &str {
        self.rec.to_str().unwrap()
    }

    /// An object first needed about half way through the log.
    fn middle_object(&self) -> ([u8; 32], u64) {
        let id = self.order[self.order.len() / 2];
        (id, self.first_seq[&id])
    }

    /// (last barrier before `seq`, first barrier after it).
    fn barriers_around(&self, seq: u64) -> (u64, u64) {
        let before = *self.barriers.iter().rev().find(|&&b| b < seq).unwrap();
        let after = *self.barriers.iter().find(|&&b| b > seq).unwrap();
        (before, after)
    }

    fn pack(&self) -> PathBuf {
        self.rec.join("store/packs/00000000.pack")
    }

    fn replay(&self, until: u64, name: &str) -> std::process::Output {
        let out = self.rec.parent().unwrap().join(name);
        let until = format!("seq={until}");
        let args = ["replay", "--log", self.dir(), "--vm", "vm0", "--until"];
        let mut args = args.to_vec();
        args.extend([until.as_str(), "--out", out.to_str().unwrap()]);
        vmm(&args)
    }
}

fn hex(id: &[u8; 32]) -> String {
    id.iter().map(|b| format!("{b:02x}")).collect()
}

fn find(haystack: &[u8], needle: &[u8]) -> usize {
    haystack
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("bytes present")
}

fn xor_byte(path: &Path, at: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[at] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

fn store_verify_deep(r: &Recorded) -> (i32, String) {
    let out = vmm(&["store", "verify", r.dir(), "--deep"]);
    (out.status.code().unwrap(), stdout(&out))
}

#[test]
fn flipped_pack_byte_is_caught_and_repair_says_how_far_the_log_replays() {
    let r = Recorded::new();
    let (code, text) = store_verify_deep(&r);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.starts_with("OK: ") && text.contains("BLAKE3"),
        "{text}"
    );

    // Damage the value of an object first needed mid-log. Its v2 entry
    // header names it: the id sits 16 bytes into the 52-byte header.
    let (id, seq) = r.middle_object();
    let pack = std::fs::read(r.pack()).unwrap();
    let value = find(&pack, &id) - 16 + 52;
    xor_byte(&r.pack(), value + 2);

    // The index-only checks cannot see it, and say that they did not look.
    let out = vmm(&["log", "verify", r.dir()]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("index only; run --deep to read the data"));
    let out = vmm(&["log", "verify", r.dir(), "--deep"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stdout(&out).contains(&hex(&id)), "{}", stdout(&out));

    let (code, text) = store_verify_deep(&r);
    assert_eq!(code, 1, "{text}");
    let line = text.lines().find(|l| l.contains(&hex(&id))).unwrap();
    assert!(line.starts_with("damaged object"), "{line}");
    assert!(line.contains(&format!("log vm0 seq {seq}")), "{line}");
    let json = vmm(&["store", "verify", r.dir(), "--deep", "--json"]);
    assert_eq!(json.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&json).trim()).unwrap();
    assert_eq!(v["bad_objects"][0]["id"], hex(&id).as_str());

    let out = vmm(&["store", "repair", r.dir()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let (before, after) = r.barriers_around(seq);
    let expect = format!(
        "log vm0: replayable up to barrier seq {before}; seq {seq} needs missing object {}",
        hex(&id)
    );
    assert!(stdout(&out).contains(&expect), "{}", stdout(&out));

    let ok = r.replay(before, "ok.img");
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let bad = r.replay(after, "bad.img");
    assert_eq!(bad.status.code(), Some(125), "{}", stdout(&bad));
    assert!(stderr(&bad).contains(&hex(&id)), "{}", stderr(&bad));
}

#[test]
fn damaged_index_record_is_caught_and_repair_restores_every_object() {
    let r = Recorded::new();
    let (id, seq) = r.middle_object();
    // Its OBJECT record: id in bytes 0..32, kind 1 at byte 53.
    let index_path = r.rec.join("store/index.log");
    let index = std::fs::read(&index_path).unwrap();
    let at = index[64..]
        .chunks_exact(64)
        .position(|rec| rec[..32] == id && rec[53] == 1)
        .unwrap();
    xor_byte(&index_path, 64 + at * 64 + 40);

    let (code, text) = store_verify_deep(&r);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&format!("at byte {}", 64 + at * 64)),
        "{text}"
    );
    let line = text.lines().find(|l| l.contains(&hex(&id))).unwrap();
    assert!(line.starts_with("missing object"), "{line}");
    assert!(line.contains(&format!("log vm0 seq {seq}")), "{line}");
    let stats = vmm(&["store", "stats", r.dir()]);
    assert!(
        stdout(&stats).contains("index damage"),
        "{}",
        stdout(&stats)
    );

    // The pack still holds the object: repair finds it by scanning.
    let out = vmm(&["store", "repair", r.dir()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("log vm0: fully replayable"));
    let (code, text) = store_verify_deep(&r);
    assert_eq!(code, 0, "{text}");
    let last = *r.barriers.last().unwrap();
    let full = r.replay(last, "full.img");
    assert_eq!(full.status.code(), Some(0), "{}", stderr(&full));
}

#[test]
fn deleted_pack_is_caught_and_nothing_after_the_base_replays() {
    let r = Recorded::new();
    std::fs::remove_file(r.pack()).unwrap();
    let first = r.order[0];
    let seq = r.first_seq[&first];

    let (code, text) = store_verify_deep(&r);
    assert_eq!(code, 1, "{text}");
    let line = text.lines().find(|l| l.contains(&hex(&first))).unwrap();
    assert!(line.contains("00000000.pack"), "{line}");
    assert!(line.contains(&format!("log vm0 seq {seq}")), "{line}");
    // Even the index-only check notices the pack is gone.
    let out = vmm(&["store", "verify", r.dir()]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));

    let out = vmm(&["store", "repair", r.dir()]);
    assert_eq!(out.status.code(), Some(1));
    let (before, after) = r.barriers_around(seq);
    let expect = format!("log vm0: replayable up to barrier seq {before}; seq {seq} needs");
    assert!(stdout(&out).contains(&expect), "{}", stdout(&out));
    assert_eq!(r.replay(before, "ok.img").status.code(), Some(0));
    assert_eq!(r.replay(after, "bad.img").status.code(), Some(125));
}

#[test]
fn snapshots_that_need_a_lost_object_are_named_broken() {
    let tmp = tempfile::tempdir().unwrap();
    let disk = blank_disk(tmp.path(), "disk.img", 4);
    let rec = tmp.path().join("rec");
    let memtest = "workload=memtest pages=64 iters=20 seed=1 snap_every=10";
    run_recorded(&disk, &rec, "vm0", memtest, &[]);
    let ids: Vec<String> = std::fs::read_dir(rec.join("snapshots"))
        .unwrap()
        .filter_map(|e| {
            let name = e.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".snap").map(str::to_string)
        })
        .collect();
    assert!(!ids.is_empty());
    let dir = rec.to_str().unwrap();
    let out = vmm(&["store", "verify", dir, "--deep"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{} snapshot(s)", ids.len())),
        "{}",
        stdout(&out)
    );

    std::fs::remove_file(rec.join("store/packs/00000000.pack")).unwrap();
    let out = vmm(&["store", "verify", dir, "--deep", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    for id in &ids {
        assert!(
            v["broken_snapshots"]
                .as_array()
                .unwrap()
                .contains(&id.as_str().into()),
            "{id} not in {v}"
        );
    }
    let out = vmm(&["store", "repair", dir, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["ok"], false);
    let broken = v["references"]["broken_snapshots"].as_array().unwrap();
    assert_eq!(broken.len(), ids.len(), "{v}");
    let out = vmm(&["store", "repair", dir]);
    assert!(
        stdout(&out).contains(&format!("snapshot {}: broken", ids[0])),
        "{}",
        stdout(&out)
    );
}
