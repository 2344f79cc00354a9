//! The replay engine: apply a VM's logged writes to an image, in order,
//! verifying every barrier on the way.
//!
//! Every block comes from the content store (which checks its BLAKE3 on
//! read); every barrier passed is checked against the checksum recomputed
//! from the image's starting state plus the writes applied since. The first
//! problem — a corrupt or missing record, a missing object, a checksum that
//! does not match — stops the replay with an error that names the record,
//! the reason, and the last barrier that did verify. Replays are
//! deterministic: the same inputs give the same bytes.
//!
//! What-if replays (dropping records, stopping before one) change history on
//! purpose; their barriers can no longer match, so verification stops at
//! the first dropped write and the report says the result is not the
//! recorded history.
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::time::Duration;

use changelog::disk_state::{DiskState, ZERO_BLOCK_HASH};

use crate::metering::{Meter, ReplayStep, StepTotals};
use changelog::log::RecordKind;
use changelog::recording::RecordDir;
use changelog::LogBackend;
use serde::Serialize;
use store::hex;
use store::{ObjectBackend, ObjectId, BLOCK_SIZE};

use crate::filter::WhatIf;
use crate::ReplayError;

const BLOCK: u64 = BLOCK_SIZE as u64;
/// Longest pause `--speed` reproduces between two records.
const MAX_GAP: Duration = Duration::from_secs(10);

/// One step of a replay, as an observer sees it.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
pub enum Step {
    Write {
        seq: u64,
        ts_ns: u64,
        sector: u64,
        blocks: u64,
        dropped: bool,
    },
    Barrier {
        seq: u64,
        ts_ns: u64,
        verified: bool,
        checksum: String,
    },
    Mark {
        seq: u64,
        ts_ns: u64,
        name: String,
    },
    Snapshot {
        seq: u64,
        ts_ns: u64,
        id: String,
    },
    /// A guest hint (file extents): no disk change.
    Hint {
        seq: u64,
        ts_ns: u64,
    },
    /// What the interval before it cost (resource metrics): no disk change.
    Metrics {
        seq: u64,
        ts_ns: u64,
    },
    /// A semantic change lifted at the barrier before it (JSON).
    Change {
        seq: u64,
        ts_ns: u64,
        json: String,
    },
}

/// What an observer wants after a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    Continue,
    Stop,
}

pub struct Options<'a> {
    /// First record to apply.
    pub from_seq: u64,
    /// Last record to apply.
    pub until_seq: u64,
    /// Check every barrier (on unless the caller explicitly allows
    /// unverified results).
    pub verify: bool,
    pub what_if: WhatIf,
    /// Called after every record; may stop the replay.
    pub observer: Option<&'a mut dyn FnMut(&Step) -> Control>,
    /// Reproduce the recorded timing, sped up by this factor.
    pub speed: Option<f64>,
    /// Draw a progress bar on stderr (when it is a terminal).
    pub progress: bool,
    /// Asked before every record: true abandons the replay with
    /// `ReplayError::Cancelled` (a signal arrived, say).
    pub cancel: Option<&'a dyn Fn() -> bool>,
    /// Start an empty-based replay from the nearest checkpoint (see
    /// `base.rs`); false replays the whole log.
    pub checkpoints: bool,
    /// Called at every barrier with what the interval before it cost.
    pub on_step: Option<&'a mut dyn FnMut(&ReplayStep)>,
}

impl Default for Options<'_> {
    fn default() -> Self {
        Self {
            from_seq: 1,
            until_seq: u64::MAX,
            verify: true,
            what_if: WhatIf::default(),
            observer: None,
            speed: None,
            progress: false,
            cancel: None,
            checkpoints: true,
            on_step: None,
        }
    }
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayReport {
    pub from_seq: u64,
    /// The checkpoint the disk was started from (its barrier's seq).
    pub checkpoint: Option<u64>,
    pub records_read: u64,
    pub writes_applied: u64,
    pub writes_dropped: u64,
    pub blocks_written: u64,
    pub barriers_verified: u64,
    pub barriers_unverified: u64,
    pub last_verified_barrier: Option<u64>,
    /// Seq and time of the last record applied (0 when none).
    pub last_seq: u64,
    pub last_ts_ns: u64,
    /// The observer stopped the replay before `until_seq`.
    pub stopped_early: bool,
    /// What the replayed intervals (barrier to barrier) cost.
    pub steps: StepTotals,
    /// Every barrier passed was verified and nothing was changed.
    pub verified: bool,
    /// A what-if replay: not the recorded history.
    pub what_if: bool,
    /// The image's state checksum at the end, hex.
    pub checksum: String,
}

/// Replays `vm_id`'s log in the record directory `dir` onto the image at
/// `image` (see the module doc).
pub fn replay(
    dir: &RecordDir,
    vm_id: &str,
    image: &Path,
    opts: Options<'_>,
) -> Result<ReplayReport, ReplayError> {
    let store = dir.open_store()?;
    replay_from(dir, &store, vm_id, image, opts)
}

/// [`replay`] from wherever the log and the objects live.
pub fn replay_from(
    logs: &dyn LogBackend,
    objects: &dyn ObjectBackend,
    vm_id: &str,
    image: &Path,
    mut opts: Options<'_>,
) -> Result<ReplayReport, ReplayError> {
    let io = |source| ReplayError::Image {
        path: image.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)
        .map_err(io)?;
    let mut state = DiskState::from_image(image).map_err(|e| ReplayError::ImageState {
        path: image.to_path_buf(),
        reason: e.to_string(),
    })?;
    let disk_blocks = state.num_blocks();
    let until = opts.until_seq.min(logs.last_seq(vm_id)?);
    let stop_before = opts.what_if.stop_before.unwrap_or(u64::MAX);
    let mut report = ReplayReport {
        from_seq: opts.from_seq,
        what_if: opts.what_if.changes_history(),
        ..Default::default()
    };
    let mut verifying = opts.verify;
    let progress = crate::progress::bar(opts.progress, until.saturating_sub(opts.from_seq) + 1);
    let mut prev_ts = None;
    let from = opts.from_seq.max(1);
    let what_if = opts.what_if.clone();
    let iter = logs.records(vm_id, from)?;
    let mut meter = Meter::start();
    // A second thread reads the log ahead and fetches (and BLAKE3-checks)
    // each write's blocks from the store while this one writes the image.
    std::thread::scope(|scope| -> Result<ReplayReport, ReplayError> {
    let (tx, rx) = sync_channel::<Fetched>(PREFETCH);
    let store = objects;
    scope.spawn(move || {
        // Writes are fetched a group at a time (one store call for all
        // their blocks: neighbouring objects are read together).
        let mut group = Group::default();
        for record in iter {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    if group.send(store, &tx).is_ok() {
                        let _ = tx.send(Fetched { record: Err(e.to_string()), data: None });
                    }
                    return;
                }
            };
            if record.seq > until || record.seq >= stop_before {
                break;
            }
            let fetch = matches!(&record.kind, RecordKind::BlockWrite { sector, blocks, .. }
                if !what_if.drops(record.seq, *sector, blocks.len() as u64));
            let last = record.seq >= until || record.seq + 1 >= stop_before;
            group.push(record, fetch);
            if (last || group.full()) && group.send(store, &tx).is_err() {
                return;
            }
            if last {
                return;
            }
        }
        let _ = group.send(store, &tx);
    });
    for fetched in rx {
        if opts.cancel.is_some_and(|cancel| cancel()) {
            return Err(ReplayError::Cancelled);
        }
        let record = fetched.record.map_err(|e| report.interrupted(e))?;
        if let (Some(speed), Some(prev)) = (opts.speed, prev_ts) {
            let gap = Duration::from_nanos(record.ts_ns.saturating_sub(prev));
            std::thread::sleep(gap.div_f64(speed.max(1e-6)).min(MAX_GAP));
        }
        prev_ts = Some(record.ts_ns);
        report.records_read += 1;
        meter.record();
        let (seq, ts_ns) = (record.seq, record.ts_ns);
        let step = match record.kind {
            RecordKind::BlockWrite { sector, blocks, .. } => {
                let first = sector / (BLOCK / 512);
                if first + blocks.len() as u64 > disk_blocks {
                    return Err(report.interrupted(format!(
                        "seq {seq}: write at sector {sector} lies outside the {disk_blocks}-block image"
                    )));
                }
                let dropped = opts.what_if.drops(seq, sector, blocks.len() as u64);
                if dropped {
                    report.writes_dropped += 1;
                    verifying = false;
                } else {
                    let buf = fetched
                        .data
                        .unwrap_or_else(|| Err(format!("seq {seq}: blocks were not fetched")))
                        .map_err(|e| report.interrupted(e))?;
                    file.write_all_at(&buf, first * BLOCK).map_err(io)?;
                    state
                        .apply_block_write(sector, &blocks)
                        .map_err(|e| report.interrupted(format!("seq {seq}: {e}")))?;
                    report.writes_applied += 1;
                    report.blocks_written += blocks.len() as u64;
                    meter.write(buf.len() as u64);
                }
                Step::Write {
                    seq,
                    ts_ns,
                    sector,
                    blocks: blocks.len() as u64,
                    dropped,
                }
            }
            RecordKind::Barrier { disk_checksum, .. } => {
                let actual = state.checksum();
                let verified = verifying && actual == disk_checksum;
                if verified {
                    report.barriers_verified += 1;
                    report.last_verified_barrier = Some(seq);
                } else {
                    report.barriers_unverified += 1;
                    if verifying {
                        return Err(report.interrupted(format!(
                            "seq {seq}: barrier checksum {} does not match the replayed disk ({}): the log or the base image is not what was recorded",
                            hex::encode(&disk_checksum),
                            hex::encode(&actual)
                        )));
                    }
                }
                let cost = meter.barrier(seq);
                report.steps.add(&cost);
                if let Some(on_step) = opts.on_step.as_mut() {
                    on_step(&cost);
                }
                Step::Barrier {
                    seq,
                    ts_ns,
                    verified,
                    checksum: hex::encode(&actual),
                }
            }
            RecordKind::Mark { name } => Step::Mark { seq, ts_ns, name },
            RecordKind::SnapshotTaken { id } => Step::Snapshot { seq, ts_ns, id },
            RecordKind::Hint { .. } => Step::Hint { seq, ts_ns },
            RecordKind::Metrics { .. } => Step::Metrics { seq, ts_ns },
            RecordKind::Semantic { json } => Step::Change { seq, ts_ns, json },
        };
        report.last_seq = seq;
        report.last_ts_ns = ts_ns;
        progress.inc(1);
        if let Some(observer) = opts.observer.as_mut() {
            if observer(&step) == Control::Stop {
                report.stopped_early = seq < until;
                break;
            }
        }
        // Stop without reading on: what lies after the target (even a
        // damaged frame) does not concern this replay.
        if seq >= until || seq + 1 >= stop_before {
            break;
        }
    }
    Ok(report.clone())
    })
    .map(|r| {
        report = r;
    })?;
    progress.finish_and_clear();
    file.sync_data().map_err(io)?;
    report.verified = opts.verify && report.barriers_unverified == 0 && !report.what_if;
    report.checksum = hex::encode(&state.checksum());
    Ok(report)
}

/// Records read ahead of the writer.
const PREFETCH: usize = 64;

/// A record and, for a write to apply, its blocks from the store.
struct Fetched {
    record: Result<changelog::Record, String>,
    data: Option<Result<Vec<u8>, String>>,
}

/// Blocks fetched per store call (about 1 MiB).
const GROUP_BLOCKS: usize = 256;

/// Records read ahead and not yet sent: the writes among them are fetched
/// together.
#[derive(Default)]
struct Group {
    records: Vec<(changelog::Record, bool)>,
    blocks: usize,
}

impl Group {
    fn push(&mut self, record: changelog::Record, fetch: bool) {
        if fetch {
            self.blocks += write_blocks(&record).len();
        }
        self.records.push((record, fetch));
    }

    fn full(&self) -> bool {
        self.blocks >= GROUP_BLOCKS || self.records.len() >= PREFETCH
    }

    /// Fetches the group's writes in one store call and sends every
    /// record in order. When that call fails, each write is fetched on
    /// its own, so the error names the record it belongs to (and the
    /// records before it are still applied). Err when the receiver left.
    fn send(&mut self, store: &dyn ObjectBackend, tx: &SyncSender<Fetched>) -> Result<(), ()> {
        let records = std::mem::take(&mut self.records);
        self.blocks = 0;
        let all: Vec<&[[u8; 32]]> = records
            .iter()
            .filter(|(_, fetch)| *fetch)
            .map(|(r, _)| write_blocks(r))
            .collect();
        let mut together = fetch(store, &all).ok().map(Vec::into_iter);
        for (record, fetch_it) in records {
            let data = fetch_it.then(|| match together.as_mut() {
                Some(t) => Ok(t.next().expect("one buffer per write")),
                None => fetch(store, &[write_blocks(&record)])
                    .map(|mut one| one.pop().expect("one buffer per write"))
                    .map_err(|e| format!("seq {}: {e}", record.seq)),
            });
            let record = Ok(record);
            tx.send(Fetched { record, data }).map_err(drop)?;
        }
        Ok(())
    }
}

fn write_blocks(record: &changelog::Record) -> &[[u8; 32]] {
    match &record.kind {
        RecordKind::BlockWrite { blocks, .. } => blocks,
        _ => &[],
    }
}

/// Each write's blocks, concatenated (each checked against its BLAKE3 by
/// the store; zero blocks are not stored), from one store call.
fn fetch(
    store: &dyn ObjectBackend,
    writes: &[&[[u8; 32]]],
) -> Result<Vec<Vec<u8>>, store::StoreError> {
    let stored: Vec<ObjectId> = writes
        .iter()
        .flat_map(|w| w.iter())
        .filter(|h| **h != ZERO_BLOCK_HASH)
        .map(|h| ObjectId(*h))
        .collect();
    // Together: a local store reads neighbours in one pread, a backend
    // across a network answers them in one wait.
    let mut fetched = store.get_many(&stored)?.into_iter();
    let mut out = Vec::with_capacity(writes.len());
    for blocks in writes {
        let mut buf = Vec::with_capacity(blocks.len() * BLOCK as usize);
        for h in blocks.iter() {
            if *h == ZERO_BLOCK_HASH {
                buf.resize(buf.len() + BLOCK as usize, 0);
            } else {
                buf.extend_from_slice(&fetched.next().expect("one object per id"));
            }
        }
        out.push(buf);
    }
    Ok(out)
}

impl ReplayReport {
    fn interrupted(&self, reason: String) -> ReplayError {
        ReplayError::Interrupted {
            reason,
            last_verified_barrier: self.last_verified_barrier,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The engine through its two seams, with backends held in memory: no
    //! record directory, no content store on disk.
    use std::collections::HashMap;
    use std::sync::Mutex;

    use changelog::log::{BarrierKind, LogError, Record};
    use changelog::Records;
    use store::{PutReport, StoreError};

    use super::*;

    #[derive(Default)]
    struct MemObjects(Mutex<HashMap<ObjectId, Vec<u8>>>);

    impl ObjectBackend for MemObjects {
        fn location(&self) -> String {
            "memory".into()
        }
        fn put_hashed(&self, items: &[&[u8]], ids: &[ObjectId]) -> store::Result<PutReport> {
            let mut map = self.0.lock().unwrap();
            for (item, id) in items.iter().zip(ids) {
                map.insert(*id, item.to_vec());
            }
            Ok(PutReport::default())
        }
        fn get(&self, id: &ObjectId) -> store::Result<Vec<u8>> {
            self.0
                .lock()
                .unwrap()
                .get(id)
                .cloned()
                .ok_or_else(|| StoreError::NotFound {
                    id: *id,
                    dir: "memory".into(),
                    index_damage: None,
                })
        }
        fn contains(&self, id: &ObjectId) -> store::Result<bool> {
            Ok(self.0.lock().unwrap().contains_key(id))
        }
        fn sync(&self) -> store::Result<()> {
            Ok(())
        }
    }

    struct MemLog(Vec<Record>);

    impl LogBackend for MemLog {
        fn location(&self) -> String {
            "memory".into()
        }
        fn vm_ids(&self) -> Result<Vec<String>, LogError> {
            Ok(vec!["vm".into()])
        }
        fn last_seq(&self, _vm: &str) -> Result<u64, LogError> {
            Ok(self.0.last().map_or(0, |r| r.seq))
        }
        fn records(&self, _vm: &str, from: u64) -> Result<Records<'_>, LogError> {
            let records: Vec<Record> = self.0.iter().filter(|r| r.seq >= from).cloned().collect();
            Ok(Box::new(records.into_iter().map(Ok)))
        }
    }

    /// A log of one write of block 2 and a barrier after it, with the
    /// write's data put (or not) into `objects`.
    fn one_write(objects: &MemObjects, put: bool) -> (MemLog, Vec<u8>) {
        let data = vec![0x5a; BLOCK as usize];
        let id = ObjectId::of(&data);
        if put {
            objects.put_hashed(&[&data], &[id]).unwrap();
        }
        let mut state = DiskState::zeroed(16);
        state.apply_block_write(16, &[id.0]).unwrap();
        let log = MemLog(vec![
            Record::new(
                1,
                changelog::Hlc::legacy(10),
                RecordKind::BlockWrite {
                    sector: 16,
                    len: BLOCK as u32,
                    blocks: vec![id.0],
                },
            ),
            Record::new(
                2,
                changelog::Hlc::legacy(20),
                RecordKind::Barrier {
                    kind: BarrierKind::Flush,
                    disk_checksum: state.checksum(),
                },
            ),
        ]);
        (log, data)
    }

    #[test]
    fn replays_from_any_backend_and_verifies_its_barriers() {
        let objects = MemObjects::default();
        let (log, data) = one_write(&objects, true);
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(16 * BLOCK).unwrap();
        let report = replay_from(&log, &objects, "vm", image.path(), Options::default()).unwrap();
        assert!(report.verified);
        assert_eq!((report.writes_applied, report.barriers_verified), (1, 1));
        let bytes = std::fs::read(image.path()).unwrap();
        assert_eq!(&bytes[2 * BLOCK as usize..3 * BLOCK as usize], &data[..]);
        assert!(bytes[..2 * BLOCK as usize].iter().all(|b| *b == 0));
    }

    #[test]
    fn an_object_the_backend_lacks_stops_the_replay_naming_it() {
        let objects = MemObjects::default();
        let (log, data) = one_write(&objects, false);
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(16 * BLOCK).unwrap();
        let err = replay_from(&log, &objects, "vm", image.path(), Options::default()).unwrap_err();
        let id = ObjectId::of(&data).to_string();
        assert!(err.to_string().contains(&id), "{err}");
    }
}
