//! The JetStream backend against a real 3-node cluster started by each test
//! (skipped, with a printed reason, only when nats-server is not installed).

use std::time::{Duration, Instant};

use jetstream::cluster::TestCluster;
use jetstream::{Error, Nats, ObjectId};

/// Generous: the tests share 2 cores with whatever else CI runs, and an
/// operation that times out under load is a false failure.
const TIMEOUT: Duration = Duration::from_secs(15);

/// One cluster at a time: five 3-node clusters electing leaders at once on
/// 2 cores made JetStream requests time out.
static ONE_CLUSTER: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn start() -> Option<(std::sync::MutexGuard<'static, ()>, TestCluster)> {
    let guard = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
    TestCluster::start_or_skip(3).map(|c| (guard, c))
}

/// A plain JetStream context with a long timeout, for what the tests do
/// behind the crate's back.
async fn raw_js(urls: &str) -> async_nats::jetstream::Context {
    let client = async_nats::connect(addrs(urls)).await.unwrap();
    async_nats::jetstream::ContextBuilder::new()
        .timeout(TIMEOUT)
        .build(client)
}

fn id_of(bytes: &[u8]) -> ObjectId {
    *blake3::hash(bytes).as_bytes()
}

fn records_of(log: &jetstream::LogStream, vm: &str, from: u64) -> Vec<Vec<u8>> {
    log.read(vm, from)
        .unwrap()
        .map(|r| r.unwrap().data)
        .collect()
}

#[test]
fn append_read_back_per_vm_and_manifests() {
    let Some((_one, cluster)) = start() else {
        return;
    };
    let nats = Nats::connect(&cluster.urls(), TIMEOUT).unwrap();
    let log = nats.log_stream("t1", 3).unwrap();
    assert_eq!(log.name(), "vmm-t1");
    assert_eq!(log.vms().unwrap(), Vec::<String>::new());
    assert_eq!(log.last("a").unwrap(), None);
    assert_eq!(log.read("a", 0).unwrap().count(), 0);

    let s1 = log.append("a", b"a0").unwrap();
    let s2 = log.append("b", b"b0").unwrap();
    let batch: Vec<Vec<u8>> = (0..1000u32)
        .map(|i| i.to_le_bytes().repeat(i as usize % 7))
        .collect();
    let refs: Vec<&[u8]> = batch.iter().map(|r| r.as_slice()).collect();
    let s3 = log.append_many("a", &refs).unwrap();
    // A batch bigger than one message (1 MiB max payload) spans several.
    let big: Vec<Vec<u8>> = (0..40u8).map(|i| vec![i; 100_000]).collect();
    let big_refs: Vec<&[u8]> = big.iter().map(|r| r.as_slice()).collect();
    let s4 = log.append_many("b", &big_refs).unwrap();
    assert!(s1 < s2 && s2 < s3 && s3 < s4);
    assert!(s4 >= s3 + 4, "4 MB must take several messages");
    assert_eq!(log.last("a").unwrap(), Some(s3));
    assert_eq!(log.last("b").unwrap(), Some(s4));
    assert_eq!(log.vms().unwrap(), vec!["a".to_string(), "b".to_string()]);

    let mut want_a = vec![b"a0".to_vec()];
    want_a.extend(batch.iter().cloned());
    assert_eq!(records_of(&log, "a", 0), want_a);
    let mut want_b = vec![b"b0".to_vec()];
    want_b.extend(big.iter().cloned());
    assert_eq!(records_of(&log, "b", 0), want_b);
    // Reading from a sequence skips the earlier messages; the batch's
    // records share its message's sequence and are numbered in order.
    let tail: Vec<_> = log.read("a", s1 + 1).unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(tail.len(), batch.len());
    assert!(tail.iter().all(|r| r.seq == s3));
    assert!(tail.iter().enumerate().all(|(i, r)| r.index as usize == i));
    assert_eq!(log.read("a", s3 + 1).unwrap().count(), 0);

    // Another connection (another host) reads the same logs.
    let other = Nats::connect(&cluster.url(2), TIMEOUT).unwrap();
    let log2 = other.log_stream("t1", 3).unwrap();
    assert_eq!(records_of(&log2, "a", 0), want_a);

    let man = nats.manifest_bucket("t1-manifests", 3).unwrap();
    assert_eq!(man.get("snap-1").unwrap(), None);
    man.put("snap-1", b"manifest one").unwrap();
    man.put("snap-0", b"manifest zero").unwrap();
    assert_eq!(man.get("snap-1").unwrap().unwrap(), b"manifest one");
    assert_eq!(man.list().unwrap(), vec!["snap-0", "snap-1"]);
    let err = man.put("snap-1", b"other").unwrap_err();
    assert!(matches!(err, Error::ManifestExists { .. }), "{err}");
    assert_eq!(man.get("snap-1").unwrap().unwrap(), b"manifest one");
    assert!(matches!(man.get("a b"), Err(Error::BadKey { .. })));
    assert!(matches!(man.get(".a"), Err(Error::BadKey { .. })));

    // A record above one message's limit is refused before anything is sent.
    let huge = vec![0u8; 2 << 20];
    let err = log.append_many("a", &[b"small", &huge]).unwrap_err();
    assert!(matches!(err, Error::RecordTooLarge { .. }), "{err}");
    assert_eq!(log.last("a").unwrap(), Some(s3));

    // A message on a VM's subject that is not our batch format (another
    // writer) is reported as malformed, naming its sequence.
    assert!(raw_publish(
        &cluster.urls(),
        "vmm.t1.log.c",
        vec![9, 0, 0, 0, 1]
    ));
    let got: Vec<_> = log.read("c", 0).unwrap().collect();
    assert_eq!(got.len(), 1);
    let err = got.into_iter().next().unwrap().unwrap_err();
    assert!(matches!(err, Error::Malformed { .. }), "{err}");
}

#[test]
fn a_second_writer_of_the_same_vm_is_refused() {
    let Some((_one, cluster)) = start() else {
        return;
    };
    let nats = Nats::connect(&cluster.urls(), TIMEOUT).unwrap();
    let w1 = nats.log_stream("t2", 3).unwrap();
    let w2 = Nats::connect(&cluster.urls(), TIMEOUT)
        .unwrap()
        .log_stream("t2", 3)
        .unwrap();
    w1.append("vm", b"one").unwrap();
    // w2 learns the tail on its first append and goes on from there...
    w2.append("vm", b"two").unwrap();
    // ...so w1's view is stale: refused, for a batch too, and nothing lands.
    let err = w1.append("vm", b"three").unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    assert!(err.to_string().contains("another writer"), "{err}");
    let err = w1.append_many("vm", &[b"x", b"y"]).unwrap_err();
    assert!(matches!(err, Error::Conflict { .. }), "{err}");
    w2.append("vm", b"four").unwrap();
    assert_eq!(
        records_of(&w2, "vm", 0),
        vec![b"one".to_vec(), b"two".to_vec(), b"four".to_vec()]
    );
    // Other VMs of the same stream are independent.
    w1.append("other", b"o").unwrap();
}

#[test]
fn appends_survive_a_killed_node_and_its_restart() {
    let Some((_one, mut cluster)) = start() else {
        return;
    };
    // Connected through node 0 only at first, which is the node we kill:
    // the client must move to the others (it learns them from the cluster).
    let nats = Nats::connect(&cluster.url(0), TIMEOUT).unwrap();
    let log = nats.log_stream("t3", 3).unwrap();
    let objects = nats.object_bucket("t3-objects", 3).unwrap();
    let mut acked = Vec::new();
    let mut blocks = Vec::new();
    for i in 0..300u32 {
        if i == 100 {
            cluster.kill(0);
        }
        if i == 200 {
            cluster.kill(1);
            cluster.restart(0).unwrap();
            // Two of three again only once node 0 has caught up: until then
            // appends may fail, but never claim success falsely.
            let deadline = Instant::now() + Duration::from_secs(30);
            while log.append("probe", b"p").is_err() {
                assert!(Instant::now() < deadline, "cluster did not recover");
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        if i == 150 {
            // A pipelined batch while one node is down.
            let batch: Vec<Vec<u8>> = (0..256u32)
                .map(|j| (j + 1_000_000).to_le_bytes().repeat(1024))
                .collect();
            let items: Vec<(ObjectId, &[u8])> = batch.iter().map(|b| (id_of(b), &b[..])).collect();
            assert_eq!(objects.put_many(&items).unwrap(), vec![true; 256]);
            blocks.extend(batch);
        }
        let rec = format!("record {i}").into_bytes();
        log.append("vm", &rec).unwrap();
        acked.push(rec);
        let block = vec![(i % 251) as u8; 4096];
        let block = [block, i.to_le_bytes().to_vec()].concat();
        assert!(objects.put(&id_of(&block), &block).unwrap());
        blocks.push(block);
    }
    cluster.restart(1).unwrap();
    assert_eq!(records_of(&log, "vm", 0), acked);
    for b in &blocks {
        assert_eq!(objects.get(&id_of(b)).unwrap().as_deref(), Some(&b[..]));
    }
    // Node 0 missed records 100..200 and node 1 missed 200..300. Once both
    // have caught up, node 2 (the only one that saw everything) dies: the
    // two restarted nodes alone must serve every acked record and block.
    wait_all_current(&cluster.urls(), &["vmm-t3", "KV_t3-objects"]);
    cluster.kill(2);
    let survivors = format!("{},{}", cluster.url(0), cluster.url(1));
    let deadline = Instant::now() + Duration::from_secs(30);
    let (log2, objects2) = loop {
        let opened = Nats::connect(&survivors, TIMEOUT).and_then(|n| {
            let log = n.log_stream("t3", 3)?;
            log.last("vm")?;
            Ok((log, n.object_bucket("t3-objects", 3)?))
        });
        match opened {
            Ok(x) => break x,
            Err(e) => assert!(Instant::now() < deadline, "no leader after kill: {e}"),
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(records_of(&log2, "vm", 0), acked);
    for b in &blocks {
        assert_eq!(objects2.get(&id_of(b)).unwrap().as_deref(), Some(&b[..]));
    }
}

/// Waits (30 s at most) until every replica of each stream is current.
fn wait_all_current(urls: &str, streams: &[&str]) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = raw_js(urls).await;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut all = true;
            for name in streams {
                let current = match js.get_stream(*name).await {
                    Ok(mut stream) => match stream.info().await {
                        Ok(info) => info.cluster.as_ref().is_some_and(|c| {
                            c.replicas.len() == 2
                                && c.replicas.iter().all(|p| p.current && !p.offline)
                        }),
                        Err(_) => false,
                    },
                    Err(_) => false,
                };
                all &= current;
            }
            if all {
                return;
            }
            assert!(Instant::now() < deadline, "replicas did not catch up");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

#[test]
fn dedup_missing_and_damaged_objects() {
    let Some((_one, cluster)) = start() else {
        return;
    };
    // Two "VMs" on two connections store the same blocks.
    let vm1 = Nats::connect(&cluster.urls(), TIMEOUT).unwrap();
    let vm2 = Nats::connect(&cluster.url(1), TIMEOUT).unwrap();
    let b1 = vm1.object_bucket("t4", 3).unwrap();
    let b2 = vm2.object_bucket("t4", 3).unwrap();
    let blocks: Vec<Vec<u8>> = (0..64u32).map(|i| i.to_le_bytes().repeat(1024)).collect();
    let items: Vec<(ObjectId, &[u8])> = blocks.iter().map(|b| (id_of(b), &b[..])).collect();
    assert_eq!(b1.put_many(&items).unwrap(), vec![true; 64]);
    assert_eq!(b2.put_many(&items).unwrap(), vec![false; 64]);
    assert!(!b2.put(&items[3].0, items[3].1).unwrap());
    assert_eq!(b1.message_count().unwrap(), 64);
    // The same new block twice in one batch: stored once.
    let extra = b"one more block".repeat(100);
    let twice = [(id_of(&extra), &extra[..]), (id_of(&extra), &extra[..])];
    assert_eq!(b2.put_many(&twice).unwrap(), vec![true, false]);
    assert_eq!(b1.message_count().unwrap(), 65);
    // Above the server's max payload: refused, naming the limit.
    let huge = vec![7u8; 2 << 20];
    let err = b1.put(&id_of(&huge), &huge).unwrap_err();
    assert!(matches!(err, Error::TooLarge { .. }), "{err}");
    assert!(b2.contains(&items[5].0).unwrap());
    assert_eq!(b2.get(&items[5].0).unwrap().unwrap(), blocks[5]);

    // Missing: None from get, a typed error naming the id from get_required.
    let missing = id_of(b"never stored");
    assert!(!b1.contains(&missing).unwrap());
    assert_eq!(b1.get(&missing).unwrap(), None);
    let err = b1.get_required(&missing).unwrap_err();
    assert!(matches!(err, Error::Missing { .. }));
    assert!(err.to_string().contains(&jetstream::hex(&missing)), "{err}");

    // A put whose bytes do not hash to the id is refused.
    let err = b1.put(&missing, b"other bytes").unwrap_err();
    assert!(matches!(err, Error::WrongId { .. }), "{err}");

    // Damage: overwrite an object's value behind the bucket's back.
    let victim = items[7].0;
    let subject = format!("$KV.t4.{}", jetstream::hex(&victim));
    assert!(raw_publish(&cluster.urls(), &subject, b"garbage".to_vec()));
    let err = b1.get(&victim).unwrap_err();
    assert!(matches!(err, Error::Damaged { .. }), "{err}");
    assert!(err.to_string().contains(&jetstream::hex(&victim)), "{err}");
}

fn addrs(urls: &str) -> Vec<async_nats::ServerAddr> {
    urls.split(',').map(|u| u.parse().unwrap()).collect()
}

/// Publishes `payload` to a subject with a plain client, as a damaged or
/// foreign writer would.
fn raw_publish(urls: &str, subject: &str, payload: Vec<u8>) -> bool {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = raw_js(urls).await;
        js.publish(subject.to_string(), payload.into())
            .await
            .unwrap()
            .await
            .is_ok()
    })
}

#[test]
fn a_stream_or_bucket_without_our_marker_is_refused() {
    let Some((_one, cluster)) = start() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let js = raw_js(&cluster.urls()).await;
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "vmm-theirs".to_string(),
            subjects: vec!["vmm.theirs.log.*".to_string()],
            ..Default::default()
        })
        .await
        .unwrap();
        // A KV bucket as another tool would create it (its stream; the
        // client's own create_key_value cannot talk to a 2.9 server).
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "KV_their-objects".to_string(),
            description: Some("someone else's".to_string()),
            subjects: vec!["$KV.their-objects.>".to_string()],
            max_messages_per_subject: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    });
    let nats = Nats::connect(&cluster.urls(), TIMEOUT).unwrap();
    let err = nats.log_stream("theirs", 3).err().unwrap();
    assert!(matches!(err, Error::NotOurs { .. }), "{err}");
    assert!(err.to_string().contains("vmm-theirs"), "{err}");
    let err = nats.object_bucket("their-objects", 3).err().unwrap();
    assert!(matches!(err, Error::NotOurs { .. }), "{err}");
    let err = nats.manifest_bucket("their-objects", 3).err().unwrap();
    assert!(matches!(err, Error::NotOurs { .. }), "{err}");
    // Ours are reopened fine.
    nats.log_stream("mine", 3).unwrap();
    nats.log_stream("mine", 3).unwrap();
}

/// An unreachable cluster fails within the connect timeout (bound: the
/// timeout plus 1 s of slack) with the URL in the message.
#[test]
fn an_unreachable_cluster_errors_within_the_timeout() {
    // A port nothing listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // A TEST-NET-1 address (RFC 5737): never answers, so only the timeout
    // ends the attempt.
    for url in [
        format!("nats://127.0.0.1:{port}"),
        "nats://192.0.2.1:4222".to_string(),
    ] {
        let timeout = Duration::from_secs(2);
        let start = Instant::now();
        let err = Nats::connect(&url, timeout).expect_err("must fail");
        let took = start.elapsed();
        assert!(
            took < timeout + Duration::from_secs(1),
            "{url}: took {took:?}"
        );
        assert!(matches!(err, Error::Unreachable { .. }), "{err}");
        assert!(err.to_string().contains(&url), "{err}");
    }
}

/// When the whole cluster dies after connecting, appends and puts fail
/// (never report success) within a bound: the retry deadline of 3x the
/// timeout plus one last attempt's ack wait, 4x the timeout, + 2 s slack.
#[test]
fn a_dead_cluster_fails_appends_and_puts_within_a_bound() {
    let Some((_one, mut cluster)) = start() else {
        return;
    };
    let timeout = Duration::from_secs(2);
    let nats = Nats::connect(&cluster.urls(), timeout).unwrap();
    let log = nats.log_stream("t6", 3).unwrap();
    let objects = nats.object_bucket("t6-objects", 3).unwrap();
    log.append("vm", b"before").unwrap();
    for i in 0..3 {
        cluster.kill(i);
    }
    let bound = timeout * 4 + Duration::from_secs(2);
    let start = Instant::now();
    let err = log.append("vm", b"after").unwrap_err();
    assert!(start.elapsed() < bound, "append took {:?}", start.elapsed());
    assert!(matches!(err, Error::JetStream { .. }), "{err}");
    let block = b"a block".repeat(500);
    let start = Instant::now();
    let err = objects.put(&id_of(&block), &block).unwrap_err();
    assert!(start.elapsed() < bound, "put took {:?}", start.elapsed());
    assert!(matches!(err, Error::JetStream { .. }), "{err}");
}
