//! The raft log in its own mapkv file.
//!
//! Trees: `log` maps the big-endian log index (8 bytes, so byte order is index
//! order) to an encoded `Entry`; `log_meta` holds `vote`, `committed` and `purged`.
//!
//! Group commit (the default): a writer thread owns the log's appends. `append`
//! puts the entries in an in-memory `pending` table (readers see the database with
//! `pending` laid over it, so the entries are readable when `append` returns) and
//! queues them with openraft's flush callback. The writer takes everything queued,
//! writes it in one `Immediate` transaction (one fdatasync), removes what it wrote
//! from `pending` and only then calls the callbacks; the appends that arrive during
//! one sync form the next batch. (openraft 0.9.25's core awaits each append's
//! callback before its next message, so in practice a batch holds one append; see
//! `crate::Batcher` for grouping concurrent writes.) Votes, truncates and purges
//! are queued to the same thread as jobs: the writer commits the appends queued
//! before a job, then runs the job (an `Immediate` commit) and answers it, so they stay
//! in order with the appends, and openraft's async calls await the answer instead of
//! blocking a tokio worker on an fsync.
//!
//! Without group commit every append is its own `Immediate` commit, a job on the same
//! thread that `append` awaits before it reports the entries flushed.
//!
//! Purges and the state machine: a log store linked to its state machine
//! ([`LogStore::link_state_machine`], which [`crate::open`] does) removes from the file
//! only the entries its state machine's current snapshot covers. A purge past that
//! records the purged id, so the entries after the snapshot up to it are hidden from
//! every read, yet stays on disk until a later purge finds the snapshot past them. The
//! reason: openraft 0.9.25 purges a follower's log as soon as it hands a snapshot
//! install to the state-machine worker, without waiting for the install, and a power
//! loss before the install is durable would otherwise leave the node's old state
//! machine with its next entries gone (`tests/install_purge.rs` has the details and the
//! openraft references). On the next link (the next start) a purged id past the
//! snapshot's last id is moved back to it, and the hidden entries are read again.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use mapkv::{Database, Durability, Error as DbError};
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{
    AnyError, Entry, LogId, OptionalSend, RaftLogId, StorageError, StorageIOError, Vote,
};

use crate::TypeConfig;
use crate::codec;

type NodeId = u64;
type Flushed = LogFlushed<TypeConfig>;

const LOG: &str = "log";
const META: &str = "log_meta";
const KEY_VOTE: &[u8] = b"vote";
const KEY_COMMITTED: &[u8] = b"committed";
const KEY_PURGED: &[u8] = b"purged";

/// How the log store makes appends durable.
#[derive(Clone, Copy, Debug)]
pub struct LogStoreOptions {
    /// True: appends are batched into one fdatasync by a writer thread. False: every
    /// append commits `Immediate` before it reports the entries flushed.
    pub group_commit: bool,
}

impl Default for LogStoreOptions {
    fn default() -> Self {
        LogStoreOptions { group_commit: true }
    }
}

/// The last log id a state machine holds whatever a crash does: its current snapshot's
/// (a state machine that comes back behind its snapshot is restored from it). Shared by
/// a [`crate::StateMachineStore`], which raises it, and the [`LogStore`] linked to it,
/// which removes from its file no entry past it.
#[derive(Default)]
pub(crate) struct DurableFloor(Mutex<Option<LogId<NodeId>>>);

impl DurableFloor {
    /// Raises the floor to `to` (never lowers it).
    pub(crate) fn raise(&self, to: Option<LogId<NodeId>>) {
        let mut floor = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if to > *floor {
            *floor = to;
        }
    }

    fn get(&self) -> Option<LogId<NodeId>> {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The log store: [`RaftLogStorage`] over a mapkv file.
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries the writer has not yet committed; empty without group commit.
    pending: Arc<Mutex<Pending>>,
    /// The first index reads show: the purged index + 1 (0 when nothing was purged).
    /// Entries below it may still be in the file (see the module's documentation).
    visible_from: Arc<AtomicU64>,
    /// With a linked state machine: purges remove from the file no entry past it.
    floor: Option<Arc<DurableFloor>>,
    /// [`LogStoreOptions::group_commit`].
    group_commit: bool,
    /// The writer thread's queue (see the module's documentation); `None` only while
    /// the store is dropped, which stops the thread.
    writer: Option<mpsc::Sender<Op>>,
    /// Joined on drop, so that the file is closed (and unlocked) when the store is.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
    next_seq: u64,
}

/// Entries appended but not yet committed (group commit), by index, each with the
/// sequence number of the append that put it there.
#[derive(Default)]
struct Pending {
    entries: BTreeMap<u64, (u64, Entry<TypeConfig>)>,
}

enum Op {
    /// Write these encoded entries (with their sequence number), then call back.
    Append {
        seq: u64,
        entries: Vec<(u64, Vec<u8>)>,
        callback: Flushed,
    },
    /// Once everything queued before is committed, run `job` and answer with its
    /// result (with the error of those commits, without running it, if they failed).
    Run { job: Job, reply: Reply },
    /// The encoded committed log id, written with the next batch.
    Committed(Vec<u8>),
}

/// A write the writer thread runs in queue order.
type Job = Box<dyn FnOnce(&Database) -> Result<(), DbError> + Send>;
/// How the writer answers a job: a channel send, async or blocking.
type Reply = Box<dyn FnOnce(Result<(), String>) + Send>;

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the channel ends the writer after it has answered every callback.
        self.writer = None;
        if let Some(t) = self.writer_thread.take() {
            let _ = t.join();
        }
    }
}

/// A cloneable reader of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
    pending: Arc<Mutex<Pending>>,
    visible_from: Arc<AtomicU64>,
}

fn read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_logs(AnyError::new(&e)).into()
}

fn write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_logs(AnyError::new(&e)).into()
}

fn vote_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_vote(AnyError::new(&e)).into()
}

/// A range of log keys.
type KeyRange = (Bound<[u8; 8]>, Bound<[u8; 8]>);

fn index_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

fn key_bound(b: Bound<&u64>) -> Bound<[u8; 8]> {
    match b {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Reads one metadata value; absent tree or key: `None`.
fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &[u8],
) -> Result<Option<T>, StorageError<NodeId>> {
    let rtx = db.begin_read().map_err(read_err)?;
    let tree = match rtx.open_tree(META) {
        Ok(t) => t,
        Err(DbError::TreeNotFound(_)) => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    match tree.get(key).map_err(read_err)? {
        Some(bytes) => Ok(Some(codec::decode(bytes).map_err(read_err)?)),
        None => Ok(None),
    }
}

fn write_meta<T: serde::Serialize>(
    db: &Database,
    key: &[u8],
    value: &T,
    durability: Durability,
) -> Result<(), DbError> {
    let bytes = codec::encode(value).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
    let mut wtx = db.begin_write()?;
    wtx.set_durability(durability);
    wtx.open_tree(META)?.insert(key, &bytes)?;
    wtx.commit()
}

fn writer_loop(
    db: Arc<Database>,
    rx: mpsc::Receiver<Op>,
    pending: Arc<Mutex<Pending>>,
    syncs: Arc<AtomicU64>,
) {
    while let Ok(first) = rx.recv() {
        // A batch is every append and committed id queued up to the first job (or all
        // of them): the job must see them committed, and what comes after it must not.
        let mut batch = Vec::new();
        let mut run = None;
        match first {
            Op::Run { job, reply } => run = Some((job, reply)),
            op => {
                batch.push(op);
                for op in rx.try_iter() {
                    match op {
                        Op::Run { job, reply } => {
                            run = Some((job, reply));
                            break;
                        }
                        op => batch.push(op),
                    }
                }
            }
        }
        let result = if batch.is_empty() {
            Ok(())
        } else {
            commit_batch(&db, batch, &pending, &syncs)
        };
        if let Some((job, reply)) = run {
            reply(result.and_then(|()| job(&db).map_err(|e| e.to_string())));
        }
    }
}

/// Writes `batch` (appends and committed ids) in one transaction, then calls the
/// appends' callbacks with the result.
fn commit_batch(
    db: &Database,
    batch: Vec<Op>,
    pending: &Mutex<Pending>,
    syncs: &AtomicU64,
) -> Result<(), String> {
    // A batch of committed-id updates alone needs no sync: openraft treats the
    // committed id as optional, and the next append's sync covers it.
    let only_committed = batch.iter().all(|op| matches!(op, Op::Committed(_)));
    let write = || -> Result<(), DbError> {
        let mut wtx = db.begin_write()?;
        wtx.set_durability(if only_committed {
            Durability::None
        } else {
            Durability::Immediate
        });
        {
            let mut tree = wtx.open_tree(LOG)?;
            for op in &batch {
                if let Op::Append { entries, .. } = op {
                    for (index, bytes) in entries {
                        tree.insert(&index_key(*index), bytes)?;
                    }
                }
            }
        }
        let committed = batch.iter().rev().find_map(|op| match op {
            Op::Committed(bytes) => Some(bytes),
            _ => None,
        });
        if let Some(bytes) = committed {
            wtx.open_tree(META)?.insert(KEY_COMMITTED, bytes)?;
        }
        wtx.commit()
    };
    let result = write().map_err(|e| e.to_string());
    if !only_committed {
        syncs.fetch_add(1, Ordering::Relaxed);
    }
    if result.is_ok() {
        let mut p = lock(pending);
        for op in &batch {
            if let Op::Append { seq, entries, .. } = op {
                for (index, _) in entries {
                    // A later append may have replaced the entry meanwhile: keep that one.
                    if p.entries.get(index).is_some_and(|(s, _)| s == seq) {
                        p.entries.remove(index);
                    }
                }
            }
        }
    }
    for op in batch {
        if let Op::Append { callback, .. } = op {
            callback.log_io_completed(result.clone().map_err(std::io::Error::other));
        }
    }
    result
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Opens or creates the log file at `path`. A store opened alone removes purged
    /// entries from the file at once; link it to its node's state machine
    /// ([`LogStore::link_state_machine`], or open both with [`crate::open`]) before
    /// handing it to openraft.
    pub fn open(path: impl AsRef<Path>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
        LogStore::from_database(Arc::new(Database::open(path)?), options)
    }

    /// The log store over `db`, an open database that holds a log (or nothing yet):
    /// for a database opened some other way than [`LogStore::open`] does, such as over
    /// the simulated disk of the power-loss tests. The store writes to `db` from its
    /// writer thread: nothing else may write the log's trees meanwhile.
    pub fn from_database(db: Arc<Database>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
        let purged: Option<LogId<NodeId>> = read_meta(&db, KEY_PURGED)
            .map_err(|e| DbError::Io(std::io::Error::other(e.to_string())))?;
        let visible_from = Arc::new(AtomicU64::new(purged.map_or(0, |p| p.index + 1)));
        let syncs = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (writer, rx) = mpsc::channel();
        let (db2, pending2, syncs2) = (Arc::clone(&db), Arc::clone(&pending), Arc::clone(&syncs));
        let writer_thread = std::thread::Builder::new()
            .name("mapkv-raft-log".into())
            .spawn(move || writer_loop(db2, rx, pending2, syncs2))?;
        Ok(LogStore {
            db,
            pending,
            visible_from,
            floor: None,
            group_commit: options.group_commit,
            writer: Some(writer),
            writer_thread: Some(writer_thread),
            syncs,
            next_seq: 0,
        })
    }

    /// Links the log to the state machine `sm` of the same node, which [`crate::open`]
    /// does (call it once, before the stores go to openraft, when opening them one by
    /// one). From then on a purge removes from the file only entries `sm`'s snapshot
    /// covers, and hides the others (see the module's documentation). First, if the log
    /// was purged past the last id of `sm`'s snapshot (a crash during a snapshot
    /// install), the purged id goes back to it: the state machine is at least there
    /// (it restarts from the snapshot otherwise), so openraft finds every entry it
    /// still needs, and a leader finds the entries after its snapshot (openraft purges
    /// no further than its snapshot, and replicates from there). That fails if the
    /// entries are not all in the file.
    pub fn link_state_machine(&mut self, sm: &crate::StateMachineStore) -> mapkv::Result<()> {
        let floor = sm.durable_floor();
        self.barrier_blocking()?;
        let purged: Option<LogId<NodeId>> = read_meta(&self.db, KEY_PURGED)
            .map_err(|e| DbError::Io(std::io::Error::other(e.to_string())))?;
        let snapshot = floor.get();
        if purged > snapshot {
            self.unpurge(snapshot)?;
        }
        self.floor = Some(floor);
        Ok(())
    }

    /// Moves the purged id back to `to`: the entries after it are all in the file (the
    /// first one past `to` is `to + 1`, or there is none).
    ///
    /// Why this is safe: the log is purged past its snapshot only by openraft's purge
    /// for a snapshot install that did not finish (a finished install has switched the
    /// snapshot too before openraft hears of it, and every other purge stops at a
    /// snapshot, which is durable before openraft learns of it).
    /// openraft replies to the leader only once the install is done
    /// (engine/engine_impl.rs:502-512 in 0.9.25) and runs none of the node's later
    /// commands before that reply (`run_engine_commands` puts the postponed reply back
    /// at the front of its queue and stops, core/raft_core.rs:890-906,
    /// engine/engine_output.rs:69-72). So nothing the node told anyone depends on that
    /// purge: the log goes back to what it held before the install, entries the node
    /// had written itself.
    fn unpurge(&mut self, to: Option<LogId<NodeId>>) -> mapkv::Result<()> {
        let next = to.map_or(0, |l| l.index + 1);
        {
            let rtx = self.db.begin_read()?;
            let first = match rtx.open_tree(LOG) {
                Ok(tree) => match tree.range(index_key(next)..)?.next() {
                    Some(item) => Some(u64::from_be_bytes(item?.0.try_into().map_err(|_| {
                        DbError::Io(std::io::Error::other("log key is not 8 bytes"))
                    })?)),
                    None => None,
                },
                Err(DbError::TreeNotFound(_)) => None,
                Err(e) => return Err(e),
            };
            if first.is_some_and(|f| f != next) {
                return Err(DbError::Io(std::io::Error::other(format!(
                    "the log was purged past the snapshot (last {to:?}) and the \
                     entries from {next} are gone (the next one is {first:?})"
                ))));
            }
        }
        let mut wtx = self.db.begin_write()?;
        {
            let mut meta = wtx.open_tree(META)?;
            match &to {
                Some(id) => {
                    let bytes =
                        codec::encode(id).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
                    meta.insert(KEY_PURGED, &bytes)?;
                }
                None => {
                    meta.remove(KEY_PURGED)?;
                }
            }
        }
        wtx.set_durability(Durability::Immediate);
        wtx.commit()?;
        self.visible_from.store(next, Ordering::Release);
        Ok(())
    }

    fn send(&self, op: Op) -> Result<(), DbError> {
        let stopped = || DbError::Io(std::io::Error::other("log writer thread stopped"));
        self.writer
            .as_ref()
            .ok_or_else(stopped)?
            .send(op)
            .map_err(|_| stopped())
    }

    /// Waits, blocking the calling thread, until the writer has committed everything
    /// queued before: for [`LogStore::link_state_machine`], which runs at open.
    fn barrier_blocking(&self) -> Result<(), DbError> {
        let (reply, answer) = mpsc::channel();
        self.send(Op::Run {
            job: Box::new(|_| Ok(())),
            reply: Box::new(move |r| {
                let _ = reply.send(r);
            }),
        })?;
        answer
            .recv()
            .map_err(|_| DbError::Io(std::io::Error::other("log writer thread stopped")))?
            .map_err(|e| DbError::Io(std::io::Error::other(e)))
    }

    /// Runs `job` on the writer thread after everything queued before is committed,
    /// and waits for it without blocking the tokio worker. Once queued, the job runs
    /// in its turn even if this future is dropped, so jobs and appends keep the order
    /// in which they were queued.
    async fn run(
        &self,
        job: impl FnOnce(&Database) -> Result<(), DbError> + Send + 'static,
    ) -> Result<(), DbError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.send(Op::Run {
            job: Box::new(job),
            reply: Box::new(move |r| {
                let _ = reply.send(r);
            }),
        })?;
        answer
            .await
            .map_err(|_| DbError::Io(std::io::Error::other("log writer thread stopped")))?
            .map_err(|e| DbError::Io(std::io::Error::other(e)))
    }

    fn reader(&self) -> LogReader {
        LogReader {
            db: Arc::clone(&self.db),
            pending: Arc::clone(&self.pending),
            visible_from: Arc::clone(&self.visible_from),
        }
    }

    /// fdatasyncs run for appends since open (one per group with group commit).
    pub fn append_syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// The log's database, for inspection (tests, tools).
    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    /// Removes the entries in `range` (if any) and records `purged` (if any), in one
    /// durable commit on the writer thread, after the appends queued before (they must
    /// be on disk before they are removed); then drops from `pending` the entries
    /// appended before this call that `keep` refuses.
    async fn remove_range(
        &self,
        range: Option<KeyRange>,
        purged: Option<LogId<NodeId>>,
        keep: impl Fn(u64) -> bool + Send + 'static,
    ) -> Result<(), DbError> {
        let pending = Arc::clone(&self.pending);
        let visible_from = Arc::clone(&self.visible_from);
        // Appends after this call have a larger sequence number: their entries stay.
        let seq = self.next_seq;
        self.run(move |db| {
            let mut wtx = db.begin_write()?;
            if let Some(range) = range {
                wtx.open_tree(LOG)?.remove_range(range)?;
            }
            if let Some(id) = &purged {
                let bytes = codec::encode(id).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
                wtx.open_tree(META)?.insert(KEY_PURGED, &bytes)?;
            }
            wtx.set_durability(Durability::Immediate);
            wtx.commit()?;
            if let Some(id) = purged {
                visible_from.store(id.index + 1, Ordering::Release);
            }
            lock(&pending)
                .entries
                .retain(|i, (s, _)| *s > seq || keep(*i));
            Ok(())
        })
        .await
    }
}

impl LogReader {
    /// The database's entries in `range` with the pending ones laid over them.
    fn entries(
        &self,
        range: impl RangeBounds<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        // Purged entries may still be in the file: start at the first visible one.
        let visible_from = self.visible_from.load(Ordering::Acquire);
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => match i.checked_add(1) {
                Some(i) => i,
                None => return Ok(Vec::new()),
            },
            Bound::Unbounded => 0,
        }
        .max(visible_from);
        let empty = match range.end_bound() {
            Bound::Included(e) => start > *e,
            Bound::Excluded(e) => start >= *e,
            Bound::Unbounded => false,
        };
        if empty {
            return Ok(Vec::new());
        }
        let range = (Bound::Included(start), range.end_bound().cloned());
        // Pending first: the writer removes an entry from `pending` only after its
        // commit, so an entry missing from this copy is in the database read below.
        let mut merged: BTreeMap<u64, Entry<TypeConfig>> = lock(&self.pending)
            .entries
            .range(range)
            .map(|(i, (_, e))| (*i, e.clone()))
            .collect();
        let rtx = self.db.begin_read().map_err(read_err)?;
        match rtx.open_tree(LOG) {
            Ok(tree) => {
                let bounds = (key_bound(range.start_bound()), key_bound(range.end_bound()));
                let mut read = 0;
                for item in tree.range(bounds).map_err(read_err)? {
                    let (k, v) = item.map_err(read_err)?;
                    let index =
                        u64::from_be_bytes(k.try_into().map_err(|_| {
                            read_err(std::io::Error::other("log key is not 8 bytes"))
                        })?);
                    if let std::collections::btree_map::Entry::Vacant(slot) = merged.entry(index) {
                        slot.insert(codec::decode(v).map_err(read_err)?);
                    }
                    // The first `limit` keys of the union lie among the first `limit`
                    // of the database and the pending ones.
                    read += 1;
                    if read >= limit {
                        break;
                    }
                }
            }
            Err(DbError::TreeNotFound(_)) => {}
            Err(e) => return Err(read_err(e)),
        }
        Ok(merged.into_values().take(limit).collect())
    }

    /// The last visible entry's id (`None` also when every entry left is purged).
    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        let visible_from = self.visible_from.load(Ordering::Acquire);
        if let Some((_, (_, e))) = lock(&self.pending).entries.last_key_value() {
            return Ok(Some(*e.get_log_id()).filter(|l| l.index >= visible_from));
        }
        let rtx = self.db.begin_read().map_err(read_err)?;
        match rtx.open_tree(LOG) {
            Ok(tree) => match tree.iter().map_err(read_err)?.next_back() {
                Some(item) => {
                    let (_, v) = item.map_err(read_err)?;
                    let entry: Entry<TypeConfig> = codec::decode(v).map_err(read_err)?;
                    Ok(Some(*entry.get_log_id()).filter(|l| l.index >= visible_from))
                }
                None => Ok(None),
            },
            Err(DbError::TreeNotFound(_)) => Ok(None),
            Err(e) => Err(read_err(e)),
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.entries(range, usize::MAX)
    }

    async fn limited_get_log_entries(
        &mut self,
        start: u64,
        end: u64,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        // Bounds one replication message; never empty for a non-empty range that exists.
        self.entries(start..end, 4096)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        self.reader().entries(range, usize::MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = read_meta(&self.db, KEY_PURGED)?;
        let last = self.reader().last_log_id()?;
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Writes are serialized (openraft's rule): the appends queued before go first.
        let vote = *vote;
        self.run(move |db| write_meta(db, KEY_VOTE, &vote, Durability::Immediate))
            .await
            .map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read_meta(&self.db, KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Optional in openraft: it rides along with the writer's next batch instead of
        // making openraft's core wait for the writer.
        let bytes = codec::encode(&committed).map_err(write_err)?;
        self.send(Op::Committed(bytes)).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.run(|_| Ok(())).await.map_err(read_err)?;
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: Flushed) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let mut encoded = Vec::with_capacity(entries.len());
        for entry in &entries {
            encoded.push((
                entry.get_log_id().index,
                codec::encode(entry).map_err(write_err)?,
            ));
        }
        if !self.group_commit {
            let syncs = Arc::clone(&self.syncs);
            self.run(move |db| {
                let mut wtx = db.begin_write()?;
                wtx.set_durability(Durability::Immediate);
                {
                    let mut tree = wtx.open_tree(LOG)?;
                    for (index, bytes) in &encoded {
                        tree.insert(&index_key(*index), bytes)?;
                    }
                }
                wtx.commit()?;
                syncs.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .await
            .map_err(write_err)?;
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        {
            let mut p = lock(&self.pending);
            for entry in entries {
                p.entries.insert(entry.get_log_id().index, (seq, entry));
            }
        }
        let op = Op::Append {
            seq,
            entries: encoded,
            callback,
        };
        let sent = match &self.writer {
            Some(tx) => tx.send(op).map_err(|mpsc::SendError(op)| op),
            None => Err(op),
        };
        if let Err(op) = sent {
            if let Op::Append { callback, .. } = op {
                callback.log_io_completed(Err(std::io::Error::other("log writer thread stopped")));
            }
            return Err(write_err(std::io::Error::other(
                "log writer thread stopped",
            )));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        let from = Bound::Included(index_key(log_id.index));
        let to = log_id.index;
        self.remove_range(Some((from, Bound::Unbounded)), None, move |i| i < to)
            .await
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        // Linked to a state machine: the file keeps what its snapshot does not cover.
        let remove_to = match &self.floor {
            None => Some(log_id.index),
            Some(floor) => floor.get().map(|f| f.index.min(log_id.index)),
        };
        let range = remove_to.map(|to| (Bound::Unbounded, Bound::Included(index_key(to))));
        let from = log_id.index;
        self.remove_range(range, Some(log_id), move |i| i > from)
            .await
            .map_err(write_err)
    }
}
