//! What-if with another configuration: `vmm drill --mem-mib --vcpus
//! --disk-iops` runs the workload on the restored disk under that
//! configuration and reports what the run cost; `vmm tune` finds the
//! cheapest configuration meeting a target.
//!
//! The workload (`workset`) scans a recorded data set of 2048 blocks (32
//! extents of 256 KiB) 8 times and caches what it read in the memory left
//! after 24 MiB of "application": from 48 MiB on the set fits and is read
//! once (32 reads); at 32 MiB or less it spills and every pass reads it
//! again (256 reads). At 100 IOPS the spill takes at least 2.4 s (the
//! token bucket's pace, whatever the host's load) and the fit ~0.3 s; at
//! 1000 IOPS both stay well under a second. The target, 1.5 s, sits far
//! from both sides.
mod common;

use std::path::Path;

use common::*;
use serde_json::Value;

const CHECK: &str = "workload=workset pages=2048 passes=8 reserve_mib=24";
const SET_BYTES: u64 = 2048 * 4096;

/// A record directory whose disk holds the data set.
fn recorded(dir: &Path) -> std::path::PathBuf {
    let disk = blank_disk(dir, "disk.img", 16);
    let rec = dir.join("rec");
    run_recorded(
        &disk,
        &rec,
        "vm0",
        "workload=workset fill=1 pages=2048 seed=4",
        &[],
    );
    rec
}

fn json_of(args: &[&str]) -> (Option<i32>, Value) {
    let out = vmm(args);
    let v = serde_json::from_str(stdout(&out).trim())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {}{}", stdout(&out), stderr(&out)));
    (out.status.code(), v)
}

#[test]
fn a_drill_runs_its_check_under_the_given_configuration_and_reports_its_cost() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec = rec.to_str().unwrap();
    let drill = |mem: &str, vcpus: &str| {
        json_of(&[
            "drill",
            "--log",
            rec,
            "--at",
            "end",
            "--check",
            CHECK,
            "--mem-mib",
            mem,
            "--vcpus",
            vcpus,
            "--disk-iops",
            "100",
            "--json",
        ])
    };
    let (status, small) = drill("32", "1");
    assert_eq!(status, Some(0), "{small}");
    assert_eq!(small["pass"], true);
    assert_eq!(
        small["config"],
        serde_json::json!({"mem_mib": 32, "vcpus": 1, "disk_iops": 100})
    );
    let m = &small["metrics"];
    // Spilling: the whole set read on each of the 8 passes, paced by the
    // IOPS limit.
    assert_eq!(m["guest_read_bytes"], 8 * SET_BYTES);
    assert_eq!(m["guest_written_bytes"], 0);
    assert!(m["throttled_ms"].as_f64().unwrap() > 1000.0, "{m}");
    assert!(m["time_ms"].as_f64().unwrap() >= 2000.0, "{m}");
    assert!(m["vcpu_ms"].as_f64().unwrap() > 0.0, "{m}");
    let exits = m["exits"].as_u64().unwrap();
    assert!(exits > 256, "{m}");
    assert_eq!(
        exits,
        m["pio_exits"].as_u64().unwrap()
            + m["mmio_exits"].as_u64().unwrap()
            + m["other_exits"].as_u64().unwrap()
    );

    let (status, big) = drill("48", "2");
    assert_eq!(status, Some(0), "{big}");
    // It fits: read once. Two CPUs hashed it, to the same sum.
    assert_eq!(big["metrics"]["guest_read_bytes"], SET_BYTES);
    let lines = |r: &Value| {
        r["guest_output"]
            .as_str()
            .unwrap()
            .lines()
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(lines(&big)[0], lines(&small)[0]);
    assert_eq!(lines(&big)[1], "workset: cpus=2 cache_extents=32 reads=32");
    assert_eq!(
        lines(&small)[1],
        "workset: cpus=1 cache_extents=15 reads=256"
    );
}

#[test]
fn tune_finds_the_known_cheapest_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let rec = recorded(dir.path());
    let rec = rec.to_str().unwrap();
    let tune = |target: &str, extra: &[&str]| {
        let mut args = vec![
            "tune",
            "--log",
            rec,
            "--at",
            "end",
            "--check",
            CHECK,
            "--target",
            target,
            "--vary",
            "mem,vcpus,iops",
            "--mem-values",
            "16,32,48,64",
            "--vcpus-values",
            "1,2",
            "--iops-values",
            "100,1000",
            "--json",
        ];
        args.extend_from_slice(extra);
        json_of(&args)
    };
    let config = |t: &Value| {
        (
            t["config"]["mem_mib"].as_u64().unwrap(),
            t["config"]["vcpus"].as_u64().unwrap(),
            t["config"]["disk_iops"].as_u64().unwrap(),
        )
    };

    // Default prices (MiB 1, vCPU 64, IOPS 0.1): 1000 IOPS cost more than
    // the memory that stops the spill, so the cheapest is the least memory
    // the set fits in, at the lowest IOPS and one vCPU.
    let (status, report) = tune("time<=1.5s", &[]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(config(&report["best"]), (48, 1, 100), "{report}");
    assert_eq!(report["best"]["cost"], 48.0 + 64.0 + 10.0);
    let tried = report["tried"].as_array().unwrap();
    // Every point tried is listed with its metrics; 32 MiB at 100 IOPS
    // was tried and missed: it spilled.
    assert!(
        tried.iter().all(|t| t["metrics"]["time_ms"].is_number()),
        "{report}"
    );
    let spilled = tried
        .iter()
        .find(|t| config(t) == (32, 1, 100))
        .expect("32 MiB tried");
    assert_eq!(spilled["meets"], false);
    assert_eq!(spilled["metrics"]["guest_read_bytes"], 8 * SET_BYTES);

    // IOPS nearly free: spilling at 1000 IOPS is fast enough, and 16 MiB
    // at 1000 IOPS becomes the cheapest.
    let (status, report) = tune("time<=1.5s", &["--cost-iops", "0.001"]);
    assert_eq!(status, Some(0), "{report}");
    assert_eq!(config(&report["best"]), (16, 1, 1000), "{report}");

    // A target nothing meets: exit 1, no answer, every point still listed.
    let (status, report) = tune("time<=1ms", &["--max-runs", "3"]);
    assert_eq!(status, Some(1), "{report}");
    assert!(report["best"].is_null());
    assert_eq!(report["tried"].as_array().unwrap().len(), 3);
    assert_eq!(report["budget_exhausted"], true);
}

#[test]
fn bad_what_if_arguments_are_usage_errors() {
    for args in [
        &["drill", "--log", "x", "--at", "end", "--disk-iops", "0"][..],
        &["drill", "--log", "x", "--at", "end", "--vcpus", "9"][..],
        &[
            "tune", "--log", "x", "--at", "end", "--target", "time>=1", "--vary", "mem",
        ][..],
        &[
            "tune", "--log", "x", "--at", "end", "--target", "time<=1", "--vary", "disk",
        ][..],
        &[
            "tune",
            "--log",
            "x",
            "--at",
            "end",
            "--target",
            "time<=1",
            "--vary",
            "mem",
            "--mem-values",
            "1",
        ][..],
        &[
            "tune",
            "--log",
            "x",
            "--at",
            "end",
            "--target",
            "time<=1",
            "--vary",
            "mem",
            "--cost-mib",
            "-1",
        ][..],
    ] {
        let out = vmm(args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
    }
}
