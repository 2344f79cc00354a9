//! The tap's decoding thread: file versions read at barriers come in as
//! jobs, semantic events go back to be appended to the log.
use std::sync::mpsc::{Receiver, Sender};

use crate::decode::DecodeLimits;
use crate::lift::{Differ, Lifted, SemanticEvent, Version};
use crate::semantic::{DecodeErrorEvent, SemanticChange, Source};
use changelog::Hlc;

/// Versions read at one barrier, for the decoding thread.
pub(super) struct LiftJob {
    pub vm: String,
    pub seq: u64,
    /// The barrier's stamp (`None`: the log has no record yet); its
    /// changes carry it, and its physical part as their time.
    pub hlc: Option<Hlc>,
    pub versions: Vec<Version>,
    pub kind: JobKind,
}

/// What the decoding thread does with a job's versions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum JobKind {
    /// Diff against each file's last state and report the changes.
    Diff,
    /// A restored VM's baseline: remembered, not diffed.
    Seed,
    /// Each file's state at the end of the previous recorded run:
    /// remembered as the baseline of its first decode in this run.
    SeedPrior,
    /// Each file's state at the start of this run, which differs from the
    /// end of the previous one: diffed, its changes labelled
    /// [`Source::OutsideRecording`].
    Outside,
}

/// Barriers' worth of file versions queued for decoding.
pub(super) const LIFT_QUEUE: usize = 8;

/// The decoding thread: diffs each job's versions against the previous
/// ones, in barrier order.
pub(super) fn run_differ(
    jobs: Receiver<LiftJob>,
    events: Sender<Vec<SemanticEvent>>,
    limits: DecodeLimits,
) {
    let mut differ = Differ::with_limits(limits);
    for job in jobs {
        let source = match job.kind {
            JobKind::Seed => {
                differ.seed(job.versions);
                continue;
            }
            JobKind::SeedPrior => {
                differ.seed_prior(job.versions);
                continue;
            }
            JobKind::Outside => Some(Source::OutsideRecording),
            JobKind::Diff => None,
        };
        let ts_ns = job.hlc.map_or_else(store::clock::now_ns, |h| h.physical_ns);
        let mut out = Vec::new();
        for item in differ.diff(job.versions) {
            match item {
                Lifted::Changes {
                    file,
                    format,
                    changes,
                    provenance,
                } => {
                    out.extend(changes.into_iter().zip(provenance).map(|(c, p)| {
                        let mut change =
                            SemanticChange::from_change(&job.vm, job.seq, ts_ns, &file, format, c);
                        change.hlc = job.hlc;
                        change.source = source;
                        change.provenance = Some(Box::new(p));
                        SemanticEvent::Change(change)
                    }));
                }
                Lifted::Error {
                    file,
                    format,
                    reason,
                } => out.push(SemanticEvent::DecodeError(DecodeErrorEvent {
                    vm: job.vm.clone(),
                    seq: job.seq,
                    ts_ns,
                    hlc: job.hlc,
                    file,
                    format,
                    reason,
                })),
            }
        }
        if !out.is_empty() && events.send(out).is_err() {
            return;
        }
    }
}
