//! Snapshot install rebuilds the state machine's trees with `bulk_load` from the
//! received snapshot, an install that stops before its switch leaves the old state, and
//! one that stops between its two renames restarts from the new snapshot.

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use mapkv::{Database, Options};
use mapkv_raft::{Request, StateMachineStore, TypeConfig};
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine, Snapshot};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StorageHelper,
};
use tokio::io::AsyncSeekExt;

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

fn membership(index: u64) -> Entry<TypeConfig> {
    let voters: BTreeSet<u64> = [1, 2, 3].into_iter().collect();
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Membership(Membership::<u64, BasicNode>::new(vec![voters], None)),
    }
}

fn set(index: u64, key: &[u8], value: Vec<u8>) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Set {
            key: key.to_vec(),
            value,
        }),
    }
}

fn delete(index: u64, key: &[u8]) -> Entry<TypeConfig> {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Request::Delete { key: key.to_vec() }),
    }
}

/// A leader-side state machine with `n` keys written in scattered order, some deleted,
/// one value of 100 KB (overflow pages), and a membership; returns it and its snapshot.
async fn source(dir: &Path, n: u64) -> (StateMachineStore, Snapshot<TypeConfig>) {
    let mut sm = StateMachineStore::open(dir).unwrap();
    sm.apply([membership(1)]).await.unwrap();
    let mut index = 1;
    let mut batch = Vec::new();
    for i in 0..n {
        index += 1;
        // A permutation of 0..n (n is not a multiple of 7919): scattered inserts.
        let k = (i * 7919) % n;
        batch.push(set(
            index,
            format!("key{k:08}").as_bytes(),
            vec![k as u8; 40],
        ));
        if batch.len() == 500 {
            sm.apply(std::mem::take(&mut batch)).await.unwrap();
        }
    }
    for k in (0..n).step_by(3) {
        index += 1;
        batch.push(delete(index, format!("key{k:08}").as_bytes()));
    }
    index += 1;
    batch.push(set(index, b"big", vec![7; 100_000]));
    sm.apply(batch).await.unwrap();
    let snap = common::build_snapshot(&mut sm).await;
    assert_eq!(snap.meta.last_log_id, Some(log_id(index)));
    (sm, snap)
}

/// Sends `snap` to `sm` as openraft does: into a file from `begin_receiving_snapshot`.
async fn receive(
    sm: &mut StateMachineStore,
    snap: &mut Snapshot<TypeConfig>,
) -> Box<tokio::fs::File> {
    let mut received = sm.begin_receiving_snapshot().await.unwrap();
    snap.snapshot
        .seek(std::io::SeekFrom::Start(0))
        .await
        .unwrap();
    tokio::io::copy(&mut *snap.snapshot, &mut *received)
        .await
        .unwrap();
    received
}

/// Sends `snap` to `sm` and installs it with `meta`.
async fn install(
    sm: &mut StateMachineStore,
    snap: &mut Snapshot<TypeConfig>,
    meta: &openraft::SnapshotMeta<u64, BasicNode>,
) -> Result<(), openraft::StorageError<u64>> {
    let received = receive(sm, snap).await;
    sm.install_snapshot(meta, received).await
}

type Pairs = Vec<(Vec<u8>, Vec<u8>)>;

/// Every tree's name and entries, in order.
fn trees(db: &Database) -> Vec<(String, Pairs)> {
    let rtx = db.begin_read().unwrap();
    rtx.tree_names()
        .unwrap()
        .into_iter()
        .map(|name| {
            let pairs = rtx
                .open_tree(&name)
                .unwrap()
                .iter()
                .unwrap()
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).unwrap())
                .collect();
            (name, pairs)
        })
        .collect()
}

/// A follower with an older state of its own.
async fn follower(dir: &Path) -> StateMachineStore {
    let mut sm = StateMachineStore::open(dir).unwrap();
    sm.apply([
        set(1, b"old", b"state".to_vec()),
        set(2, b"zz", vec![1; 10]),
    ])
    .await
    .unwrap();
    sm
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_rebuilds_the_trees_with_bulk_load() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // MAPKV_RAFT_INSTALL_KEYS=1000003 times a larger install (BENCHMARKS.md).
    let n: u64 = std::env::var("MAPKV_RAFT_INSTALL_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let (leader, mut snap) = source(a.path(), n).await;
    let meta = snap.meta.clone();
    let mut sm = follower(b.path()).await;

    let received = receive(&mut sm, &mut snap).await;
    let started = std::time::Instant::now();
    sm.install_snapshot(&meta, received).await.unwrap();
    eprintln!(
        "install of a {} byte snapshot: {:?}",
        std::fs::metadata(a.path().join("snapshot.mapkv"))
            .unwrap()
            .len(),
        started.elapsed()
    );

    let snapshot_file = a.path().join("snapshot.mapkv");
    let source_db = Options::new().read_only(true).open(&snapshot_file).unwrap();
    let installed = sm.database();
    installed.check().unwrap();
    // Exactly the snapshot's trees and entries (sm_meta with its snapshot_id included).
    let want = trees(&source_db);
    assert_eq!(
        want.iter().map(|t| t.0.as_str()).collect::<Vec<_>>(),
        ["kv", "sm_meta"]
    );
    assert_eq!(trees(&installed), want);
    assert_eq!(sm.dump().unwrap(), leader.dump().unwrap());
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(
        (applied, membership),
        (meta.last_log_id, meta.last_membership.clone())
    );

    // Rebuilt, not copied: another file, with leaves as full as compact_to's.
    let installed_path = b.path().join("sm.mapkv");
    assert_ne!(
        std::fs::read(&installed_path).unwrap(),
        std::fs::read(&snapshot_file).unwrap()
    );
    let (src, new) = (source_db.stats().unwrap(), installed.stats().unwrap());
    eprintln!(
        "pages in use: snapshot {}, installed {}",
        src.pages_in_use, new.pages_in_use
    );
    // The trees take no more pages than compact_to's full pages: the file ends no
    // later. (Pages in use differ by a page or two of commit overhead: the snapshot's
    // one commit after compact_to freed two pages, the loads' second commit one.)
    assert!(new.page_count <= src.page_count, "{new:?} vs {src:?}");
    assert!(
        new.pages_in_use <= src.pages_in_use + 2,
        "{new:?} vs {src:?}"
    );
    let depths = |s: &mapkv::Stats| s.trees.iter().map(|t| t.depth).collect::<Vec<_>>();
    assert_eq!(depths(&new), depths(&src));
    let leader_stats = leader.database().stats().unwrap();
    assert!(new.pages_in_use < leader_stats.pages_in_use);

    // The received file is kept as the node's snapshot (served to others), byte for byte.
    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, meta);
    assert_eq!(
        std::fs::read(b.path().join("snapshot.mapkv")).unwrap(),
        std::fs::read(&snapshot_file).unwrap()
    );
    for leftover in ["sm.install", "snapshot.tmp"] {
        assert!(!b.path().join(leftover).exists(), "{leftover} left behind");
    }

    // The installed state machine takes applies, and survives a reopen.
    sm.apply([set(
        meta.last_log_id.unwrap().index + 1,
        b"after",
        b"x".to_vec(),
    )])
    .await
    .unwrap();
    drop((sm, installed));
    let sm = StateMachineStore::open(b.path()).unwrap();
    sm.database().check().unwrap();
    assert_eq!(sm.get(b"after").unwrap().as_deref(), Some(&b"x"[..]));
    assert_eq!(sm.get(b"big").unwrap().map(|v| v.len()), Some(100_000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_stopped_before_the_switch_leaves_the_old_state() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (_leader, mut snap) = source(a.path(), 2_000).await;
    let meta = snap.meta.clone();
    let old = {
        let sm = follower(b.path()).await;
        sm.dump().unwrap()
    };

    // A crash in the middle of an install: the received copy written, the rebuilt file
    // half written, no rename yet.
    let snapshot_bytes = std::fs::read(a.path().join("snapshot.mapkv")).unwrap();
    std::fs::write(b.path().join("snapshot.tmp"), &snapshot_bytes).unwrap();
    std::fs::write(
        b.path().join("sm.install"),
        &snapshot_bytes[..snapshot_bytes.len() / 2],
    )
    .unwrap();
    let mut sm = StateMachineStore::open(b.path()).unwrap();
    assert_eq!(sm.dump().unwrap(), old);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    for leftover in ["sm.install", "snapshot.tmp"] {
        assert!(!b.path().join(leftover).exists(), "{leftover} left behind");
    }

    // An install that fails its verification (metadata that does not match the
    // snapshot) stops before the switch too: the old state stands, nothing is left.
    let mut wrong = meta.clone();
    wrong.last_log_id = Some(log_id(meta.last_log_id.unwrap().index + 1));
    assert!(install(&mut sm, &mut snap, &wrong).await.is_err());
    assert_eq!(sm.dump().unwrap(), old);
    assert!(sm.get_current_snapshot().await.unwrap().is_none());
    for leftover in ["sm.install", "snapshot.tmp"] {
        assert!(!b.path().join(leftover).exists(), "{leftover} left behind");
    }

    // And the next install goes through.
    install(&mut sm, &mut snap, &meta).await.unwrap();
    assert_eq!(sm.applied_state().await.unwrap().0, meta.last_log_id);
    drop(sm);
    let sm = StateMachineStore::open(b.path()).unwrap();
    assert_eq!(sm.dump().unwrap().0, meta.last_log_id);
}

/// A crash between the install's two renames: the new snapshot in place, the old state
/// machine still `sm.mapkv` (the rebuilt one left as `sm.install`), and the log purged
/// up to the new snapshot (openraft purges without waiting for the install). The node
/// must restart from the new snapshot with the log purged no further than the
/// snapshot's last id (openraft's `RaftState::validate`). An install that renamed the
/// state machine first could leave, crashing between the renames, the log and the state
/// machine at the new snapshot and `snapshot.mapkv` at the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_between_the_renames_restarts_from_the_new_snapshot() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (leader, mut snap) = source(a.path(), 2_000).await;
    let meta = snap.meta.clone();
    let last = meta.last_log_id.unwrap();
    let old_copy = b.path().join("old.mapkv");
    {
        // A follower with a snapshot (at 10) and a log of its own, applied up to 15.
        let (mut log, mut sm) = mapkv_raft::open(b.path()).await.unwrap();
        let entries = |range: std::ops::RangeInclusive<u64>| {
            range.map(|i| set(i, format!("f{i}").as_bytes(), b"v".to_vec()))
        };
        let first = std::iter::once(membership(1));
        log.blocking_append(first.clone().chain(entries(2..=20)))
            .await
            .unwrap();
        log.save_committed(Some(log_id(20))).await.unwrap();
        sm.apply(first.chain(entries(2..=10))).await.unwrap();
        common::build_snapshot(&mut sm).await;
        log.purge(log_id(10)).await.unwrap();
        sm.apply(entries(11..=15)).await.unwrap();
        // openraft queues the install and purges the log up to it at once.
        log.purge(last).await.unwrap();
        sm.database().compact_to(&old_copy).unwrap();
        install(&mut sm, &mut snap, &meta).await.unwrap();
        // The order itself: a rename sets the file's ctime, so the snapshot file's is
        // not later than the state machine's. File-system timestamps are coarse: the
        // wrong order shows only when the clock ticks between the two renames.
        let ctime = |name| {
            let m = std::fs::metadata(b.path().join(name)).unwrap();
            std::os::unix::fs::MetadataExt::ctime_nsec(&m) as i128
                + std::os::unix::fs::MetadataExt::ctime(&m) as i128 * 1_000_000_000
        };
        assert!(
            ctime("snapshot.mapkv") <= ctime("sm.mapkv"),
            "the state machine was switched before the snapshot file was in place"
        );
    }
    // Undo the switch (the last rename) only.
    std::fs::rename(b.path().join("sm.mapkv"), b.path().join("sm.install")).unwrap();
    std::fs::rename(&old_copy, b.path().join("sm.mapkv")).unwrap();

    let (mut log, mut sm) = mapkv_raft::open(b.path()).await.unwrap();
    let state = StorageHelper::new(&mut log, &mut sm)
        .get_initial_state()
        .await
        .unwrap();
    assert_eq!(state.snapshot_meta.last_log_id, Some(last));
    let purged = log.get_log_state().await.unwrap().last_purged_log_id;
    assert!(purged <= state.snapshot_meta.last_log_id, "{purged:?}");
    assert_eq!(sm.applied_state().await.unwrap().0, Some(last));
    assert_eq!(sm.dump().unwrap(), leader.dump().unwrap());
    let current = sm.get_current_snapshot().await.unwrap().expect("snapshot");
    assert_eq!(current.meta, meta);
    assert!(
        !b.path().join("sm.install").exists(),
        "sm.install left behind"
    );
}
