//! The order in which the changes of several VMs are shown: by HLC stamp
//! (`changelog::hlc`: physical time, logical counter, node id), then VM,
//! then seq. Stamps respect every order a log knows (a log continued on
//! another host, a clock that stepped back); between VMs recorded on
//! different hosts they are as right as the hosts' clocks (see the
//! clock-skew tolerance in `changelog::hlc`), and always deterministic.
use std::cmp::Reverse;
use std::collections::BinaryHeap;

use crate::lift::SemanticEvent;
use changelog::Hlc;

/// Where an event sorts: its barrier's stamp, its VM, its barrier's seq.
fn position(e: &SemanticEvent) -> (Hlc, &str, u64) {
    match e {
        SemanticEvent::Change(c) => (stamp(c.hlc, c.ts_ns), &c.vm, c.seq),
        SemanticEvent::DecodeError(e) => (stamp(e.hlc, e.ts_ns), &e.vm, e.seq),
    }
}

/// An event's stamp; one recorded before stamps gets its time's legacy
/// stamp (node 0: it sorts before a stamped event of the same ns).
fn stamp(hlc: Option<Hlc>, ts_ns: u64) -> Hlc {
    hlc.unwrap_or_else(|| Hlc::legacy(ts_ns))
}

/// Gives every event a stamp (see [`stamp`]), so output always has one.
pub(super) fn fill_stamp(e: &mut SemanticEvent) {
    match e {
        SemanticEvent::Change(c) => c.hlc = Some(stamp(c.hlc, c.ts_ns)),
        SemanticEvent::DecodeError(e) => e.hlc = Some(stamp(e.hlc, e.ts_ns)),
    }
}

/// Merges each VM's events (in its log's order) into one list ordered by
/// (stamp, VM, seq). A merge, not a sort: a VM's own events stay in log
/// order even where old, unstamped events' times went backwards.
pub(super) fn by_stamp(lists: Vec<Vec<SemanticEvent>>) -> Vec<SemanticEvent> {
    let total = lists.iter().map(Vec::len).sum();
    let mut lists: Vec<_> = lists
        .into_iter()
        .map(|l| l.into_iter().peekable())
        .collect();
    let mut heads = BinaryHeap::new();
    let key = |e: &SemanticEvent, i: usize| {
        let (hlc, vm, seq) = position(e);
        Reverse((hlc, vm.to_string(), seq, i))
    };
    for (i, l) in lists.iter_mut().enumerate() {
        if let Some(e) = l.peek() {
            heads.push(key(e, i));
        }
    }
    let mut out = Vec::with_capacity(total);
    while let Some(Reverse((.., i))) = heads.pop() {
        out.extend(lists[i].next());
        if let Some(e) = lists[i].peek() {
            heads.push(key(e, i));
        }
    }
    out
}
