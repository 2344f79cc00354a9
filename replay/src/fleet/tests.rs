//! Planning over a real (temporary) record directory's logs, placement and
//! the ledger over made-up fleets.
use changelog::log::{BarrierKind, LogWriter, RecordKind};
use changelog::recording::RecordDir;

use super::*;

fn worker(id: &str, cores: u32, mem_mib: u64, disk_mib: u64, mb_s: u64) -> WorkerInfo {
    WorkerInfo {
        id: id.into(),
        cores,
        mem_bytes: mem_mib << 20,
        free_disk_bytes: disk_mib << 20,
        write_bytes_per_sec: mb_s << 20,
        labels: vec!["x86".into()],
    }
}

fn job(vm: &str, read_mib: u64, mem_mib: u64, disk_mib: u64) -> JobSpec {
    JobSpec {
        vm: vm.into(),
        from_checkpoint: None,
        until_seq: 10,
        disk_bytes: disk_mib << 20,
        read_bytes: read_mib << 20,
        mem_bytes: mem_mib << 20,
    }
}

#[test]
fn plan_reads_each_log_to_its_point() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    for (vm, writes) in [("a", 3u64), ("b", 5)] {
        let (mut log, _) = LogWriter::open(dir.log_dir(vm), vm).unwrap();
        log.append(RecordKind::Mark {
            name: format!("{BASE_MARK_PREFIX}{}", 1u64 << 20),
        })
        .unwrap();
        for i in 0..writes {
            log.append(RecordKind::BlockWrite {
                sector: i * 8,
                len: 8192,
                blocks: vec![[i as u8 + 1; 32], [0x40; 32]],
            })
            .unwrap();
            if i == 1 {
                log.append(RecordKind::Mark { name: "mid".into() }).unwrap();
            }
        }
        log.append(RecordKind::Barrier {
            kind: BarrierKind::Flush,
            disk_checksum: [0; 32],
        })
        .unwrap();
        log.close().unwrap();
    }
    let vms = vec!["a".to_string(), "b".to_string()];
    let end = plan(&dir, &vms, &Point::End, None).unwrap();
    assert_eq!(end.len(), 2);
    assert_eq!((end[0].until_seq, end[0].read_bytes), (6, 3 * 8192));
    assert_eq!((end[1].until_seq, end[1].read_bytes), (8, 5 * 8192));
    assert!(end.iter().all(|j| j.disk_bytes == 1 << 20));
    let mid = plan(&dir, &vms, &Point::Mark("mid".into()), None).unwrap();
    assert_eq!((mid[0].until_seq, mid[0].read_bytes), (4, 2 * 8192));
    let e = plan(&dir, &vms, &Point::Seq(99), None).unwrap_err();
    assert!(e.to_string().contains("seq=99"), "{e}");
    let e = plan(&dir, &["zz".to_string()], &Point::End, None).unwrap_err();
    assert!(matches!(e, FleetError::NoSuchVm { .. }), "{e}");
}

#[test]
fn a_job_too_big_for_one_worker_goes_to_the_other() {
    let workers = [
        worker("small", 2, 256, 10_000, 100),
        worker("big", 2, 4096, 10_000, 100),
    ];
    let jobs = [
        job("vm0", 10, 1024, 64),
        job("vm1", 10, 64, 64),
        job("vm2", 10, 64, 64),
    ];
    let p = place(&jobs, &workers, &Limits::default());
    assert!(p.unplaceable.is_empty());
    let vm0 = p.assigned.iter().find(|(j, _)| *j == 0).unwrap();
    assert_eq!(workers[vm0.1].id, "big");
    // The small ones spread: both workers get work.
    let used: std::collections::BTreeSet<usize> = p.assigned.iter().map(|(_, w)| *w).collect();
    assert_eq!(used.len(), 2);
}

#[test]
fn limits_and_labels_are_kept_and_unplaceable_jobs_say_why() {
    let mut gpu = worker("w2", 8, 8192, 100, 100);
    gpu.labels = vec!["other".into()];
    let workers = [worker("w1", 8, 8192, 100, 100), gpu];
    let jobs = [job("vm0", 1, 64, 50), job("vm1", 1, 64, 500)];
    let limits = Limits {
        only_label: Some("x86".into()),
        ..Limits::default()
    };
    let p = place(&jobs, &workers, &limits);
    assert_eq!(p.assigned, vec![(0, 0)]);
    assert_eq!(p.unplaceable.len(), 1);
    let why = &p.unplaceable[0].1;
    assert!(
        why.contains("free disk") && why.contains("lacks label"),
        "{why}"
    );
    // --max-mem below a job's need leaves it unplaceable.
    let limits = Limits {
        max_mem: Some(32 << 20),
        ..Limits::default()
    };
    assert_eq!(place(&jobs[..1], &workers, &limits).unplaceable.len(), 1);
    assert!(place(&jobs, &[], &Limits::default()).unplaceable.len() == 2);
}

#[test]
fn two_workers_halve_the_expected_time_and_cores_run_side_by_side() {
    let jobs: Vec<JobSpec> = (0..8)
        .map(|i| job(&format!("vm{i}"), 100, 64, 64))
        .collect();
    let one = place(
        &jobs,
        &[worker("w1", 1, 4096, 10_000, 100)],
        &Limits::default(),
    );
    let two = place(
        &jobs,
        &[
            worker("w1", 1, 4096, 10_000, 100),
            worker("w2", 1, 4096, 10_000, 100),
        ],
        &Limits::default(),
    );
    let span = |p: &Placement| p.expected_secs.iter().copied().fold(0.0, f64::max);
    assert!((span(&one) / span(&two) - 2.0).abs() < 0.01);
    let four_cores = place(
        &jobs,
        &[worker("w1", 4, 4096, 10_000, 100)],
        &Limits::default(),
    );
    let capped = place(
        &jobs,
        &[worker("w1", 4, 4096, 10_000, 100)],
        &Limits {
            max_cpu: Some(2),
            ..Limits::default()
        },
    );
    assert!(span(&four_cores) < span(&capped));
}

#[test]
fn ledger_does_each_job_exactly_once_across_a_dead_worker() {
    let outcome = |w: &str| Outcome {
        pass: true,
        checksum: "c".into(),
        secs: 1.0,
        bytes: 1,
        detail: w.into(),
    };
    let mut l = Ledger::new(3);
    let a0 = l.start(0, "w1").unwrap();
    let a1 = l.start(1, "w1").unwrap();
    let a2 = l.start(2, "w2").unwrap();
    assert_eq!(l.start(0, "w2"), None, "a running job is not started twice");
    assert!(l.finish(0, a0, outcome("w1")));
    assert_eq!(l.worker_died("w1"), vec![1]);
    assert_eq!(l.pending(), vec![1]);
    // The dead worker's late answer does not count.
    assert!(!l.finish(1, a1, outcome("w1")));
    let again = l.start(1, "w2").unwrap();
    assert!(l.finish(1, again, outcome("w2")));
    assert!(l.finish(2, a2, outcome("w2")));
    assert!(
        !l.finish(2, a2, outcome("w2")),
        "a second answer does not count"
    );
    assert!(l.is_complete());
    let results = l.results();
    assert_eq!(results.len(), 3);
    assert_eq!(results[1].1, "w2");
    assert_eq!(l.requeued, 1);
}

#[test]
fn a_long_log_is_split_at_its_checkpoints() {
    use changelog::{Checkpoint, LogAppend};
    let tmp = tempfile::tempdir().unwrap();
    let dir = RecordDir::new(tmp.path());
    let (mut log, _) = LogWriter::open(dir.log_dir("v"), "v").unwrap();
    log.append(RecordKind::Mark {
        name: format!("{BASE_MARK_PREFIX}{}", 64u64 << 20),
    })
    .unwrap();
    // 20 rounds of one 64 KiB write and a barrier (seqs 2..=41), a
    // checkpoint at every 4th barrier.
    for i in 0..20u64 {
        log.append(RecordKind::BlockWrite {
            sector: i * 128,
            len: 16 * 4096,
            blocks: vec![[i as u8 + 1; 32]; 16],
        })
        .unwrap();
        let seq = log
            .append(RecordKind::Barrier {
                kind: BarrierKind::Flush,
                disk_checksum: [0; 32],
            })
            .unwrap();
        if i % 4 == 3 {
            log.sync().unwrap();
            LogAppend::add_checkpoint(
                &mut log,
                &Checkpoint {
                    seq,
                    ts_ns: 0,
                    disk_checksum: [0; 32],
                    num_blocks: 16384,
                    chunks: vec![],
                },
            )
            .unwrap();
        }
    }
    log.close().unwrap();
    let vms = vec!["v".to_string()];
    // Whole: one job.
    assert_eq!(plan(&dir, &vms, &Point::End, None).unwrap().len(), 1);
    assert_eq!(
        plan(&dir, &vms, &Point::End, Some(100 << 20))
            .unwrap()
            .len(),
        1
    );
    // Segments of >= 8 writes (512 KiB): cut at the checkpoints after
    // writes 8 and 16 (seqs 17 and 33), then to the end (seq 41).
    let jobs = plan(&dir, &vms, &Point::End, Some(512 << 10)).unwrap();
    let ranges: Vec<(Option<u64>, u64)> = jobs
        .iter()
        .map(|j| (j.from_checkpoint, j.until_seq))
        .collect();
    assert_eq!(ranges, vec![(None, 17), (Some(17), 33), (Some(33), 41)]);
    // Each reads its own records (plus the map it starts from).
    assert_eq!(jobs[0].read_bytes, 8 * 16 * 4096);
    assert!(jobs[2].read_bytes >= 4 * 16 * 4096);
    // A point before the last cut ends there.
    let jobs = plan(&dir, &vms, &Point::Seq(20), Some(512 << 10)).unwrap();
    let ranges: Vec<(Option<u64>, u64)> = jobs
        .iter()
        .map(|j| (j.from_checkpoint, j.until_seq))
        .collect();
    assert_eq!(ranges, vec![(None, 17), (Some(17), 20)]);
}
