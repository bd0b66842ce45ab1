//! A state machine that a crash took back behind its snapshot restarts from the
//! snapshot (the log may have been purged up to it).

mod common;

use mapkv_raft::{Request, StateMachineStore, TypeConfig};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

fn entry(index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{index:04}").into_bytes(),
            value: b"v".to_vec(),
        }),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_behind_its_snapshot_restarts_from_it() {
    let dir = tempfile::tempdir().unwrap();
    let old_copy = dir.path().join("old.mapkv");
    {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply((1..=5).map(entry)).await.unwrap();
        // What a crash could leave on disk: the state as of index 5.
        sm.database().compact_to(&old_copy).unwrap();
        sm.apply((6..=10).map(entry)).await.unwrap();
        let snap = common::build_snapshot(&mut sm).await;
        assert_eq!(snap.meta.last_log_id.map(|l| l.index), Some(10));
    }
    std::fs::rename(&old_copy, dir.path().join("sm.mapkv")).unwrap();
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(10));
    assert_eq!(sm.get(b"k0010").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(sm.dump().unwrap().1.len(), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_machine_ahead_of_its_snapshot_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut sm = StateMachineStore::open(dir.path()).unwrap();
        sm.apply((1..=5).map(entry)).await.unwrap();
        common::build_snapshot(&mut sm).await;
        sm.apply((6..=8).map(entry)).await.unwrap();
    }
    let mut sm = StateMachineStore::open(dir.path()).unwrap();
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(8));
    let current = sm
        .get_current_snapshot()
        .await
        .unwrap()
        .expect("snapshot kept");
    assert_eq!(current.meta.last_log_id.map(|l| l.index), Some(5));
}
