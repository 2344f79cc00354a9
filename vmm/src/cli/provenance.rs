//! `vmm changes --provenance`, `--decoder`, `--compare-decoder`,
//! `--list-decoders`, and `vmm verify-change`: how each semantic change
//! was derived, re-derived (`introspection::relift`).
use std::collections::BTreeMap;
use std::path::PathBuf;

use changelog::log::RecordKind;
use changelog::metrics::StepMetrics;
use changelog::LogBackend;
use clap::Args;
use introspection::decode::registry::{self, DecoderSpec};
use introspection::decode::{DecodeLimits, DEFAULT_DECODE_BUDGET_MIB};
use introspection::lift::SemanticEvent;
use introspection::provenance::Provenance;
use introspection::query;
use introspection::relift::{self, VerifyError};
use introspection::semantic::{Change, SemanticChange};
use vmm::error::exit;

use super::changes::ChangesArgs;
use super::source::Source;
use super::CliError;

/// The VMM version recorded at each barrier (its metrics record) of `vm`.
pub fn barrier_versions(logs: &dyn LogBackend, vm: &str) -> BTreeMap<u64, String> {
    let mut out = BTreeMap::new();
    let Ok(records) = logs.records(vm, 1) else {
        return out;
    };
    // Damage is the query's to report; this reads what it can.
    for record in records.map_while(Result::ok) {
        if let RecordKind::Metrics { json } = record.kind {
            if let Ok(m) = StepMetrics::from_json(&json) {
                if !m.vmm_version.is_empty() {
                    out.insert(m.barrier, m.vmm_version);
                }
            }
        }
    }
    out
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

/// The text line under a change that says how it was derived.
pub fn provenance_line(p: Option<&Provenance>, vmm: Option<&String>) -> String {
    let mut line = match p {
        None => "    provenance: none (recorded before provenance)".to_string(),
        Some(p) => {
            let mut s = format!(
                "    decoder {}@{}  read {} blocks {}",
                p.decoder,
                p.version,
                p.reads.blocks,
                short(&p.reads.hash)
            );
            match &p.base {
                Some(b) => {
                    let at = b
                        .seq
                        .map_or("a snapshot".to_string(), |s| format!("seq {s}"));
                    s += &format!(
                        "  base {at} ({} blocks {})",
                        b.reads.blocks,
                        short(&b.reads.hash)
                    );
                }
                None => s += "  base none",
            }
            s + &format!("  output {}  step {}", short(&p.output), short(&p.step))
        }
    };
    line += &format!("  vmm {}", vmm.map_or("unknown", |v| v.as_str()));
    line
}

/// An event's JSON with the barrier's VMM version added (`vmm_version`).
pub fn with_vmm(event: &SemanticEvent, vmm: Option<&String>) -> String {
    let mut v = serde_json::to_value(event).expect("serialize");
    if let (Some(obj), Some(vmm)) = (v.as_object_mut(), vmm) {
        obj.insert("vmm_version".into(), vmm.clone().into());
    }
    v.to_string()
}

fn limits(args: &ChangesArgs) -> DecodeLimits {
    DecodeLimits {
        budget_mib: args.decode_budget_mib,
    }
}

fn lookup(text: &str) -> Result<&'static DecoderSpec, CliError> {
    registry::lookup(text).map_err(|e| CliError {
        message: e.to_string(),
        status: exit::USAGE,
        registers: None,
    })
}

/// `vmm changes --list-decoders`.
pub fn list_decoders(json: bool) -> Result<i32, CliError> {
    for d in registry::all() {
        if json {
            let v = serde_json::json!({
                "name": d.name,
                "version": d.version(),
                "format": d.format,
                "options": d.options.describe(),
                "about": d.about,
                "default": std::ptr::eq(d, registry::default_for(d.format)),
            });
            println!("{v}");
        } else {
            println!("{:<30} {:<8} {}", d.id(), d.format.as_str(), d.about);
        }
    }
    Ok(0)
}

fn wanted(args: &ChangesArgs, c: &SemanticChange) -> bool {
    args.file.as_ref().is_none_or(|f| *f == c.file)
        && args.table.as_ref().is_none_or(|t| *t == c.collection)
        && args.key.as_ref().is_none_or(|k| *k == c.key)
}

/// A VM and its events lifted again, one list per decoder.
type Relifted = (String, Vec<Vec<SemanticEvent>>);

fn relifted(
    source: &Source,
    args: &ChangesArgs,
    decoders: &[&'static DecoderSpec],
) -> Result<Vec<Relifted>, CliError> {
    let logs = source.logs();
    let objects = source.objects()?;
    let mut out = Vec::new();
    for vm in super::log::vms(logs, &args.vm)? {
        let lists = relift::relift(logs, objects.backend(), &vm, decoders, limits(args))
            .map_err(CliError::from_display)?;
        out.push((vm, lists));
    }
    Ok(out)
}

/// `vmm changes --decoder NAME[@VERSION]`: the log lifted again with it.
pub fn with_decoder(args: &ChangesArgs, name: &str) -> Result<i32, CliError> {
    let decoder = lookup(name)?;
    let source = Source::open(args.dir.as_ref().expect("clap requires DIR"))?;
    let mut shown = 0;
    // Relifted here: this build is the VMM that derived them.
    let this_build = vmm::BUILD_VERSION.to_string();
    for (_, mut lists) in relifted(&source, args, &[decoder])? {
        for event in lists.remove(0) {
            let keep = match &event {
                SemanticEvent::Change(c) => wanted(args, c),
                SemanticEvent::DecodeError(e) => {
                    args.errors && args.file.as_ref().is_none_or(|f| *f == e.file)
                }
            };
            if !keep {
                continue;
            }
            shown += 1;
            print_event(args, &event, Some(&this_build));
        }
    }
    eprintln!(
        "{shown} events relifted from the stored blocks with {} (files of other formats left out)",
        decoder.id()
    );
    Ok(0)
}

/// Prints one event as `vmm changes` does (with `--provenance` lines).
pub fn print_event(args: &ChangesArgs, event: &SemanticEvent, vmm: Option<&String>) {
    if args.json {
        if args.provenance {
            println!("{}", with_vmm(event, vmm));
        } else {
            println!("{}", serde_json::to_string(event).expect("serialize"));
        }
        return;
    }
    match event {
        SemanticEvent::Change(c) => {
            println!("{}  {}", query::format_time(c.ts_ns), query::shortened(c));
            if args.provenance {
                println!("{}", provenance_line(c.provenance.as_deref(), vmm));
            }
        }
        SemanticEvent::DecodeError(e) => println!("{}  {e}", query::format_time(e.ts_ns)),
    }
}

/// The changes of one step, as comparable values (without provenance).
type Step = (Vec<Change>, Vec<String>);

fn steps(events: Vec<SemanticEvent>, args: &ChangesArgs) -> BTreeMap<(u64, String), Step> {
    let mut out: BTreeMap<(u64, String), Step> = BTreeMap::new();
    for e in events {
        match e {
            SemanticEvent::Change(c) if wanted(args, &c) => {
                out.entry((c.seq, c.file.clone()))
                    .or_default()
                    .0
                    .push(c.change());
            }
            SemanticEvent::DecodeError(e) if args.file.as_ref().is_none_or(|f| *f == e.file) => {
                out.entry((e.seq, e.file)).or_default().1.push(e.reason);
            }
            _ => {}
        }
    }
    out
}

/// The changes of `a` missing from `b` (as multisets).
fn missing(a: &[Change], b: &[Change]) -> Vec<Change> {
    let mut left: Vec<&Change> = b.iter().collect();
    let mut out = Vec::new();
    for c in a {
        match left.iter().position(|x| *x == c) {
            Some(i) => {
                left.swap_remove(i);
            }
            None => out.push(c.clone()),
        }
    }
    out
}

fn change_text(vm: &str, seq: u64, file: &str, d: &DecoderSpec, c: &Change) -> String {
    let sc = SemanticChange::from_change(vm, seq, 0, file, d.format, c.clone());
    let text = query::shortened(&sc).to_string();
    // The step's line above names the VM, seq and file.
    text.strip_prefix(&format!("{vm} seq {seq} {file} "))
        .map(str::to_string)
        .unwrap_or(text)
}

/// `vmm changes --compare-decoder A --compare-decoder B`.
pub fn compare(args: &ChangesArgs, names: &[String]) -> Result<i32, CliError> {
    let [a, b] = names else {
        return Err(CliError {
            message: format!(
                "--compare-decoder takes two decoders (given {}), e.g. --compare-decoder json --compare-decoder json-leaves",
                names.len()
            ),
            status: exit::USAGE,
            registers: None,
        });
    };
    let (a, b) = (lookup(a)?, lookup(b)?);
    if a.format != b.format {
        return Err(CliError {
            message: format!(
                "{} decodes {} files and {} {} files: compare two decoders of one format",
                a.name, a.format, b.name, b.format
            ),
            status: exit::USAGE,
            registers: None,
        });
    }
    let source = Source::open(args.dir.as_ref().expect("clap requires DIR"))?;
    let (mut compared, mut differ) = (0, 0);
    for (vm, mut lists) in relifted(&source, args, &[a, b])? {
        let sb = steps(lists.pop().expect("two lists"), args);
        let sa = steps(lists.pop().expect("two lists"), args);
        let keys: std::collections::BTreeSet<&(u64, String)> = sa.keys().chain(sb.keys()).collect();
        let none = Step::default();
        for key in keys {
            compared += 1;
            let (ca, ea) = sa.get(key).unwrap_or(&none);
            let (cb, eb) = sb.get(key).unwrap_or(&none);
            let (only_a, only_b) = (missing(ca, cb), missing(cb, ca));
            if only_a.is_empty() && only_b.is_empty() && ea == eb {
                continue;
            }
            differ += 1;
            let (seq, file) = key;
            if args.json {
                let v = serde_json::json!({
                    "event": "disagreement", "vm": vm, "seq": seq, "file": file,
                    "a": a.id(), "b": b.id(),
                    "a_changes": ca.len(), "b_changes": cb.len(),
                    "only_a": only_a, "only_b": only_b,
                    "a_errors": ea, "b_errors": eb,
                });
                println!("{v}");
                continue;
            }
            println!(
                "{vm} seq {seq} {file}: {} finds {} changes, {} finds {}",
                a.name,
                ca.len(),
                b.name,
                cb.len()
            );
            for (d, only, errors) in [(a, &only_a, ea), (b, &only_b, eb)] {
                for c in only {
                    println!(
                        "  only {:<14} {}",
                        d.name,
                        change_text(&vm, *seq, file, d, c)
                    );
                }
                for e in errors {
                    println!("  {} decode error: {e}", d.name);
                }
            }
        }
    }
    eprintln!(
        "{} and {}: {differ} of {compared} steps disagree",
        a.id(),
        b.id()
    );
    Ok(0)
}

#[derive(Debug, Args)]
pub struct VerifyChangeArgs {
    /// Record directory, or nats://HOST:PORT[,HOST:PORT...]/NAME.
    pub dir: PathBuf,
    /// The change's seq, as `vmm changes` prints it (the barrier it was
    /// lifted at; every change of that step is checked).
    pub seq: u64,
    /// The VM (needed when the log holds several).
    #[arg(long, value_name = "ID")]
    pub vm: Option<String>,
    /// Only the changes of this file (default: every file lifted there).
    #[arg(long, value_name = "F")]
    pub file: Option<String>,
    /// MiB of decoded state the re-derivation may hold.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_DECODE_BUDGET_MIB)]
    pub decode_budget_mib: u64,
    /// One JSON object per verified step, with every block read.
    #[arg(long)]
    pub json: bool,
}

/// `vmm verify-change DIR SEQ`.
pub fn verify_change(args: &VerifyChangeArgs) -> Result<i32, CliError> {
    let source = Source::open(&args.dir)?;
    let logs = source.logs();
    let vm = super::log::one_vm(logs, &args.vm)?;
    let objects = source.objects()?;
    let limits = DecodeLimits {
        budget_mib: args.decode_budget_mib,
    };
    let checks = relift::verify_change(
        logs,
        objects.backend(),
        &vm,
        args.seq,
        args.file.as_deref(),
        limits,
    )
    .map_err(|e| {
        let failed = matches!(
            e,
            VerifyError::BadBlock { .. }
                | VerifyError::ReadsDiffer { .. }
                | VerifyError::OutputDiffers { .. }
                | VerifyError::MixedStep { .. }
                | VerifyError::Decode { .. }
                | VerifyError::Relift(relift::ReliftError::Checksum { .. })
        );
        if failed {
            CliError {
                message: format!("verify-change {vm} seq {}: FAILED: {e}", args.seq),
                status: exit::CHECK_FAILED,
                registers: None,
            }
        } else {
            CliError::new(format!("verify-change {vm} seq {}: {e}", args.seq))
        }
    })?;
    for c in &checks {
        if args.json {
            println!("{}", serde_json::to_string(c).expect("serialize"));
            continue;
        }
        let base = match c.base_seq {
            Some(s) => format!("base seq {s} ({} blocks)", c.base_blocks),
            None => "no base (first decode)".to_string(),
        };
        println!(
            "verified {} seq {} {}: {}@{} re-derived {} changes from {} stored blocks and {base}; block, input, output and step hashes match",
            c.vm,
            c.seq,
            c.file,
            c.decoder,
            c.version,
            c.changes,
            c.reads.len()
        );
    }
    Ok(0)
}
