//! The measurement and the table of the replicated-writes benchmark, with no tie to a
//! store or a `TypeConfig`: shared by `main.rs` (mapkv and memory rows) and by
//! `raft/rocks-bench` (RocksDB rows, a crate of its own: see its Cargo.toml for why),
//! which includes this file by path.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use openraft::{BasicNode, Raft, RaftTypeConfig, ServerState};

/// Makes the nodes of `rafts` one cluster (initialized from node 1) and waits until one
/// of them leads; returns its id.
pub async fn elect<C>(rafts: &BTreeMap<u64, Raft<C>>) -> u64
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    let members: BTreeMap<u64, BasicNode> =
        rafts.keys().map(|&id| (id, BasicNode::default())).collect();
    rafts[&1].initialize(members).await.expect("initialize");
    loop {
        let m = rafts[&1].metrics().borrow().clone();
        if let Some(l) = m.current_leader
            && rafts[&l].metrics().borrow().state == ServerState::Leader
        {
            return l;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Shuts every node of `rafts` down, each after `unroute` took it off the network.
pub async fn shutdown<C>(rafts: BTreeMap<u64, Raft<C>>, mut unroute: impl FnMut(u64))
where
    C: RaftTypeConfig<NodeId = u64, Node = BasicNode>,
{
    for (id, raft) in rafts {
        unroute(id);
        raft.shutdown().await.expect("shutdown");
    }
}

/// One row of the table.
pub struct Row {
    pub rate: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub per_entry: f64,
}

/// Seconds per row: the first argument, 3 if none.
pub fn seconds() -> f64 {
    std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0)
}

/// Whether `row` is to run: all rows unless `MAPKV_RAFT_BENCH_ROWS` lists some.
pub fn wanted(row: &str) -> bool {
    match std::env::var("MAPKV_RAFT_BENCH_ROWS") {
        Ok(rows) => rows.split(',').any(|r| r == row),
        Err(_) => true,
    }
}

pub fn print_header() {
    println!(
        "| storage | group commit | proposals | clients | writes/s | p50 ms | p99 ms | writes/entry |"
    );
    println!("|---|---|---|---:|---:|---:|---:|---:|");
}

pub fn print_row(storage: &str, gc: &str, proposals: &str, clients: u64, r: Row) {
    println!(
        "| {storage} | {gc} | {proposals} | {clients} | {:.0} | {:.2} | {:.2} | {:.1} |",
        r.rate,
        r.p50.as_secs_f64() * 1e3,
        r.p99.as_secs_f64() * 1e3,
        r.per_entry
    )
}

/// Writes per second, p50 and p99 latency, and writes per log entry of `clients`
/// concurrent writers for `seconds`. `write(n)` makes write number `n` (numbered across
/// all clients) through the leader and returns once it is acknowledged;
/// `last_log_index()` reads the leader's last log index.
pub async fn measure<W, F>(
    write: W,
    last_log_index: impl Fn() -> u64,
    clients: u64,
    seconds: f64,
) -> Row
where
    W: Fn(u64) -> F + Clone + Send + 'static,
    F: Future<Output = ()> + Send + 'static,
{
    let first_index = last_log_index();
    let next = Arc::new(AtomicU64::new(0));
    let end = Instant::now() + Duration::from_secs_f64(seconds);
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (write, next) = (write.clone(), Arc::clone(&next));
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < end {
                let n = next.fetch_add(1, Ordering::Relaxed);
                let t = Instant::now();
                write(n).await;
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
    let entries = last_log_index() - first_index;
    all.sort();
    let p = |q: f64| all[((all.len() - 1) as f64 * q) as usize];
    Row {
        rate: all.len() as f64 / elapsed,
        p50: p(0.5),
        p99: p(0.99),
        per_entry: all.len() as f64 / entries.max(1) as f64,
    }
}
