//! Hybrid logical clock (HLC) stamps on change-log records, so that the
//! records of VMs recorded on different hosts merge in one order that
//! respects every order the logs themselves know.
//!
//! An [`Hlc`] is `(physical_ns, logical, node)`, compared in that order:
//!
//! - `physical_ns` is host `CLOCK_REALTIME` in ns ([`store::clock::now_ns`]),
//!   held at the last stamp's value while the clock reads earlier; it *is*
//!   the record's `ts_ns`, so `time=` points resolve on it unchanged;
//! - `logical` counts stamps taken while `physical_ns` stood still (the
//!   clock stepped back, or two records in one ns), so one writer's stamps
//!   strictly increase whatever its clock does;
//! - `node` names the host that took the stamp ([`NodeId`]); it only
//!   breaks ties between hosts, deterministically.
//!
//! Text form: `<physical_ns>.<logical>@<node as 16 hex digits>`, e.g.
//! `1700000000123456789.0@9f86d081884c7d65` (JSON carries that string).
//!
//! # Clock-skew tolerance
//!
//! What the order guarantees, and what it cannot:
//!
//! - **Within one VM's log** the HLC order is the log's seq order, always:
//!   a clock that steps back (NTP, a VM host migrated, a wrong clock fixed)
//!   makes the writer hold `physical_ns` and count `logical` until the
//!   clock passes it again. A log continued later, by any host, resumes
//!   from its last record's stamp ([`HlcClock::observe`]), so a host whose
//!   clock is behind by any amount still stamps after what the log holds.
//!   Copies (`vmm log push`, `--replicate`) keep every stamp exactly.
//! - **Across VMs recorded on different hosts** nothing is exchanged while
//!   recording, so two records with no link through a log are ordered by
//!   their hosts' clocks: the merged order is right for events further
//!   apart than the hosts' mutual clock skew (with NTP, typically well
//!   under 10 ms on a LAN), and for closer ones it is a deterministic
//!   order (ties broken by node id, then VM and seq) that may differ from
//!   real time by up to that skew. Run NTP (or PTP) on recording hosts.
//! - A host clock that runs **ahead** by D stamps its records up to D in
//!   the future; every later writer of that log keeps `physical_ns` there
//!   (counting `logical`) until its own clock catches up, so that log's
//!   `time=` points are off by up to D for that while. The writer reports
//!   such a lag when it opens a log ([`crate::OpenReport::clock_behind_ns`]),
//!   and the recorder warns when it exceeds [`SKEW_WARN_NS`].
//!
//! Why not the `uhlc` crate: its timestamps pack time and counter into one
//! NTP64 (32-bit fraction, 4 counter bits taken from it), which cannot
//! carry a record's `ts_ns` exactly (old logs' times must read back
//! bit-for-bit), and its clock is a plain `fn()`, so a writer could not
//! stamp a given time (`append_at`, copies). This type is small instead.

use std::fmt;
use std::str::FromStr;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

/// How far a log's last stamp may be ahead of the local clock before the
/// recorder warns about clock skew (1 s: well above NTP's usual error,
/// well below anything that confuses `time=` points in practice).
pub const SKEW_WARN_NS: u64 = 1_000_000_000;

/// The environment variable that names this host for HLC stamps.
pub const NODE_ID_ENV: &str = "VMM_NODE_ID";

/// The host that took a stamp: 64 bits derived from a stable name of the
/// host (see [`NodeId::local`]). `0` is reserved: records written before
/// stamps carried a node (format version 1) read back with it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(pub u64);

impl NodeId {
    /// Legacy / unknown node: the stamp of a record from before HLCs.
    pub const LEGACY: NodeId = NodeId(0);

    /// The node id derived from a name: the first 8 bytes of a BLAKE3
    /// hash (never 0, which means "legacy").
    pub fn from_name(name: &str) -> NodeId {
        let h = blake3::Hasher::new()
            .update(b"vmm node id\0")
            .update(name.as_bytes())
            .finalize();
        let id = u64::from_le_bytes(h.as_bytes()[..8].try_into().expect("8 bytes"));
        NodeId(id.max(1))
    }

    /// This host's node id, the same for every process on the host:
    /// [`NodeId::from_name`] of `$VMM_NODE_ID` when set and non-empty (to
    /// name hosts explicitly, e.g. containers that share a machine id),
    /// else of `/etc/machine-id`, else of the host name. Read once per
    /// process.
    pub fn local() -> NodeId {
        static LOCAL: OnceLock<NodeId> = OnceLock::new();
        *LOCAL.get_or_init(|| NodeId::from_name(&local_name()))
    }

    pub fn is_legacy(self) -> bool {
        self == NodeId::LEGACY
    }
}

/// The stable name of this host that [`NodeId::local`] hashes.
fn local_name() -> String {
    let env = std::env::var(NODE_ID_ENV).ok();
    let read = |p: &str| std::fs::read_to_string(p).ok();
    let named = |s: Option<String>| s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty());
    named(env)
        .or_else(|| named(read("/etc/machine-id")))
        .or_else(|| named(read("/proc/sys/kernel/hostname")))
        .or_else(|| named(read("/etc/hostname")))
        .unwrap_or_else(|| "localhost".into())
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

impl FromStr for NodeId {
    type Err = HlcParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.len() != 16 {
            return Err(HlcParseError::Node(s.to_string()));
        }
        u64::from_str_radix(s, 16)
            .map(NodeId)
            .map_err(|_| HlcParseError::Node(s.to_string()))
    }
}

/// A hybrid logical clock stamp; see the module doc. Ordered by
/// `(physical_ns, logical, node)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hlc {
    pub physical_ns: u64,
    pub logical: u32,
    pub node: NodeId,
}

impl Hlc {
    pub fn new(physical_ns: u64, logical: u32, node: NodeId) -> Hlc {
        Hlc {
            physical_ns,
            logical,
            node,
        }
    }

    /// The stamp a record from before HLCs reads back with: its time,
    /// logical 0, the legacy node.
    pub fn legacy(ts_ns: u64) -> Hlc {
        Hlc::new(ts_ns, 0, NodeId::LEGACY)
    }
}

/// Why text is not an HLC stamp.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HlcParseError {
    #[error("'{0}' is not an HLC stamp: expected PHYSICAL_NS.LOGICAL@NODE (16 hex digits)")]
    Shape(String),
    #[error("'{0}' is not an HLC node id: expected 16 hex digits")]
    Node(String),
}

impl fmt::Display for Hlc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}@{}", self.physical_ns, self.logical, self.node)
    }
}

impl FromStr for Hlc {
    type Err = HlcParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let shape = || HlcParseError::Shape(s.to_string());
        let (time, node) = s.split_once('@').ok_or_else(shape)?;
        let (physical, logical) = time.split_once('.').ok_or_else(shape)?;
        Ok(Hlc {
            physical_ns: physical.parse().map_err(|_| shape())?,
            logical: logical.parse().map_err(|_| shape())?,
            node: node.parse()?,
        })
    }
}

impl Serialize for Hlc {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Hlc {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for NodeId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// One writer's clock: hands out strictly increasing stamps for `node`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HlcClock {
    node: NodeId,
    /// The last stamp handed out or observed.
    last: Option<Hlc>,
}

impl HlcClock {
    pub fn new(node: NodeId) -> HlcClock {
        HlcClock { node, last: None }
    }

    pub fn node(&self) -> NodeId {
        self.node
    }

    /// The last stamp handed out or observed.
    pub fn last(&self) -> Option<Hlc> {
        self.last
    }

    /// The physical part of the last stamp (0 before the first).
    pub fn last_physical(&self) -> u64 {
        self.last.map_or(0, |h| h.physical_ns)
    }

    /// A stamp for a local event when the physical clock reads `now_ns`:
    /// `now_ns` with logical 0 when that is past the last stamp, else the
    /// last physical time with the logical counter one up. (A counter at
    /// `u32::MAX` moves the physical part 1 ns on instead of wrapping.)
    pub fn tick(&mut self, now_ns: u64) -> Hlc {
        let (physical_ns, logical) = match self.last {
            Some(h) if now_ns <= h.physical_ns => match h.logical.checked_add(1) {
                Some(l) => (h.physical_ns, l),
                None => (h.physical_ns.saturating_add(1), 0),
            },
            _ => (now_ns, 0),
        };
        let stamp = Hlc::new(physical_ns, logical, self.node);
        self.last = Some(stamp);
        stamp
    }

    /// Takes in a stamp seen elsewhere (the last record of a log being
    /// continued, a record copied in): every later [`HlcClock::tick`] is
    /// after it, whatever the local clock reads. The HLC receive rule,
    /// without a new event of its own.
    pub fn observe(&mut self, seen: Hlc) {
        if self.last.is_none_or(|last| seen > last) {
            self.last = Some(seen);
        }
    }

    /// Whether `seen` may follow what this clock handed out or observed:
    /// not before it. (Equal is allowed: records copied from a log written
    /// before HLCs can share a stamp.)
    pub fn accepts(&self, seen: Hlc) -> bool {
        self.last.is_none_or(|last| seen >= last)
    }
}

#[cfg(test)]
mod tests;
