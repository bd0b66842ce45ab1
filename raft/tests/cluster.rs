//! Three nodes in one process: failover, restart with catch-up by log and by
//! snapshot, and randomized leader kills with no acknowledged write lost.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Cluster, IDS, config, set};
use mapkv_raft::{BatchOptions, Batcher, LogStoreOptions, Request, WriteError};
use openraft::error::{CheckIsLeaderError, RaftError};

/// Every acknowledged key must be readable, linearizably, from the leader.
///
/// A read index needs a quorum to answer the leader's heartbeat within
/// `heartbeat_interval` (50 ms here), and a follower installing a snapshot answers only
/// once the install is done (openraft 0.9 queues its responses behind it). With one node
/// stopped, the read index then fails with `QuorumNotEnough`, which a client retries:
/// so does this, for up to 30 s. Any other error fails at once.
async fn assert_all_readable(c: &Cluster, acknowledged: &[u64]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let (leader, node) = loop {
        let leader = c.leader().await;
        let node = &c.nodes[&leader];
        match node.raft.ensure_linearizable().await {
            Ok(_) => break (leader, node),
            Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))
                if Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(10)).await
            }
            Err(e) => panic!("read index: {e:?}"),
        }
    };
    for &n in acknowledged {
        let key = format!("k{n:08}");
        assert_eq!(
            node.sm.get(key.as_bytes()).expect("get"),
            Some(format!("v{n}").into_bytes()),
            "acknowledged write {key} lost on leader {leader}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_and_catch_up_by_log_and_by_snapshot() {
    let mut c = Cluster::start(config(1_000_000), LogStoreOptions::default()).await;
    let mut acked = Vec::new();
    for n in 0..50 {
        c.write(set(n)).await;
        acked.push(n);
    }

    // Compare-and-swap returns the previous value and only swaps on a match.
    let cas = |expected: &str, new: &str| Request::CompareAndSwap {
        key: b"cas".to_vec(),
        expected: Some(expected.as_bytes().to_vec()).filter(|e| !e.is_empty()),
        new: Some(new.as_bytes().to_vec()),
    };
    let r = c.write(cas("", "a")).await;
    assert!(r.ok && r.previous.is_none());
    let r = c.write(cas("x", "b")).await;
    assert!(!r.ok && r.previous.as_deref() == Some(&b"a"[..]));
    let r = c
        .write(Request::Delete {
            key: b"cas".to_vec(),
        })
        .await;
    assert_eq!(r.previous.as_deref(), Some(&b"a"[..]));

    // A follower stops, misses writes, and catches up from the log.
    let leader = c.leader().await;
    let follower = *c.running().iter().find(|&&i| i != leader).unwrap();
    c.stop_node(follower).await;
    for n in 50..100 {
        c.write(set(n)).await;
        acked.push(n);
    }
    c.start_node(follower).await;
    c.wait_converged().await;
    c.assert_identical();
    assert!(
        c.nodes[&follower]
            .raft
            .metrics()
            .borrow()
            .snapshot
            .is_none(),
        "caught up by log, no snapshot needed"
    );

    // The leader stops; a new one is elected and has every acknowledged write.
    let old = c.leader().await;
    c.stop_node(old).await;
    let new = c.leader().await;
    assert_ne!(new, old);
    assert_all_readable(&c, &acked).await;
    for n in 100..150 {
        c.write(set(n)).await;
        acked.push(n);
    }
    // Snapshot and purge the log on the running nodes, so the old leader can only
    // catch up by snapshot. A node's snapshot covers what it has applied when the
    // trigger reaches it, and a follower learns that the last write is committed only
    // from the leader's next append-entries: without waiting until every node has
    // applied `target`, a follower could snapshot one entry short of it, and then
    // never purge up to it (nothing triggers another snapshot).
    let target = c.nodes[&new].raft.metrics().borrow().last_log_index;
    c.wait_converged().await;
    for node in c.nodes.values() {
        node.raft.trigger().snapshot().await.expect("snapshot");
    }
    for (id, node) in &c.nodes {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while node.raft.metrics().borrow().purged.map(|l| l.index) < target {
            if std::time::Instant::now() >= deadline {
                let m = node.raft.metrics().borrow().clone();
                panic!(
                    "node {id} did not purge up to {target:?}: {:?}, applied {:?}, \
                     snapshot {:?}, purged {:?}",
                    m.state, m.last_applied, m.snapshot, m.purged
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    c.start_node(old).await;
    c.wait_converged().await;
    c.assert_identical();
    let snap = c.nodes[&old].raft.metrics().borrow().snapshot;
    assert!(snap.is_some(), "the restarted node installed a snapshot");
    assert_all_readable(&c, &acked).await;
    c.shutdown().await;
}

/// Leader kills while a client writes without pause. Count: MAPKV_RAFT_KILLS
/// (default 3; the heavy mode runs 100).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn randomized_leader_kills_lose_no_acknowledged_write() {
    let kills: u64 = std::env::var("MAPKV_RAFT_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let seed = std::env::var("MAPKV_RAFT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    eprintln!("randomized_leader_kills: kills={kills} MAPKV_RAFT_SEED={seed}");
    let mut rng = seed;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };

    let c = Arc::new(tokio::sync::RwLock::new(
        Cluster::start(config(40), LogStoreOptions::default()).await,
    ));
    let acked = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // The client: writes k0, k1, ... one at a time through whoever leads, and records
    // a key only once its write was acknowledged.
    let writer = {
        let (c, acked, stop) = (Arc::clone(&c), Arc::clone(&acked), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let raft = {
                    let c = c.read().await;
                    let leader = c.leader().await;
                    c.nodes[&leader].raft.clone()
                };
                if raft.client_write(set(n)).await.is_ok() {
                    acked.lock().unwrap().push(n);
                }
                n += 1;
            }
        })
    };
    for kill in 0..kills {
        tokio::time::sleep(Duration::from_millis(20 + next() % 200)).await;
        let mut cluster = c.write().await;
        let leader = cluster.leader().await;
        cluster.stop_node(leader).await;
        drop(cluster);
        // Let the rest elect a leader and take writes before the node comes back.
        tokio::time::sleep(Duration::from_millis(next() % 300)).await;
        let acked_now = acked.lock().unwrap().clone();
        {
            let cluster = c.read().await;
            assert_all_readable(&cluster, &acked_now).await;
        }
        c.write().await.start_node(leader).await;
        if kill % 10 == 9 {
            eprintln!(
                "{} kills, {} acknowledged writes",
                kill + 1,
                acked_now.len()
            );
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.await.expect("writer");
    let cluster = Arc::try_unwrap(c).ok().expect("sole owner").into_inner();
    let acked = acked.lock().unwrap().clone();
    assert!(!acked.is_empty());
    assert_all_readable(&cluster, &acked).await;
    cluster.wait_converged().await;
    cluster.assert_identical();
    eprintln!(
        "{kills} leader kills, {} acknowledged writes, none lost",
        acked.len()
    );
    cluster.shutdown().await;
}

/// Concurrent writers through a `Batcher`: entries carry several requests, each
/// caller gets its own response, and every acknowledged write is on every replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn batched_proposals_answer_each_request() {
    let c = Cluster::start(config(1_000_000), LogStoreOptions::default()).await;
    let leader = c.leader().await;
    let batcher = Batcher::new(c.nodes[&leader].raft.clone(), BatchOptions::default());
    let mut tasks = Vec::new();
    for t in 0..32u64 {
        let batcher = batcher.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..20u64 {
                let n = t * 1000 + i;
                let r = batcher.write(set(n)).await.expect("write");
                assert!(r.ok && r.previous.is_none(), "fresh key {n}: {r:?}");
                // Overwrite: the response is this request's own (its previous value).
                let r = batcher.write(set_to(n, "again")).await.expect("write");
                assert_eq!(r.previous, Some(format!("v{n}").into_bytes()));
            }
        }));
    }
    for t in tasks {
        t.await.expect("client");
    }
    let applied = c.nodes[&leader]
        .raft
        .metrics()
        .borrow()
        .last_applied
        .unwrap()
        .index;
    assert!(
        applied < 32 * 20 * 2,
        "1280 writes in {applied} entries: some were batched"
    );
    c.wait_converged().await;
    c.assert_identical();
    let node = &c.nodes[&leader];
    for t in 0..32u64 {
        for i in 0..20u64 {
            let n = t * 1000 + i;
            assert_eq!(
                node.sm.get(format!("k{n:08}").as_bytes()).expect("get"),
                Some(b"again".to_vec())
            );
        }
    }
    drop(batcher);
    c.shutdown().await;
}

fn set_to(n: u64, value: &str) -> Request {
    Request::Set {
        key: format!("k{n:08}").into_bytes(),
        value: value.as_bytes().to_vec(),
    }
}

/// A write over mapkv's size limits is refused, never failed: through `client_write`
/// it is committed and every replica answers it with a refusal (as the single command of
/// an entry and inside a batch, whose other commands still apply), `Batcher::write`
/// refuses it without proposing it, the cluster keeps taking writes, and every node
/// restarts from its files, applying the refused entries again. Before the refusal,
/// applying such an entry failed, which stopped every node, again at every restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn oversized_writes_are_refused_and_the_cluster_restarts() {
    let mut c = Cluster::start(config(1_000_000), LogStoreOptions::default()).await;
    c.write(set(0)).await;
    let size = mapkv::key_len_max(mapkv::PAGE_SIZE_DEFAULT) + 1;
    let too_long = Request::Set {
        key: vec![b'x'; size],
        value: b"v".to_vec(),
    };
    let leader = c.leader().await;
    // Straight to openraft, past the batcher's check.
    let write = c.nodes[&leader].raft.client_write(too_long.clone());
    let r = tokio::time::timeout(Duration::from_secs(10), write)
        .await
        .expect("answered within 10 s")
        .expect("committed and refused, not failed")
        .data;
    let refused = r.refused.as_deref().expect("refused");
    assert!(!r.ok && r.previous.is_none(), "{r:?}");
    assert!(
        refused.contains(&format!("key of {size} bytes")),
        "{refused}"
    );

    let batch = Request::Batch(vec![set(1), too_long.clone(), set(2)]);
    let r = c.write(batch).await;
    let oks: Vec<_> = r
        .batch
        .iter()
        .map(|r| (r.ok, r.refused.is_some()))
        .collect();
    assert_eq!(oks, [(true, false), (false, true), (true, false)]);

    let batcher = Batcher::new(c.nodes[&leader].raft.clone(), BatchOptions::default());
    match batcher.write(too_long).await {
        Err(WriteError::Invalid(mapkv::Error::KeyTooLarge { size: s, .. })) if s == size => {}
        other => panic!("the batcher proposed an oversized key: {other:?}"),
    }
    batcher.write(set(3)).await.expect("write");
    drop(batcher);
    c.wait_converged().await;
    c.assert_identical();

    // Every node restarts, its state machine lost (as after a crash; applies are not
    // synced), so it applies the whole log again, refused entries included.
    for id in c.running() {
        c.stop_node(id).await;
    }
    for id in IDS {
        std::fs::remove_file(c.node_dir(id).join("sm.mapkv")).expect("remove sm.mapkv");
        c.start_node(id).await;
    }
    c.write(set(4)).await;
    c.wait_converged().await;
    c.assert_identical();
    let keys: Vec<_> = c.nodes[&leader].sm.dump().expect("dump").1;
    let keys: Vec<_> = keys.into_iter().map(|(k, _)| k).collect();
    let want: Vec<_> = (0..=4).map(|n| format!("k{n:08}").into_bytes()).collect();
    assert_eq!(keys, want);
    c.shutdown().await;
}
