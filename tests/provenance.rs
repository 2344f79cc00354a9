//! Per-step provenance of semantic changes, and what-if decoders: every
//! recorded change names its decoder and version and the hashes of what
//! it read and produced; `vmm verify-change` re-derives them from the
//! stored blocks (and fails, saying why, on a damaged block); relifting
//! with the recorder's decoder gives the recorded log back exactly, and
//! two decoders are compared where they really differ.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

/// `vmm ARGS` with the expected exit status; (stdout, stderr).
fn run(args: &[&str], status: i32) -> (String, String) {
    let out = vmm(args);
    assert_eq!(
        out.status.code(),
        Some(status),
        "vmm {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    (stdout(&out), stderr(&out))
}

fn lines(text: &str) -> Vec<Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Records `cmdline` as VM `vm` into `rec` (own 64 MiB disk).
fn record(dir: &Path, rec: &Path, vm: &str, cmdline: &str) {
    let disk = blank_disk(dir, &format!("{vm}.img"), 64);
    run_recorded(&disk, rec, vm, cmdline, &["--timeout", "120"]);
}

/// name -> version, from `vmm changes --list-decoders --json`.
fn decoders() -> BTreeMap<String, String> {
    let (out, _) = run(&["changes", "--list-decoders", "--json"], 0);
    lines(&out)
        .iter()
        .map(|d| {
            (
                d["name"].as_str().unwrap().to_string(),
                d["version"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

const WORKLOADS: [(&str, &str, &str); 4] = [
    ("sq", "workload=sqlite rows=120 seed=7", "sqlite"),
    (
        "wal",
        "workload=sqlite rows=120 seed=8 journal=wal",
        "sqlite",
    ),
    (
        "js",
        "workload=json seed=5 records=40 rewrites=5 ops=25",
        "json",
    ),
    ("kv", "workload=kv seed=3 ops=400 keys=60", "kv"),
];

fn recorded() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    for (vm, cmdline, _) in WORKLOADS {
        record(tmp.path(), &rec, vm, cmdline);
    }
    (tmp, rec)
}

#[test]
fn provenance_re_derives_for_sqlite_json_and_kv_workloads() {
    let (_tmp, rec) = recorded();
    let dir = rec.to_str().unwrap();
    let versions = decoders();
    // `vmm --version` prints "vmm VERSION".
    let (vmm_version, _) = run(&["--version"], 0);
    let vmm_version = vmm_version.trim().to_string();
    for (vm, _, decoder) in WORKLOADS {
        let (out, _) = run(&["changes", dir, "--vm", vm, "--json", "--provenance"], 0);
        let events = lines(&out);
        assert!(events.len() > 10, "{vm}: only {} changes", events.len());
        let mut seqs = BTreeSet::new();
        for e in &events {
            let p = &e["provenance"];
            assert_eq!(p["decoder"], decoder, "{e}");
            assert_eq!(p["version"], versions[decoder].as_str(), "{e}");
            assert!(p["reads"]["blocks"].as_u64().unwrap() > 0, "{e}");
            for h in [&p["reads"]["hash"], &p["output"], &p["step"]] {
                assert_eq!(h.as_str().unwrap().len(), 64, "{e}");
            }
            // The barrier's metrics record names this build.
            assert_eq!(
                format!("vmm {}", e["vmm_version"].as_str().unwrap()),
                vmm_version,
                "{e}"
            );
            seqs.insert(e["seq"].as_u64().unwrap());
        }
        // Later steps diff against an earlier barrier of the same log.
        let based = events
            .iter()
            .filter(|e| e["provenance"]["base"]["seq"].is_u64());
        assert!(based.count() > 0, "{vm}: no step has a base");
        // Every step re-derives from the stored blocks.
        for seq in &seqs {
            let seq = seq.to_string();
            let (out, _) = run(&["verify-change", dir, &seq, "--vm", vm], 0);
            assert!(
                out.starts_with(&format!("verified {vm} seq {seq} "))
                    && out.contains("hashes match"),
                "{out}"
            );
        }
        // The recorder's decoder, relifted from the store, gives the
        // recorded log back, provenance and all.
        let (recorded, _) = run(&["changes", dir, "--vm", vm, "--json"], 0);
        let (relifted, err) = run(
            &["changes", dir, "--vm", vm, "--json", "--decoder", decoder],
            0,
        );
        assert_eq!(relifted, recorded, "{vm}: {err}");
    }
    // The text form shows the same.
    let (text, _) = run(&["changes", dir, "--vm", "kv", "--provenance"], 0);
    let second = text.lines().nth(1).unwrap();
    assert!(
        second.starts_with(&format!("    decoder kv@{}  read ", versions["kv"]))
            && second.ends_with(&format!("  {vmm_version}")),
        "{second}"
    );
    // Several VMs: verify-change needs --vm, and a seq without changes says so.
    let (_, err) = run(&["verify-change", dir, "5"], 125);
    assert!(err.contains("pass --vm ID"), "{err}");
    let (_, err) = run(&["verify-change", dir, "1", "--vm", "kv"], 125);
    assert!(
        err.contains("no change of any file was lifted at seq 1"),
        "{err}"
    );
}

/// Flips a byte of object `hash`'s stored value (a v2 pack entry: the id
/// 16 bytes into its 52-byte header).
fn damage_object(rec: &Path, hash: &str) {
    let pack = rec.join("store/packs/00000000.pack");
    let mut bytes = std::fs::read(&pack).unwrap();
    let id: Vec<u8> = (0..32)
        .map(|i| u8::from_str_radix(&hash[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let at = bytes
        .windows(32)
        .position(|w| w == id)
        .expect("object in the pack");
    bytes[at - 16 + 52 + 2] ^= 0x40;
    std::fs::write(&pack, bytes).unwrap();
}

#[test]
fn a_tampered_block_makes_verify_change_fail_and_say_which() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    record(tmp.path(), &rec, "vm0", "workload=sqlite rows=80 seed=9");
    let dir = rec.to_str().unwrap();
    let events = changes_json(&rec, &[]);
    let first = events[0]["seq"].as_u64().unwrap().to_string();
    let last = events.last().unwrap()["seq"].as_u64().unwrap().to_string();
    let (out, _) = run(&["verify-change", dir, &last, "--json"], 0);
    let check = &lines(&out)[0];
    let blocks = check["reads"].as_array().unwrap();
    assert_eq!(
        blocks.len() as u64,
        events.last().unwrap()["provenance"]["reads"]["blocks"]
            .as_u64()
            .unwrap()
    );
    // A block the last step read and the first did not (the database grew).
    let (out, _) = run(&["verify-change", dir, &first, "--json"], 0);
    let early: BTreeSet<String> = lines(&out)[0]["reads"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["hash"].as_str().unwrap().to_string())
        .collect();
    let zero = "0".repeat(64);
    let victim = blocks
        .iter()
        .rev()
        .find(|r| r["hash"] != zero.as_str() && !early.contains(r["hash"].as_str().unwrap()))
        .expect("a block only the last step read");
    let hash = victim["hash"].as_str().unwrap();
    damage_object(&rec, hash);

    let (_, err) = run(&["verify-change", dir, &last], 1);
    let line = err.trim();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with(&format!(
            "error: verify-change vm0 seq {last}: FAILED: app.db at seq "
        )) && line.contains(&format!("block {} (store object {hash})", victim["block"]))
            && line.contains("corrupt")
            && line.contains("does not re-derive"),
        "{line}"
    );
    // A step that read only good blocks still verifies.
    let (out, _) = run(&["verify-change", dir, &first], 0);
    assert!(out.starts_with("verified vm0"), "{out}");
}

#[test]
fn compare_decoder_reports_the_known_disagreements() {
    let (_tmp, rec) = recorded();
    let dir = rec.to_str().unwrap();
    // JSON: per record (the guest's /records:id hint) against per leaf.
    let (out, err) = run(
        &[
            "changes",
            dir,
            "--vm",
            "js",
            "--json",
            "--compare-decoder",
            "json",
            "--compare-decoder",
            "json-leaves",
        ],
        0,
    );
    let found = lines(&out);
    assert!(!found.is_empty(), "{err}");
    let d = &found[0];
    assert_eq!(d["event"], "disagreement");
    assert!(
        d["only_a"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["collection"] == "/records"),
        "{d}"
    );
    let leaves = d["only_b"].as_array().unwrap();
    assert!(!leaves.is_empty(), "{d}");
    assert!(
        leaves
            .iter()
            .all(|c| c["key"].as_str().unwrap().starts_with("/records/")),
        "{d}"
    );
    let summary = format!("{} of ", found.len());
    assert!(
        err.contains(&summary) && err.contains("steps disagree"),
        "{err}"
    );
    // The json-leaves relift itself: changes keyed by pointer.
    let (out, _) = run(
        &[
            "changes",
            dir,
            "--vm",
            "js",
            "--json",
            "--decoder",
            "json-leaves",
        ],
        0,
    );
    let relifted = lines(&out);
    assert!(relifted
        .iter()
        .all(|c| c["provenance"]["decoder"] == "json-leaves"));
    assert_eq!(
        relifted.len() as u64,
        found
            .iter()
            .map(|d| d["b_changes"].as_u64().unwrap())
            .sum::<u64>()
    );

    // SQLite in WAL mode without its WAL: the rows show up only when a
    // checkpoint copies them into the main file, so some steps disagree;
    // in rollback-journal mode there is no WAL and nothing differs.
    let cmp = |vm: &str, b: &str| {
        let (out, err) = run(
            &[
                "changes",
                dir,
                "--vm",
                vm,
                "--json",
                "--compare-decoder",
                "sqlite",
                "--compare-decoder",
                b,
            ],
            0,
        );
        (lines(&out), err)
    };
    let (wal, _) = cmp("wal", "sqlite-nowal");
    assert!(!wal.is_empty());
    assert!(
        wal.iter()
            .any(|d| d["b_changes"].as_u64() < d["a_changes"].as_u64()),
        "{wal:?}"
    );
    let (journal, err) = cmp("sq", "sqlite-nowal");
    assert!(journal.is_empty() && err.contains(": 0 of "), "{err}");
    // No key-column hints in this workload: keying by rowid changes nothing.
    let (rowid, _) = cmp("sq", "sqlite-rowid");
    assert!(rowid.is_empty(), "{rowid:?}");

    // Bad decoder names and versions are usage errors naming what exists.
    let (_, err) = run(&["changes", dir, "--decoder", "xml"], 64);
    assert!(
        err.contains("no decoder named 'xml'") && err.contains("json-leaves"),
        "{err}"
    );
    let (_, err) = run(&["changes", dir, "--decoder", "json@00000000"], 64);
    let version = &decoders()["json"];
    assert!(
        err.contains(&format!("this build has json@{version}")),
        "{err}"
    );
    let (_, err) = run(
        &[
            "changes",
            dir,
            "--compare-decoder",
            "json",
            "--compare-decoder",
            "kv",
        ],
        64,
    );
    assert!(err.contains("compare two decoders of one format"), "{err}");
}
