//! Boots the microguest and checks what it prints and how it ends.
mod common;

use common::*;

#[test]
fn microguest_boots_greets_and_exits_zero() {
    let out = vmm(&["run", "--timeout", "60"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).starts_with("Hello from the microguest!\n"));
}

#[test]
fn command_line_reaches_the_guest() {
    let out = vmm(&["run", "--cmdline", "workload=hello marker=abc123"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout(&out).contains("cmdline: workload=hello marker=abc123\n"));
}

#[test]
fn guest_exit_status_becomes_vmm_exit_status() {
    for (code, expected) in [("0", 0), ("42", 42), ("255", 255), ("1000", 255)] {
        let out = vmm(&["run", "--cmdline", &format!("workload=exit code={code}")]);
        assert_eq!(out.status.code(), Some(expected), "code={code}");
    }
}

#[test]
fn guest_computes_at_native_speed_and_correctly() {
    let (n, seed) = (2_000_000u64, 99u64);
    let out = vmm(&[
        "run",
        "--cmdline",
        &format!("workload=count n={n} seed={seed}"),
    ]);
    assert_eq!(out.status.code(), Some(0));
    let mut x = seed | 1;
    let mut sum = 0u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x);
    }
    assert_eq!(stdout(&out), format!("count n={n} sum={sum:#018x}\n"));
}

#[test]
fn serial_can_go_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("console.log");
    let out = vmm(&["run", "--serial", &format!("file:{}", log.display())]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "");
    let console = std::fs::read_to_string(&log).unwrap();
    assert!(console.starts_with("Hello from the microguest!\n"));
}

#[test]
fn kernel_file_boots_like_the_builtin() {
    let elf = microguest_elf();
    assert!(elf.exists(), "microguest ELF missing at {}", elf.display());
    let out = vmm(&["run", "--kernel", elf.to_str().unwrap(), "--mem-mib", "8"]);
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).starts_with("Hello from the microguest!\n"));
}

#[test]
fn guest_crash_prints_registers_and_exits_126() {
    let out = vmm(&["run", "--cmdline", "workload=fault"]);
    assert_eq!(out.status.code(), Some(126));
    let err = stderr(&out);
    assert!(err.contains("rip=") && err.contains("cr3="), "{err}");
    assert!(err
        .lines()
        .last()
        .unwrap()
        .starts_with("error: guest triple-faulted"));
}

#[test]
fn timeout_stops_a_spinning_guest() {
    let started = std::time::Instant::now();
    let out = vmm(&["run", "--cmdline", "workload=spin", "--timeout", "1"]);
    assert_eq!(out.status.code(), Some(124));
    assert!(started.elapsed().as_secs() < 30);
    assert!(stderr(&out).contains("--timeout"));
}

#[test]
fn stats_report_memory_overhead() {
    let out = vmm(&["run", "--stats"]);
    assert_eq!(out.status.code(), Some(0));
    let line = stderr(&out);
    let stats: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(stats["exit_status"], 0);
    assert_eq!(stats["serial_bytes"], stdout(&out).len() as u64);
    let rss = stats["rss_kib"].as_u64().unwrap();
    let guest = stats["guest_resident_kib"].as_u64().unwrap();
    assert!(guest > 0 && rss > guest);
    assert_eq!(stats["vmm_overhead_kib"].as_u64().unwrap(), rss - guest);
}

#[test]
fn demo_runs_and_says_ok() {
    let out = vmm(&["demo"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    let text = stdout(&out);
    assert!(text.contains("guest> Hello from the microguest!"));
    assert!(text.trim_end().ends_with("demo OK"));
}
