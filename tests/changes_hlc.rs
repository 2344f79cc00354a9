//! `vmm changes` over VMs recorded on different hosts (written here as
//! their recorders would, without booting a VM): merged in HLC stamp
//! order, with each change's stamp in `--json`; `vmm log show --json`
//! shows record stamps; `$VMM_NODE_ID` names the host that stamps.
mod common;

use std::path::Path;
use std::process::Command;

use changelog::log::{BarrierKind, LogOptions, LogWriter, RecordKind};
use changelog::recording::RecordDir;
use changelog::{Hlc, HlcClock, NodeId};
use common::*;
use introspection::lift::SemanticEvent;
use introspection::semantic::{Change, Format, Op, SemanticChange};
use serde_json::{json, Value};

/// `vm`'s log as host `node` records it when its clock reads `readings`
/// at the barriers: one barrier and one inserted key (`vm/i`) each.
fn record_on_host(rec: &Path, vm: &str, node: NodeId, readings: &[u64]) {
    let dir = RecordDir::new(rec);
    let opts = LogOptions {
        node,
        ..LogOptions::default()
    };
    let (mut w, _) = LogWriter::open_with(dir.log_dir(vm), vm, opts).unwrap();
    let mut clock = HlcClock::new(node);
    for (i, &now) in readings.iter().enumerate() {
        let barrier = RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: [0; 32],
        };
        let hlc = clock.tick(now);
        let seq = w.append_stamped(hlc, barrier).unwrap();
        let change = Change {
            collection: "t".into(),
            key: format!("{vm}/{i}"),
            op: Op::Insert,
            before: None,
            after: Some(json!(i)),
        };
        let mut c =
            SemanticChange::from_change(vm, seq, hlc.physical_ns, "app.db", Format::Kv, change);
        c.hlc = Some(hlc);
        let json = serde_json::to_string(&SemanticEvent::Change(c)).unwrap();
        w.append_stamped(clock.tick(now), RecordKind::Semantic { json })
            .unwrap();
    }
    w.close().unwrap();
}

#[test]
fn changes_of_two_hosts_merge_by_stamp_despite_skewed_clocks() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    let s = 1_000_000_000u64;
    let t0 = 1_700_000_000 * s;
    let (a, b) = (NodeId(0xa), NodeId(0xb));
    // Host A runs 2 s ahead, and its clock is stepped back 3 s mid-run
    // (NTP correcting it): its third change is held at its second's time.
    record_on_host(&rec, "web", a, &[t0 + 2 * s, t0 + 4 * s, t0 + s]);
    // Host B's clock is right.
    record_on_host(&rec, "db", b, &[t0 + 3 * s, t0 + 5 * s]);
    let all = changes_json(&rec, &[]);
    let got: Vec<(String, String)> = all
        .iter()
        .map(|c| {
            let key = c["key"].as_str().unwrap().to_string();
            (key, c["hlc"].as_str().unwrap().to_string())
        })
        .collect();
    let stamp =
        |secs: u64, logical: u32, node: NodeId| Hlc::new(t0 + secs * s, logical, node).to_string();
    let want = [
        ("web/0", stamp(2, 0, a)),
        ("db/0", stamp(3, 0, b)),
        ("web/1", stamp(4, 0, a)),
        // Stepped back to t0 + 1 s: stamped after web/1, not before web/0.
        ("web/2", stamp(4, 2, a)),
        ("db/1", stamp(5, 0, b)),
    ]
    .map(|(k, h)| (k.to_string(), h));
    assert_eq!(got, want);
    // Every change's time is its stamp's physical part.
    for c in &all {
        let hlc: Hlc = c["hlc"].as_str().unwrap().parse().unwrap();
        assert_eq!(c["ts_ns"].as_u64(), Some(hlc.physical_ns), "{c}");
    }
    // `time=` points resolve on the physical part.
    let until = format!("time={}", fmt_time(t0 + 4 * s));
    let keys: Vec<Value> = changes_json(&rec, &["--until", &until])
        .iter()
        .map(|c| c["key"].clone())
        .collect();
    assert_eq!(
        keys,
        [
            json!("web/0"),
            json!("db/0"),
            json!("web/1"),
            json!("web/2")
        ]
    );
}

/// RFC 3339 with nanoseconds, as `time=` points take it.
fn fmt_time(ns: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns);
    humantime::format_rfc3339_nanos(t).to_string()
}

#[test]
fn log_show_has_stamps_and_vmm_node_id_names_the_host() {
    let tmp = tempfile::tempdir().unwrap();
    let rec = tmp.path().join("rec");
    record_on_host(&rec, "web", NodeId(0xa), &[1_000]);
    let out = Command::new(VMM)
        .args(["log", "mark", rec.to_str().unwrap(), "named"])
        .env("VMM_NODE_ID", "host-x")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = vmm(&["log", "show", rec.to_str().unwrap(), "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let records: Vec<Value> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(records.len(), 3);
    assert_eq!(records[0]["hlc"], "1000.0@000000000000000a");
    let mark = &records[2];
    assert_eq!(mark["name"], "named");
    let hlc: Hlc = mark["hlc"].as_str().unwrap().parse().unwrap();
    assert_eq!(hlc.node, NodeId::from_name("host-x"));
    assert_eq!(mark["node"], NodeId::from_name("host-x").to_string());
}
