//! The log store's fsyncs run on its writer thread, never on the tokio worker that
//! awaits them: on a current-thread runtime, a task on the same thread keeps running
//! while `save_vote`, `truncate`, `purge`, `read_committed` and (without group commit)
//! `append` wait for their sync. The disk here holds every sync until a task on the
//! runtime lets it go; before the fix these calls blocked the runtime's only thread on
//! the sync (and the barrier before it), so that task could not run and the sync went
//! on only when its wait timed out.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use mapkv::Options;
use mapkv::testing::{MemFile, MemHooks, open_with_backend};
use mapkv_raft::{LogStore, LogStoreOptions, Request, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Vote};

/// How long a held sync waits for the task that lets it go before it gives up.
const HOLD_MAX: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Gate {
    /// True: syncs wait until it is false again.
    held: Mutex<bool>,
    changed: Condvar,
    /// Syncs that gave up waiting.
    timeouts: Mutex<u64>,
}

impl Gate {
    fn set(&self, held: bool) {
        *self.held.lock().unwrap() = held;
        self.changed.notify_all();
    }

    fn wait(&self) {
        let held = self.held.lock().unwrap();
        let (held, waited) = self
            .changed
            .wait_timeout_while(held, HOLD_MAX, |held| *held)
            .unwrap();
        drop(held);
        if waited.timed_out() {
            *self.timeouts.lock().unwrap() += 1;
        }
    }
}

// The disk: an in-memory file whose syncs wait at the gate.
impl MemHooks for Gate {
    fn sync(&self) {
        self.wait();
    }
}

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{index}").into_bytes(),
            value: b"v".to_vec(),
        }),
    }
}

/// Holds the disk's syncs, lets them go from a task on this runtime 20 ms later, and
/// runs `op`: it must not have blocked that task.
async fn while_held<F: Future>(gate: &Arc<Gate>, what: &str, op: F) -> F::Output {
    gate.set(true);
    let releaser = {
        let gate = Arc::clone(gate);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            gate.set(false);
        })
    };
    let out = op.await;
    releaser.await.unwrap();
    assert_eq!(
        *gate.timeouts.lock().unwrap(),
        0,
        "{what}: a sync was let go only by its timeout: the call blocked the runtime's thread"
    );
    out
}

async fn calls_leave_the_runtime_free(options: LogStoreOptions) {
    let gate = Arc::new(Gate::default());
    let disk = MemFile::default().with_hooks(gate.clone());
    let db = open_with_backend(disk.backend(), Options::new()).unwrap();
    let mut store = LogStore::from_database(Arc::new(db), options).unwrap();

    let append = store.blocking_append((1..=10).map(entry));
    if options.group_commit {
        append.await.unwrap();
    } else {
        while_held(&gate, "append", append).await.unwrap();
    }
    let vote = Vote::new(1, 0);
    while_held(&gate, "save_vote", store.save_vote(&vote))
        .await
        .unwrap();
    store.save_committed(Some(log_id(8))).await.unwrap();
    let committed = while_held(&gate, "read_committed", store.read_committed())
        .await
        .unwrap();
    assert_eq!(committed, Some(log_id(8)));
    while_held(&gate, "truncate", store.truncate(log_id(9)))
        .await
        .unwrap();
    while_held(&gate, "purge", store.purge(log_id(4)))
        .await
        .unwrap();

    assert_eq!(store.read_vote().await.unwrap(), Some(vote));
    let state = store.get_log_state().await.unwrap();
    assert_eq!(state.last_purged_log_id, Some(log_id(4)));
    assert_eq!(state.last_log_id, Some(log_id(8)));
}

#[tokio::test(flavor = "current_thread")]
async fn group_commit_calls_leave_the_runtime_free() {
    calls_leave_the_runtime_free(LogStoreOptions { group_commit: true }).await;
}

#[tokio::test(flavor = "current_thread")]
async fn commit_per_append_calls_leave_the_runtime_free() {
    calls_leave_the_runtime_free(LogStoreOptions {
        group_commit: false,
    })
    .await;
}
