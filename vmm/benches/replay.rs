//! Replay throughput against `dd` writing the same bytes to the same disk,
//! in one run: `cargo bench -p vmm --bench replay`.
//!
//! A guest writes 256 MiB sequentially (recorded); then, best of 3 each:
//! `dd` copies the resulting image (1 MiB blocks, fdatasync at the end),
//! `vmm replay` rebuilds it from the log (verifying every barrier), and
//! `vmm replay --allow-unverified`. Both replays fsync their output too.
use std::process::Command;
use std::time::{Duration, Instant};

const VMM: &str = env!("CARGO_BIN_EXE_vmm");
const MIB: u64 = 256;

fn timed(program: &str, args: &[&str]) -> Duration {
    let t = Instant::now();
    let out = Command::new(program).args(args).output().expect("runs");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    t.elapsed()
}

fn best(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    (0..n).map(|_| f()).min().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    std::fs::File::create(p("disk.img"))
        .unwrap()
        .set_len(MIB << 20)
        .unwrap();
    timed(
        VMM,
        &[
            "run",
            "--disk",
            &p("disk.img"),
            "--record",
            &p("rec"),
            "--cmdline",
            &format!("workload=blk-bench mib={MIB} req_kib=64 batch=8"),
        ],
    );
    let dd = best(3, || {
        let _ = std::fs::remove_file(p("dd.img"));
        timed(
            "dd",
            &[
                &format!("if={}", p("disk.img")),
                &format!("of={}", p("dd.img")),
                "bs=1M",
                "conv=fdatasync",
                "status=none",
            ],
        )
    });
    let replay = |extra: &[&str]| {
        best(3, || {
            let _ = std::fs::remove_file(p("out.img"));
            let mut args = vec![
                "replay".to_string(),
                "--log".into(),
                p("rec"),
                "--out".into(),
                p("out.img"),
            ];
            args.extend(extra.iter().map(|s| s.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            timed(VMM, &args)
        })
    };
    let verified = replay(&[]);
    let unverified = replay(&["--allow-unverified"]);
    assert!(std::fs::read(p("out.img")).unwrap() == std::fs::read(p("disk.img")).unwrap());
    let mbps = |d: Duration| (MIB << 20) as f64 / d.as_secs_f64() / 1e6;
    println!("replay benchmark: {MIB} MiB written by the guest, best of 3");
    println!("{:<36} {:>9} {:>11}", "", "MB/s", "x dd");
    println!(
        "{:<36} {:>9.0} {:>11.2}",
        "dd bs=1M conv=fdatasync (baseline)",
        mbps(dd),
        1.0
    );
    println!(
        "{:<36} {:>9.0} {:>11.2}",
        "vmm replay (verified)",
        mbps(verified),
        dd.as_secs_f64() / verified.as_secs_f64()
    );
    println!(
        "{:<36} {:>9.0} {:>11.2}",
        "vmm replay --allow-unverified",
        mbps(unverified),
        dd.as_secs_f64() / unverified.as_secs_f64()
    );
    println!("goal: replay at least 0.80 x dd");
}
