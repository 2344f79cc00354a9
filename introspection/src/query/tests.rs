//! Queries over hand-written logs: bounds, damage, net view, shortening.
use serde_json::json;

use super::*;
use crate::semantic::SemanticChange;
use changelog::log::{BarrierKind, LogOptions, LogReader, LogWriter};
use changelog::recording::RecordDir;
use changelog::{Hlc, HlcClock, NodeId};

/// Writes a log for `vm`: per step either a mark or a change
/// (table t, key, op, after), each change at its own barrier seq.
fn write_log(dir: &RecordDir, vm: &str, steps: &[(&str, &str, Option<i64>)]) {
    let (mut w, _) = LogWriter::open(dir.log_dir(vm), vm).unwrap();
    for (i, (what, key, after)) in steps.iter().enumerate() {
        if *what == "mark" {
            w.append(RecordKind::Mark {
                name: key.to_string(),
            })
            .unwrap();
            continue;
        }
        let op = match *what {
            "insert" => Op::Insert,
            "update" => Op::Update,
            _ => Op::Delete,
        };
        let seq = w
            .append(RecordKind::Mark {
                name: format!("step{i}"),
            })
            .unwrap();
        let c = SemanticChange {
            vm: vm.into(),
            seq,
            ts_ns: 1_000 + seq,
            hlc: None,
            file: "app.db".into(),
            format: Format::Sqlite,
            collection: "t".into(),
            key: key.to_string(),
            op,
            before: None,
            after: after.map(|v| json!({ "v": v })),
            source: None,
            provenance: None,
        };
        let json = serde_json::to_string(&SemanticEvent::Change(c)).unwrap();
        w.append(RecordKind::Semantic { json }).unwrap();
        w.commit().unwrap(); // one frame per step: damage can hit one
    }
    w.close().unwrap();
}

fn keys(found: &Found<SemanticEvent>) -> Vec<String> {
    found
        .items
        .iter()
        .map(|e| match e {
            SemanticEvent::Change(c) => format!("{}:{}:{}", c.vm, c.key, c.op),
            SemanticEvent::DecodeError(e) => e.file.clone(),
        })
        .collect()
}

fn steps() -> Vec<(&'static str, &'static str, Option<i64>)> {
    vec![
        ("insert", "1", Some(1)),
        ("insert", "2", Some(2)),
        ("mark", "m", None),
        ("update", "1", Some(10)),
        ("delete", "2", None),
        ("insert", "3", Some(3)),
        ("update", "3", Some(30)),
        ("update", "3", Some(3)),
    ]
}

#[test]
fn bounds_by_seq_and_mark() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    write_log(&dir, "a", &steps());
    let all = changes(&dir, &Filter::default()).unwrap();
    assert_eq!(all.items.len(), 7);
    let mark: Point = "mark=m".parse().unwrap();
    let f = Filter {
        until: Some(mark.clone()),
        ..Filter::default()
    };
    assert_eq!(
        keys(&changes(&dir, &f).unwrap()),
        ["a:1:insert", "a:2:insert"]
    );
    let f = Filter {
        since: Some(mark),
        until: Some("seq=9".parse().unwrap()),
        ..Filter::default()
    };
    assert_eq!(
        keys(&changes(&dir, &f).unwrap()),
        ["a:1:update", "a:2:delete"]
    );
    let f = Filter {
        since: Some("mark=nope".parse().unwrap()),
        ..Filter::default()
    };
    let e = changes(&dir, &f).unwrap_err();
    assert!(e.to_string().contains("mark=nope"), "{e}");
}

#[test]
fn net_shows_each_key_at_both_points_and_omits_unchanged_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    write_log(&dir, "a", &steps());
    let at = |p: &str| p.parse::<Point>().unwrap();
    let found = net(&dir, &Filter::default(), &at("mark=m"), &at("end")).unwrap();
    let shown: Vec<String> = found.items.iter().map(|c| c.to_string()).collect();
    assert_eq!(
        shown,
        [
            r#"a app.db t[1] update: {"v":1} -> {"v":10}"#,
            r#"a app.db t[2] delete: {"v":2} -> (absent)"#,
            r#"a app.db t[3] insert: (absent) -> {"v":3}"#,
        ]
    );
    // Key 3 changed and changed back between its insert and the end.
    let after_insert = found.items[2].clone();
    let seq_of_insert = 10; // a mark record before each change: see write_log
    let later = net(
        &dir,
        &Filter::default(),
        &Point::Seq(seq_of_insert),
        &at("end"),
    )
    .unwrap();
    assert!(
        later.items.iter().all(|c| c.key != "3"),
        "{:?} (key 3 was {after_insert:?})",
        later.items
    );
    let e = net(&dir, &Filter::default(), &at("end"), &at("seq=1"));
    assert!(e.is_ok(), "End is open, not a seq");
    let e = net(&dir, &Filter::default(), &at("seq=9"), &at("seq=1")).unwrap_err();
    assert!(e.to_string().contains("comes after"), "{e}");
}

#[test]
fn a_damaged_log_is_reported_and_the_others_are_answered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    write_log(&dir, "good", &steps());
    write_log(&dir, "bad", &steps());
    let reader = LogReader::open(dir.log_dir("bad")).unwrap();
    let frames = reader.frames().unwrap();
    let victim = &frames[frames.len() / 2];
    let mut bytes = std::fs::read(&victim.segment).unwrap();
    bytes[victim.offset as usize + victim.stored_len as usize / 2 + 8] ^= 0x40;
    std::fs::write(&victim.segment, bytes).unwrap();

    let found = changes(&dir, &Filter::default()).unwrap();
    assert_eq!(found.damaged.len(), 1, "{:?}", found.damaged);
    let d = &found.damaged[0];
    assert_eq!(d.vm, "bad");
    assert_eq!(d.seq, Some(victim.first_seq));
    let good = keys(&found)
        .iter()
        .filter(|k| k.starts_with("good:"))
        .count();
    assert_eq!(good, 7);
    let bad = keys(&found)
        .iter()
        .filter(|k| k.starts_with("bad:"))
        .count();
    assert!(bad < 7, "only what precedes the damage: {bad}");
    assert!(d.to_string().contains("VM bad is damaged at seq"), "{d}");
}

#[test]
fn long_values_and_blobs_are_shortened_for_text() {
    let long = "x".repeat(100);
    let v = json!({"name": long, "pic": {"$blob": "ab".repeat(500)}, "n": 5});
    let s = shorten(&v, 8).to_string();
    assert!(s.contains(r#""xxxxxxxx…[100 chars]""#), "{s}");
    assert!(s.contains(r#""abababab…[500 bytes]""#), "{s}");
    assert!(s.contains(r#""n":5"#), "{s}");
    assert_eq!(shorten(&json!("short"), 8), json!("short"));
}

/// Writes `vm`'s log as a host `node` whose clock reads `readings` at its
/// barriers (it may step back): one barrier and one change (key = its
/// index) per reading, stamped as the recorder does.
fn write_host_log(dir: &RecordDir, vm: &str, node: NodeId, readings: &[u64]) {
    let opts = LogOptions {
        node,
        ..LogOptions::default()
    };
    let (mut w, _) = LogWriter::open_with(dir.log_dir(vm), vm, opts).unwrap();
    let mut clock = HlcClock::new(node);
    for (i, &now) in readings.iter().enumerate() {
        let hlc = clock.tick(now);
        let barrier = RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: [0; 32],
        };
        let seq = w.append_stamped(hlc, barrier).unwrap();
        let mut c = SemanticChange::from_change(
            vm,
            seq,
            hlc.physical_ns,
            "app.db",
            Format::Sqlite,
            crate::semantic::Change {
                collection: "t".into(),
                key: i.to_string(),
                op: Op::Insert,
                before: None,
                after: Some(json!(i)),
            },
        );
        c.hlc = Some(hlc);
        let json = serde_json::to_string(&SemanticEvent::Change(c)).unwrap();
        w.append_stamped(clock.tick(now), RecordKind::Semantic { json })
            .unwrap();
    }
    w.close().unwrap();
}

#[test]
fn vms_of_hosts_with_skewed_clocks_merge_in_stamp_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    let (a, b) = (NodeId(0xa), NodeId(0xb));
    // Host B's clock steps back from 500 to 100 between its barriers; its
    // second change still follows its first, at (500, 2) (the semantic
    // record after each barrier takes a stamp too).
    write_host_log(&dir, "vm-b", b, &[500, 100]);
    write_host_log(&dir, "vm-a", a, &[200, 500, 500]);
    let found = changes(&dir, &Filter::default()).unwrap();
    let order: Vec<(String, Hlc)> = found
        .items
        .iter()
        .map(|e| match e {
            SemanticEvent::Change(c) => (format!("{}:{}", c.vm, c.key), c.hlc.unwrap()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        order,
        [
            ("vm-a:0".to_string(), Hlc::new(200, 0, a)),
            ("vm-a:1".to_string(), Hlc::new(500, 0, a)),
            // Same physical time and counter: node a before node b.
            ("vm-b:0".to_string(), Hlc::new(500, 0, b)),
            ("vm-a:2".to_string(), Hlc::new(500, 2, a)),
            ("vm-b:1".to_string(), Hlc::new(500, 2, b)),
        ]
    );
    // `time=` bounds use the physical part: B's stepped-back change is at 500.
    let f = Filter {
        until: Some(Point::Time(499)),
        ..Filter::default()
    };
    assert_eq!(keys(&changes(&dir, &f).unwrap()), ["vm-a:0:insert"]);
    // JSON carries the stamp.
    let json = serde_json::to_string(&found.items[2]).unwrap();
    assert!(json.contains(r#""hlc":"500.0@000000000000000b""#), "{json}");
}

#[test]
fn changes_recorded_before_stamps_get_legacy_ones_and_keep_log_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    write_log(&dir, "old", &steps());
    let found = changes(&dir, &Filter::default()).unwrap();
    for e in &found.items {
        let SemanticEvent::Change(c) = e else {
            panic!("{e:?}")
        };
        assert_eq!(c.hlc, Some(Hlc::legacy(c.ts_ns)));
    }
    assert_eq!(found.items.len(), 7);
}
