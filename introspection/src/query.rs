//! Audit queries over the semantic change log of a record directory:
//! which rows and keys changed ([`changes`]), and how each differs between
//! two points of a VM's history ([`net`]).
//!
//! Queries are damage-tolerant: a VM whose log cannot be read to its end
//! is reported as a [`Damage`] (the VM, where, why) next to what could be
//! read, and the other VMs are answered in full. The caller decides how to
//! fail (`vmm changes` exits 1 after printing everything).
//!
//! Bounds are [`Point`]s, as for replay: `seq=N` and `mark=NAME` are
//! positions in each VM's own log, `time=T` a wall-clock time. A change is
//! at the barrier it was lifted at (its `seq`), so `--until mark=M` keeps
//! the changes of barriers up to the mark and `--since mark=M` those after.
//! A VM whose log lacks a named mark is left out (and said so in
//! [`Found::notes`]); if no selected VM has it, that is an error.
use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;
use serde_json::Value;
use thiserror::Error;

use crate::lift::SemanticEvent;
use crate::semantic::{changed_members, Format, Op, SemanticChange};
use changelog::log::{LogError, RecordKind};
use changelog::point::Point;
use changelog::LogBackend;

/// Why a query could not be answered at all.
#[derive(Debug, Error)]
pub enum QueryError {
    #[error("{location}: {source}")]
    ListLogs { location: String, source: LogError },
    #[error("{0} holds no logs; record one with `vmm run --disk IMG --record DIR`")]
    NoLogs(String),
    #[error("{location} has no log of VM '{vm}' (it has: {known})")]
    NoSuchVm {
        location: String,
        vm: String,
        known: String,
    },
    #[error("{point}: no mark of that name in the log of {vms}")]
    NoMark { point: Point, vms: String },
    #[error("--between {from} comes after --and {to} in the log of {vm}")]
    Backwards { from: Point, to: Point, vm: String },
}

/// A VM's log that could not be read to its end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Damage {
    pub vm: String,
    /// The seq where reading stopped (the record after the last good one),
    /// when known.
    pub seq: Option<u64>,
    pub reason: String,
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the log of VM {} is damaged", self.vm)?;
        if let Some(seq) = self.seq {
            write!(f, " at seq {seq}")?;
        }
        write!(
            f,
            ": {}; its changes from there on are not shown (`vmm log verify` says more)",
            self.reason
        )
    }
}

/// What one VM's log holds for queries.
struct VmLog {
    vm: String,
    events: Vec<SemanticEvent>,
    /// Each mark's last seq.
    marks: BTreeMap<String, u64>,
    damage: Option<Damage>,
}

/// Reads the semantic events and marks of `vm`'s log, up to any damage.
fn read_vm(logs: &dyn LogBackend, vm: &str) -> VmLog {
    let mut log = VmLog {
        vm: vm.to_string(),
        events: Vec::new(),
        marks: BTreeMap::new(),
        damage: None,
    };
    let mut last_good = 0;
    let damage = |last_good: u64, e: LogError| Damage {
        vm: vm.to_string(),
        seq: match &e {
            LogError::Corrupt { seq: Some(s), .. } => Some(*s),
            _ if last_good > 0 => Some(last_good + 1),
            _ => None,
        },
        reason: match &e {
            // The log's own message ends in advice for `log verify`; the
            // query's warning gives its own.
            LogError::Corrupt {
                path,
                offset,
                reason,
                ..
            } => format!("{} offset {offset}: {reason}", path.display()),
            _ => e.to_string(),
        },
    };
    let iter = logs.records(vm, 1);
    let iter = match iter {
        Ok(iter) => iter,
        Err(e) => {
            log.damage = Some(damage(0, e));
            return log;
        }
    };
    for record in iter {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                log.damage = Some(damage(last_good, e));
                break;
            }
        };
        last_good = record.seq;
        match record.kind {
            RecordKind::Semantic { json } => match serde_json::from_str(&json) {
                Ok(mut event) => {
                    merge::fill_stamp(&mut event);
                    log.events.push(event)
                }
                Err(e) => {
                    // Framing and CRC were fine: a writer with another event
                    // shape. Later records are still readable.
                    log.damage.get_or_insert(Damage {
                        vm: vm.to_string(),
                        seq: Some(record.seq),
                        reason: format!("a semantic record does not parse: {e}"),
                    });
                }
            },
            RecordKind::Mark { name } => {
                log.marks.insert(name, record.seq);
            }
            _ => {}
        }
    }
    log
}

/// The logs of `vm` (or of every VM) in `logs`.
fn read_logs(logs: &dyn LogBackend, vm: Option<&str>) -> Result<Vec<VmLog>, QueryError> {
    let all = logs.vm_ids().map_err(|source| QueryError::ListLogs {
        location: logs.location(),
        source,
    })?;
    if all.is_empty() {
        return Err(QueryError::NoLogs(logs.location()));
    }
    if let Some(v) = vm.filter(|v| !all.iter().any(|a| a == v)) {
        return Err(QueryError::NoSuchVm {
            location: logs.location(),
            vm: v.to_string(),
            known: all.join(", "),
        });
    }
    Ok(all
        .iter()
        .filter(|id| vm.is_none_or(|v| v == *id))
        .map(|id| read_vm(logs, id))
        .collect())
}

/// A point made concrete for one VM's log.
#[derive(Clone, Copy)]
enum Bound {
    Seq(u64),
    Time(u64),
    Open,
}

impl Bound {
    fn of(p: &Point, log: &VmLog) -> Option<Bound> {
        Some(match p {
            Point::Seq(n) => Bound::Seq(*n),
            Point::Time(t) => Bound::Time(*t),
            Point::Mark(name) => Bound::Seq(*log.marks.get(name)?),
            Point::End => Bound::Open,
        })
    }

    /// `c` is at or before this bound.
    fn covers(self, c: &SemanticChange) -> bool {
        match self {
            Bound::Seq(s) => c.seq <= s,
            Bound::Time(t) => c.ts_ns <= t,
            Bound::Open => true,
        }
    }

    /// `c` is at or after this bound.
    fn starts(self, c: &SemanticChange) -> bool {
        match self {
            Bound::Seq(s) => c.seq >= s,
            Bound::Time(t) => c.ts_ns >= t,
            Bound::Open => true,
        }
    }
}

/// Resolves `points` in each log; logs lacking a mark are dropped with a
/// note, unless none has it.
fn resolve<const N: usize>(
    logs: Vec<VmLog>,
    points: [Option<&Point>; N],
    notes: &mut Vec<String>,
) -> Result<Vec<(VmLog, [Bound; N])>, QueryError> {
    let mut out = Vec::new();
    let mut lacking: Vec<(String, &Point)> = Vec::new();
    for log in logs {
        let mut bounds = [Bound::Open; N];
        let mut ok = true;
        for (b, p) in bounds.iter_mut().zip(points) {
            match p.map(|p| (p, Bound::of(p, &log))) {
                None => {}
                Some((_, Some(x))) => *b = x,
                Some((p, None)) => {
                    lacking.push((log.vm.clone(), p));
                    ok = false;
                    break;
                }
            }
        }
        if ok {
            out.push((log, bounds));
        }
    }
    if out.is_empty() && !lacking.is_empty() {
        return Err(QueryError::NoMark {
            point: lacking[0].1.clone(),
            vms: lacking
                .iter()
                .map(|(v, _)| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    for (vm, p) in lacking {
        notes.push(format!("VM {vm} has no {p} in its log: not shown"));
    }
    Ok(out)
}

/// Which changes a query selects.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub vm: Option<String>,
    pub file: Option<String>,
    /// Table / JSON path / collection.
    pub table: Option<String>,
    pub key: Option<String>,
    /// At or after this point.
    pub since: Option<Point>,
    /// At or before this point.
    pub until: Option<Point>,
    /// Include decode-error events.
    pub errors: bool,
}

impl Filter {
    fn names(&self, c: &SemanticChange) -> bool {
        self.file.as_ref().is_none_or(|f| *f == c.file)
            && self.table.as_ref().is_none_or(|t| *t == c.collection)
            && self.key.as_ref().is_none_or(|k| *k == c.key)
    }
}

/// A query's answer: what could be read, and what could not.
#[derive(Debug)]
pub struct Found<T> {
    pub items: Vec<T>,
    pub damaged: Vec<Damage>,
    /// Things worth saying that are not damage (VMs left out and why).
    pub notes: Vec<String>,
}

impl<T> Default for Found<T> {
    fn default() -> Self {
        Found {
            items: Vec::new(),
            damaged: Vec::new(),
            notes: Vec::new(),
        }
    }
}

/// The selected events of every selected VM, merged in HLC stamp order
/// (then VM, then seq; see `query/merge.rs`), each VM's in its log order.
pub fn changes(logs: &dyn LogBackend, f: &Filter) -> Result<Found<SemanticEvent>, QueryError> {
    let mut found = Found::default();
    let logs = read_logs(logs, f.vm.as_deref())?;
    let logs = resolve(logs, [f.since.as_ref(), f.until.as_ref()], &mut found.notes)?;
    let mut per_vm = Vec::with_capacity(logs.len());
    for (log, [since, until]) in logs {
        found.damaged.extend(log.damage);
        per_vm.push(
            log.events
                .into_iter()
                .filter(|e| match e {
                    SemanticEvent::Change(c) => f.names(c) && since.starts(c) && until.covers(c),
                    SemanticEvent::DecodeError(e) => {
                        f.errors && f.file.as_ref().is_none_or(|x| *x == e.file)
                    }
                })
                .collect(),
        );
    }
    found.items = merge::by_stamp(per_vm);
    Ok(found)
}

/// How one key differs between two points.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NetChange {
    pub vm: String,
    pub file: String,
    pub format: Format,
    pub collection: String,
    pub key: String,
    /// `insert`: absent at the first point; `delete`: absent at the second.
    pub op: Op,
    pub before: Option<Value>,
    pub after: Option<Value>,
}

/// The state of every (file, collection, key) of one VM: format and row.
type State = BTreeMap<(String, String, String), (Format, Option<Value>)>;

fn apply(state: &mut State, c: &SemanticChange) {
    let row = match c.op {
        Op::Delete => None,
        Op::Insert | Op::Update => c.after.clone(),
    };
    state.insert(
        (c.file.clone(), c.collection.clone(), c.key.clone()),
        (c.format, row),
    );
}

/// For each key selected by `f` (its `since`/`until` are ignored): its row
/// at `from` and at `to`, where they differ. Keys unchanged between the
/// two points (or changed and changed back) are left out.
pub fn net(
    source: &dyn LogBackend,
    f: &Filter,
    from: &Point,
    to: &Point,
) -> Result<Found<NetChange>, QueryError> {
    let mut found = Found::default();
    let logs = read_logs(source, f.vm.as_deref())?;
    for (log, [a, b]) in resolve(logs, [Some(from), Some(to)], &mut found.notes)? {
        if let (Bound::Seq(x), Bound::Seq(y)) = (a, b) {
            if x > y {
                return Err(QueryError::Backwards {
                    from: from.clone(),
                    to: to.clone(),
                    vm: log.vm,
                });
            }
        }
        let (mut at_a, mut at_b) = (State::new(), State::new());
        for e in &log.events {
            let SemanticEvent::Change(c) = e else {
                continue;
            };
            if !f.names(c) {
                continue;
            }
            if a.covers(c) {
                apply(&mut at_a, c);
            }
            if b.covers(c) {
                apply(&mut at_b, c);
            }
        }
        // Every key either point knows (B's keys include A's unless B is
        // a time before A's seq).
        let keys: std::collections::BTreeSet<_> = at_a.keys().chain(at_b.keys()).collect();
        for k in keys {
            let (a, b) = (at_a.get(k), at_b.get(k));
            let format = b.or(a).map(|(f, _)| *f).expect("a key of either");
            let before = a.and_then(|(_, r)| r.clone());
            let after = b.and_then(|(_, r)| r.clone());
            if before != after {
                found
                    .items
                    .push(net_change(&log.vm, k, format, before, after));
            }
        }
        found.damaged.extend(log.damage);
    }
    Ok(found)
}

fn net_change(
    vm: &str,
    (file, collection, key): &(String, String, String),
    format: Format,
    before: Option<Value>,
    after: Option<Value>,
) -> NetChange {
    let op = match (&before, &after) {
        (None, _) => Op::Insert,
        (_, None) => Op::Delete,
        _ => Op::Update,
    };
    NetChange {
        vm: vm.to_string(),
        file: file.clone(),
        format,
        collection: collection.clone(),
        key: key.clone(),
        op,
        before,
        after,
    }
}

/// Longest string shown whole in text output.
pub const TEXT_MAX: usize = 64;

/// `v` for text output: every string longer than `max` characters (a
/// blob's hex included) cut to `max` and marked with its full length
/// (`--json` shows values whole).
pub fn shorten(v: &Value, max: usize) -> Value {
    match v {
        Value::String(s) => Value::String(shorten_str(s, max, "chars")),
        Value::Object(o) if o.len() == 1 && o.contains_key("$blob") => match &o["$blob"] {
            Value::String(hex) if hex.len() > max => {
                let mut m = serde_json::Map::new();
                let cut = &hex[..max.min(hex.len()) & !1];
                let text = format!("{cut}…[{} bytes]", hex.len() / 2);
                m.insert("$blob".into(), Value::String(text));
                Value::Object(m)
            }
            _ => v.clone(),
        },
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (shorten_str(k, max, "chars"), shorten(x, max)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| shorten(x, max)).collect()),
        _ => v.clone(),
    }
}

/// `s` cut to `max` characters with `…[N unit]` when longer.
pub fn shorten_str(s: &str, max: usize, unit: &str) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let cut: String = s.chars().take(max).collect();
    format!("{cut}…[{n} {unit}]")
}

/// A change for text output: long values and keys shortened.
pub fn shortened(c: &SemanticChange) -> SemanticChange {
    SemanticChange {
        key: shorten_str(&c.key, TEXT_MAX, "chars"),
        before: c.before.as_ref().map(|v| shorten(v, TEXT_MAX)),
        after: c.after.as_ref().map(|v| shorten(v, TEXT_MAX)),
        ..c.clone()
    }
}

/// `vm0 app.db customers[123] update: {"tier":0} -> {"tier":1}`, values
/// shortened.
impl fmt::Display for NetChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = shorten_str(&self.key, TEXT_MAX, "chars");
        write!(
            f,
            "{} {} {}[{key}] {}: ",
            self.vm, self.file, self.collection, self.op
        )?;
        let show = |v: &Option<Value>| shorten(v.as_ref().unwrap_or(&Value::Null), TEXT_MAX);
        match self.op {
            Op::Insert => write!(f, "(absent) -> {}", show(&self.after)),
            Op::Delete => write!(f, "{} -> (absent)", show(&self.before)),
            Op::Update => {
                let (b, a) = changed_members(&show(&self.before), &show(&self.after));
                write!(f, "{b} -> {a}")
            }
        }
    }
}

/// RFC3339 UTC to the millisecond, for text output.
pub fn format_time(ts_ns: u64) -> String {
    humantime::format_rfc3339_millis(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ts_ns))
        .to_string()
}

mod merge;

#[cfg(test)]
mod tests;
