//! `vmm demo`: the product in one command, on the built-in microguest.
//!
//! Each step narrates what it does and checks its own result, so a failing
//! step exits non-zero. Later features add steps (record, decode, snapshot,
//! replay).
use std::sync::{Arc, Mutex};

use clap::Args;
use vmm::{Machine, SerialOutput, VmConfig, VmmError};

use super::{Cli, CliError};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Guest memory in MiB for the demo VMs.
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub mem_mib: u64,
}

pub fn run(cli: &Cli, args: &DemoArgs) -> Result<i32, CliError> {
    println!("vmm demo: a tour on the built-in microguest\n");

    step(
        1,
        "Boot the microguest (PVH entry, 32-bit -> long mode -> CPL3) and let it greet",
    );
    let (console, outcome, ms) = boot(cli, args, "workload=hello")?;
    for line in console.lines() {
        println!("   guest> {line}");
    }
    println!(
        "   exit status {} after {ms:.1} ms ({} VM exits, VMM overhead {} KiB)",
        outcome.status, outcome.stats.vcpu_exits, outcome.stats.vmm_overhead_kib
    );
    if outcome.status != 0 || !console.contains("Hello from the microguest") {
        return Ok(fail("the microguest did not greet"));
    }

    step(
        2,
        "Run guest code at native speed: a seeded PRNG sum, checked on the host",
    );
    let (n, seed) = (5_000_000u64, 7u64);
    let (console, _, ms) = boot(cli, args, &format!("workload=count n={n} seed={seed}"))?;
    let expected = format!("count n={n} sum={:#018x}", xorshift_sum(n, seed));
    println!("   guest> {}", console.trim_end());
    println!("   host   {expected}");
    if !console.contains(&expected) {
        return Ok(fail("guest and host disagree"));
    }
    println!("   match ({n} steps in {ms:.1} ms, boot included)");

    println!("\ndemo OK");
    Ok(0)
}

fn step(n: u32, what: &str) {
    println!("[{n}] {what}");
}

fn fail(why: &str) -> i32 {
    println!("\ndemo FAILED: {why}");
    1
}

fn boot(
    cli: &Cli,
    args: &DemoArgs,
    cmdline: &str,
) -> Result<(String, vmm::RunOutcome, f64), VmmError> {
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = VmConfig {
        kvm_path: cli.kvm.clone(),
        cmdline: cmdline.to_string(),
        mem_mib: args.mem_mib,
        serial: SerialOutput::Capture(console.clone()),
        timeout: Some(std::time::Duration::from_secs(60)),
        ..VmConfig::default()
    };
    let outcome = Machine::build(&config)?.run()?;
    // Build and run only: KVM's teardown of the VM afterwards is not boot time.
    let ms = (outcome.stats.build_us + outcome.stats.run_us) as f64 / 1e3;
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    Ok((text, outcome, ms))
}

/// The microguest's `count` workload, computed on the host.
fn xorshift_sum(n: u64, seed: u64) -> u64 {
    let mut x = seed | 1;
    let mut sum = 0u64;
    for _ in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        sum = sum.wrapping_add(x);
    }
    sum
}
