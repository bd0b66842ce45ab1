//! The write transaction: its trees (several may be open at once), their changes, and
//! the writer's state between transactions. Commit is in `commit.rs`.
//! See FORMAT.md#commit-protocol and FORMAT.md#page-reuse.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::db::Shared;
use crate::error::{Error, Result};
use crate::free_chain::FreeChain;
use crate::freelist::{PageRuns, Pending};
use crate::page::{PageId, TxnId};
use crate::page_buf::PageBox;
use crate::reserve::Reservation;
use crate::sealed_nodes::SealedNodes;
use crate::tree::{self, Pages, TreeRecord};
use crate::tree_options::TreeOptions;
use crate::txn::{Durability, Snapshot, find_tree, tree_names};
use crate::txn_pages::TxnPages;
use crate::write_tree::WriteTree;
use parking_lot::{ArcMutexGuard, RawMutex, ReentrantMutex};
use zerocopy::little_endian::U32;

/// State that belongs to whichever write transaction holds the writer lock.
pub(crate) struct Writer {
    /// Pages any write transaction may overwrite now.
    pub free: PageRuns,
    /// Where the next scattered commit starts looking for free runs (`Allocator::sweep`).
    pub sweep_from: PageId,
    /// Pages freed by commits that some snapshot or the fallback meta may still reach.
    pub pending: Pending,
    /// The newest commit whose meta is on stable storage: recovery's fallback.
    pub durable: TxnId,
    /// The meta slot (0 or 1) holding `durable`'s meta.
    pub durable_slot: u64,
    /// The newest commit's free list on disk.
    pub chain: FreeChain,
    /// The end (`page_count`) of each commit that a live snapshot may hold: the file is
    /// never shortened below the furthest of them.
    pub snapshot_ends: BTreeMap<TxnId, PageId>,
    /// The node pages this handle's commits sealed, for `TxnPages::shadow`.
    pub sealed: Arc<SealedNodes>,
    /// Page buffers the last commit wrote, for the next transaction's copies and builds
    /// (`TxnPages::recycle`).
    pub spare_pages: Vec<PageBox>,
}

/// The one write transaction. Changes are visible only to it until `commit`; dropping it
/// without committing discards them.
///
/// Several trees may be open at once ([`open_tree`](Self::open_tree) takes `&self`):
///
/// ```
/// # fn main() -> mapkv::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let db = mapkv::Database::open(dir.path().join("db"))?;
/// let wtx = db.begin_write()?;
/// let mut links = wtx.open_tree("links")?;
/// let mut hits = wtx.open_tree("hits")?;
/// links.insert(b"abc", b"https://example.com")?;
/// hits.update(b"abc", |n| {
///     let n = n.map_or(0, |b| u64::from_be_bytes(b.try_into().unwrap()));
///     Some((n + 1).to_be_bytes().to_vec())
/// })?;
/// wtx.commit()?;
/// # Ok(()) }
/// ```
///
/// Thread rules: a `WriteTxn` is `Send` and `Sync`. It may move to another thread
/// between calls, and be committed, aborted or dropped there (another thread may wait
/// for the writer lock meanwhile). Its tree handles are `Send`: with
/// `std::thread::scope`, other threads may read and change its trees; changes take
/// turns.
pub struct WriteTxn {
    // Declared first, so dropped first: when this transaction holds the last reference to
    // `Shared`, dropping that reference closes the database (`Shared::drop`), which takes
    // the writer lock; the lock must be free by then.
    pub(crate) writer: ArcMutexGuard<RawMutex, Writer>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) base: Arc<Snapshot>,
    /// The pages and trees, shared by the tree handles.
    pub(crate) pages: TxnLock,
    pub(crate) catalog: TreeRecord,
    pub(crate) durability: Durability,
    /// Set once the commit has handed the free pages back to the writer.
    pub(crate) committed: bool,
    /// A pass of `Database::compact`: the commit folds the free list (so that its
    /// record moves down too), commits even if nothing changed, and cuts the file to its
    /// end exactly.
    pub(crate) compacting: bool,
}

/// The transaction's pages and trees behind one lock, which tree handles take for
/// each change and for each page they read. Reentrant, so that a `retain` predicate
/// that uses the transaction gets `Error::Reentrant` from the `RefCell` rather than a
/// deadlock; a lock rather than a bare `RefCell`, so that `Range` (one type for
/// snapshots and write trees) can be `Send` (see `TreeView`).
pub(crate) struct TxnLock(ReentrantMutex<RefCell<TxnInner>>);

pub(crate) struct TxnInner {
    pub pages: TxnPages,
    pub trees: TouchedTrees,
}

impl TxnLock {
    pub(crate) fn get_mut(&mut self) -> &mut TxnPages {
        &mut self.0.get_mut().get_mut().pages
    }

    pub(crate) fn inner_mut(&mut self) -> &mut TxnInner {
        self.0.get_mut().get_mut()
    }

    /// Runs `f` with the pages and trees, or `Error::Reentrant` if this thread is in
    /// the middle of a change already.
    pub(crate) fn with<T>(&self, f: impl FnOnce(&mut TxnInner) -> Result<T>) -> Result<T> {
        let guard = self.0.lock();
        let mut inner = guard.try_borrow_mut().map_err(|_| Error::Reentrant)?;
        f(&mut inner)
    }

    /// `with`, read-only.
    pub(crate) fn with_ref<T>(&self, f: impl FnOnce(&TxnInner) -> Result<T>) -> Result<T> {
        let guard = self.0.lock();
        let inner = guard.try_borrow().map_err(|_| Error::Reentrant)?;
        f(&inner)
    }
}

/// The trees a write transaction opened or deleted. Each record is kept here, and only
/// here, from the moment it is looked up: a tree handle edits it in place, so the
/// transaction knows every tree's current root whatever becomes of the handle.
#[derive(Default)]
pub(crate) struct TouchedTrees {
    states: Vec<TreeState>,
    by_name: HashMap<String, usize>,
}

struct TreeState {
    name: String,
    /// The record now; None if the tree is absent (never created, or deleted).
    now: Option<TreeRecord>,
    /// The record when the transaction began.
    before: Option<TreeRecord>,
    /// Counts the handles opened (and deletes): only the newest handle works.
    generation: u64,
    /// Whether the newest handle is still alive (not dropped), and so may hold slices
    /// of the tree's dirty pages.
    alive: Option<Arc<AtomicBool>>,
    /// Bytes the newest handle handed out with `insert_reserve` and has not been
    /// called since (`crate::reserve`).
    reserved: Option<Reservation>,
}

impl TouchedTrees {
    /// Where `name`'s record is kept, looking it up in the catalog the first time.
    fn slot(&mut self, pages: &TxnPages, catalog: &TreeRecord, name: &str) -> Result<usize> {
        let g = pages.geometry();
        if name.len() > g.key_len_max() {
            return Err(Error::KeyTooLarge {
                size: name.len(),
                max: g.key_len_max(),
            });
        }
        if let Some(&slot) = self.by_name.get(name) {
            return Ok(slot);
        }
        let found = find_tree(pages, catalog, name)?;
        // The root is a reference no node holds, so no copy checks it as `Node::verify`
        // checks theirs: one that named this transaction (with a guessable provisional
        // id) would pass for a dirty page of another tree, which this tree's changes
        // would then edit in place, and free.
        if let Some(root) = found.map(|r| r.root).filter(|r| r.txn() > pages.base()) {
            return Err(Error::corrupted(
                root.page().0,
                format!(
                    "tree {name}'s root names writer {} in snapshot {}",
                    root.txn().0,
                    pages.base().0
                ),
            ));
        }
        let slot = self.states.len();
        self.states.push(TreeState {
            name: name.to_string(),
            now: found,
            before: found,
            generation: 0,
            alive: None,
            reserved: None,
        });
        self.by_name.insert(name.to_string(), slot);
        Ok(slot)
    }

    /// The trees whose record changed (None: deleted), taken out for the commit.
    pub(crate) fn take_changed(&mut self) -> Vec<(String, Option<TreeRecord>)> {
        self.by_name.clear();
        std::mem::take(&mut self.states)
            .into_iter()
            .filter(|t| match (&t.now, &t.before) {
                (Some(a), Some(b)) => !a.same_as(b),
                (None, None) => false,
                _ => true,
            })
            .map(|t| (t.name, t.now))
            .collect()
    }

    /// The record of the tree in `slot`, for the handle of `generation` (an older
    /// handle is `Error::StaleTree`), read-only.
    pub(crate) fn current_record(&self, slot: usize, generation: u64) -> Result<TreeRecord> {
        self.check_current(slot, generation)?;
        Ok(self.states[slot].now.expect("checked"))
    }

    /// The same, to change.
    pub(crate) fn current(&mut self, slot: usize, generation: u64) -> Result<&mut TreeRecord> {
        self.check_current(slot, generation)?;
        Ok(self.states[slot].now.as_mut().expect("checked"))
    }

    /// The record of the tree in `slot` for its handle of `generation` to change,
    /// after ending that handle's reservation: it is being called again, so the bytes it
    /// handed out are no longer borrowed.
    pub(crate) fn record_to_change(
        &mut self,
        slot: usize,
        generation: u64,
        pages: &mut TxnPages,
    ) -> Result<&mut TreeRecord> {
        self.check_current(slot, generation)?;
        self.finish_reservation(slot, pages)?;
        self.current(slot, generation)
    }

    /// `Ok` if the handle of `generation` is the tree's newest and the tree exists.
    pub(crate) fn check_current(&self, slot: usize, generation: u64) -> Result<()> {
        let state = &self.states[slot];
        match state.generation == generation && state.now.is_some() {
            true => Ok(()),
            false => Err(Error::StaleTree(state.name.clone())),
        }
    }

    /// Starts a new generation of the tree in `slot` (an open or a delete). If the
    /// newest handle is alive it may hold slices of dirty pages: `pages` is frozen so
    /// that they stay valid. A handle that is alive with a reservation may be writing
    /// its bytes: it is `Error::Reserved`, and nothing changes.
    fn supersede(&mut self, slot: usize, pages: &mut TxnPages) -> Result<u64> {
        let state = &self.states[slot];
        let alive = state
            .alive
            .as_ref()
            .is_some_and(|a| a.load(Ordering::Acquire));
        if alive && state.reserved.is_some() {
            return Err(Error::Reserved(state.name.clone()));
        }
        self.finish_reservation(slot, pages)?;
        if alive {
            let reserved: Vec<PageId> = self.reserved_leaves().collect();
            pages.freeze(&reserved);
        }
        let state = &mut self.states[slot];
        state.alive = None;
        state.generation += 1;
        Ok(state.generation)
    }

    /// Files the reservation the newest handle of the tree in `slot` just made.
    pub(crate) fn set_reservation(&mut self, slot: usize, reservation: Reservation) {
        debug_assert!(self.states[slot].reserved.is_none(), "finished first");
        self.states[slot].reserved = Some(reservation);
    }

    /// Whether the tree in `slot` has a reservation that has not ended.
    pub(crate) fn is_reserved(&self, slot: usize) -> bool {
        self.states[slot].reserved.is_some()
    }

    /// Ends the reservation of the tree in `slot`, if any. The caller knows that its
    /// bytes are no longer borrowed: the handle was called again (its `&mut` borrow
    /// ended), dropped, or the transaction is being consumed.
    pub(crate) fn finish_reservation(&mut self, slot: usize, pages: &mut TxnPages) -> Result<()> {
        let state = &mut self.states[slot];
        match (state.reserved.take(), &state.now) {
            (None, _) => Ok(()),
            (Some(r), Some(tree)) => r.finish(pages, tree),
            (Some(_), None) => unreachable!("a reserved tree is superseded before deletion"),
        }
    }

    /// Ends every reservation (the commit: no handle can be borrowed).
    pub(crate) fn finish_reservations(&mut self, pages: &mut TxnPages) -> Result<()> {
        (0..self.states.len()).try_for_each(|slot| self.finish_reservation(slot, pages))
    }

    /// The dirty leaves whose bytes reserving handles may be writing.
    fn reserved_leaves(&self) -> impl Iterator<Item = PageId> + '_ {
        self.states
            .iter()
            .filter_map(|s| s.reserved.as_ref().and_then(Reservation::leaf))
    }
}

impl WriteTxn {
    pub(crate) fn begin(shared: &Arc<Shared>) -> Result<WriteTxn> {
        Self::check_writable(shared)?;
        Self::start(shared, shared.writer.lock_arc())
    }

    /// `begin`, or `None` at once if another write transaction is alive.
    pub(crate) fn try_begin(shared: &Arc<Shared>) -> Result<Option<WriteTxn>> {
        Self::check_writable(shared)?;
        match shared.writer.try_lock_arc() {
            Some(writer) => Self::start(shared, writer).map(Some),
            None => Ok(None),
        }
    }

    /// `begin`, or `None` if another write transaction is still alive after `timeout`.
    pub(crate) fn begin_within(
        shared: &Arc<Shared>,
        timeout: Duration,
    ) -> Result<Option<WriteTxn>> {
        Self::check_writable(shared)?;
        match shared.writer.try_lock_arc_for(timeout) {
            Some(writer) => Self::start(shared, writer).map(Some),
            None => Ok(None),
        }
    }

    fn check_writable(shared: &Shared) -> Result<()> {
        if shared.read_only {
            return Err(Error::ReadOnly);
        }
        shared.storage.check_not_poisoned()
    }

    fn start(shared: &Arc<Shared>, mut writer: ArcMutexGuard<RawMutex, Writer>) -> Result<Self> {
        let base = Arc::clone(&shared.current.read());
        if base.meta.txn().0 == u64::MAX {
            // Only a corrupt meta gets here (ids last 584 years at one commit a
            // nanosecond): the next id would wrap to 0, which no meta may hold.
            return Err(Error::corrupted(
                0,
                "the newest meta holds the last transaction id",
            ));
        }
        let oldest_reader = (shared.readers.oldest().map(TxnId)).unwrap_or(base.meta.txn());
        let w = &mut *writer;
        if !w.pending.release(oldest_reader, w.durable, &mut w.free) {
            return Err(Error::corrupted(0, "a page was freed twice"));
        }
        let pages = TxnPages::new(
            &shared.storage,
            base.meta.txn(),
            base.meta.page_count(),
            Arc::clone(&shared.path),
            &mut writer,
        );
        let inner = TxnInner {
            pages,
            trees: TouchedTrees::default(),
        };
        Ok(WriteTxn {
            catalog: base.meta.catalog,
            writer,
            shared: Arc::clone(shared),
            base,
            pages: TxnLock(ReentrantMutex::new(RefCell::new(inner))),
            durability: shared.durability,
            committed: false,
            compacting: false,
        })
    }

    /// Opens a tree for reading and writing, creating it if absent (the new tree exists
    /// once the transaction commits). Several different trees may be open at once.
    /// Opening a tree again makes the older handle of it stale: it answers every later
    /// call with `Error::StaleTree` (what it returned before stays valid). If that older
    /// handle is still alive (not dropped), the transaction's changed pages are copied
    /// once to keep its slices valid: drop a handle you are done with before opening
    /// its tree again in a large transaction.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut by_id = wtx.open_tree("users")?;
    /// let mut by_email = wtx.open_tree("users_by_email")?;
    /// by_id.insert(&7u64.to_be_bytes(), b"ada@example.com")?;
    /// by_email.insert(b"ada@example.com", &7u64.to_be_bytes())?;
    /// wtx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn open_tree(&self, name: &str) -> Result<WriteTree<'_>> {
        Ok(self.open(name, true, None)?.expect("created"))
    }

    /// Opens a tree for reading and writing, creating it with `options` if it does not
    /// exist. An existing tree must have been created with the same options, else
    /// `Error::InvalidOptions` (the options are part of how its values are stored).
    /// See [`TreeOptions`] for an example.
    pub fn open_tree_with(&self, name: &str, options: TreeOptions) -> Result<WriteTree<'_>> {
        Ok(self.open(name, true, Some(options))?.expect("created"))
    }

    /// Opens a tree for reading and writing if it exists, or `None` (nothing is
    /// created).
    pub fn try_open_tree(&self, name: &str) -> Result<Option<WriteTree<'_>>> {
        self.open(name, false, None)
    }

    fn open(
        &self,
        name: &str,
        create: bool,
        options: Option<TreeOptions>,
    ) -> Result<Option<WriteTree<'_>>> {
        let values = options.as_ref().map(TreeOptions::encode).transpose()?;
        self.pages.with(|TxnInner { pages, trees }| {
            pages.usable()?;
            let slot = trees.slot(pages, &self.catalog, name)?;
            match (&trees.states[slot].now, &options) {
                (None, _) if !create => return Ok(None),
                (Some(record), Some(asked)) => record.options().check_opened_with(asked, name)?,
                _ => {}
            }
            let generation = trees.supersede(slot, pages)?;
            let alive = Arc::new(AtomicBool::new(true));
            let state = &mut trees.states[slot];
            state.now.get_or_insert(TreeRecord {
                values: U32::new(values.unwrap_or(0)),
                ..TreeRecord::EMPTY
            });
            state.alive = Some(Arc::clone(&alive));
            Ok(Some(WriteTree::new(
                &self.pages,
                slot,
                generation,
                pages.geometry(),
                alive,
            )))
        })
    }

    /// Deletes a tree and frees its pages; true if it existed. A handle of it that is
    /// still alive becomes stale.
    pub fn delete_tree(&self, name: &str) -> Result<bool> {
        self.pages.with(|TxnInner { pages, trees }| {
            pages.usable()?;
            let slot = trees.slot(pages, &self.catalog, name)?;
            let Some(record) = trees.states[slot].now else {
                return Ok(false);
            };
            trees.supersede(slot, pages)?;
            pages.change(|pages| tree::free_all(pages, &record))?;
            trees.states[slot].now = None;
            Ok(true)
        })
    }

    /// The names of all trees as this transaction sees them, in byte order.
    pub fn tree_names(&self) -> Result<Vec<String>> {
        self.pages.with_ref(|TxnInner { pages, trees }| {
            let mut names: BTreeSet<String> =
                tree_names(pages, self.catalog)?.into_iter().collect();
            for state in &trees.states {
                match state.now {
                    Some(_) => names.insert(state.name.clone()),
                    None => names.remove(&state.name),
                };
            }
            Ok(names.into_iter().collect())
        })
    }

    /// Sets the durability of this transaction's commit (the default comes from
    /// `Options::durability`).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// use mapkv::{Database, Durability};
    /// let db = Database::open(dir.path().join("db"))?;
    /// // Many small commits, each visible at once but not waiting for the disk...
    /// for i in 0u32..100 {
    ///     let mut wtx = db.begin_write()?;
    ///     wtx.set_durability(Durability::None);
    ///     wtx.open_tree("events")?.insert(&i.to_be_bytes(), b"")?;
    ///     wtx.commit()?;
    /// }
    /// // ...then one that makes all of them durable (one fdatasync).
    /// let wtx = db.begin_write()?;
    /// wtx.open_tree("events")?.insert(b"checkpoint", b"")?;
    /// wtx.commit()?;
    /// assert!(db.stats()?.syncs < 10);
    /// # Ok(()) }
    /// ```
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Discards every change.
    pub fn abort(self) {}

    /// The current record of `name` (None if absent).
    pub(crate) fn tree_record(&mut self, name: &str) -> Result<Option<TreeRecord>> {
        let TxnInner { pages, trees } = self.pages.inner_mut();
        let slot = trees.slot(pages, &self.catalog, name)?;
        Ok(trees.states[slot].now)
    }

    /// Replaces the record of `name` (the bulk loader's freshly built tree).
    pub(crate) fn set_tree_record(&mut self, name: &str, record: TreeRecord) -> Result<()> {
        let TxnInner { pages, trees } = self.pages.inner_mut();
        let slot = trees.slot(pages, &self.catalog, name)?;
        trees.states[slot].now = Some(record);
        Ok(())
    }

    pub(crate) fn pages_mut(&mut self) -> &mut TxnPages {
        self.pages.get_mut()
    }

    /// Committed pages this transaction copied so far (for tests).
    pub(crate) fn pages_copied(&self) -> u64 {
        self.pages
            .with_ref(|inner| Ok(inner.pages.copied))
            .unwrap_or(0)
    }
}

impl Drop for WriteTxn {
    /// An aborted transaction gives the free pages back as it found them.
    fn drop(&mut self) {
        if !self.committed {
            self.writer.free = self.pages.get_mut().alloc.undo();
        }
    }
}

// A write transaction may move between threads (see its thread rules): its writer lock
// is a parking_lot guard, which the `send_guard` feature lets another thread release.
const _: fn() = || {
    fn send_and_sync<T: Send + Sync>() {}
    send_and_sync::<WriteTxn>();
};
