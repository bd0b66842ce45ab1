//! A memory log store and state machine: the benchmark's upper bound (openraft and
//! the in-process network, no storage cost at all). Nothing is durable; `append`
//! reports entries flushed at once. Snapshots (never taken by the benchmark) are a
//! postcard copy of the map in an anonymous temporary file.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io::{Read, Seek, SeekFrom, Write};
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex, MutexGuard};

use mapkv_raft::{Request, Response, TypeConfig};
use openraft::storage::{LogFlushed, LogState, RaftLogStorage, RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership, Vote,
};

type NodeId = u64;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn snap_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

#[derive(Default)]
struct Log {
    entries: BTreeMap<u64, Entry<TypeConfig>>,
    vote: Option<Vote<NodeId>>,
    committed: Option<LogId<NodeId>>,
    purged: Option<LogId<NodeId>>,
}

/// The log store; clones share the log (a clone is also its reader).
#[derive(Clone, Default)]
pub struct MemLog(Arc<Mutex<Log>>);

impl RaftLogReader<TypeConfig> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        Ok(lock(&self.0)
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }
}

impl RaftLogStorage<TypeConfig> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let log = lock(&self.0);
        let last = log.entries.values().next_back().map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: log.purged,
            last_log_id: last.or(log.purged),
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        lock(&self.0).vote = Some(*vote);
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.0).vote)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        lock(&self.0).committed = committed;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(lock(&self.0).committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        {
            let mut log = lock(&self.0);
            for e in entries {
                log.entries.insert(e.log_id.index, e);
            }
        }
        callback.log_io_completed(Ok(()));
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        lock(&self.0).entries.split_off(&log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let mut log = lock(&self.0);
        log.entries = log.entries.split_off(&(log_id.index + 1));
        log.purged = Some(log_id);
        Ok(())
    }
}

#[derive(Default)]
struct Sm {
    kv: BTreeMap<Vec<u8>, Vec<u8>>,
    applied: Option<LogId<NodeId>>,
    membership: Membership,
    snapshot: Option<(Meta, Vec<u8>)>,
}

/// The state machine; clones share it.
#[derive(Clone, Default)]
pub struct MemSm(Arc<Mutex<Sm>>);

fn apply(kv: &mut BTreeMap<Vec<u8>, Vec<u8>>, request: &Request) -> Response {
    let ok = |previous| Response {
        previous,
        ok: true,
        ..Response::default()
    };
    match request {
        Request::Set { key, value } => ok(kv.insert(key.clone(), value.clone())),
        Request::Delete { key } => ok(kv.remove(key)),
        Request::CompareAndSwap { key, expected, new } => {
            let previous = kv.get(key).cloned();
            let swap = previous == *expected;
            if swap {
                match new {
                    Some(v) => kv.insert(key.clone(), v.clone()),
                    None => kv.remove(key),
                };
            }
            Response {
                ok: swap,
                ..ok(previous)
            }
        }
        Request::Batch(requests) => Response {
            batch: requests.iter().map(|r| apply(kv, r)).collect(),
            ..ok(None)
        },
    }
}

async fn file_with(bytes: &[u8]) -> Result<tokio::fs::File, StorageError<NodeId>> {
    let mut f = tempfile::tempfile().map_err(snap_err)?;
    f.write_all(bytes).map_err(snap_err)?;
    f.seek(SeekFrom::Start(0)).map_err(snap_err)?;
    Ok(tokio::fs::File::from_std(f))
}

impl RaftSnapshotBuilder<TypeConfig> for MemSm {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let (meta, bytes) = {
            let mut sm = lock(&self.0);
            let bytes = postcard::to_allocvec(&sm.kv).map_err(snap_err)?;
            let meta = Meta {
                last_log_id: sm.applied,
                last_membership: sm.membership.clone(),
                snapshot_id: format!("mem-{:?}", sm.applied.map(|l| l.index)),
            };
            sm.snapshot = Some((meta.clone(), bytes.clone()));
            (meta, bytes)
        };
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file_with(&bytes).await?),
        })
    }
}

impl RaftStateMachine<TypeConfig> for MemSm {
    type SnapshotBuilder = MemSm;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        let sm = lock(&self.0);
        Ok((sm.applied, sm.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut sm = lock(&self.0);
        let mut responses = Vec::new();
        for entry in entries {
            sm.applied = Some(entry.log_id);
            responses.push(match &entry.payload {
                EntryPayload::Normal(request) => apply(&mut sm.kv, request),
                EntryPayload::Membership(m) => {
                    sm.membership = Membership::new(Some(entry.log_id), m.clone());
                    Response {
                        ok: true,
                        ..Response::default()
                    }
                }
                EntryPayload::Blank => Response {
                    ok: true,
                    ..Response::default()
                },
            });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        Ok(Box::new(file_with(&[]).await?))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let mut f = snapshot.into_std().await;
        let mut bytes = Vec::new();
        f.seek(SeekFrom::Start(0)).map_err(snap_err)?;
        f.read_to_end(&mut bytes).map_err(snap_err)?;
        let kv = postcard::from_bytes(&bytes).map_err(snap_err)?;
        let mut sm = lock(&self.0);
        sm.kv = kv;
        sm.applied = meta.last_log_id;
        sm.membership = meta.last_membership.clone();
        sm.snapshot = Some((meta.clone(), bytes));
        Ok(())
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = lock(&self.0).snapshot.clone();
        match current {
            Some((meta, bytes)) => Ok(Some(Snapshot {
                meta,
                snapshot: Box::new(file_with(&bytes).await?),
            })),
            None => Ok(None),
        }
    }
}
