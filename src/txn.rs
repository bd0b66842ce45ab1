//! Transactions: read snapshots registered in the reader table, the single write
//! transaction with its dirty pages and page allocator, and commit.
//! See FORMAT.md#commit-protocol and FORMAT.md#page-reuse.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::cursor::{Range, owned_bounds};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::free_chain::FreeChain;
use crate::freelist::{PageRuns, Pending};
use crate::meta::Meta;
use crate::page::{PageId, TxnId};
use crate::storage::PageReader;
use crate::tree::{self, Pages, TreeRecord};
use crate::txn_pages::TxnPages;
use parking_lot::{ArcMutexGuard, Mutex, RawMutex};

/// When `commit` returns relative to stable storage.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Durability {
    /// `commit` returns after the commit is on stable storage (one fdatasync).
    #[default]
    Immediate,
    /// `commit` makes the changes visible at once without waiting for the disk; they may
    /// be lost in a crash (never corrupted) and become durable with the next `Immediate`
    /// commit or a clean close.
    ///
    /// Until then, pages the last durable commit can reach are kept from reuse (a crash
    /// falls back to it) and listed in every commit's free list. When they form more than
    /// `FALLBACK_RUNS_MAX` (512) runs, a `None` commit is made durable after all (one
    /// fdatasync), so that neither the file nor the cost of a commit grows without bound:
    /// 20,000 one-key `None` commits to a million-entry tree averaged 1 ms each before
    /// this rule, 83 µs with it.
    None,
}

/// A committed state that readers can see.
pub(crate) struct Snapshot {
    pub meta: Meta,
}

// ---- reader table ----------------------------------------------------------------------

/// Snapshot ids of live readers, so the writer knows the oldest one. Readers claim a slot
/// with one compare-and-swap; if all slots are taken they queue in a locked map.
pub(crate) struct Readers {
    slots: Box<[AtomicU64]>,
    overflow: Mutex<BTreeMap<u64, usize>>,
}

const READER_SLOTS: usize = 256;

#[derive(Clone, Copy)]
enum ReaderSlot {
    Slot(usize),
    Overflow(u64),
}

impl Readers {
    pub(crate) fn new() -> Readers {
        Readers {
            slots: (0..READER_SLOTS).map(|_| AtomicU64::new(0)).collect(),
            overflow: Mutex::new(BTreeMap::new()),
        }
    }

    fn register(&self, txn: TxnId) -> ReaderSlot {
        for (i, slot) in self.slots.iter().enumerate() {
            if slot.load(Ordering::Relaxed) == 0
                && slot
                    .compare_exchange(0, txn.0, Ordering::SeqCst, Ordering::Relaxed)
                    .is_ok()
            {
                return ReaderSlot::Slot(i);
            }
        }
        *self.overflow.lock().entry(txn.0).or_default() += 1;
        ReaderSlot::Overflow(txn.0)
    }

    fn release(&self, slot: ReaderSlot) {
        match slot {
            ReaderSlot::Slot(i) => self.slots[i].store(0, Ordering::SeqCst),
            ReaderSlot::Overflow(txn) => {
                let mut map = self.overflow.lock();
                let n = map.get_mut(&txn).expect("registered reader");
                *n -= 1;
                if *n == 0 {
                    map.remove(&txn);
                }
            }
        }
    }

    /// The oldest snapshot any live reader holds.
    pub(crate) fn oldest(&self) -> Option<TxnId> {
        let in_slots = self
            .slots
            .iter()
            .map(|s| s.load(Ordering::SeqCst))
            .filter(|&t| t != 0)
            .min();
        let in_overflow = self.overflow.lock().keys().next().copied();
        in_slots.into_iter().chain(in_overflow).min().map(TxnId)
    }
}

// ---- read transactions -----------------------------------------------------------------

/// A consistent snapshot of the database. Cheap to begin; never blocks the writer.
/// Everything it returns borrows from it and stays valid until it is dropped.
pub struct ReadTxn {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    reader: PageReader,
    slot: ReaderSlot,
}

impl ReadTxn {
    pub(crate) fn begin(shared: &Arc<Shared>) -> ReadTxn {
        // Registering while holding the read lock means a writer that publishes a newer
        // snapshot afterwards and then scans the table will see this reader.
        let (snapshot, slot) = {
            let current = shared.current.read();
            let slot = shared.readers.register(current.meta.txn());
            (Arc::clone(&current), slot)
        };
        let reader = shared.storage.reader(snapshot.meta.page_count());
        ReadTxn {
            shared: Arc::clone(shared),
            snapshot,
            reader,
            slot,
        }
    }

    pub(crate) fn meta(&self) -> &Meta {
        &self.snapshot.meta
    }

    pub(crate) fn pages(&self) -> &PageReader {
        &self.reader
    }

    /// Opens an existing tree; `Error::TreeNotFound` if there is none by that name.
    pub fn open_tree(&self, name: &str) -> Result<ReadTree<'_>> {
        match find_tree(&self.reader, &self.snapshot.meta.catalog, name)? {
            Some(record) => Ok(ReadTree { txn: self, record }),
            None => Err(Error::TreeNotFound(name.to_string())),
        }
    }

    /// The names of all trees, in byte order.
    pub fn tree_names(&self) -> Result<Vec<String>> {
        tree_names(&self.reader, self.snapshot.meta.catalog)
    }
}

impl Drop for ReadTxn {
    fn drop(&mut self) {
        self.shared.readers.release(self.slot);
    }
}

pub(crate) fn find_tree<P: Pages + ?Sized>(
    pages: &P,
    catalog: &TreeRecord,
    name: &str,
) -> Result<Option<TreeRecord>> {
    match tree::get(pages, catalog, name.as_bytes())? {
        Some(bytes) => Ok(Some(TreeRecord::decode(bytes, catalog.root.page())?)),
        None => Ok(None),
    }
}

fn tree_names(pages: &dyn Pages, catalog: TreeRecord) -> Result<Vec<String>> {
    let range = Range::new(
        pages,
        catalog,
        std::ops::Bound::Unbounded,
        std::ops::Bound::Unbounded,
    );
    range
        .map(|entry| {
            let (name, _) = entry?;
            String::from_utf8(name.to_vec())
                .map_err(|_| Error::corrupted(catalog.root.page.get(), "tree name is not UTF-8"))
        })
        .collect()
}

/// A tree as seen by a [`ReadTxn`].
pub struct ReadTree<'t> {
    txn: &'t ReadTxn,
    record: TreeRecord,
}

impl<'t> ReadTree<'t> {
    /// The value stored under `key`, borrowed for the whole transaction.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'t [u8]>> {
        tree::get(&self.txn.reader, &self.record, key)
    }

    /// Entries with keys in `range`, ascending (or descending with `.rev()`).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Range<'t>> {
        let (lower, upper) = owned_bounds(&range);
        Ok(Range::new(&self.txn.reader, self.record, lower, upper))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<Range<'t>> {
        self.range::<&[u8], _>(..)
    }

    /// The number of entries (stored in the tree's record: no scan).
    pub fn len(&self) -> Result<u64> {
        Ok(self.record.entries.get())
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.record.entries.get() == 0)
    }
}

// ---- write transactions ----------------------------------------------------------------

/// State that belongs to whichever write transaction holds the writer lock.
pub(crate) struct Writer {
    /// Pages any write transaction may overwrite now.
    pub free: PageRuns,
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
}

/// The one write transaction. Changes are visible only to it until `commit`; dropping it
/// without committing discards them.
pub struct WriteTxn {
    // Declared first, so dropped first: when this transaction holds the last reference to
    // `Shared`, dropping that reference closes the database (`Shared::drop`), which takes
    // the writer lock; the lock must be free by then.
    pub(crate) writer: ArcMutexGuard<RawMutex, Writer>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) base: Arc<Snapshot>,
    pub(crate) pages: TxnPages,
    pub(crate) catalog: TreeRecord,
    pub(crate) trees: TouchedTrees,
    pub(crate) durability: Durability,
    /// Set once the commit has handed the free pages back to the writer.
    pub(crate) committed: bool,
    /// A pass of `Database::compact`: the commit folds the free list (so that its
    /// record moves down too), commits even if nothing changed, and cuts the file to its
    /// end exactly.
    pub(crate) compacting: bool,
}

/// The trees a write transaction opened or deleted. Each record is kept here, and only
/// here, from the moment it is looked up: a tree handle edits it in place, so the
/// transaction knows every tree's current root whatever becomes of the handle.
#[derive(Default)]
pub(crate) struct TouchedTrees {
    states: Vec<TreeState>,
    by_name: HashMap<String, usize>,
}

impl TouchedTrees {
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
}

struct TreeState {
    name: String,
    /// The record now; None if the tree is absent (never created, or deleted).
    now: Option<TreeRecord>,
    /// The record when the transaction began.
    before: Option<TreeRecord>,
}

impl WriteTxn {
    pub(crate) fn begin(shared: &Arc<Shared>) -> Result<WriteTxn> {
        if shared.read_only {
            return Err(Error::ReadOnly);
        }
        shared.storage.check_not_poisoned()?;
        let mut writer = shared.writer.lock_arc();
        let base = Arc::clone(&shared.current.read());
        let oldest_reader = shared.readers.oldest().unwrap_or(base.meta.txn());
        let w = &mut *writer;
        if !w.pending.release(oldest_reader, w.durable, &mut w.free) {
            return Err(Error::corrupted(0, "a page was freed twice"));
        }
        let pages = TxnPages::new(
            &shared.storage,
            base.meta.txn(),
            base.meta.page_count(),
            std::mem::take(&mut writer.free),
            writer.durable,
        );
        Ok(WriteTxn {
            catalog: base.meta.catalog,
            writer,
            shared: Arc::clone(shared),
            base,
            pages,
            trees: TouchedTrees::default(),
            durability: shared.durability,
            committed: false,
            compacting: false,
        })
    }

    /// Opens a tree for reading and writing, creating it if absent (the new tree exists
    /// once the transaction commits). One tree at a time: drop it to open another.
    pub fn open_tree(&mut self, name: &str) -> Result<WriteTree<'_>> {
        self.pages.usable()?;
        let slot = self.tree_slot(name)?;
        self.trees.states[slot].now.get_or_insert(TreeRecord::EMPTY);
        Ok(WriteTree { txn: self, slot })
    }

    /// Deletes a tree and frees its pages; true if it existed.
    pub fn delete_tree(&mut self, name: &str) -> Result<bool> {
        self.pages.usable()?;
        let slot = self.tree_slot(name)?;
        let Some(record) = self.trees.states[slot].now else {
            return Ok(false);
        };
        self.pages.change(|pages| tree::free_all(pages, &record))?;
        self.trees.states[slot].now = None;
        Ok(true)
    }

    /// The names of all trees as this transaction sees them, in byte order.
    pub fn tree_names(&self) -> Result<Vec<String>> {
        let mut names: std::collections::BTreeSet<String> =
            tree_names(&self.pages, self.catalog)?.into_iter().collect();
        for state in &self.trees.states {
            match state.now {
                Some(_) => names.insert(state.name.clone()),
                None => names.remove(&state.name),
            };
        }
        Ok(names.into_iter().collect())
    }

    /// The current record of `name` (None if absent).
    pub(crate) fn tree_record(&mut self, name: &str) -> Result<Option<TreeRecord>> {
        let slot = self.tree_slot(name)?;
        Ok(self.trees.states[slot].now)
    }

    /// Where `name`'s record is kept in `self.trees`, looking it up in the catalog the
    /// first time.
    fn tree_slot(&mut self, name: &str) -> Result<usize> {
        let g = self.pages.geometry();
        if name.len() > g.key_len_max() {
            return Err(Error::KeyTooLarge {
                size: name.len(),
                max: g.key_len_max(),
            });
        }
        if let Some(&slot) = self.trees.by_name.get(name) {
            return Ok(slot);
        }
        let found = find_tree(&self.pages, &self.catalog, name)?;
        let slot = self.trees.states.len();
        self.trees.states.push(TreeState {
            name: name.to_string(),
            now: found,
            before: found,
        });
        self.trees.by_name.insert(name.to_string(), slot);
        Ok(slot)
    }

    /// Sets the durability of this transaction's commit.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Discards every change.
    pub fn abort(self) {}

    /// Replaces the record of `name` (the bulk loader's freshly built tree).
    pub(crate) fn set_tree_record(&mut self, name: &str, record: TreeRecord) -> Result<()> {
        let slot = self.tree_slot(name)?;
        self.trees.states[slot].now = Some(record);
        Ok(())
    }

    pub(crate) fn pages_mut(&mut self) -> &mut TxnPages {
        &mut self.pages
    }
}

impl Drop for WriteTxn {
    /// An aborted transaction gives the free pages back as it found them.
    fn drop(&mut self) {
        if !self.committed {
            self.writer.free = self.pages.alloc.undo();
        }
    }
}

/// A tree in a [`WriteTxn`]: reads see the transaction's own writes. Every change goes
/// straight into the transaction: leaking the handle loses nothing, and a change that is
/// interrupted (an error, or a panic the caller catches) makes the transaction refuse to
/// commit.
pub struct WriteTree<'t> {
    txn: &'t mut WriteTxn,
    /// Where the tree's record is kept in `txn.trees`.
    slot: usize,
}

impl WriteTree<'_> {
    /// Inserts `key` → `value`, replacing any previous value.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.change(|pages, record| tree::insert(pages, record, key, value))
    }

    /// Inserts `key` → `value` after the tree's last entry: the fast path for keys that
    /// arrive in ascending order (time series, log positions). It goes down the tree's
    /// rightmost edge without searching, and a full page is cut where the entry goes, so
    /// appended pages stay full. A `key` not greater than the tree's last key is refused
    /// with [`Error::Unsorted`](crate::Error::Unsorted), `index` being the tree's entry
    /// count (the position the entry would have had), and nothing changes. Sizes are
    /// limited as for [`insert`](Self::insert).
    ///
    /// ```
    /// use mapkv::{Database, Error, Result};
    ///
    /// # fn main() -> Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path().join("log.mapkv"))?;
    /// let mut w = db.begin_write()?;
    /// let mut log = w.open_tree("log")?;
    /// for i in 0u64..1000 {
    ///     log.append(&i.to_be_bytes(), b"entry")?;
    /// }
    /// assert!(matches!(
    ///     log.append(&5u64.to_be_bytes(), b"late"),
    ///     Err(Error::Unsorted { index: 1000 })
    /// ));
    /// assert_eq!(log.len()?, 1000);
    /// drop(log);
    /// w.commit()?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn append(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.change(|pages, record| tree::append(pages, record, key, value))
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        self.change(|pages, record| tree::remove(pages, record, key))
    }

    /// The value stored under `key`, borrowed until the tree is next modified.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        self.txn.pages.usable()?;
        tree::get(&self.txn.pages, &self.record(), key)
    }

    /// Entries with keys in `range`, ascending (or descending with `.rev()`).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Range<'_>> {
        self.txn.pages.usable()?;
        let (lower, upper) = owned_bounds(&range);
        Ok(Range::new(&self.txn.pages, self.record(), lower, upper))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<Range<'_>> {
        self.range::<&[u8], _>(..)
    }

    /// The number of entries.
    pub fn len(&self) -> Result<u64> {
        Ok(self.record().entries.get())
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.record().entries.get() == 0)
    }

    fn record(&self) -> TreeRecord {
        self.txn.trees.states[self.slot]
            .now
            .expect("an open tree has a record")
    }

    /// Runs `f` on the transaction's pages and this tree's record, in place.
    pub(crate) fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TxnPages, &mut TreeRecord) -> Result<T>,
    ) -> Result<T> {
        let WriteTxn { pages, trees, .. } = &mut *self.txn;
        let record = trees.states[self.slot]
            .now
            .as_mut()
            .expect("an open tree has a record");
        pages.change(|pages| f(pages, record))
    }
}
