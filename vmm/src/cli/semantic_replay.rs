//! `vmm replay --semantic`: one application file's data at a point, from
//! the semantic change log (the work is `replay::semantic`'s; this turns
//! the arguments into a request and the outcome into output and a status).
use replay::semantic::{self, Request, Selection, SemanticError, SemanticReport};
use vmm::shutdown;

use super::replay::{cancelled, claim_output, ReplayArgs};
use super::CliError;
use changelog::recording::RecordDir;

pub fn run(args: &ReplayArgs) -> Result<i32, CliError> {
    let mut drops = Vec::new();
    for f in &args.drop {
        match &f.change {
            Some(c) => drops.push(c.clone()),
            None => {
                return Err(super::replay::usage(format!(
                    "--drop {} filters disk writes; with --semantic use seq=, key= or table=",
                    f.text
                )))
            }
        }
    }
    let Some(list) = &args.vm else {
        let only = super::log::one_vm(&RecordDir::new(&args.log), &None)?;
        return run_on(args, drops, vec![only]);
    };
    let vms: Vec<String> = list
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(String::from)
        .collect();
    if vms.is_empty() {
        return Err(super::replay::usage(format!(
            "--vm '{list}' names no VM; e.g. --vm vm0 or --vm a,b"
        )));
    }
    run_on(args, drops, vms)
}

fn run_on(
    args: &ReplayArgs,
    drops: Vec<replay::semantic::ChangeFilter>,
    vms: Vec<String>,
) -> Result<i32, CliError> {
    let out_lock = claim_output(&args.out, args.force, "--out")?;
    let cancel = || shutdown::requested().is_some();
    let request = Request {
        vms,
        file: args.file.clone().unwrap_or_default(),
        point: args.until.clone(),
        selection: Selection {
            table: args.table.clone(),
            keys: args.key.clone(),
        },
        drop: drops,
        out: args.out.clone(),
        cancel: Some(&cancel),
        progress: !args.json,
    };
    let result = semantic::replay_semantic(&RecordDir::new(&args.log), &request);
    drop(out_lock);
    match result {
        Ok(report) => {
            print(args, &report);
            Ok(0)
        }
        Err(SemanticError::Cancelled) => cancelled(&args.out),
        Err(SemanticError::Mismatch(report)) => {
            print(args, &report);
            let e = SemanticError::Mismatch(report);
            Err(CliError {
                message: e.to_string(),
                status: vmm::error::exit::CHECK_FAILED,
                registers: None,
            })
        }
        Err(e) => Err(CliError::from_display(e)),
    }
}

fn print(args: &ReplayArgs, r: &SemanticReport) {
    if args.json {
        println!("{}", serde_json::to_string(r).expect("reports serialize"));
        return;
    }
    let vms: Vec<&str> = r.vms.iter().map(|v| v.vm.as_str()).collect();
    println!(
        "semantic replay of {} ({}) from {} to {}: {} changes applied, {} rows in {} collections",
        r.file,
        r.format,
        vms.join(", "),
        r.until,
        r.changes_applied,
        r.rows,
        r.collections.len()
    );
    for (name, rows) in &r.collections {
        println!(
            "  {:<24} {rows} rows",
            if name.is_empty() { "(keys)" } else { name }
        );
    }
    for (kind, n) in &r.anomalies {
        println!("  warning: {n} changes did not fit the state folded so far ({kind:?})");
    }
    for v in r.vms.iter().filter(|v| v.decode_errors > 0) {
        println!(
            "  note: {} could not decode {} at {} barriers (the state stays as last decoded)",
            v.vm, r.file, v.decode_errors
        );
    }
    println!("row-set checksum (semantic log) {}", r.checksum);
    match r.proof.status.as_str() {
        "verified" | "mismatch" => println!(
            "row-set checksum (disk replay)  {} at barrier seq {}: {}",
            r.proof.disk_checksum.as_deref().unwrap_or("-"),
            r.proof.barrier.unwrap_or(0),
            if r.proof.status == "verified" {
                "VERIFIED, equal"
            } else {
                "MISMATCH"
            }
        ),
        _ => println!(
            "block-level proof skipped: {}",
            r.proof.note.as_deref().unwrap_or("-")
        ),
    }
    for d in &r.proof.differences {
        let show = |v: &Option<serde_json::Value>| {
            v.as_ref().map_or("(absent)".to_string(), |v| v.to_string())
        };
        println!(
            "  differs: {}[{}]: log {} / disk {}",
            d.collection,
            d.key,
            show(&d.log),
            show(&d.disk)
        );
    }
    if let (Some(note), "verified") = (&r.proof.note, r.proof.status.as_str()) {
        println!("  ({note})");
    }
    if !r.recorded_history {
        println!("NOT THE RECORDED HISTORY: {}", r.labels.join("; "));
    }
    if !r.conflicts.is_empty() {
        println!(
            "CONFLICTS: {} keys were changed differently by more than one VM (the later change wins):",
            r.conflicts.len()
        );
        for c in r.conflicts.iter().take(20) {
            println!("  {}[{}]: {}", c.collection, c.key, c.vms.join(", "));
        }
        if r.conflicts.len() > 20 {
            println!(
                "  ... and {} more (--json lists all)",
                r.conflicts.len() - 20
            );
        }
    }
    if r.proof.status != "mismatch" {
        println!("wrote {}", r.out.display());
    }
}
