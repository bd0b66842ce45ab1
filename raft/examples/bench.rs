//! Replicated writes per second and latency on a three-node in-process cluster.
//!
//! `cargo run --release -p mapkv-raft --example bench [seconds]`
//!
//! Rows: group commit on and off, 1 and 32 concurrent clients, files on the disk
//! (`$TMPDIR`, default /tmp) and on tmpfs (/dev/shm: fdatasync costs nothing, the
//! upper bound of this code without storage latency).

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Cluster, config, set};
use mapkv_raft::{BatchOptions, Batcher, LogStoreOptions};

async fn run(
    parent: &str,
    group_commit: bool,
    batched: bool,
    clients: u64,
    seconds: f64,
) -> (f64, Duration, Duration) {
    let c = Arc::new(
        Cluster::start_in(parent, config(1_000_000), LogStoreOptions { group_commit }).await,
    );
    let leader = c.leader().await;
    c.write(set(u64::MAX)).await;
    let raft = c.nodes[&leader].raft.clone();
    let mut options = BatchOptions::default();
    if let Some(n) = std::env::var("MAPKV_RAFT_BENCH_IN_FLIGHT")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        options.in_flight = n;
    }
    let batcher = batched.then(|| Batcher::new(raft.clone(), options));
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
    all.sort();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    let result = (all.len() as f64 / elapsed, p(0.5), p(0.99));
    drop((raft, batcher));
    Arc::try_unwrap(c)
        .ok()
        .expect("sole owner")
        .shutdown()
        .await;
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
    println!("| storage | group commit | proposals | clients | writes/s | p50 ms | p99 ms |");
    println!("|---|---|---|---:|---:|---:|---:|");
    for (name, parent) in [("disk", disk.as_str()), ("tmpfs", "/dev/shm")] {
        for group_commit in [true, false] {
            for batched in [false, true] {
                for clients in [1, 32] {
                    let gc = if group_commit { "on" } else { "off" };
                    let proposals = if batched { "batched" } else { "direct" };
                    let row = format!("{name}-{gc}-{proposals}-{clients}");
                    if let Ok(rows) = std::env::var("MAPKV_RAFT_BENCH_ROWS") {
                        if !rows.split(',').any(|r| r == row) {
                            continue;
                        }
                    }
                    let (rate, p50, p99) =
                        run(parent, group_commit, batched, clients, seconds).await;
                    println!(
                        "| {name} | {gc} | {proposals} | {clients} | {rate:.0} | {:.2} | {:.2} |",
                        p50.as_secs_f64() * 1e3,
                        p99.as_secs_f64() * 1e3
                    );
                }
            }
        }
    }
}
