//! `vmm changes` and `vmm history` as audit queries: bounds by seq, mark
//! and time, one VM or all, a damaged log beside good ones, long values
//! shortened in text, and the net view between two points.
mod common;

use std::collections::BTreeMap;
use std::path::Path;

use common::*;
use serde_json::Value;

/// `vmm ARGS` with the expected exit status; (stdout, stderr).
fn run(args: &[&str], status: i32) -> (String, String) {
    let out = vmm(args);
    assert_eq!(
        out.status.code(),
        Some(status),
        "vmm {args:?}: {}",
        stderr(&out)
    );
    (stdout(&out), stderr(&out))
}

fn sqlite(dir: &Path, rec: &Path, vm: &str, seed: u64, rows: u64) {
    let disk = blank_disk(dir, &format!("{vm}.img"), 64);
    let cmdline = format!("workload=sqlite rows={rows} seed={seed}");
    run_recorded(&disk, rec, vm, &cmdline, &["--timeout", "120"]);
}

fn seqs(events: &[Value]) -> Vec<u64> {
    events.iter().map(|e| e["seq"].as_u64().unwrap()).collect()
}

#[test]
fn bounds_by_seq_and_mark_one_vm_and_shortened_text() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    sqlite(dir.path(), &rec, "vm0", 3, 150);
    sqlite(dir.path(), &rec, "vm1", 3, 150);
    // vm0 goes on with a key/value workload on the same disk, after a mark.
    run(
        &[
            "log",
            "mark",
            rec.to_str().unwrap(),
            "--vm",
            "vm0",
            "kv-phase",
        ],
        0,
    );
    let disk = dir.path().join("vm0.img");
    run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=kv seed=3 ops=300 keys=50",
        &["--timeout", "60"],
    );

    let all = changes_json(&rec, &["--vm", "vm0"]);
    assert!(all.iter().all(|e| e["vm"] == "vm0"));
    let (db, kv): (Vec<Value>, Vec<Value>) =
        all.iter().cloned().partition(|e| e["file"] == "app.db");
    assert!(
        db.len() > 150 && !kv.is_empty(),
        "{} {}",
        db.len(),
        kv.len()
    );
    assert!(kv.iter().all(|e| e["file"] == "kv.log"));
    // The mark splits the two runs exactly.
    assert_eq!(
        changes_json(&rec, &["--vm", "vm0", "--until", "mark=kv-phase"]),
        db
    );
    assert_eq!(
        changes_json(&rec, &["--vm", "vm0", "--since", "mark=kv-phase"]),
        kv
    );
    // Seq bounds are inclusive.
    let s = seqs(&db)[db.len() / 2];
    let (from, to) = (format!("seq={s}"), format!("seq={}", s + 1));
    let at_s: Vec<Value> = db.iter().filter(|e| e["seq"] == s).cloned().collect();
    assert!(!at_s.is_empty());
    assert_eq!(
        changes_json(&rec, &["--vm", "vm0", "--since", &from, "--until", &from]),
        at_s
    );
    let from_s: Vec<Value> = all
        .iter()
        .filter(|e| e["seq"].as_u64() >= Some(s))
        .cloned()
        .collect();
    assert_eq!(
        changes_json(&rec, &["--vm", "vm0", "--since", &from]),
        from_s
    );
    let to_s: Vec<Value> = all
        .iter()
        .filter(|e| e["seq"].as_u64() <= Some(s + 1))
        .cloned()
        .collect();
    assert_eq!(changes_json(&rec, &["--vm", "vm0", "--until", &to]), to_s);
    // A mark only vm0 has: vm1 is left out, and said so.
    let (out, err) = run(
        &["changes", rec.to_str().unwrap(), "--since", "mark=kv-phase"],
        0,
    );
    assert!(!out.contains(" vm1 "), "{out}");
    assert!(err.contains("VM vm1 has no mark=kv-phase"), "{err}");
    let out = vmm(&["changes", rec.to_str().unwrap(), "--since", "mark=nope"]);
    assert_one_line_error(&out, 125, "mark=nope");

    // --vm for history: both VMs wrote customer 3, each is asked alone.
    let history = |vm: Option<&str>| {
        let mut args = vec![
            "history",
            rec.to_str().unwrap(),
            "--file",
            "app.db",
            "--table",
            "customers",
            "--key",
            "3",
        ];
        if let Some(vm) = vm {
            args.extend_from_slice(&["--vm", vm]);
        }
        run(&args, 0).0
    };
    let both = history(None);
    let one = history(Some("vm1"));
    assert!(
        both.contains(" vm0 seq ") && both.contains(" vm1 seq "),
        "{both}"
    );
    assert!(
        one.contains(" vm1 seq ") && !one.contains(" vm0 seq "),
        "{one}"
    );
    assert_eq!(one.lines().count() * 2, both.lines().count());
    let out = vmm(&[
        "history",
        rec.to_str().unwrap(),
        "--file",
        "app.db",
        "--key",
        "3",
        "--vm",
        "vm9",
    ]);
    assert_one_line_error(&out, 125, "vm9");

    // Text: a time column, blobs and long strings shortened with their
    // length; JSON keeps them whole.
    let (text, _) = run(
        &[
            "changes",
            rec.to_str().unwrap(),
            "--vm",
            "vm0",
            "--file",
            "app.db",
        ],
        0,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), db.len());
    for l in &lines {
        let t = l.split_whitespace().next().unwrap();
        assert!(
            t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{l}"
        );
    }
    let (i, blob) = db
        .iter()
        .enumerate()
        .find_map(|(i, e)| {
            let hex = e["after"]["photo"]["$blob"].as_str()?;
            (hex.len() > 200).then(|| (i, hex.to_string()))
        })
        .expect("a customer with a photo blob");
    assert!(
        lines[i].contains(&format!("{}…[{} bytes]", &blob[..64], blob.len() / 2)),
        "{}",
        lines[i]
    );
    assert!(!lines[i].contains(&blob[..65]), "{}", lines[i]);

    // The time column is a bound too: `time=` that line's time keeps
    // everything from that millisecond on.
    let j = db.len() / 3;
    let t = lines[j].split_whitespace().next().unwrap();
    let ms = db[j]["ts_ns"].as_u64().unwrap() / 1_000_000 * 1_000_000;
    let since_t: Vec<Value> = all
        .iter()
        .filter(|e| e["ts_ns"].as_u64() >= Some(ms))
        .cloned()
        .collect();
    let since = format!("time={t}");
    assert_eq!(
        changes_json(&rec, &["--vm", "vm0", "--since", &since]),
        since_t
    );
    // A bare time works as before points existed.
    assert_eq!(changes_json(&rec, &["--vm", "vm0", "--since", t]), since_t);
}

#[test]
fn a_damaged_log_is_reported_and_the_others_are_shown() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    sqlite(dir.path(), &rec, "vm0", 1, 100);
    sqlite(dir.path(), &rec, "vm1", 2, 100);
    let good = changes_json(&rec, &["--vm", "vm0"]);
    // Flip a bit in the middle of vm1's log.
    let reader = changelog::LogReader::open(rec.join("logs").join("vm1")).unwrap();
    let frames = reader.frames().unwrap();
    let victim = &frames[frames.len() / 2];
    let mut bytes = std::fs::read(&victim.segment).unwrap();
    bytes[victim.offset as usize + 100] ^= 0x10;
    std::fs::write(&victim.segment, bytes).unwrap();
    let at = format!("at seq {}", victim.first_seq);

    let (out, err) = run(&["changes", rec.to_str().unwrap()], 1);
    let warnings: Vec<&str> = err.lines().filter(|l| l.starts_with("warning:")).collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0].contains("VM vm1 is damaged") && warnings[0].contains(&at),
        "{err}"
    );
    let vm0_lines = out.lines().filter(|l| l.contains(" vm0 seq ")).count();
    assert_eq!(vm0_lines, good.len());
    assert!(
        out.contains(" vm1 seq "),
        "vm1's changes before the damage are shown"
    );

    let all = vmm(&["changes", rec.to_str().unwrap(), "--json"]);
    assert_eq!(all.status.code(), Some(1));
    let objects: Vec<Value> = stdout(&all)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let damaged: Vec<&Value> = objects.iter().filter(|o| o["event"] == "damaged").collect();
    assert_eq!(damaged.len(), 1);
    assert_eq!(damaged[0]["vm"], "vm1");
    assert_eq!(damaged[0]["seq"], victim.first_seq);
    assert!(
        damaged[0]["reason"].as_str().unwrap().contains("CRC"),
        "{}",
        damaged[0]
    );

    let (_, err) = run(
        &[
            "history",
            rec.to_str().unwrap(),
            "--file",
            "app.db",
            "--key",
            "1",
            "--table",
            "customers",
        ],
        1,
    );
    assert!(err.contains("VM vm1 is damaged"), "{err}");
    // The good VM alone is answered in full, without warnings.
    assert_eq!(changes_json(&rec, &["--vm", "vm0"]), good);
}

/// Each (collection, key)'s row after applying `events` in order.
fn fold(events: &[&Value]) -> BTreeMap<(String, String), Value> {
    let mut state = BTreeMap::new();
    for e in events {
        let k = (
            e["collection"].as_str().unwrap().to_string(),
            e["key"].as_str().unwrap().to_string(),
        );
        match e["op"].as_str().unwrap() {
            "delete" => state.remove(&k),
            _ => state.insert(k, e["after"].clone()),
        };
    }
    state
}

#[test]
fn net_view_between_two_points_of_a_sqlite_workload() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    sqlite(dir.path(), &rec, "vm0", 5, 200);
    run(&["log", "mark", rec.to_str().unwrap(), "done"], 0);
    let events = changes_json(&rec, &["--file", "app.db"]);
    let s = seqs(&events)[events.len() / 2];
    let at_a = fold(
        &events
            .iter()
            .filter(|e| e["seq"].as_u64() <= Some(s))
            .collect::<Vec<_>>(),
    );
    let at_b = fold(&events.iter().collect::<Vec<_>>());
    let mut expected = BTreeMap::new();
    for k in at_a.keys().chain(at_b.keys()) {
        let (a, b) = (at_a.get(k).cloned(), at_b.get(k).cloned());
        if a != b {
            expected.insert(
                k.clone(),
                (a.unwrap_or(Value::Null), b.unwrap_or(Value::Null)),
            );
        }
    }
    assert!(expected.len() > 20, "{}", expected.len());

    let from = format!("seq={s}");
    for to in ["end", "mark=done"] {
        let net = changes_json(
            &rec,
            &["--file", "app.db", "--between", &from, "--and", to, "--net"],
        );
        let got: BTreeMap<(String, String), (Value, Value)> = net
            .iter()
            .map(|c| {
                let k = (
                    c["collection"].as_str().unwrap().to_string(),
                    c["key"].as_str().unwrap().to_string(),
                );
                (k, (c["before"].clone(), c["after"].clone()))
            })
            .collect();
        assert_eq!(got.len(), net.len(), "one line per key");
        assert_eq!(got, expected, "--and {to}");
    }
    let (text, _) = run(
        &[
            "changes",
            rec.to_str().unwrap(),
            "--between",
            &from,
            "--and",
            "end",
            "--net",
            "--file",
            "app.db",
        ],
        0,
    );
    assert_eq!(text.lines().count(), expected.len());
    assert!(text.lines().all(|l| l.starts_with("vm0 app.db ")), "{text}");
    // Points the wrong way round, and --net without its points.
    let back = format!("seq={}", s + 5);
    let out = vmm(&[
        "changes",
        rec.to_str().unwrap(),
        "--between",
        &back,
        "--and",
        &from,
        "--net",
    ]);
    assert_one_line_error(&out, 125, "comes after");
    let out = vmm(&["changes", rec.to_str().unwrap(), "--net"]);
    assert_eq!(out.status.code(), Some(64));
}
