//! The 1 GiB snapshot rows of the peer benchmark (see peers.rs): vmm
//! pre-copied and stop-the-world against QEMU, and when to snapshot.
use std::time::{Duration, Instant};

use super::{median, qemu_snapshot, vmm_snapshot, Peers, Row, SnapRun, BIG, RUNS};

/// Waits until process `pid` holds `run.rss_mib` of resident memory (at
/// most 30 s), then until `run.at` after `start` and after that point:
/// memory on huge pages is resident long before memtest has written every
/// 4 KiB page of it (~99 % after 40 iterations).
pub fn wait_for_snapshot_point(run: SnapRun, start: Instant, pid: u32) {
    let rss_mib = || -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/status"))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            })
            .map_or(0, |kib| kib / 1024)
    };
    let t = Instant::now();
    while rss_mib() < run.rss_mib && t.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let deadline = if run.rss_mib > 0 {
        Instant::now() + run.at
    } else {
        start + run.at
    };
    std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
}

/// Full snapshots of a 1 GiB guest with all its memory touched: vmm
/// pre-copied and stop-the-world, QEMU; runs alternating, medians.
pub fn big_snapshot(p: &Peers) -> Vec<Row> {
    let (mut pre, mut stw, mut q) = (vec![], vec![], vec![]);
    let (mut verr, mut qerr) = (None, None);
    let file = p.path("qemu-big.state");
    for i in 0..RUNS {
        for (extra, out) in [(&[][..], &mut pre), (&["--stop-the-world"][..], &mut stw)] {
            match vmm_snapshot(p, &p.path(&format!("big{i}")), BIG, extra) {
                Ok(snap) => out.push(snap),
                Err(e) => verr = Some(e),
            }
        }
        match qemu_snapshot(p, &file, BIG) {
            Ok(pause) => q.push(pause),
            Err(e) => qerr = Some(e),
        }
    }
    let _ = std::fs::remove_file(&file);
    for (what, v) in [("pre-copy", &pre), ("stop-the-world", &stw)] {
        if v.is_empty() {
            continue;
        }
        println!(
            "vmm snapshot, 1 GiB ({what}): pause {:.1} ms, durable after {:.1} ms, {} rounds (medians)",
            median(v.iter().map(|s| s.pause).collect()),
            median(v.iter().map(|s| s.durable).collect()),
            median(v.iter().map(|s| s.rounds as f64).collect())
        );
    }
    let fig = |v: Vec<f64>, err: &Option<String>| {
        if v.is_empty() {
            Err(err.clone().unwrap_or_else(|| "no run succeeded".into()))
        } else {
            Ok(median(v))
        }
    };
    let qemu = fig(q, &qerr);
    let pre_pause = fig(pre.iter().map(|s| s.pause).collect(), &verr);
    if let (Ok(v), Ok(q)) = (&pre_pause, &qemu) {
        println!(
            "goal: full snapshot pause at 1 GiB at most 0.5x QEMU's: {:.2}x, {}",
            v / q,
            if v / q <= 0.5 { "met" } else { "NOT met" }
        );
    }
    vec![
        Row {
            name: "snapshot: full, 1 GiB: VM pause",
            unit: "ms",
            vmm: pre_pause,
            qemu: qemu.clone(),
        },
        Row {
            name: "snapshot: 1 GiB, vmm --stop-the-world",
            unit: "ms",
            vmm: fig(stw.iter().map(|s| s.pause).collect(), &verr),
            qemu,
        },
    ]
}
