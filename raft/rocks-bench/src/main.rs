//! The RocksDB rows of mapkv-raft's replicated-writes benchmark (`raft/examples/bench`):
//! the same three-node in-process cluster, network and measurement, over openraft's own
//! RocksDB example store (`openraft-rocksstore`, a v1 `RaftStorage` run through
//! openraft's `Adaptor`). A crate of its own because that store cannot be built next to
//! mapkv-raft (see Cargo.toml); it shares `raft/examples/bench/measure.rs` (measurement
//! and table) and `raft/src/router.rs` (the in-process network) by path.
//!
//! ```text
//! LIBCLANG_PATH=<folder with libclang.so> \
//! BINDGEN_EXTRA_CLANG_ARGS="-I$(gcc -print-file-name=include)" \
//!     cargo run --release --manifest-path raft/rocks-bench/Cargo.toml -- [seconds]
//! ```
//!
//! bindgen needs libclang (`pip install libclang` has one, under `clang/native/`); that
//! one comes without clang's own headers, hence gcc's include folder. See BENCHMARKS.md
//! for what the store syncs and when: not the same promise as mapkv-raft's.
//!
//! Rows: the nodes' RocksDB folders on the disk (`$TMPDIR`, default /tmp), `direct`
//! proposals (every client calls `client_write`), 1 and 32 concurrent clients. There is
//! no `batched` row (mapkv-raft's `Batcher` packs mapkv-raft requests; this store's
//! request is one `Set`) and no group-commit switch (the store has none).
//! `MAPKV_RAFT_BENCH_ROWS=rocksdb-direct-1` runs only the rows named.

#[path = "../../examples/bench/measure.rs"]
mod measure;
// Allowed as in mapkv-raft's lib.rs: openraft's RPC errors are large.
#[allow(clippy::result_large_err)]
#[path = "../../src/router.rs"]
mod router;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use measure::{Row, print_header, print_row, wanted};
use openraft::storage::Adaptor;
use openraft::{Config, Raft, SnapshotPolicy};
use openraft_rocksstore::{RocksRequest, RocksStore};
// `router.rs` names the type configuration `crate::TypeConfig`: here, the store's.
use openraft_rocksstore::TypeConfig;
use router::Router;

const IDS: [u64; 3] = [1, 2, 3];

/// The mapkv and memory rows' configuration (`config(1_000_000)` in
/// `raft/tests/common/mod.rs`): no snapshot during a row.
fn config() -> Arc<Config> {
    let config = Config {
        heartbeat_interval: 50,
        election_timeout_min: 300,
        election_timeout_max: 600,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(1_000_000),
        max_in_snapshot_log_to_keep: 0,
        purge_batch_size: 1,
        ..Default::default()
    };
    Arc::new(config.validate().expect("valid config"))
}

/// The same key and value as the mapkv rows' `set(n)`.
fn set(n: u64) -> RocksRequest {
    RocksRequest::Set {
        key: format!("k{n:08}"),
        value: format!("v{n}"),
    }
}

async fn run_rocks(parent: &Path, clients: u64, seconds: f64) -> Row {
    let dir = tempfile::tempdir_in(parent).expect("temporary folder");
    let router = Router::default();
    let mut rafts = BTreeMap::new();
    for id in IDS {
        let store = RocksStore::new(dir.path().join(format!("node{id}"))).await;
        let (log_store, state_machine) = Adaptor::new(store);
        let raft = Raft::new(id, config(), router.clone(), log_store, state_machine)
            .await
            .expect("raft");
        router.add(id, raft.clone());
        rafts.insert(id, raft);
    }
    let leader = measure::elect(&rafts).await;
    let raft = rafts[&leader].clone();
    raft.client_write(set(u64::MAX)).await.expect("first write");
    let metrics = raft.clone();
    let write = move |n| {
        let raft = raft.clone();
        async move { drop(raft.client_write(set(n)).await.expect("write")) }
    };
    let last_log_index = move || metrics.metrics().borrow().last_log_index.unwrap_or(0);
    let result = measure::measure(write, last_log_index, clients, seconds).await;
    measure::shutdown(rafts, |id| drop(router.remove(id))).await;
    result
}

// As the mapkv rows: three nodes share this runtime and block their worker in storage calls.
#[tokio::main(flavor = "multi_thread", worker_threads = 8)]
async fn main() {
    let seconds = measure::seconds();
    let disk = std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into());
    print_header();
    for clients in [1, 32] {
        if wanted(&format!("rocksdb-direct-{clients}")) {
            let r = run_rocks(Path::new(&disk), clients, seconds).await;
            print_row("rocksdb (disk)", "n/a", "direct", clients, r);
        }
    }
}
