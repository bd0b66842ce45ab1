//! Replicated writes per second and latency on a three-node in-process cluster.
//!
//! `cargo run --release -p mapkv-raft --example bench [seconds]`
//!
//! Rows: mapkv files on the disk (`$TMPDIR`, default /tmp) and on tmpfs (/dev/shm:
//! fdatasync costs nothing), with the log store's group commit on and off; then a
//! memory store (`mem.rs`: no storage at all, the upper bound of openraft and the
//! in-process network). Each with proposals `direct` (every client calls
//! `client_write`) and `batched` (through `mapkv_raft::Batcher`), for 1 and 32
//! concurrent clients.
//!
//! `MAPKV_RAFT_BENCH_ROWS=disk-on-batched-32,memory-direct-1` runs only those rows;
//! `MAPKV_RAFT_BENCH_IN_FLIGHT=n` sets the batcher's `in_flight`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod mem;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, IDS, config, set};
use mapkv_raft::router::Router;
use mapkv_raft::{BatchOptions, Batcher, LogStoreOptions, TypeConfig};
use openraft::{BasicNode, Raft};

/// Writes per second, p50 and p99 latency, and writes per log entry of `clients`
/// writers through `raft` (the leader) for `seconds`.
async fn measure(raft: Raft<TypeConfig>, batched: bool, clients: u64, seconds: f64) -> Row {
    let mut options = BatchOptions::default();
    if let Some(n) = std::env::var("MAPKV_RAFT_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        options.in_flight = n;
    }
    let batcher = batched.then(|| Batcher::new(raft.clone(), options));
    let first_index = raft.metrics().borrow().last_log_index.unwrap_or(0);
    let next = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (raft, batcher, next) = (raft.clone(), batcher.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                match &batcher {
                    Some(b) => drop(b.write(set(n)).await.expect("write")),
                    None => drop(raft.client_write(set(n)).await.expect("write")),
                }
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let start = Instant::now();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let entries = raft.metrics().borrow().last_log_index.unwrap_or(0) - first_index;
    all.sort();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Row {
        rate: all.len() as f64 / elapsed,
        p50: p(0.5),
        p99: p(0.99),
        per_entry: all.len() as f64 / entries.max(1) as f64,
    }
}

struct Row {
    rate: f64,
    p50: Duration,
    p99: Duration,
    per_entry: f64,
}

async fn run_mapkv(
    parent: &str,
    group_commit: bool,
    batched: bool,
    clients: u64,
    seconds: f64,
) -> Row {
    let c = Cluster::start_in(parent, config(1_000_000), LogStoreOptions { group_commit }).await;
    let leader = c.leader().await;
    c.write(set(u64::MAX)).await;
    let result = measure(c.nodes[&leader].raft.clone(), batched, clients, seconds).await;
    c.shutdown().await;
    result
}

async fn run_memory(batched: bool, clients: u64, seconds: f64) -> Row {
    let router = Router::default();
    let mut rafts = BTreeMap::new();
    for id in IDS {
        let raft = Raft::new(
            id,
            config(1_000_000),
            router.clone(),
            mem::MemLog::default(),
            mem::MemSm::default(),
        )
        .await
        .expect("raft");
        router.add(id, raft.clone());
        rafts.insert(id, raft);
    }
    let members: BTreeMap<u64, BasicNode> =
        IDS.iter().map(|&i| (i, BasicNode::default())).collect();
    rafts[&1].initialize(members).await.expect("initialize");
    let leader = loop {
        let m = rafts[&1].metrics().borrow().clone();
        if let Some(l) = m.current_leader {
            if rafts[&l].metrics().borrow().state == openraft::ServerState::Leader {
                break l;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    rafts[&leader]
        .client_write(set(u64::MAX))
        .await
        .expect("first write");
    let result = measure(rafts[&leader].clone(), batched, clients, seconds).await;
    for (id, raft) in rafts {
        router.remove(id);
        raft.shutdown().await.expect("shutdown");
    }
    result
}

// Three nodes share this runtime, and storage calls block their worker while they
// commit: more workers than the 2 cores keep one blocked node from stalling the rest.
#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let seconds: f64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let disk = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    let wanted = |row: &str| match std::env::var("MAPKV_RAFT_BENCH_ROWS") {
        Ok(rows) => rows.split(',').any(|r| r == row),
        Err(_) => true,
    };
    let print = |storage: &str, gc: &str, proposals: &str, clients: u64, r: Row| {
        println!(
            "| {storage} | {gc} | {proposals} | {clients} | {:.0} | {:.2} | {:.2} | {:.1} |",
            r.rate,
            r.p50.as_secs_f64() * 1e3,
            r.p99.as_secs_f64() * 1e3,
            r.per_entry
        )
    };
    println!(
        "| storage | group commit | proposals | clients | writes/s | p50 ms | p99 ms | writes/entry |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
    for (name, parent) in [("disk", disk.as_str()), ("tmpfs", "/dev/shm")] {
        for group_commit in [true, false] {
            let gc = if group_commit { "on" } else { "off" };
            for batched in [false, true] {
                let proposals = if batched { "batched" } else { "direct" };
                for clients in [1, 32] {
                    if wanted(&format!("{name}-{gc}-{proposals}-{clients}")) {
                        let r = run_mapkv(parent, group_commit, batched, clients, seconds).await;
                        print(name, gc, proposals, clients, r);
                    }
                }
            }
        }
    }
    for batched in [false, true] {
        let proposals = if batched { "batched" } else { "direct" };
        for clients in [1, 32] {
            if wanted(&format!("memory-{proposals}-{clients}")) {
                print(
                    "memory",
                    "-",
                    proposals,
                    clients,
                    run_memory(batched, clients, seconds).await,
                );
            }
        }
    }
}
