//! The key-value state machine and its snapshots, in mapkv files of their own.
//!
//! Files in the node's folder:
//! - `sm.mapkv`: tree `kv` (the user's keys and values) and tree `sm_meta` with
//!   `applied` (last applied log id) and `membership` (last membership). One apply
//!   batch is one write transaction over both trees, so the data and the applied log
//!   id are never apart after a crash. It commits with `Durability::None`: a crash
//!   may take the state machine back to an earlier applied id (never behind the
//!   snapshot: `open` restarts from the snapshot if it is newer), and openraft
//!   re-applies the rest from the log.
//! - `snapshot.mapkv`: the current snapshot, a consistent compacted copy of
//!   `sm.mapkv` (`Database::compact_to` reads one snapshot while applies go on),
//!   with `snapshot_id` added to its `sm_meta`. The file is self-describing: its
//!   snapshot metadata is read back from it. openraft streams it in chunks straight
//!   from the file.
//!
//! Install: the received bytes go to `snapshot.tmp` (synced; it becomes the node's
//! snapshot). That file is opened read-only and `check()`ed, and every one of its
//! trees is built into a fresh file `sm.install` with `Database::bulk_load`, in key
//! order straight from a range over the snapshot (one load per tree, streamed: memory
//! stays bounded), except small trees, copied in one write transaction (see
//! [`BULK_LOAD_MIN_ENTRIES`]). The new file is `check()`ed, must hold the snapshot's trees with
//! the same entry counts, and its applied log id and membership must match the
//! metadata; it is synced. Then `snapshot.tmp` is renamed over `snapshot.mapkv`, and
//! `rename(sm.install, sm.mapkv)` switches the state machine (directory fsynced after
//! each), after which the database is reopened. A crash before the first rename leaves
//! the old snapshot and state machine (the leftovers are removed at open); between the
//! two, the new snapshot and the old state machine, which `open` rebuilds from the
//! snapshot; after both, the new ones. The state machine is thus never ahead of the
//! snapshot file because of an install, so the log, which openraft purges up to the
//! new snapshot without waiting for the install, is never purged past the snapshot.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use mapkv::{Database, Durability, Error as DbError, Options, TreeOptions, WriteTree};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership,
};

use crate::codec;
use crate::log_store::DurableFloor;
use crate::{Request, Response, TypeConfig};

type NodeId = u64;
type Meta = SnapshotMeta<NodeId, openraft::BasicNode>;
type Membership = StoredMembership<NodeId, openraft::BasicNode>;

const KV: &str = "kv";
const SM_META: &str = "sm_meta";
const KEY_APPLIED: &[u8] = b"applied";
const KEY_MEMBERSHIP: &[u8] = b"membership";
const KEY_SNAPSHOT_ID: &[u8] = b"snapshot_id";

const SM_FILE: &str = "sm.mapkv";
const SNAPSHOT_FILE: &str = "snapshot.mapkv";
const BUILD_FILE: &str = "snapshot.build";
const SNAPSHOT_TMP_FILE: &str = "snapshot.tmp";
const INSTALL_FILE: &str = "sm.install";

struct Shared {
    dir: PathBuf,
    /// Replaced only by an install, under `files`' lock.
    db: RwLock<Arc<Database>>,
    /// Serializes builds and installs, which write the snapshot files and `sm.mapkv`;
    /// held by a blocking thread for the whole build or install.
    files: tokio::sync::Mutex<()>,
    /// The current snapshot's metadata. Held while `snapshot.mapkv` is switched
    /// (renamed, directory synced, metadata set) and while it is opened by name, so
    /// that the file opened always goes with the metadata; never during a compaction
    /// or a load, so that `get_current_snapshot` (openraft's state-machine worker)
    /// does not wait for a build.
    snapshot: tokio::sync::Mutex<Option<Meta>>,
    receive_count: AtomicU64,
    /// The current snapshot's last log id, raised once a snapshot is durable (built,
    /// or installed and switched to): the linked log keeps every entry after it.
    floor: Arc<DurableFloor>,
}

/// The applied log id and every key-value pair, ascending.
pub type Dump = (Option<LogId<NodeId>>, Vec<(Vec<u8>, Vec<u8>)>);

/// The state machine: [`RaftStateMachine`] over `sm.mapkv`. Clones share it (read
/// from a clone while openraft owns the original).
#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

/// Builds a snapshot from a read snapshot of the state machine while applies go on.
pub struct SnapshotBuilder {
    shared: Arc<Shared>,
}

fn sm_read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_state_machine(AnyError::new(&e)).into()
}
fn sm_write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_state_machine(AnyError::new(&e)).into()
}
fn snap_read_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::read_snapshot(None, AnyError::new(&e)).into()
}
fn snap_write_err(e: impl std::error::Error + 'static) -> StorageError<NodeId> {
    StorageIOError::write_snapshot(None, AnyError::new(&e)).into()
}

fn codec_err(e: impl std::fmt::Display) -> DbError {
    DbError::Io(std::io::Error::other(e.to_string()))
}

/// The applied log id and last membership recorded in `db`.
fn applied_state(db: &Database) -> Result<(Option<LogId<NodeId>>, Membership), DbError> {
    let rtx = db.begin_read()?;
    let meta = match rtx.open_tree(SM_META) {
        Ok(t) => t,
        Err(DbError::TreeNotFound(_)) => return Ok((None, Membership::default())),
        Err(e) => return Err(e),
    };
    let applied = match meta.get(KEY_APPLIED)? {
        Some(b) => Some(codec::decode(b).map_err(codec_err)?),
        None => None,
    };
    let membership = match meta.get(KEY_MEMBERSHIP)? {
        Some(b) => codec::decode(b).map_err(codec_err)?,
        None => Membership::default(),
    };
    Ok((applied, membership))
}

/// Reads a snapshot file's metadata (it is stored inside the file).
fn snapshot_meta(path: &Path) -> Result<Meta, DbError> {
    let db = Options::new().read_only(true).open(path)?;
    let (last_log_id, last_membership) = applied_state(&db)?;
    let rtx = db.begin_read()?;
    let id = rtx
        .open_tree(SM_META)?
        .get(KEY_SNAPSHOT_ID)?
        .map(|b| b.to_vec());
    let snapshot_id = match id {
        Some(b) => codec::decode(&b).map_err(codec_err)?,
        None => return Err(codec_err(format!("{}: no snapshot_id", path.display()))),
    };
    Ok(Meta {
        last_log_id,
        last_membership,
        snapshot_id,
    })
}

/// Trees with fewer entries than this are copied with inserts in one write transaction
/// rather than bulk-loaded: a `bulk_load` costs two fdatasyncs and a writer pipeline
/// whatever its size, and `sm_meta` (three entries) is in every snapshot. On a
/// follower, openraft 0.9 answers no heartbeat until an install is done, so every
/// fdatasync saved shortens that pause.
const BULK_LOAD_MIN_ENTRIES: u64 = 1024;

/// Builds a fresh state-machine file at `out` (which must not exist) from the snapshot
/// file `snapshot`: the snapshot is opened read-only and `check()`ed, then its trees are
/// rebuilt in key order straight from ranges over it: each tree of at least
/// [`BULK_LOAD_MIN_ENTRIES`] entries with its own `bulk_load` (one durable commit; the
/// entries stream through, so memory stays bounded whatever the size), and the small
/// ones first, together, in one write transaction, which commits without a sync when a
/// load follows (the load's durable commit makes it durable: recovery yields a prefix of
/// the commits) and durably otherwise. The result is `check()`ed and must hold the same
/// trees with the same entry counts, and is synced. A failure leaves `out` behind, never
/// switched to: the caller removes it (and `open` removes leftovers).
fn rebuild_from_snapshot(snapshot: &Path, out: &Path) -> Result<(), DbError> {
    let src = Options::new().read_only(true).open(snapshot)?;
    src.check()?;
    let src_stats = src.stats()?;
    let (large, small): (Vec<_>, Vec<_>) = src_stats
        .trees
        .iter()
        .partition(|t| t.entries >= BULK_LOAD_MIN_ENTRIES);
    {
        let db = Options::new().page_size(src_stats.page_size).open(out)?;
        let rtx = src.begin_read()?;
        // The state machine's trees have the default options, which `bulk_load` and
        // `open_tree` give a new tree; a tree with other options is refused here
        // rather than rebuilt without them.
        if !small.is_empty() {
            let mut wtx = db.begin_write()?;
            wtx.set_durability(if large.is_empty() {
                Durability::Immediate
            } else {
                Durability::None
            });
            for t in &small {
                let mut tree = wtx.open_tree(&t.name)?;
                for pair in rtx.open_tree_with(&t.name, TreeOptions::new())?.iter()? {
                    let (k, v) = pair?;
                    tree.insert(k, v)?;
                }
            }
            wtx.commit()?;
        }
        for t in &large {
            let tree = rtx.open_tree_with(&t.name, TreeOptions::new())?;
            let mut failed = None;
            let entries = tree.iter()?.map_while(|r| match r {
                Ok(pair) => Some(pair),
                Err(e) => {
                    failed = Some(e);
                    None
                }
            });
            db.bulk_load(&t.name, entries)?;
            if let Some(e) = failed {
                return Err(e);
            }
        }
    }
    // A read-write open syncs what it opens; the loads' commits were durable already.
    let db = Database::open(out)?;
    db.check()?;
    let counts = |s: &mapkv::Stats| -> Vec<(String, u64)> {
        s.trees
            .iter()
            .map(|t| (t.name.clone(), t.entries))
            .collect()
    };
    let (want, got) = (counts(&src_stats), counts(&db.stats()?));
    if want != got {
        return Err(codec_err(format!(
            "rebuilt trees {got:?} differ from the snapshot's {want:?}"
        )));
    }
    drop(db);
    std::fs::File::open(out)?.sync_all()?;
    Ok(())
}

/// Makes renames and creations in `dir` durable.
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

fn remove_if_present(path: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Applies one command, or refuses it (see `request.rs`): a refused command changes
/// nothing and is answered with [`Response::refused`], identically on every replica, so
/// that it never fails the apply (openraft would stop the node, and stop it again at
/// every restart, when the entry is applied again). The commands of a batch are applied
/// or refused one by one. Only the database's own failures (I/O, corruption) are errors.
fn apply_request(kv: &mut WriteTree<'_>, request: &Request) -> Result<Response, DbError> {
    if let Request::Batch(requests) = request {
        return Ok(Response {
            ok: true,
            batch: requests
                .iter()
                .map(|r| apply_request(kv, r))
                .collect::<Result<_, _>>()?,
            ..Response::default()
        });
    }
    if let Err(e) = request.validate() {
        return Ok(Response::refused(&e));
    }
    match apply_command(kv, request) {
        // Unreachable while `sm.mapkv` has the page size the limits assume; should a file
        // have smaller pages, a refusal still beats a fatal error. mapkv checks the
        // sizes before it changes the tree, so nothing was changed.
        Err(e @ (DbError::KeyTooLarge { .. } | DbError::ValueTooLarge { .. })) => {
            Ok(Response::refused(&e))
        }
        result => result,
    }
}

/// Applies a command that is not a batch.
fn apply_command(kv: &mut WriteTree<'_>, request: &Request) -> Result<Response, DbError> {
    let answer = |previous, ok| Response {
        previous,
        ok,
        ..Response::default()
    };
    Ok(match request {
        Request::Set { key, value } => {
            let previous = kv.get(key)?.map(<[u8]>::to_vec);
            kv.insert(key, value)?;
            answer(previous, true)
        }
        Request::Delete { key } => {
            let previous = kv.get(key)?.map(<[u8]>::to_vec);
            if previous.is_some() {
                kv.remove(key)?;
            }
            answer(previous, true)
        }
        Request::CompareAndSwap { key, expected, new } => {
            let previous = kv.get(key)?.map(<[u8]>::to_vec);
            let ok = previous == *expected;
            if ok {
                match new {
                    Some(v) => kv.insert(key, v)?,
                    None => {
                        kv.remove(key)?;
                    }
                }
            }
            answer(previous, ok)
        }
        Request::Batch(_) => unreachable!("apply_request applies a batch command by command"),
    })
}

impl StateMachineStore {
    /// Opens or creates the state machine kept in `dir`.
    pub fn open(dir: impl AsRef<Path>) -> mapkv::Result<StateMachineStore> {
        let dir = dir.as_ref().to_path_buf();
        // Leftovers of a build or install a crash interrupted: never switched to.
        for name in [BUILD_FILE, SNAPSHOT_TMP_FILE, INSTALL_FILE] {
            remove_if_present(&dir.join(name))?;
        }
        let mut db = Database::open(dir.join(SM_FILE))?;
        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let snapshot = if snapshot_path.exists() {
            Some(snapshot_meta(&snapshot_path)?)
        } else {
            None
        };
        // Applies commit with `Durability::None`, so a crash can take the state machine
        // back behind the snapshot, whose entries the log may have purged: start from
        // the snapshot then (the log holds everything after it).
        if let Some(meta) = &snapshot
            && meta.last_log_id > applied_state(&db)?.0
        {
            drop(db);
            let install = dir.join(INSTALL_FILE);
            rebuild_from_snapshot(&snapshot_path, &install)?;
            std::fs::rename(&install, dir.join(SM_FILE))?;
            sync_dir(&dir)?;
            db = Database::open(dir.join(SM_FILE))?;
        }
        let floor = Arc::new(DurableFloor::default());
        floor.raise(snapshot.as_ref().and_then(|m| m.last_log_id));
        Ok(StateMachineStore {
            shared: Arc::new(Shared {
                dir,
                db: RwLock::new(Arc::new(db)),
                files: tokio::sync::Mutex::new(()),
                snapshot: tokio::sync::Mutex::new(snapshot),
                receive_count: AtomicU64::new(0),
                floor,
            }),
        })
    }

    /// What the linked log store may remove up to (see `LogStore::link_state_machine`).
    pub(crate) fn durable_floor(&self) -> Arc<DurableFloor> {
        Arc::clone(&self.shared.floor)
    }

    /// The state machine's database now (an install replaces it).
    pub fn database(&self) -> Arc<Database> {
        self.shared.db()
    }

    /// Reads one key of the state machine.
    pub fn get(&self, key: &[u8]) -> mapkv::Result<Option<Vec<u8>>> {
        let db = self.database();
        let rtx = db.begin_read()?;
        match rtx.open_tree(KV) {
            Ok(t) => Ok(t.get(key)?.map(<[u8]>::to_vec)),
            Err(DbError::TreeNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Every key and value, ascending, with the applied log id: what two replicas
    /// at the same applied index must agree on byte for byte.
    pub fn dump(&self) -> mapkv::Result<Dump> {
        let db = self.database();
        let (applied, _) = applied_state(&db)?;
        let rtx = db.begin_read()?;
        let pairs = match rtx.open_tree(KV) {
            Ok(t) => t
                .iter()?
                .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<mapkv::Result<_>>()?,
            Err(DbError::TreeNotFound(_)) => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok((applied, pairs))
    }
}

impl Shared {
    fn db(&self) -> Arc<Database> {
        Arc::clone(&self.db.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Builds `snapshot.mapkv` from the current state machine and opens it; the caller
    /// holds `files`' lock, on a blocking thread (compaction and fsyncs).
    fn build(&self) -> Result<(Meta, std::fs::File), DbError> {
        let build = self.dir.join(BUILD_FILE);
        remove_if_present(&build)?;
        self.db().compact_to(&build)?;
        {
            let copy = Database::open(&build)?;
            let (applied, _) = applied_state(&copy)?;
            let stamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let id = match applied {
                Some(l) => format!(
                    "{}-{}-{}-{stamp}",
                    l.leader_id.term, l.leader_id.node_id, l.index
                ),
                None => format!("none-{stamp}"),
            };
            let mut wtx = copy.begin_write()?;
            wtx.set_durability(Durability::Immediate);
            wtx.open_tree(SM_META)?
                .insert(KEY_SNAPSHOT_ID, &codec::encode(&id).map_err(codec_err)?)?;
            wtx.commit()?;
        }
        let meta = snapshot_meta(&build)?;
        let file = {
            let mut current = self.snapshot.blocking_lock();
            let path = self.dir.join(SNAPSHOT_FILE);
            std::fs::rename(&build, &path)?;
            sync_dir(&self.dir)?;
            *current = Some(meta.clone());
            std::fs::File::open(&path)?
        };
        // Durable (renamed, directory synced): openraft purges up to it next.
        self.floor.raise(meta.last_log_id);
        Ok((meta, file))
    }

    /// Installs the received snapshot `received` (see the module's documentation);
    /// the caller holds `files`' lock, on a blocking thread.
    fn install(
        &self,
        meta: &Meta,
        mut received: std::fs::File,
    ) -> Result<(), StorageError<NodeId>> {
        let dir = &self.dir;
        let install = dir.join(INSTALL_FILE);
        let tmp = dir.join(SNAPSHOT_TMP_FILE);
        // Leftovers of an install that failed earlier (`open` removes them too).
        for path in [&install, &tmp] {
            remove_if_present(path).map_err(snap_write_err)?;
        }
        {
            // `std::io::copy` between files copies in the kernel (`copy_file_range`).
            received.seek(SeekFrom::Start(0)).map_err(snap_read_err)?;
            let mut out = std::fs::File::create(&tmp).map_err(snap_write_err)?;
            std::io::copy(&mut received, &mut out).map_err(snap_write_err)?;
            out.sync_all().map_err(snap_write_err)?;
        }
        let build = || -> Result<(), DbError> {
            rebuild_from_snapshot(&tmp, &install)?;
            let db = Options::new().read_only(true).open(&install)?;
            let (applied, membership) = applied_state(&db)?;
            if applied != meta.last_log_id || membership != meta.last_membership {
                return Err(codec_err(format!(
                    "snapshot holds applied {applied:?}, metadata says {:?}",
                    meta.last_log_id
                )));
            }
            Ok(())
        };
        if let Err(e) = build() {
            // Never switched to: the old state machine and snapshot stand.
            let _ = remove_if_present(&install);
            let _ = remove_if_present(&tmp);
            return Err(snap_write_err(e));
        }
        // The snapshot first, then the state machine: a crash between the two leaves a
        // snapshot newer than the state machine, which `open` restarts from (as after a
        // crash that lost unsynced applies). The opposite order could leave the state
        // machine ahead of the snapshot file, with the log already purged up to the new
        // snapshot (openraft purges without waiting for the install), and openraft
        // requires the purged id to be at most the snapshot's last id. An error after
        // this point is fatal to openraft; the files are as a crash here would leave them.
        let mut current = self.snapshot.blocking_lock();
        std::fs::rename(&tmp, dir.join(SNAPSHOT_FILE)).map_err(snap_write_err)?;
        sync_dir(dir).map_err(snap_write_err)?;
        let mut db = self.db.write().unwrap_or_else(|p| p.into_inner());
        std::fs::rename(&install, dir.join(SM_FILE)).map_err(sm_write_err)?;
        sync_dir(dir).map_err(sm_write_err)?;
        *db = Arc::new(Database::open(dir.join(SM_FILE)).map_err(sm_write_err)?);
        // Both the state machine and the snapshot file are switched and synced: the
        // linked log may now drop the entries openraft purged when it queued this
        // install (it does not wait for it; see `LogStore::link_state_machine`).
        self.floor.raise(meta.last_log_id);
        *current = Some(meta.clone());
        Ok(())
    }

    async fn open_snapshot(
        &self,
        meta: &Meta,
    ) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let file = tokio::fs::File::open(self.dir.join(SNAPSHOT_FILE))
            .await
            .map_err(snap_read_err)?;
        Ok(Snapshot {
            meta: meta.clone(),
            snapshot: Box::new(file),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<NodeId>> {
        let shared = Arc::clone(&self.shared);
        // Compaction and fsyncs: off the tokio workers. `files`' lock is taken inside,
        // so the build holds it to its end even if this future is dropped.
        let (meta, file) = tokio::task::spawn_blocking(move || {
            let _files = shared.files.blocking_lock();
            shared.build()
        })
        .await
        .map_err(snap_write_err)?
        .map_err(snap_write_err)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, Membership), StorageError<NodeId>> {
        applied_state(&self.shared.db()).map_err(sm_read_err)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError<NodeId>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let db = self.shared.db();
        let mut entries = entries.into_iter().peekable();
        if entries.peek().is_none() {
            return Ok(Vec::new());
        }
        let mut responses = Vec::new();
        let write = || -> Result<(), DbError> {
            let mut wtx = db.begin_write()?;
            // Durable with the next snapshot or a clean close; after a crash openraft
            // re-applies from the log, or `open` restarts from the snapshot.
            wtx.set_durability(Durability::None);
            let mut applied = None;
            let mut membership = None;
            {
                let mut kv = wtx.open_tree(KV)?;
                for entry in entries {
                    applied = Some(entry.log_id);
                    responses.push(match &entry.payload {
                        EntryPayload::Normal(request) => apply_request(&mut kv, request)?,
                        EntryPayload::Membership(m) => {
                            membership = Some(Membership::new(Some(entry.log_id), m.clone()));
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
            }
            {
                let mut meta = wtx.open_tree(SM_META)?;
                if let Some(a) = &applied {
                    meta.insert(KEY_APPLIED, &codec::encode(a).map_err(codec_err)?)?;
                }
                if let Some(m) = &membership {
                    meta.insert(KEY_MEMBERSHIP, &codec::encode(m).map_err(codec_err)?)?;
                }
            }
            wtx.commit()
        };
        write().map_err(sm_write_err)?;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            shared: Arc::clone(&self.shared),
        }
    }

    async fn begin_receiving_snapshot(
        &mut self,
    ) -> Result<Box<tokio::fs::File>, StorageError<NodeId>> {
        let n = self.shared.receive_count.fetch_add(1, Ordering::Relaxed);
        let path = self.shared.dir.join(format!("snapshot.recv-{n}"));
        let file = tokio::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .await
            .map_err(snap_write_err)?;
        // Unlinked at once: the handle keeps the bytes, and nothing is left behind.
        tokio::fs::remove_file(&path)
            .await
            .map_err(snap_write_err)?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError<NodeId>> {
        let received = (*snapshot).into_std().await;
        let shared = Arc::clone(&self.shared);
        let meta = meta.clone();
        // Copies, loads, checks and syncs: off the tokio workers, which meanwhile run
        // this node's Raft core (heartbeats are answered while a snapshot installs).
        // `files`' lock is taken inside, so the install holds it to its end even if
        // this future is dropped.
        tokio::task::spawn_blocking(move || {
            let _files = shared.files.blocking_lock();
            shared.install(&meta, received)
        })
        .await
        .map_err(snap_write_err)?
    }

    async fn get_current_snapshot(
        &mut self,
    ) -> Result<Option<Snapshot<TypeConfig>>, StorageError<NodeId>> {
        let current = self.shared.snapshot.lock().await;
        match &*current {
            Some(meta) => Ok(Some(self.shared.open_snapshot(meta).await?)),
            None => Ok(None),
        }
    }
}
