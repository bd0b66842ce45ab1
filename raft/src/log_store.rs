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
//! first wait for the writer to drain (a barrier), then commit `Immediate`
//! themselves.
//!
//! Without group commit every append is its own `Immediate` commit.

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

/// The log store: [`RaftLogStorage`] over a mapkv file.
pub struct LogStore {
    db: Arc<Database>,
    /// Appended entries the writer has not yet committed; empty without group commit.
    pending: Arc<Mutex<Pending>>,
    /// Present with group commit; dropping it stops the writer thread.
    writer: Option<mpsc::Sender<Op>>,
    /// Joined on drop, so that the file is closed (and unlocked) when the store is.
    writer_thread: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
    next_seq: u64,
}

/// Entries appended but not yet committed, by index, each with the sequence number
/// of the append that put it there.
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
    /// Answer once everything queued before is committed.
    Barrier(mpsc::Sender<Result<(), String>>),
    /// The encoded committed log id, written with the next batch.
    Committed(Vec<u8>),
}

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
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
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
            let mut p = lock(&pending);
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
            match op {
                Op::Append { callback, .. } => {
                    callback.log_io_completed(result.clone().map_err(std::io::Error::other))
                }
                Op::Barrier(reply) => {
                    let _ = reply.send(result.clone());
                }
                Op::Committed(_) => {}
            }
        }
    }
}

fn lock(pending: &Mutex<Pending>) -> std::sync::MutexGuard<'_, Pending> {
    pending.lock().unwrap_or_else(|p| p.into_inner())
}

impl LogStore {
    /// Opens or creates the log file at `path`.
    pub fn open(path: impl AsRef<Path>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
        LogStore::from_database(Arc::new(Database::open(path)?), options)
    }

    /// The log store over `db`, an open database that holds a log (or nothing yet):
    /// for a database opened some other way than [`LogStore::open`] does, such as over
    /// the simulated disk of the power-loss tests. The store writes to `db` from its
    /// writer thread (group commit): nothing else may write the log's trees meanwhile.
    pub fn from_database(db: Arc<Database>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
        let syncs = Arc::new(AtomicU64::new(0));
        let pending = Arc::new(Mutex::new(Pending::default()));
        let (writer, writer_thread) = if options.group_commit {
            let (tx, rx) = mpsc::channel();
            let (db2, pending2, syncs2) =
                (Arc::clone(&db), Arc::clone(&pending), Arc::clone(&syncs));
            let thread = std::thread::Builder::new()
                .name("mapkv-raft-log".into())
                .spawn(move || writer_loop(db2, rx, pending2, syncs2))?;
            (Some(tx), Some(thread))
        } else {
            (None, None)
        };
        Ok(LogStore {
            db,
            pending,
            writer,
            writer_thread,
            syncs,
            next_seq: 0,
        })
    }

    /// Waits until the writer has committed everything queued before.
    fn barrier(&self) -> Result<(), DbError> {
        let Some(tx) = &self.writer else {
            return Ok(());
        };
        let (reply, answer) = mpsc::channel();
        let stopped = || DbError::Io(std::io::Error::other("log writer thread stopped"));
        tx.send(Op::Barrier(reply)).map_err(|_| stopped())?;
        answer
            .recv()
            .map_err(|_| stopped())?
            .map_err(|e| DbError::Io(std::io::Error::other(e)))
    }

    fn reader(&self) -> LogReader {
        LogReader {
            db: Arc::clone(&self.db),
            pending: Arc::clone(&self.pending),
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

    fn remove_range(
        &self,
        range: impl RangeBounds<[u8; 8]>,
        purged: Option<&LogId<NodeId>>,
    ) -> Result<(), DbError> {
        // Appends queued before this call must be on disk before they are removed.
        self.barrier()?;
        let mut wtx = self.db.begin_write()?;
        {
            let mut tree = wtx.open_tree(LOG)?;
            tree.remove_range((range.start_bound().cloned(), range.end_bound().cloned()))?;
        }
        if let Some(id) = purged {
            let bytes = codec::encode(id).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
            wtx.open_tree(META)?.insert(KEY_PURGED, &bytes)?;
        }
        wtx.set_durability(Durability::Immediate);
        wtx.commit()
    }
}

impl LogReader {
    /// The database's entries in `range` with the pending ones laid over them.
    fn entries(
        &self,
        range: impl RangeBounds<u64> + Clone,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        // Pending first: the writer removes an entry from `pending` only after its
        // commit, so an entry missing from this copy is in the database read below.
        let mut merged: BTreeMap<u64, Entry<TypeConfig>> = lock(&self.pending)
            .entries
            .range(range.clone())
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

    fn last_log_id(&self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        if let Some((_, (_, e))) = lock(&self.pending).entries.last_key_value() {
            return Ok(Some(*e.get_log_id()));
        }
        let rtx = self.db.begin_read().map_err(read_err)?;
        match rtx.open_tree(LOG) {
            Ok(tree) => match tree.iter().map_err(read_err)?.next_back() {
                Some(item) => {
                    let (_, v) = item.map_err(read_err)?;
                    let entry: Entry<TypeConfig> = codec::decode(v).map_err(read_err)?;
                    Ok(Some(*entry.get_log_id()))
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
        self.barrier().map_err(vote_err)?;
        write_meta(&self.db, KEY_VOTE, vote, Durability::Immediate).map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read_meta(&self.db, KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Optional in openraft. With group commit it rides along with the next batch
        // instead of making openraft's core wait for the writer.
        match &self.writer {
            Some(tx) => {
                let bytes = codec::encode(&committed).map_err(write_err)?;
                tx.send(Op::Committed(bytes))
                    .map_err(|_| write_err(std::io::Error::other("log writer thread stopped")))
            }
            None => {
                write_meta(&self.db, KEY_COMMITTED, &committed, Durability::None).map_err(write_err)
            }
        }
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        self.barrier().map_err(read_err)?;
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
        let Some(tx) = &self.writer else {
            let write = || -> Result<(), DbError> {
                let mut wtx = self.db.begin_write()?;
                wtx.set_durability(Durability::Immediate);
                {
                    let mut tree = wtx.open_tree(LOG)?;
                    for (index, bytes) in &encoded {
                        tree.insert(&index_key(*index), bytes)?;
                    }
                }
                wtx.commit()
            };
            write().map_err(write_err)?;
            self.syncs.fetch_add(1, Ordering::Relaxed);
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
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
        if let Err(mpsc::SendError(op)) = tx.send(op) {
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
        self.remove_range(index_key(log_id.index).., None)
            .map_err(write_err)?;
        lock(&self.pending).entries.retain(|i, _| *i < log_id.index);
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(..=index_key(log_id.index), Some(&log_id))
            .map_err(write_err)?;
        lock(&self.pending).entries.retain(|i, _| *i > log_id.index);
        Ok(())
    }
}
