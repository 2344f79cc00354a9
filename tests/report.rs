//! `vmm store forecast` and `vmm report` on a recorded microguest run: the
//! forecast's numbers start from the log's own counts and its back-test
//! runs; the HTML page shows the log's counts, and headless Chromium
//! renders it without errors (skipped, with a printed reason, only when
//! Chromium is not installed: `.ci/run` installs it).
mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn ok(args: &[&str]) -> String {
    let out = vmm(args);
    assert_eq!(out.status.code(), Some(0), "vmm {args:?}: {}", stderr(&out));
    stdout(&out)
}

/// Records per type, and semantic changes per "file: table", as `vmm log
/// show` reads them.
fn log_counts(rec: &Path) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let mut types = BTreeMap::new();
    let mut tables = BTreeMap::new();
    for line in ok(&["log", "show", rec.to_str().unwrap(), "--json"]).lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        let t = r["type"].as_str().unwrap().to_string();
        if t == "semantic" {
            let c: Value = serde_json::from_str(r["json"].as_str().unwrap()).unwrap();
            if let Some(table) = c["collection"].as_str() {
                let key = format!("{}: {table}", c["file"].as_str().unwrap());
                *tables.entry(key).or_default() += 1;
            }
        }
        *types.entry(t).or_default() += 1;
    }
    (types, tables)
}

/// The value of the element with `attr`="`value`" in `html`.
fn cell<'a>(html: &'a str, attr: &str) -> &'a str {
    let at = html
        .find(attr)
        .unwrap_or_else(|| panic!("no {attr} in the page"));
    let rest = &html[at..];
    let start = rest.find('>').unwrap() + 1;
    let end = rest.find('<').unwrap();
    &rest[start..end]
}

#[test]
fn forecast_and_report_show_what_the_log_holds() {
    let dir = tempfile::tempdir().unwrap();
    let rec = dir.path().join("rec");
    let rec_s = rec.to_str().unwrap();
    let disk = blank_disk(dir.path(), "disk.img", 64);
    let workload = "workload=sqlite rows=120 seed=9 snap_every=5";
    run_recorded(&disk, &rec, "vm0", workload, &["--checkpoint-every", "10"]);
    ok(&["log", "mark", rec_s, "after-run"]);
    let drill = vmm(&["drill", "--log", rec_s, "--at", "end"]);
    assert_eq!(drill.status.code(), Some(0), "{}", stderr(&drill));
    let (types, tables) = log_counts(&rec);
    let records: u64 = types.values().sum();
    let n = |t: &str| types.get(t).copied().unwrap_or(0);

    // The forecast starts from the log's counts and back-tests itself.
    let f: Value = serde_json::from_str(&ok(&[
        "store",
        "forecast",
        rec_s,
        "--horizon",
        "1h",
        "--json",
    ]))
    .unwrap();
    assert_eq!(f["now"]["records"], records);
    assert_eq!(f["history"]["buckets"], 48);
    assert!(f["now"]["full_replay_s"].as_f64().unwrap() > 0.0);
    assert!(f["now"]["stored_bytes"].as_u64().unwrap() > 0);
    let at = &f["at_horizon"];
    assert!(at["records"]["point"].as_f64().unwrap() >= records as f64);
    assert!(at["store_bytes"]["low"].as_f64() <= at["store_bytes"]["point"].as_f64());
    assert!(at["full_replay_s"]["point"].as_f64().unwrap() > 0.0);
    let bt = &f["backtest"];
    assert_eq!(bt["train_buckets"], 36);
    assert!(bt["records_mape"].as_f64().unwrap().is_finite());
    let quick: Value =
        serde_json::from_str(&ok(&["store", "forecast", rec_s, "--no-replay", "--json"])).unwrap();
    assert_eq!(quick["at_horizon"]["full_replay_s"], Value::Null);
    assert!(
        ok(&["store", "forecast", rec_s, "--no-replay"]).contains("back-test (fit on 36 buckets")
    );

    // The page shows the log's counts, the drill, and is not replaced
    // unasked.
    let page = dir.path().join("report.html");
    let page_s = page.to_str().unwrap();
    ok(&["report", rec_s, "--html", page_s, "--no-replay"]);
    let again = vmm(&["report", rec_s, "--html", page_s]);
    assert_one_line_error(&again, 125, "--force");
    let html = std::fs::read_to_string(&page).unwrap();
    let count =
        |key: &str| cell(&html, &format!(r#"data-vm="vm0" data-count="{key}""#)).to_string();
    assert_eq!(count("records"), records.to_string());
    assert_eq!(count("writes"), n("block_write").to_string());
    assert_eq!(count("barriers"), n("barrier").to_string());
    assert_eq!(count("marks"), n("mark").to_string());
    assert_eq!(count("snapshots"), n("snapshot_taken").to_string());
    assert_eq!(count("semantic"), n("semantic").to_string());
    let checkpoints = ok(&["log", "checkpoints", rec_s, "--json"]).lines().count();
    assert!(checkpoints >= 2);
    assert_eq!(count("checkpoints"), checkpoints.to_string());
    assert!(!tables.is_empty());
    for (table, changes) in &tables {
        let attr = format!(r#"data-table="{table}""#);
        assert_eq!(cell(&html, &attr), changes.to_string(), "{table}");
    }
    assert_eq!(cell(&html, r#"data-drill="pass""#), "PASS");
    assert!(
        !html.contains("http://") && !html.contains("https://"),
        "self-contained"
    );

    // Rendered by a browser: the charts have a size and nothing failed.
    let Some(chromium) = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|c| Command::new(c).arg("--version").output().is_ok())
    else {
        eprintln!(
            "skipped the browser check: chromium is not installed (apt-get install -y chromium)"
        );
        return;
    };
    let out = Command::new(chromium)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            "--dump-dom",
        ])
        .arg(format!("file://{}", page.display()))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dom = String::from_utf8_lossy(&out.stdout);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(dom.contains(r#"data-rendered="yes""#), "{log}");
    assert!(
        !log.contains("Uncaught") && !log.contains("ERR_FILE"),
        "{log}"
    );
    assert_eq!(
        cell(&dom, r#"data-vm="vm0" data-count="writes""#),
        n("block_write").to_string()
    );
}
