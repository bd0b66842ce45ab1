//! A snapshot build runs off the tokio workers and does not hold up
//! `get_current_snapshot` (which openraft's state-machine worker calls, so a wait there
//! stalls applies) for its length. Before the fix the build ran its compaction and
//! fsyncs on the worker that polled it (on a current-thread runtime nothing else ran
//! until the build's end) and held the snapshot lock throughout, which
//! `get_current_snapshot` waited for.

use std::time::Duration;

use mapkv_raft::{Request, StateMachineStore, TypeConfig};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

/// Keys applied before the build: enough that the compaction takes tens of
/// milliseconds, far longer than opening the current snapshot.
const KEYS: u64 = 100_000;
const KEYS_PER_ENTRY: u64 = 1_000;

fn entry(index: u64) -> Entry<TypeConfig> {
    let first = (index - 1) * KEYS_PER_ENTRY;
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request::Batch(
            (first..first + KEYS_PER_ENTRY)
                .map(|k| Request::Set {
                    key: format!("key{k:08}").into_bytes(),
                    value: vec![b'v'; 200],
                })
                .collect(),
        )),
    }
}

async fn build_leaves_the_runtime_and_the_current_snapshot_free() {
    let dir = tempfile::tempdir().unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    sm.apply((1..=KEYS / KEYS_PER_ENTRY).map(entry))
        .await
        .unwrap();
    let first = sm
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .unwrap();

    let mut builder = sm.get_snapshot_builder().await;
    let build = tokio::spawn(async move { builder.build_snapshot().await.unwrap().meta });
    // The compaction writes `snapshot.build`, renamed to `snapshot.mapkv` at its end.
    let build_file = dir.path().join("snapshot.build");
    while !build_file.exists() {
        assert!(
            !build.is_finished(),
            "never saw the build under way: it ran to its end on a tokio worker"
        );
        tokio::time::sleep(Duration::from_micros(100)).await;
    }
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert!(
        build_file.exists(),
        "get_current_snapshot waited for the build to finish"
    );
    assert_eq!(current.meta.snapshot_id, first.meta.snapshot_id);

    let built = build.await.unwrap();
    assert_ne!(built.snapshot_id, first.meta.snapshot_id);
    let current = sm.get_current_snapshot().await.unwrap().unwrap();
    assert_eq!(current.meta.snapshot_id, built.snapshot_id);
}

#[tokio::test(flavor = "current_thread")]
async fn build_on_a_current_thread_runtime() {
    build_leaves_the_runtime_and_the_current_snapshot_free().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn build_on_a_multi_thread_runtime() {
    build_leaves_the_runtime_and_the_current_snapshot_free().await;
}
