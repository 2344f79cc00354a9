//! The storage seams on a real 3-node cluster: local logs pushed into it
//! (one node killed between pushes), then replayed from the cluster alone
//! into a fresh directory, byte for byte as the local replay.
use std::time::Duration;

use changelog::log::{BarrierKind, LogWriter, RecordKind};
use changelog::{DiskState, LogBackend, RecordDir};
use jetstream::cluster::TestCluster;
use jetstream::push::{push_log, PushError};
use jetstream::{Remote, RemoteUrl};
use replay::{Base, Options, Point};
use store::{ObjectBackend, ObjectId, Store, BLOCK_SIZE};

const TIMEOUT: Duration = Duration::from_secs(15);
const BLOCKS: u64 = 64;

/// Writes `vm`'s log in `dir`: a base mark, then `rounds` barriers each
/// after three block writes (two of them `seed`'s own, the first the same
/// in every VM), the blocks put into the local store first.
fn record(dir: &RecordDir, store: &Store, vm: &str, seed: u8, rounds: u64) {
    let (mut log, _) = LogWriter::open(dir.log_dir(vm), vm).unwrap();
    log.append(RecordKind::Mark {
        name: format!("vmm:base bytes={}", BLOCKS * BLOCK_SIZE as u64),
    })
    .unwrap();
    let mut state = DiskState::zeroed(BLOCKS);
    for round in 0..rounds {
        for w in 0..3u64 {
            let block = (round * 7 + w * 5) % BLOCKS;
            // The first write of each round is the same in every VM.
            let mut data = vec![0x11; BLOCK_SIZE];
            data[..3].copy_from_slice(&if w == 0 {
                [0xee, round as u8, 0]
            } else {
                [seed, round as u8, w as u8]
            });
            let id = store.put(&data).unwrap();
            state.apply_block_write(block * 8, &[id.0]).unwrap();
            log.append(RecordKind::BlockWrite {
                sector: block * 8,
                len: BLOCK_SIZE as u32,
                blocks: vec![id.0],
            })
            .unwrap();
        }
        log.append(RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: state.checksum(),
        })
        .unwrap();
        if round == 1 {
            log.append(RecordKind::Mark { name: "two".into() }).unwrap();
        }
    }
    store.sync().unwrap();
    log.close().unwrap();
}

#[test]
fn pushed_logs_replay_from_the_cluster_alone_and_blocks_are_stored_once() {
    let Some(mut cluster) = TestCluster::start_or_skip(3) else {
        return;
    };
    let local = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(local.path());
    let store = dir.open_store().unwrap();
    record(&dir, &store, "a", 1, 6);
    record(&dir, &store, "b", 2, 6);
    let url: RemoteUrl = format!("nats://{}/lab", cluster.urls().replace("nats://", ""))
        .parse()
        .unwrap();
    let remote = Remote::open(&url, 3, TIMEOUT).unwrap();

    let a = push_log(&dir, &store, "a", &remote).unwrap();
    assert_eq!(
        (a.remote_before, a.remote_after),
        (0, LogBackend::last_seq(&dir, "a").unwrap())
    );
    // One node down: the next push is still acknowledged by a quorum.
    cluster.kill(0);
    let b = push_log(&dir, &store, "b", &remote).unwrap();
    assert!(b.records_sent > 0);
    // The blocks both VMs wrote (one per round) went to the cluster once.
    assert_eq!(b.new_blocks, b.blocks - 6, "{b:?}");
    // A second push sends nothing.
    let again = push_log(&dir, &store, "a", &remote).unwrap();
    assert_eq!(again.records_sent, 0);
    cluster.restart(0).unwrap();

    // A fresh host: nothing local, everything from the cluster.
    let fresh = tempfile::tempdir().unwrap();
    let remote2 = Remote::open(&url, 3, TIMEOUT).unwrap();
    assert_eq!(LogBackend::vm_ids(&remote2).unwrap(), vec!["a", "b"]);
    // The cluster's records are the local ones, HLC stamps included.
    for vm in ["a", "b"] {
        let ours: Vec<_> = dir.records(vm, 1).unwrap().map(Result::unwrap).collect();
        let theirs: Vec<_> = remote2
            .records(vm, 1)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(theirs, ours, "{vm}");
        assert!(theirs.iter().all(|r| !r.node.is_legacy()), "{vm}");
    }
    for vm in ["a", "b"] {
        for point in [Point::End, Point::Mark("two".into())] {
            let from_cluster = fresh.path().join(format!("{vm}-{point}.img"));
            let from_local = fresh.path().join(format!("{vm}-{point}-local.img"));
            let r = replay::replay_to_file_from(
                &remote2,
                &remote2,
                vm,
                &Base::Empty,
                &point,
                &from_cluster,
                Options::default(),
            )
            .unwrap();
            assert!(r.verified && r.barriers_verified > 0, "{r:?}");
            replay::replay_to_file(
                &dir,
                vm,
                &Base::Empty,
                &point,
                &from_local,
                Options::default(),
            )
            .unwrap();
            assert_eq!(
                std::fs::read(&from_cluster).unwrap(),
                std::fs::read(&from_local).unwrap(),
                "{vm} at {point}"
            );
        }
    }
    // Every object a pushed log names is in the cluster.
    for record in remote2.records("b", 1).unwrap() {
        if let RecordKind::BlockWrite { blocks, .. } = record.unwrap().kind {
            for h in blocks {
                assert!(remote2.contains(&ObjectId(h)).unwrap());
            }
        }
    }
    // Writing into it with fewer copies than it keeps is refused.
    let e = Remote::open(&url, 1, TIMEOUT).unwrap_err();
    assert!(e.to_string().contains("keeps 3 copies"), "{e}");
    // A different local log under a pushed VM's name is refused.
    let other = tempfile::tempdir().unwrap();
    let other_dir = RecordDir::new(other.path());
    let other_store = other_dir.open_store().unwrap();
    record(&other_dir, &other_store, "a", 9, 8);
    let e = push_log(&other_dir, &other_store, "a", &remote2).unwrap_err();
    assert!(matches!(e, PushError::Diverged { .. }), "{e}");
}
