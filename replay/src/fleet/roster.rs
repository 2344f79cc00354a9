//! Which workers are alive, from their adverts alone.
//!
//! A worker puts its advert every heartbeat; the bucket's revision moves
//! each time. A worker counts as alive from the moment its revision is
//! seen to move until it has not moved for the timeout, or it advertises
//! that it stopped. Only the watcher's own clock is used, so the hosts'
//! clocks may disagree by any amount.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::wire::{Advert, WorkerState};
use super::WorkerInfo;

#[derive(Debug)]
struct Seen {
    advert: Advert,
    revision: u64,
    /// When the revision was last seen to move (None: not yet).
    moved: Option<Instant>,
    first_seen: Instant,
}

/// The workers as last seen.
#[derive(Debug)]
pub struct Roster {
    timeout: Duration,
    seen: BTreeMap<String, Seen>,
}

impl Roster {
    pub fn new(timeout: Duration) -> Roster {
        Roster {
            timeout,
            seen: BTreeMap::new(),
        }
    }

    /// Takes in the adverts read at `now`: (worker, revision, advert).
    pub fn update(
        &mut self,
        now: Instant,
        adverts: impl IntoIterator<Item = (String, u64, Advert)>,
    ) {
        for (worker, revision, advert) in adverts {
            match self.seen.get_mut(&worker) {
                Some(s) if s.revision == revision => {}
                Some(s) => {
                    s.revision = revision;
                    s.advert = advert;
                    s.moved = Some(now);
                }
                None => {
                    self.seen.insert(
                        worker,
                        Seen {
                            advert,
                            revision,
                            moved: None,
                            first_seen: now,
                        },
                    );
                }
            }
        }
    }

    fn alive(&self, s: &Seen, now: Instant) -> bool {
        s.advert.state == WorkerState::Ready
            && s.moved
                .is_some_and(|t| now.duration_since(t) < self.timeout)
    }

    /// The workers alive at `now`, by id.
    pub fn live(&self, now: Instant) -> Vec<WorkerInfo> {
        self.seen
            .values()
            .filter(|s| self.alive(s, now))
            .map(|s| s.advert.info.clone())
            .collect()
    }

    /// Whether some worker has advertised that it is ready but has not yet
    /// been seen to move (alive or dead is not known yet).
    pub fn undecided(&self) -> bool {
        self.seen
            .values()
            .any(|s| s.advert.state == WorkerState::Ready && s.moved.is_none())
    }

    /// Whether `worker` is gone at `now`: it said it stopped, or it has not
    /// moved for the timeout (counting from when it was first seen, if it
    /// never moved). A worker never seen is gone.
    pub fn gone(&self, worker: &str, now: Instant) -> bool {
        let Some(s) = self.seen.get(worker) else {
            return true;
        };
        if s.advert.state == WorkerState::Stopped {
            return true;
        }
        let since = s.moved.unwrap_or(s.first_seen);
        now.duration_since(since) >= self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn advert(id: &str, state: WorkerState) -> Advert {
        Advert {
            info: WorkerInfo {
                id: id.into(),
                cores: 1,
                mem_bytes: 1 << 30,
                free_disk_bytes: 1 << 30,
                write_bytes_per_sec: 1 << 20,
                labels: vec![],
            },
            state,
            running: 0,
        }
    }

    #[test]
    fn alive_while_the_revision_moves_gone_after_the_timeout_or_a_stop() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = Roster::new(3 * s);
        let ready = |rev| vec![("a".to_string(), rev, advert("a", WorkerState::Ready))];
        r.update(t0, ready(1));
        // Seen once: not known alive yet, not gone before the timeout.
        assert!(r.live(t0).is_empty());
        assert!(r.undecided());
        assert!(!r.gone("a", t0 + 2 * s));
        r.update(t0 + s, ready(2));
        assert_eq!(r.live(t0 + s).len(), 1);
        assert!(!r.undecided());
        // The same revision again is no sign of life.
        r.update(t0 + 3 * s, ready(2));
        assert_eq!(r.live(t0 + 3 * s).len(), 1);
        assert!(r.live(t0 + 4 * s).is_empty());
        assert!(r.gone("a", t0 + 4 * s));
        // It comes back.
        r.update(t0 + 5 * s, ready(3));
        assert!(!r.gone("a", t0 + 5 * s));
        // A stop counts at once.
        r.update(
            t0 + 6 * s,
            vec![("a".to_string(), 4, advert("a", WorkerState::Stopped))],
        );
        assert!(r.gone("a", t0 + 6 * s));
        assert!(r.live(t0 + 6 * s).is_empty());
        assert!(r.gone("never-seen", t0));
    }

    #[test]
    fn a_worker_that_never_moves_is_gone_after_the_timeout() {
        let t0 = Instant::now();
        let mut r = Roster::new(Duration::from_secs(2));
        r.update(
            t0,
            vec![("b".to_string(), 9, advert("b", WorkerState::Ready))],
        );
        assert!(!r.gone("b", t0 + Duration::from_secs(1)));
        assert!(r.gone("b", t0 + Duration::from_secs(2)));
    }
}
