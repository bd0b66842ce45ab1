//! The window between a follower's snapshot install and the log purge that goes with it.
//!
//! openraft 0.9.25, on a follower that received a whole snapshot
//! (`FollowingHandler::install_full_snapshot`, engine/handler/following_handler/mod.rs:
//! 321-325), queues the install for the state-machine worker and, right after it, a
//! `PurgeLog` of everything the snapshot covers; `PurgeLog` has no condition
//! (engine/command.rs:193), so the core runs `RaftLogStorage::purge` (core/raft_core.rs:
//! 1659-1660) as soon as the install command is sent to the worker
//! (core/raft_core.rs:1728-1732), whether or not the install has started, let alone
//! become durable. Only the reply to the leader waits for the install
//! (engine/engine_impl.rs:502-512). A power loss while the install runs (it copies,
//! bulk-loads and syncs a whole state machine: the window is the install's whole length)
//! can therefore leave the log purged up to the snapshot and the state machine at its old
//! applied id, the entries between them nowhere. At the next start openraft's
//! `get_initial_state` (storage/helper.rs:96-103) re-applies the committed entries after
//! the applied id from the log, which fails; and if the saved committed id is not past
//! the applied one, the node starts, and fails at its first apply
//! (`get_log_entries` checks the range, storage/log_store_ext.rs:31-39). Either way the
//! node cannot come back without an operator.
//!
//! These tests make that crash by hand: the purge openraft would run, and then the process
//! dies before the install (the install never ran), and then check that the node restarts:
//! `get_initial_state` succeeds, the state machine catches up to the committed id from the
//! log, the log's purged id is back at the snapshot's last id (or none), and the log
//! reads back contiguous from it with every entry the next apply needs.

mod common;

use mapkv_raft::{LogStoreOptions, Request, TypeConfig};
use openraft::storage::{
    RaftLogReader, RaftLogReaderExt, RaftLogStorage, RaftLogStorageExt, RaftStateMachine,
};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, StorageHelper};

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Request::Set {
            key: format!("k{}", index % 7).into_bytes(),
            value: format!("v{index}").into_bytes(),
        }),
    }
}

/// A node whose log holds 0..=`last`, committed up to `committed`, applied up to
/// `applied`, with a snapshot of what it had applied up to `snapshot` (if any) and its
/// log purged up to it; then openraft's install purge up to `purge_to` runs and the node
/// dies before the install. Checks that the node restarts.
async fn crash_after_install_purge(
    options: LogStoreOptions,
    last: u64,
    committed: u64,
    applied: u64,
    snapshot: Option<u64>,
    purge_to: u64,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let (mut log, mut sm) = mapkv_raft::open_with(dir.path(), options)
            .await
            .expect("open");
        log.blocking_append((0..=last).map(|i| entry(1, i)))
            .await
            .expect("append");
        log.save_committed(Some(log_id(1, committed)))
            .await
            .expect("save_committed");
        let mut next = 0;
        if let Some(s) = snapshot {
            sm.apply((0..=s).map(|i| entry(1, i))).await.expect("apply");
            common::build_snapshot(&mut sm).await;
            log.purge(log_id(1, s))
                .await
                .expect("purge to the snapshot");
            next = s + 1;
        }
        sm.apply((next..=applied).map(|i| entry(1, i)))
            .await
            .expect("apply");
        // What the core runs right after handing the install to the state-machine
        // worker; then the power goes (the install never ran).
        // (The snapshot's last id: the local entry's if the log reaches it, else a later
        // term's.)
        let term = if purge_to <= last { 1 } else { 2 };
        log.purge(log_id(term, purge_to)).await.expect("purge");
    }
    let (mut log, mut sm) = mapkv_raft::open_with(dir.path(), options)
        .await
        .expect("reopen");
    let state = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "log 0..={last}, committed {committed}, applied {applied}, purged to \
                 {purge_to} before the install: the node does not restart: {e}"
            )
        });
    // get_initial_state re-applied what was committed.
    let (sm_applied, _) = sm.applied_state().await.expect("applied_state");
    assert_eq!(sm_applied.map(|l| l.index), Some(committed.max(applied)));
    assert_eq!(
        state.committed.map(|l| l.index),
        Some(committed.max(applied))
    );
    // The log is contiguous from its purged id, and has every entry the state machine
    // still needs.
    let log_state = log.get_log_state().await.expect("get_log_state");
    let purged = log_state.last_purged_log_id.map(|l| l.index);
    assert!(
        purged <= sm_applied.map(|l| l.index),
        "purged {purged:?} past the applied {sm_applied:?}"
    );
    assert_eq!(purged, snapshot, "purged back to the snapshot");
    let entries = log.try_get_log_entries(..).await.expect("read");
    let first = purged.map_or(0, |p| p + 1);
    for (e, i) in entries.iter().zip(first..) {
        assert_eq!(e.log_id.index, i, "log not contiguous");
        assert_eq!(*e, entry(1, i));
    }
    assert_eq!(
        log_state.last_log_id,
        entries
            .last()
            .map(|e| e.log_id)
            .or(log_state.last_purged_log_id)
    );
    // What openraft reads for its next apply (`get_log_entries` checks the range).
    let next = sm_applied.map_or(0, |l| l.index + 1);
    if let Some(last) = log_state.last_log_id.filter(|l| l.index >= next) {
        log.get_log_entries(next..=last.index)
            .await
            .expect("the entries after the applied id");
    }
}

#[tokio::test]
async fn crash_after_install_purge_inside_the_log() {
    for group_commit in [true, false] {
        let options = LogStoreOptions { group_commit };
        // Committed past applied (re-applied at start), and not.
        crash_after_install_purge(options, 20, 15, 10, None, 18).await;
        crash_after_install_purge(options, 20, 10, 10, None, 18).await;
        // With a snapshot (the log purged to it) behind the applied id: the file keeps
        // the entries after the snapshot, and the purged id goes back to it.
        crash_after_install_purge(options, 20, 15, 12, Some(8), 18).await;
    }
}

#[tokio::test]
async fn crash_after_install_purge_past_the_log() {
    for group_commit in [true, false] {
        let options = LogStoreOptions { group_commit };
        crash_after_install_purge(options, 20, 15, 10, None, 30).await;
        crash_after_install_purge(options, 20, 12, 12, None, 30).await;
        crash_after_install_purge(options, 20, 12, 12, Some(12), 30).await;
    }
}

/// Entries in the log's file (purged ones the file still keeps included).
fn entries_in_file(log: &mapkv_raft::LogStore) -> usize {
    let rtx = log.database().begin_read().expect("read");
    match rtx.open_tree("log") {
        Ok(t) => t.iter().expect("iter").count(),
        Err(_) => 0,
    }
}

/// A purge past the snapshot only hides the entries; the next purge after a snapshot
/// that covers them removes them from the file.
#[tokio::test]
async fn purged_entries_leave_the_file_once_a_snapshot_covers_them() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (mut log, mut sm) = mapkv_raft::open(dir.path()).await.expect("open");
    log.blocking_append((0..=20).map(|i| entry(1, i)))
        .await
        .expect("append");
    sm.apply((0..=20).map(|i| entry(1, i)))
        .await
        .expect("apply");
    log.purge(log_id(1, 10)).await.expect("purge");
    assert_eq!(
        entries_in_file(&log),
        21,
        "no snapshot yet: the file keeps them"
    );
    let entries = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(entries.first().map(|e| e.log_id.index), Some(11));
    assert_eq!(entries.len(), 10);

    common::build_snapshot(&mut sm).await;
    log.purge(log_id(1, 15)).await.expect("purge");
    assert_eq!(entries_in_file(&log), 5, "the snapshot covers 0..=20");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 15)));
    assert_eq!(state.last_log_id, Some(log_id(1, 20)));
    drop((log, sm));

    // Purged no further than the state machine: a restart changes nothing.
    let (mut log, _sm) = mapkv_raft::open(dir.path()).await.expect("reopen");
    let state = log.get_log_state().await.expect("log state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 15)));
    let entries = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(entries.first().map(|e| e.log_id.index), Some(16));
}
