//! `Database` and `Options`: opening (with recovery), the shared state behind handles and
//! transactions, stats, bulk load, compaction, clean close.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use zerocopy::little_endian::{U32, U64};

use crate::atomic_file::AtomicFile;
use crate::backend::{Backend, FileBackend, lock_file};
use crate::bulk::{self, BulkOptions, BulkStats, SeqWriter, TreeBuilder};
use crate::check::{self, CheckReport};
use crate::commit::write_meta_slot;
use crate::error::{Error, Result};
use crate::free_chain;
use crate::freelist::Pending;
use crate::meta::{FORMAT_VERSION, MAGIC, META_BYTES, Meta};
use crate::page::{ChildRef, Geometry, META_SLOT_BYTES, PageId, TxnId};
use crate::path_error;
use crate::registry::Registry;
use crate::sealed_nodes::SealedNodes;
use crate::storage::Storage;
use crate::tree::TreeRecord;
use crate::txn::{Durability, ReadTxn, Snapshot, find_tree};
use crate::write_txn::{WriteTxn, Writer};

/// How to open a database. `Options::new()` gives the defaults.
#[derive(Clone, Debug)]
pub struct Options {
    page_size: usize,
    mmap_size: u64,
    cache_size: u64,
    read_ahead: bool,
    durability: Durability,
    read_only: bool,
}

/// Default `Options::page_size`: 4 KiB.
pub const PAGE_SIZE_DEFAULT: usize = 4096;

/// Default `Options::cache_size`: 64 MiB.
const CACHE_SIZE_DEFAULT: u64 = 64 << 20;

impl Default for Options {
    fn default() -> Options {
        Options {
            page_size: PAGE_SIZE_DEFAULT,
            mmap_size: u64::MAX,
            cache_size: CACHE_SIZE_DEFAULT,
            read_ahead: true,
            durability: Durability::Immediate,
            read_only: false,
        }
    }
}

impl Options {
    /// The defaults: 4 KiB pages, the whole file mapped, `Durability::Immediate`,
    /// read-write.
    pub fn new() -> Options {
        Options::default()
    }

    /// Page size in bytes: a power of two from 4096 to 65536. Fixed when the file is
    /// created; reopening with another value is ignored (the file's value wins).
    pub fn page_size(mut self, bytes: usize) -> Options {
        self.page_size = bytes;
        self
    }

    /// At most this many bytes at the start of the file are read through the memory map;
    /// pages beyond are read with pread into buffers owned by the transaction. 0 means no
    /// map at all. Default `u64::MAX`: the whole file, however large it grows.
    pub fn mmap_size(mut self, bytes: u64) -> Options {
        self.mmap_size = bytes;
        self
    }

    /// Bytes of pages read with pread (those beyond `mmap_size`) kept in memory across
    /// transactions, so later transactions find them without a system call: what
    /// SQLite's `cache_size` is to its pread path. Default 64 MiB; 0 keeps nothing between
    /// transactions (each still reads a page at most once). Only allocated as pages are
    /// read, so it costs nothing when the whole file is mapped.
    ///
    /// Pages evicted from the cache stay allocated until the read transactions that
    /// began before their eviction end (a page found in the cache is lent to the
    /// transaction, not copied): up to an eighth of `cache_size` more. When a long
    /// transaction keeps that much waiting, the cache stops taking new pages until it
    /// ends; reads go on, each transaction keeping what it reads itself.
    pub fn cache_size(mut self, bytes: u64) -> Options {
        self.cache_size = bytes;
        self
    }

    /// Whether the operating system may read ahead of the pages that reads touch.
    /// Default `true`. `false` advises random access (`MADV_RANDOM` on the map,
    /// `POSIX_FADV_RANDOM` on the file, as LMDB's `MDB_NORDAHEAD` does): a read that
    /// misses the page cache then reads one page instead of up to 128 KiB around it.
    /// Choose it for a database larger than memory that is read at random, where reading
    /// ahead fills memory with pages nobody asked for and pushes out the ones they will;
    /// keep the default where reads are mostly in key order (scans, ranges) or the file
    /// fits in memory. See BENCHMARKS.md, "Larger than memory".
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Options::new().read_ahead(false).open(dir.path().join("db"))?;
    /// # Ok(()) }
    /// ```
    pub fn read_ahead(mut self, yes: bool) -> Options {
        self.read_ahead = yes;
        self
    }

    /// The durability of write transactions unless they set their own.
    pub fn durability(mut self, durability: Durability) -> Options {
        self.durability = durability;
        self
    }

    /// Opens without write access: `begin_write` and `bulk_load` give `Error::ReadOnly`.
    /// Several read-only handles may share a file; a read-write one excludes them.
    ///
    /// A read-only open cannot `fdatasync`, so it may serve a commit that was never
    /// synced: the last commit of a writer killed before its sync returned, still only in
    /// the operating system's page cache. A power loss before a read-write open (which
    /// syncs what it opens) can take that commit away. See FORMAT.md#recovery.
    pub fn read_only(mut self, yes: bool) -> Options {
        self.read_only = yes;
        self
    }

    /// Opens the database at `path`, creating it if it is missing (unless read-only).
    pub fn open(self, path: impl AsRef<Path>) -> Result<Database> {
        Database::open_with(path.as_ref(), self)
    }
}

/// State shared by a `Database` and its transactions.
pub(crate) struct Shared {
    pub storage: Arc<Storage>,
    /// The newest commit; readers take a snapshot of it.
    pub current: RwLock<Arc<Snapshot>>,
    /// Live read transactions, by the snapshot (transaction id) each reads.
    pub readers: Registry,
    pub writer: Arc<Mutex<Writer>>,
    pub read_only: bool,
    pub durability: Durability,
    /// The database file's path (empty for a backend without one): `insert_from` opens
    /// it a second time for direct I/O.
    pub path: Arc<Path>,
    /// Commits since the database was opened.
    pub commits: AtomicU64,
}

/// An open database file. `Send + Sync`: share it between threads (e.g. in an `Arc`).
/// One write transaction at a time, any number of readers; readers never block the
/// writer and the writer never blocks readers.
pub struct Database {
    pub(crate) shared: Arc<Shared>,
    path: PathBuf,
}

/// Space and shape figures of a database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stats {
    /// Bytes per page.
    pub page_size: usize,
    /// Length of the file in bytes (it grows in steps, so it can exceed the pages used).
    pub file_size_bytes: u64,
    /// Pages in the file's logical extent, meta pages included.
    pub page_count: u64,
    /// Pages reachable from the newest commit (trees, catalog, free list, meta pages).
    pub pages_in_use: u64,
    /// Pages free for reuse, or waiting until older snapshots end.
    pub pages_free: u64,
    /// Runs of consecutive free pages those form (what a full free-list record lists).
    pub free_runs: u64,
    /// Every tree, in name order.
    pub trees: Vec<TreeStats>,
    /// Id of the newest commit.
    pub txn_id: u64,
    /// Commits made since the snapshot of the oldest live reader (0 if none): a large
    /// value means a long-lived reader is keeping old pages from being reused.
    pub oldest_reader_txn_age: u64,
    /// Commits since the database was opened (those that changed nothing included).
    pub commits: u64,
    /// Pages written since the database was opened: commits' pages, large values, bulk
    /// loads (meta slots are not pages and are not counted).
    pub pages_written: u64,
    /// fdatasync calls since the database was opened.
    pub syncs: u64,
}

/// Figures for one tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TreeStats {
    /// The tree's name.
    pub name: String,
    /// Entries in the tree.
    pub entries: u64,
    /// Levels from root to leaves (0 for an empty tree).
    pub depth: u32,
}

impl Database {
    /// Opens the database at `path` with default `Options`, creating it if missing.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Options::new().open(path)
    }

    /// I/O errors name `path` ("opening /x/db: …"), with the operating system's kind.
    fn open_with(path: &Path, options: Options) -> Result<Database> {
        Geometry::new(options.page_size)?; // refuse bad options before touching the file
        let file = OpenOptions::new()
            .read(true)
            .write(!options.read_only)
            .create(!options.read_only)
            .truncate(false)
            .open(path)
            .map_err(path_error::at("opening", path))?;
        // A read-only open of a directory succeeds; say so now, not at the first read.
        if file.metadata().is_ok_and(|m| m.is_dir()) {
            let e = io::Error::from(io::ErrorKind::IsADirectory);
            return Err(path_error::at("opening", path)(e));
        }
        lock_file(&file, path, !options.read_only)?;
        Database::open_backend(Box::new(FileBackend { file }), options, Some(path))
            .map_err(path_error::name_path("opening", path))
    }

    /// Opens a database stored behind `backend` (the file, or a test double). `path`, if
    /// given, is the file whose directory is synced when the database is created.
    pub(crate) fn open_backend(
        backend: Box<dyn Backend>,
        options: Options,
        path: Option<&Path>,
    ) -> Result<Database> {
        let requested = Geometry::new(options.page_size)?;
        let (storage, meta, slot) = recover(backend, requested, &options, path)?;
        let (free, chain) = free_chain::load(&storage.reader(meta.page_count()), &meta)?;
        let writer = Writer {
            free,
            sweep_from: PageId(0),
            pending: Pending::default(),
            durable: meta.txn(),
            durable_slot: slot,
            chain,
            snapshot_ends: [(meta.txn(), meta.page_count())].into(),
            sealed: Arc::new(SealedNodes::new()),
            spare_pages: Vec::new(),
        };
        Ok(Database {
            shared: Arc::new(Shared {
                storage,
                current: RwLock::new(Arc::new(Snapshot { meta })),
                readers: Registry::new(),
                writer: Arc::new(Mutex::new(writer)),
                commits: AtomicU64::new(0),
                read_only: options.read_only,
                durability: options.durability,
                path: Arc::from(path.unwrap_or(Path::new(""))),
            }),
            path: path.map(Path::to_path_buf).unwrap_or_default(),
        })
    }

    /// Begins a read transaction: a consistent snapshot of the newest commit. Cheap: no
    /// I/O and no waiting.
    pub fn begin_read(&self) -> Result<ReadTxn> {
        self.shared.storage.check_process()?;
        Ok(ReadTxn::begin(&self.shared))
    }

    /// Begins the write transaction, waiting while another one is alive (so a thread
    /// that holds one must not ask for a second).
    pub fn begin_write(&self) -> Result<WriteTxn> {
        WriteTxn::begin(&self.shared)
    }

    /// Begins the write transaction, or returns `None` at once if another one is
    /// alive (in this thread or another).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let first = db.try_begin_write()?.expect("no other writer");
    /// assert!(db.try_begin_write()?.is_none());
    /// drop(first);
    /// assert!(db.try_begin_write()?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn try_begin_write(&self) -> Result<Option<WriteTxn>> {
        WriteTxn::try_begin(&self.shared)
    }

    /// Begins the write transaction, waiting at most `timeout` for another one to end;
    /// `None` if it is still alive then. For a caller that must stay responsive while
    /// it waits (to a cancellation, or Ctrl-C in the Python binding): wait in slices and
    /// look in between.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// use std::time::Duration;
    /// let first = db.begin_write()?;
    /// std::thread::scope(|s| {
    ///     s.spawn(|| {
    ///         let waited = db.try_begin_write_for(Duration::from_millis(10));
    ///         assert!(waited.expect("no error").is_none(), "the first is still alive");
    ///     });
    /// });
    /// drop(first);
    /// assert!(db.try_begin_write_for(Duration::from_millis(10))?.is_some());
    /// # Ok(()) }
    /// ```
    pub fn try_begin_write_for(&self, timeout: Duration) -> Result<Option<WriteTxn>> {
        WriteTxn::begin_within(&self.shared, timeout)
    }

    /// Loads `entries`, whose keys must be strictly ascending, into the tree `tree`,
    /// which must be absent or empty. The tree is built bottom-up with full leaves written
    /// sequentially past the end of the file (with `O_DIRECT` where the file system
    /// allows), then committed atomically and durably (one fdatasync); a second copy of
    /// the commit's meta then records that the tree is durable, so the next open, even
    /// after a crash, does not read it back to verify it. On
    /// `Error::Unsorted` or `Error::TreeNotEmpty` the database is unchanged. To merge
    /// sorted data into a tree that has entries, insert it in a write transaction.
    /// See FORMAT.md#bulk-load.
    pub fn bulk_load<I, K, V>(&self, tree: &str, entries: I) -> Result<BulkStats>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        self.bulk_load_with(tree, entries, BulkOptions::new())
    }

    /// `bulk_load` with a fill factor for the leaves and a choice of write path.
    pub fn bulk_load_with<I, K, V>(
        &self,
        tree: &str,
        entries: I,
        options: BulkOptions,
    ) -> Result<BulkStats>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<[u8]>,
        V: AsRef<[u8]>,
    {
        let txn = self.begin_write()?;
        bulk::load(txn, &self.shared, &self.path, tree, entries, &options)
    }

    /// Verifies everything the newest commit reaches: checksums against the parents'
    /// copies, key order, fences, B-tree shape, entry counts, and that every page is
    /// exactly once either reachable or free. Runs on a snapshot, beside writers.
    pub fn check(&self) -> Result<CheckReport> {
        let rtx = self.begin_read()?;
        check::check_snapshot(rtx.pages(), rtx.meta())
    }

    /// Space and shape figures of the newest commit.
    pub fn stats(&self) -> Result<Stats> {
        let rtx = self.begin_read()?;
        let meta = *rtx.meta();
        let free_set = free_chain::load(rtx.pages(), &meta)?.0;
        let free = free_set.page_count();
        let mut trees = Vec::new();
        for name in rtx.tree_names()? {
            let t = find_tree(rtx.pages(), &meta.catalog, &name)?.ok_or_else(|| {
                Error::corrupted(meta.catalog.root.page.get(), "a listed tree is not found")
            })?;
            trees.push(TreeStats {
                name,
                entries: t.entries.get(),
                depth: t.depth.get(),
            });
        }
        let lag = self
            .shared
            .readers
            .oldest()
            .map_or(0, |oldest| meta.txn().0.saturating_sub(oldest));
        Ok(Stats {
            page_size: self.shared.storage.geometry.page_size,
            file_size_bytes: self.shared.storage.file_len(),
            page_count: meta.page_count().0,
            pages_in_use: meta.page_count().0 - free,
            pages_free: free,
            free_runs: free_set.run_count() as u64,
            trees,
            txn_id: meta.txn().0,
            oldest_reader_txn_age: lag,
            commits: self.shared.commits.load(Ordering::Relaxed),
            pages_written: self.shared.storage.pages_written(),
            syncs: self.shared.storage.syncs(),
        })
    }

    /// Writes a compacted copy of the newest commit to `path` (which must not exist):
    /// every tree rebuilt with full pages, no free pages. Runs on a snapshot, so writers
    /// may continue meanwhile. Everything copied is checked as `check` checks it (a
    /// corrupt page stops the copy with `Error::Corrupted`); memory stays bounded
    /// whatever the file's size (a path of pages, the value being copied, the writer's
    /// buffers).
    ///
    /// The copy is written under a temporary name beside `path`
    /// (`.<name>.<pid>-<n>.partial`) and renamed to `path` once complete and synced, so
    /// an error leaves nothing at `path` (a crash may leave the temporary file). Only if
    /// the final sync of the directory fails is the complete copy at `path` already.
    pub fn compact_to(&self, path: impl AsRef<Path>) -> Result<()> {
        let rtx = self.begin_read()?;
        let geometry = self.shared.storage.geometry;
        let (partial, file) = AtomicFile::create(path.as_ref())?;
        lock_file(&file, path.as_ref(), true)?;
        let storage = Arc::new(Storage::new(
            Box::new(FileBackend { file }),
            geometry,
            0,
            0,
        )?);
        let txn = TxnId(1);
        let out = SeqWriter::start(
            Arc::clone(&storage),
            geometry.first_data_page(),
            Some(partial.temp_path()),
        )?;
        let mut copier = Copier {
            out,
            geometry,
            txn,
            catalog: TreeBuilder::new(geometry, txn),
            tree: None,
        };
        check::visit_snapshot(rtx.pages(), rtx.meta(), &mut copier)?;
        let Copier {
            mut out, catalog, ..
        } = copier;
        let catalog = catalog.finish(&mut out)?;
        let end = out.next();
        out.finish()?;
        let meta = Meta {
            txn: U64::new(txn.0),
            durable_before: U64::new(0),
            page_count: U64::new(end.0),
            catalog,
            ..new_meta(geometry)
        };
        storage.ensure_len(geometry.offset(end))?;
        storage.trim_to(geometry.offset(end))?;
        seal_file(&storage, &meta, 0)?;
        partial.place()?;
        sync_dir(path.as_ref())
    }

    /// Compacts the file in place: packs the entries of each tree's leaves into as few
    /// leaves as hold them, then moves the pages that lie past the point where the pages
    /// in use would end if packed into free pages below it, with ordinary copy-on-write
    /// commits (each durable), then cuts the file to its new end. Takes the writer lock
    /// (it waits for a write transaction to end, like `begin_write`); readers may run
    /// meanwhile, and what their snapshots still reach is cut by a later commit once they
    /// end. Branches keep their fill: for a file rebuilt with full pages at every level,
    /// use `compact_to`. See FORMAT.md#compaction-in-place.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let mut w = db.begin_write()?;
    /// w.open_tree("t")?.insert(b"k", &[0; 1 << 20])?;
    /// w.commit()?;
    /// let mut w = db.begin_write()?;
    /// w.delete_tree("t")?;
    /// w.commit()?;
    /// let stats = db.compact()?;
    /// assert!(stats.file_size_after < stats.file_size_before);
    /// # Ok(())
    /// # }
    /// ```
    pub fn compact(&self) -> Result<crate::CompactStats> {
        crate::compact::compact(&self.shared)
    }

    /// The path this database was opened with (empty for a test backend).
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// `compact_to`'s visitor: each tree's entries into a builder of its own, each tree's
/// record into the catalog's builder as the tree is finished (trees come in name
/// order), all into one sequential writer.
struct Copier {
    out: SeqWriter,
    geometry: Geometry,
    txn: TxnId,
    catalog: TreeBuilder,
    /// The tree being copied: its name and builder.
    tree: Option<(String, TreeBuilder)>,
}

impl check::Visitor for Copier {
    fn wants_entries(&self) -> bool {
        true
    }

    fn tree_start(&mut self, name: &str, record: &TreeRecord) -> Result<()> {
        let builder = TreeBuilder::new(self.geometry, self.txn).for_tree(record);
        self.tree = Some((name.to_string(), builder));
        Ok(())
    }

    fn entry(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let (_, builder) = self.tree.as_mut().expect("entries come inside a tree");
        builder.add(&mut self.out, key, value)
    }

    fn tree_end(&mut self) -> Result<()> {
        let (name, builder) = self.tree.take().expect("a tree was started");
        let record = builder.finish(&mut self.out)?;
        let record = zerocopy::IntoBytes::as_bytes(&record);
        self.catalog.add(&mut self.out, name.as_bytes(), record)
    }
}

impl Drop for Shared {
    /// A clean close: if commits since the last durable meta exist (`Durability::None`),
    /// or the last commit's pages would need verifying at the next open, sync and write
    /// a meta that needs no verification.
    fn drop(&mut self) {
        if self.read_only || self.storage.is_poisoned() {
            return;
        }
        let writer = self.writer.lock();
        let meta = self.current.read().meta;
        // No transaction is left to read past the last page: the growth step (or the
        // pages of a bulk load that failed) can go once the newest commit is sealed.
        // Errors cannot be reported from drop; the previous durable meta stays valid.
        let end = self.storage.geometry.offset(meta.page_count());
        if writer.durable == meta.txn() && meta.durable_before == meta.txn {
            // Sealed already: opened so and nothing committed since, or a bulk load
            // (which seals its commit) was the last.
            let _ = self.storage.trim_to(end);
            return;
        }
        let slot = 1 - writer.durable_slot;
        if seal_file(&self.storage, &meta, slot).is_ok() {
            let _ = self.storage.trim_to(end);
        }
    }
}

/// Syncs everything, then writes `meta` into `slot` marked as needing no verification
/// (every page it reaches is already durable), then syncs again.
pub(crate) fn seal_file(storage: &Storage, meta: &Meta, slot: u64) -> Result<()> {
    storage.sync()?;
    let sealed = Meta {
        durable_before: meta.txn,
        ..*meta
    };
    write_meta_slot(storage, slot, &sealed)?;
    storage.sync()
}

/// A meta for an empty database.
fn new_meta(geometry: Geometry) -> Meta {
    Meta {
        magic: MAGIC,
        version: U32::new(FORMAT_VERSION),
        page_size: U32::new(geometry.page_size as u32),
        txn: U64::new(1),
        durable_before: U64::new(1),
        page_count: U64::new(geometry.first_data_page().0),
        catalog: TreeRecord::EMPTY,
        free_list: ChildRef::NULL,
        checksum: U32::ZERO,
    }
}

/// The storage over `backend` with the map and cache that `options` ask for.
fn open_storage(
    backend: Box<dyn Backend>,
    geometry: Geometry,
    options: &Options,
) -> Result<Arc<Storage>> {
    let storage = Storage::new(backend, geometry, options.mmap_size, options.cache_size)?;
    if !options.read_ahead {
        storage.advise_random();
    }
    Ok(Arc::new(storage))
}

/// Makes the file's directory entry durable (after creating a file).
fn sync_dir(path: &Path) -> Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(path_error::at("syncing the directory", dir))
}

/// Initialises a file in which nothing was ever committed (`len` bytes long) as an empty
/// database: its length set to exactly the meta slots (not a growth step: a creation cut
/// short must leave a file that `recover` recognises), the initial meta written into slot
/// 0, one sync, and the directory's sync.
fn create(
    backend: Box<dyn Backend>,
    geometry: Geometry,
    len: u64,
    options: &Options,
    path: Option<&Path>,
) -> Result<(Arc<Storage>, Meta, u64)> {
    if options.read_only {
        return Err(Error::corrupted(
            0,
            "the file is empty, or its creation did not finish (a read-write open finishes it)",
        ));
    }
    let meta = new_meta(geometry);
    let end = geometry.offset(meta.page_count());
    let grow = len < end;
    if grow {
        backend.set_len(end)?;
    }
    let storage = open_storage(backend, geometry, options)?;
    if grow {
        // The length first, durably: then the meta's write lands inside the file, and a
        // power loss leaves either the old (short, zero) file or one of exactly a
        // creation length whose first sector may be garbled, both of which recovery
        // finishes. Without this sync the write could extend the file by itself, torn,
        // leaving a short file of garbage that no rule can tell from someone else's
        // (found by the `crash` fuzzer: a 100-byte image of garbage).
        storage.sync()?;
    }
    write_meta_slot(&storage, 0, &meta)?;
    storage.sync()?;
    if let Some(path) = path {
        sync_dir(path)?;
    }
    Ok((storage, meta, 0))
}

/// The start of the file that recovery reads before it chooses a meta: both meta slots,
/// and all that an unfinished creation can have written (at the largest page size). Its
/// cached pages are dropped before it is read; 64 KiB is whole pages at every page size
/// Linux uses, so the drop is not rounded away to nothing.
const HEAD_BYTES: usize = 65536;

/// The sector that the creation's first meta lies in: what a power loss can garble
/// (FORMAT.md#disk-assumptions).
const CREATION_SECTOR_BYTES: usize = 512;

/// Picks the newest meta whose commit verifies, falling back to the other slot if the
/// newest commit was torn. Creates the file if it is new. Returns the storage, the meta
/// and the slot it came from. See FORMAT.md#recovery.
fn recover(
    backend: Box<dyn Backend>,
    requested: Geometry,
    options: &Options,
    path: Option<&Path>,
) -> Result<(Arc<Storage>, Meta, u64)> {
    // After a failed fdatasync, Linux may keep pages that never reached the disk in its
    // page cache, marked clean: reads return them, and this descriptor's sync succeeds
    // without writing them. So the metas are read from the disk, and the whole file's
    // cached pages are dropped before a commit is verified (below). Dirty pages (of a
    // process killed before its sync) stay, and the sync at the end of a read-write open
    // writes them.
    backend.drop_cached(0, HEAD_BYTES as u64)?;
    let len = backend.file_len()?;
    let head_len = (len as usize).clamp(2 * META_SLOT_BYTES as usize, HEAD_BYTES);
    let mut head = vec![0u8; head_len];
    let readable = (len as usize).min(head.len());
    backend.read_exact_at(&mut head[..readable], 0)?;
    let decoded: Vec<Result<Meta>> = (0..2)
        .map(|s| {
            let at = s * META_SLOT_BYTES as usize;
            Meta::decode(&head[at..at + META_BYTES], s as u64)
        })
        .collect();
    // A short file holding nothing but zeros, or our magic where the first meta of a
    // creation was being written, is a creation that did not finish: nothing was ever
    // committed in it. Anything else that is not a valid database is left alone.
    let zeros = |b: &[u8]| b.iter().all(|&x| x == 0);
    // The creation writes its first meta (100 bytes) into the first 512-byte sector, and
    // a power loss can leave that one sector as garbage but nothing past it: a non-zero
    // byte past it was written by something else.
    let (first_sector, rest) = head.split_at(CREATION_SECTOR_BYTES);
    let creation_len = [8192, 16384, 32768, 65536].contains(&len);
    let never_committed = decoded[0].is_err()
        && len <= HEAD_BYTES as u64
        && zeros(rest)
        && (zeros(first_sector) || first_sector.starts_with(&MAGIC) || creation_len);
    // The creation's write of the initial meta may also survive a power loss that the
    // length change before it did not (FORMAT.md#disk-assumptions): then the file is
    // shorter than that meta says, and holds nothing else. The creation is finished with
    // the page size it chose. Only versions before 4 could leave this, each with its own
    // version number in the meta (`decode` accepted it) and otherwise the same fields.
    let short_creation = decoded[0].as_ref().ok().and_then(|m| {
        let geometry = Geometry::new(m.page_size.get() as usize).ok()?;
        let initial = Meta {
            version: m.version,
            ..new_meta(geometry)
        }
        .encode();
        let short = len < geometry.offset(m.page_count());
        (short && head[..META_BYTES] == initial && zeros(&head[META_BYTES..])).then_some(geometry)
    });
    if never_committed || short_creation.is_some() {
        return create(
            backend,
            short_creation.unwrap_or(requested),
            len,
            options,
            path,
        );
    }
    let has_magic = |slot: usize| head[slot * META_SLOT_BYTES as usize..].starts_with(&MAGIC);
    if !has_magic(0) && !has_magic(1) {
        return Err(Error::corrupted(
            0,
            "not a mapkv database (no meta page has the magic)",
        ));
    }
    let mut candidates: Vec<(Meta, u64)> = Vec::new();
    let mut errors = Vec::new();
    for (slot, d) in decoded.into_iter().enumerate() {
        match d {
            Ok(m) => candidates.push((m, slot as u64)),
            Err(e) => errors.push(e.to_string()),
        }
    }
    candidates.sort_by_key(|(m, _)| std::cmp::Reverse((m.txn.get(), m.durable_before.get())));
    let mut spare = Some(backend);
    let mut file_dropped = false;
    let mut rejected_slot = None;
    for (meta, slot) in candidates {
        let geometry = Geometry::new(meta.page_size.get() as usize)?;
        let backend = spare.take().expect("backend kept for the next candidate");
        if meta.durable_before.get() < meta.txn.get() && !file_dropped {
            // The pages to verify must be read from the disk. A meta that needs no
            // verification was written after a sync that succeeded, so every page it
            // reaches is on the disk; dropping the cache then would only slow the reads
            // after a clean close.
            backend.drop_cached(0, 0)?;
            file_dropped = true;
        }
        let storage = open_storage(backend, geometry, options)?;
        let needed = geometry.offset(meta.page_count());
        let verified = if needed > len {
            Err(Error::corrupted(
                0,
                format!("meta slot {slot} needs {needed} bytes, the file has {len}"),
            ))
        } else {
            check::verify_commit(&storage.reader(meta.page_count()), &meta)
        };
        match verified {
            Ok(()) => {
                // What was read may be dirty pages in the page cache (a process killed
                // before its sync): make them durable before treating this meta as the
                // fallback whose pages the next commits must not reuse. A newer meta
                // that failed is overwritten with this one (sealed: it needs no
                // verification after that sync), or it could pass later, once the file
                // has grown over the end it needed or its torn pages are rewritten,
                // and bring back a commit this open discarded.
                if !options.read_only {
                    match rejected_slot {
                        Some(other) => seal_file(&storage, &meta, other)?,
                        None => storage.sync()?,
                    }
                }
                return Ok((storage, meta, slot));
            }
            Err(e) => {
                errors.push(e.to_string());
                rejected_slot = Some(slot);
                spare = Some(Arc::into_inner(storage).expect("only ref").into_backend());
            }
        }
    }
    Err(Error::corrupted(
        0,
        format!("no usable meta page: {}", errors.join("; ")),
    ))
}
