//! Resource metrics per step: every guest barrier of a recording is
//! followed by a metrics record, `vmm log stats --json` adds them up to
//! what the workload did (bytes written equal the log's own count), and
//! `vmm run --metrics ADDR` serves the live counters (Prometheus text),
//! refusing an address in use before the VM starts.
mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

const WORK: &str = "workload=blk-writes seed=5 writes=40 max_blocks=16 flush_every=3";

fn log_json(rec: &std::path::Path, vm: &str) -> Vec<Value> {
    let out = vmm(&["log", "show", rec.to_str().unwrap(), "--vm", vm, "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    stdout(&out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn every_barrier_has_metrics_that_add_up_to_the_workload() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "d.img", 64);
    let rec = dir.path().join("rec");
    // Two runs: their steps are summarised apart and together.
    run_recorded(&disk, &rec, "w", WORK, &[]);
    run_recorded(&disk, &rec, "w", &WORK.replace("seed=5", "seed=6"), &[]);

    let records = log_json(&rec, "w");
    let base_barrier = records.iter().find(|r| r["type"] == "barrier").unwrap()["seq"]
        .as_u64()
        .unwrap();
    let (mut written, mut barriers, mut metrics) = (0, 0, 0);
    for (i, r) in records.iter().enumerate() {
        let seq = r["seq"].as_u64().unwrap();
        match r["type"].as_str().unwrap() {
            "block_write" if seq > base_barrier => written += r["len"].as_u64().unwrap(),
            "barrier" if seq > base_barrier => {
                barriers += 1;
                // Its metrics record comes right after it, naming it.
                let next = &records[i + 1];
                assert_eq!(next["type"], "metrics", "after barrier {seq}");
                let m: Value = serde_json::from_str(next["json"].as_str().unwrap()).unwrap();
                assert_eq!(m["barrier"].as_u64(), Some(seq));
            }
            "metrics" => metrics += 1,
            _ => {}
        }
    }
    assert!(barriers >= 2 * (40 / 3), "{barriers} barriers");
    assert_eq!(metrics, barriers);

    let out = vmm(&["log", "stats", rec.to_str().unwrap(), "--vm", "w", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let stats: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let all = &stats["overall"];
    assert_eq!(stats["runs"].as_array().unwrap().len(), 2, "{stats}");
    assert_eq!(all["barriers"].as_u64(), Some(barriers));
    assert_eq!(stats["log_barriers"].as_u64(), Some(barriers + 1));
    assert_eq!(all["guest_written_bytes"].as_u64(), Some(written), "{all}");
    assert_eq!(all["logged_bytes"].as_u64(), Some(written), "{all}");
    // Plausible: the vCPU ran, the guest's virtio-blk notifications are
    // MMIO exits, blocks were new to the store, the VMM has memory.
    assert!(all["vcpu_ns"].as_u64().unwrap() > 0, "{all}");
    assert!(all["recorder_ns"].as_u64().unwrap() > 0, "{all}");
    assert!(all["exits"]["mmio"].as_u64().unwrap() > 0, "{all}");
    let raw = all["new_raw_bytes"].as_u64().unwrap();
    assert!(raw > 0 && raw <= written, "{all}");
    assert!(all["stored_bytes"].as_u64().unwrap() > 0, "{all}");
    assert!(all["peak_rss_kib"].as_u64().unwrap() > 1024, "{all}");
    let run_sum: u64 = stats["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["guest_written_bytes"].as_u64().unwrap())
        .sum();
    assert_eq!(run_sum, written);
    // The log with its metrics records still verifies, and the text form
    // of the summary reads.
    let out = vmm(&["log", "verify", rec.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let out = vmm(&["log", "stats", rec.to_str().unwrap()]);
    assert!(stdout(&out).contains("2 run(s)"), "{}", stdout(&out));
    // A replay ignores them: it still verifies to the end.
    let img = dir.path().join("r.img");
    let out = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--until",
        "end",
        "--out",
        img.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(std::fs::read(&img).unwrap(), std::fs::read(&disk).unwrap());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(port: u16) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    Some(text)
}

#[test]
fn the_live_endpoint_serves_the_counters_while_the_vm_runs() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "d.img", 16);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = Command::new(VMM)
        .args(["run", "--metrics", &addr, "--disk", disk.to_str().unwrap()])
        .args(["--cmdline", "workload=spin", "--timeout", "20"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mmio_exits = |text: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with("vmm_vcpu_exits_total{kind=\"mmio\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0)
    };
    // Until the guest has booted (it probes its virtio devices over MMIO):
    // the endpoint is up before the vCPU runs.
    let deadline = Instant::now() + Duration::from_secs(15);
    let text = loop {
        if let Some(t) = get(port).filter(|t| t.contains("vmm_rss_bytes") && mmio_exits(t) > 0) {
            break t;
        }
        assert!(Instant::now() < deadline, "no metrics at {addr}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    assert!(text.contains("version=0.0.4"), "{text}");
    for name in [
        "vmm_vcpu_exits_total{kind=\"pio\"}",
        "vmm_vcpu_exits_total{kind=\"mmio\"}",
        "vmm_vcpu_exits_total{kind=\"other\"}",
        "vmm_guest_read_bytes_total",
        "vmm_guest_written_bytes_total",
        "vmm_barriers_total",
        "vmm_store_bytes_total",
        "vmm_recorder_cpu_seconds_total",
        "vmm_vcpu_cpu_seconds_total",
        "# TYPE vmm_rss_bytes gauge",
    ] {
        assert!(text.contains(name), "{name} missing:\n{text}");
    }
    assert!(mmio_exits(&text) > 0, "{text}");
}

#[test]
fn an_address_in_use_is_refused_before_the_vm_starts() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = vmm(&["run", "--metrics", &addr, "--cmdline", "workload=hello"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("--metrics"), "{}", stderr(&out));
    assert!(
        !stdout(&out).contains("Hello"),
        "the VM ran: {}",
        stdout(&out)
    );
}

/// A replay measures each interval it replays: one step per barrier, the
/// bytes it wrote add up to the log's writes, and `--step-metrics FILE`
/// holds the same steps, one JSON line each.
#[test]
fn a_replay_reports_what_each_replayed_interval_cost() {
    let dir = tempfile::tempdir().unwrap();
    let disk = blank_disk(dir.path(), "d.img", 64);
    let rec = dir.path().join("rec");
    run_recorded(&disk, &rec, "w", WORK, &[]);
    let records = log_json(&rec, "w");
    let barriers = records.iter().filter(|r| r["type"] == "barrier").count() as u64;
    let written: u64 = records
        .iter()
        .filter(|r| r["type"] == "block_write")
        .map(|r| r["len"].as_u64().unwrap())
        .sum();
    let steps = dir.path().join("steps.ndjson");
    let out = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        dir.path().join("r.img").to_str().unwrap(),
        "--no-checkpoints",
        "--step-metrics",
        steps.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let report: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let totals = &report["steps"];
    assert_eq!(totals["intervals"], barriers);
    assert_eq!(totals["bytes_written"], written);
    assert!(totals["cpu_ns"].as_u64().unwrap() > 0);
    assert!(totals["peak_rss_kib"].as_u64().unwrap() > 0);
    let lines: Vec<Value> = std::fs::read_to_string(&steps)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len() as u64, barriers);
    let barrier_seqs: Vec<&Value> = records
        .iter()
        .filter(|r| r["type"] == "barrier")
        .map(|r| &r["seq"])
        .collect();
    assert_eq!(
        lines.iter().map(|l| &l["barrier"]).collect::<Vec<_>>(),
        barrier_seqs
    );
    let sum: u64 = lines
        .iter()
        .map(|l| l["bytes_written"].as_u64().unwrap())
        .sum();
    assert_eq!(sum, written);
    // Not replaced without --force.
    let again = vmm(&[
        "replay",
        "--log",
        rec.to_str().unwrap(),
        "--out",
        dir.path().join("r2.img").to_str().unwrap(),
        "--step-metrics",
        steps.to_str().unwrap(),
    ]);
    assert_one_line_error(&again, 125, "--force");
}
