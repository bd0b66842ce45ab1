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
//!
//! The RocksDB rows (openraft's own example store) come from `raft/rocks-bench`, a crate
//! of its own that shares `measure.rs` and the in-process network: see its `main.rs`.

#[path = "../../tests/common/mod.rs"]
mod common;
mod measure;
mod mem;

use std::collections::BTreeMap;

use common::{Cluster, IDS, config, set};
use mapkv_raft::router::Router;
use mapkv_raft::{BatchOptions, Batcher, LogStoreOptions, TypeConfig};
use measure::{Row, print_header, print_row, wanted};
use openraft::Raft;

/// [`measure::measure`] of `clients` writers through `raft` (the leader), each calling
/// `client_write` (`direct`) or writing through a [`Batcher`] (`batched`).
async fn measure_raft(raft: Raft<TypeConfig>, batched: bool, clients: u64, seconds: f64) -> Row {
    let mut options = BatchOptions::default();
    if let Some(n) = std::env::var("MAPKV_RAFT_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        options.in_flight = n;
    }
    let batcher = batched.then(|| Batcher::new(raft.clone(), options));
    let leader = raft.clone();
    let write = move |n| {
        let (raft, batcher) = (raft.clone(), batcher.clone());
        async move {
            match &batcher {
                Some(b) => drop(b.write(set(n)).await.expect("write")),
                None => drop(raft.client_write(set(n)).await.expect("write")),
            }
        }
    };
    let last_log_index = move || leader.metrics().borrow().last_log_index.unwrap_or(0);
    measure::measure(write, last_log_index, clients, seconds).await
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
    let result = measure_raft(c.nodes[&leader].raft.clone(), batched, clients, seconds).await;
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
    let leader = measure::elect(&rafts).await;
    rafts[&leader]
        .client_write(set(u64::MAX))
        .await
        .expect("first write");
    let result = measure_raft(rafts[&leader].clone(), batched, clients, seconds).await;
    measure::shutdown(rafts, |id| drop(router.remove(id))).await;
    result
}

// Three nodes share this runtime, and storage calls block their worker while they
// commit: more workers than the 2 cores keep one blocked node from stalling the rest.
#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let seconds = measure::seconds();
    let disk = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    print_header();
    for (name, parent) in [("disk", disk.as_str()), ("tmpfs", "/dev/shm")] {
        for group_commit in [true, false] {
            let gc = if group_commit { "on" } else { "off" };
            for batched in [false, true] {
                let proposals = if batched { "batched" } else { "direct" };
                for clients in [1, 32] {
                    if wanted(&format!("{name}-{gc}-{proposals}-{clients}")) {
                        let r = run_mapkv(parent, group_commit, batched, clients, seconds).await;
                        print_row(name, gc, proposals, clients, r);
                    }
                }
            }
        }
    }
    for batched in [false, true] {
        let proposals = if batched { "batched" } else { "direct" };
        for clients in [1, 32] {
            if wanted(&format!("memory-{proposals}-{clients}")) {
                print_row(
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
