//! The raft log in its own mapkv file.
//!
//! Trees: `log` maps the big-endian log index (8 bytes, so byte order is index
//! order) to an encoded `Entry`; `log_meta` holds `vote`, `committed` and `purged`.
//!
//! Durability: every change is one mapkv commit, and mapkv recovers to a prefix of
//! its commit sequence, so a crash can lose only the newest commits, never an older
//! one while keeping a newer. `append` commits with `Durability::None` (readable at
//! once) and hands the flush callback to the flusher thread, which runs one
//! `Immediate` commit for every callback queued while it was busy and only then
//! reports them flushed: group commit, one fdatasync for many appends.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;

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
    /// True: appends are batched into one fdatasync by a flusher thread. False: every
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
    /// Present with group commit; dropping it stops the flusher thread.
    flusher: Option<mpsc::Sender<Flushed>>,
    /// Joined on drop, so that the file is closed (and unlocked) when the store is.
    flusher_thread: Option<std::thread::JoinHandle<()>>,
    syncs: Arc<AtomicU64>,
}

impl Drop for LogStore {
    fn drop(&mut self) {
        // Closing the channel ends the flusher after it has answered every callback.
        self.flusher = None;
        if let Some(t) = self.flusher_thread.take() {
            let _ = t.join();
        }
    }
}

/// A cloneable reader of the log, for openraft's replication tasks.
#[derive(Clone)]
pub struct LogReader {
    db: Arc<Database>,
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

/// Makes every commit so far durable: an empty `Immediate` commit fsyncs.
fn sync(db: &Database) -> Result<(), DbError> {
    let mut wtx = db.begin_write()?;
    wtx.set_durability(Durability::Immediate);
    wtx.commit()
}

fn flusher_loop(db: Arc<Database>, rx: mpsc::Receiver<Flushed>, syncs: Arc<AtomicU64>) {
    // Each callback was sent after its append's commit returned, so the sync below,
    // begun after the callback was received, covers that commit.
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter());
        let result = sync(&db);
        syncs.fetch_add(1, Ordering::Relaxed);
        for callback in batch {
            let r = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(std::io::Error::other(e.to_string())),
            };
            callback.log_io_completed(r);
        }
    }
}

impl LogStore {
    /// Opens or creates the log file at `path`.
    pub fn open(path: impl AsRef<Path>, options: LogStoreOptions) -> mapkv::Result<LogStore> {
        let db = Arc::new(Database::open(path)?);
        let syncs = Arc::new(AtomicU64::new(0));
        let (flusher, flusher_thread) = if options.group_commit {
            let (tx, rx) = mpsc::channel();
            let (db2, syncs2) = (Arc::clone(&db), Arc::clone(&syncs));
            let thread = std::thread::Builder::new()
                .name("mapkv-raft-flush".into())
                .spawn(move || flusher_loop(db2, rx, syncs2))?;
            (Some(tx), Some(thread))
        } else {
            (None, None)
        };
        Ok(LogStore {
            db,
            flusher,
            flusher_thread,
            syncs,
        })
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
        let mut wtx = self.db.begin_write()?;
        {
            let mut tree = wtx.open_tree(LOG)?;
            let keys: Vec<Vec<u8>> = tree
                .range(range)?
                .map(|r| r.map(|(k, _)| k.to_vec()))
                .collect::<Result<_, _>>()?;
            for k in keys {
                tree.remove(&k)?;
            }
        }
        if let Some(id) = purged {
            let bytes = codec::encode(id).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
            wtx.open_tree(META)?.insert(KEY_PURGED, &bytes)?;
        }
        // A lost truncate or purge is harmless only if it is not reordered after later
        // appends, which mapkv's prefix recovery guarantees; Immediate keeps the
        // argument short anyway: these are rare.
        wtx.set_durability(Durability::Immediate);
        wtx.commit()
    }
}

impl LogReader {
    fn entries(
        &self,
        range: impl RangeBounds<u64>,
        limit: usize,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<NodeId>> {
        let rtx = self.db.begin_read().map_err(read_err)?;
        let tree = match rtx.open_tree(LOG) {
            Ok(t) => t,
            Err(DbError::TreeNotFound(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let bounds = (key_bound(range.start_bound()), key_bound(range.end_bound()));
        let mut out = Vec::new();
        for item in tree.range(bounds).map_err(read_err)? {
            if out.len() >= limit {
                break;
            }
            let (_, v) = item.map_err(read_err)?;
            out.push(codec::decode(v).map_err(read_err)?);
        }
        Ok(out)
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
        LogReader {
            db: Arc::clone(&self.db),
        }
        .entries(range, usize::MAX)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<NodeId>> {
        let last_purged_log_id: Option<LogId<NodeId>> = read_meta(&self.db, KEY_PURGED)?;
        let rtx = self.db.begin_read().map_err(read_err)?;
        let last = match rtx.open_tree(LOG) {
            Ok(tree) => match tree.iter().map_err(read_err)?.next_back() {
                Some(item) => {
                    let (_, v) = item.map_err(read_err)?;
                    let entry: Entry<TypeConfig> = codec::decode(v).map_err(read_err)?;
                    Some(*entry.get_log_id())
                }
                None => None,
            },
            Err(DbError::TreeNotFound(_)) => None,
            Err(e) => return Err(read_err(e)),
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id: last.or(last_purged_log_id),
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            db: Arc::clone(&self.db),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), StorageError<NodeId>> {
        write_meta(&self.db, KEY_VOTE, vote, Durability::Immediate).map_err(vote_err)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, StorageError<NodeId>> {
        read_meta(&self.db, KEY_VOTE)
    }

    async fn save_committed(
        &mut self,
        committed: Option<LogId<NodeId>>,
    ) -> Result<(), StorageError<NodeId>> {
        // Optional in openraft; durable with the next sync, which is enough.
        write_meta(&self.db, KEY_COMMITTED, &committed, Durability::None).map_err(write_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, StorageError<NodeId>> {
        Ok(read_meta::<Option<LogId<NodeId>>>(&self.db, KEY_COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: Flushed) -> Result<(), StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let durability = if self.flusher.is_some() {
            Durability::None
        } else {
            Durability::Immediate
        };
        let write = || -> Result<(), DbError> {
            let mut wtx = self.db.begin_write()?;
            wtx.set_durability(durability);
            {
                let mut tree = wtx.open_tree(LOG)?;
                for entry in entries {
                    let bytes =
                        codec::encode(&entry).map_err(|e| DbError::Io(std::io::Error::other(e)))?;
                    tree.insert(&index_key(entry.get_log_id().index), &bytes)?;
                }
            }
            wtx.commit()
        };
        write().map_err(write_err)?;
        match &self.flusher {
            Some(tx) => {
                if let Err(mpsc::SendError(callback)) = tx.send(callback) {
                    callback.log_io_completed(Err(std::io::Error::other("flusher thread stopped")));
                }
            }
            None => {
                self.syncs.fetch_add(1, Ordering::Relaxed);
                callback.log_io_completed(Ok(()));
            }
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(index_key(log_id.index).., None)
            .map_err(write_err)
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), StorageError<NodeId>> {
        self.remove_range(..=index_key(log_id.index), Some(&log_id))
            .map_err(write_err)
    }
}
