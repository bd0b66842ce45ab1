//! Transactions: read snapshots registered in the reader table, the single write
//! transaction with its dirty pages and page allocator, and commit.
//! See FORMAT.md#commit-protocol and FORMAT.md#page-reuse.

use std::collections::{BTreeMap, HashMap};
use std::ops::RangeBounds;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::{ArcMutexGuard, Mutex, RawMutex};
use zerocopy::IntoBytes;

use crate::cursor::{Range, owned_bounds};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::freelist::{PageRuns, Pending};
use crate::meta::Meta;
use crate::node::{self, BLOB_HEADER_BYTES, OverflowRef};
use crate::page::{ChildRef, Geometry, PageId, PageMap, TxnId, page_checksum};
use crate::storage::{PageReader, Storage};
use crate::tree::{self, Pages, TreeRecord};

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

/// See `Durability::None`.
const FALLBACK_RUNS_MAX: usize = 512;

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

// ---- the write transaction's pages -----------------------------------------------------

/// Pages as one write transaction sees them: its dirty pages (in memory until commit)
/// over the committed snapshot, the pages it may overwrite, and the pages it freed.
pub(crate) struct TxnPages {
    pub txn: TxnId,
    /// Reused buffer for encoding cells.
    pub scratch: Vec<u8>,
    storage: Arc<Storage>,
    reader: PageReader,
    dirty: PageMap<Box<[u8]>>,
    /// Pages no snapshot and no fallback meta can reach: this transaction may write them.
    free: PageRuns,
    /// Runs of committed pages this transaction stopped using, in the order freed; free
    /// once no snapshot needs them (and, for `freed`, once the fallback cannot need them).
    freed: Vec<(PageId, u64)>,
    /// Freed pages written after the newest durable commit: the fallback cannot reach them.
    freed_volatile: Vec<(PageId, u64)>,
    /// The newest durable commit when this transaction began (it cannot change before
    /// this transaction commits: there is one writer).
    durable: TxnId,
    /// One past the highest page in use or free (the file's logical end).
    page_count: PageId,
    /// Why a change failed half-way (an I/O error, a corrupt page): the transaction's
    /// pages may be inconsistent, so `commit` refuses.
    pub failed: Option<String>,
}

impl Pages for TxnPages {
    fn page(&self, id: PageId) -> Result<&[u8]> {
        match self.dirty.get(&id) {
            Some(b) => Ok(b),
            None => self.reader.page(id),
        }
    }

    fn run(&self, id: PageId, pages: u64) -> Result<&[u8]> {
        self.reader.run(id, pages)
    }

    fn geometry(&self) -> Geometry {
        *self.reader.geometry()
    }
}

impl Pages for PageReader {
    fn page(&self, id: PageId) -> Result<&[u8]> {
        PageReader::page(self, id)
    }

    fn run(&self, id: PageId, pages: u64) -> Result<&[u8]> {
        PageReader::run(self, id, pages)
    }

    fn geometry(&self) -> Geometry {
        *PageReader::geometry(self)
    }
}

impl TxnPages {
    /// Remembers an error that may have left a change half-done. Size errors are checked
    /// before anything changes, so they leave the transaction usable.
    pub(crate) fn note_failure<T>(&mut self, r: Result<T>) -> Result<T> {
        if let Err(e @ (Error::Io(_) | Error::Corrupted { .. })) = &r {
            self.failed.get_or_insert_with(|| e.to_string());
        }
        r
    }

    /// One past the last page in use or free: where sequential writes can go.
    pub(crate) fn end(&self) -> PageId {
        self.page_count
    }

    /// Claims the pages up to `end`, written directly (by the bulk loader).
    pub(crate) fn set_end(&mut self, end: PageId) {
        assert!(end >= self.page_count, "the end only grows");
        self.page_count = end;
        self.reader.extend_limit(end);
    }

    pub(crate) fn is_dirty(&self, id: PageId) -> bool {
        self.dirty.contains_key(&id)
    }

    /// A reference to dirty page `id`; its checksum is filled in at commit.
    pub(crate) fn dirty_ref(&self, id: PageId) -> ChildRef {
        ChildRef::new(id, 0, self.txn)
    }

    pub(crate) fn dirty(&self, id: PageId) -> &[u8] {
        self.dirty.get(&id).expect("page is dirty")
    }

    pub(crate) fn dirty_mut(&mut self, id: PageId) -> &mut [u8] {
        self.dirty.get_mut(&id).expect("page is dirty")
    }

    pub(crate) fn take(&mut self, id: PageId) -> Box<[u8]> {
        self.dirty.remove(&id).expect("page is dirty")
    }

    pub(crate) fn put(&mut self, id: PageId, page: Box<[u8]>) {
        self.dirty.insert(id, page);
    }

    fn alloc_run(&mut self, pages: u64) -> PageId {
        if let Some(id) = self.free.take(pages) {
            return id;
        }
        let id = self.page_count;
        self.page_count = PageId(id.0 + pages);
        id
    }

    /// A new zeroed dirty page.
    pub(crate) fn alloc_page(&mut self) -> (PageId, &mut [u8]) {
        let page = vec![0; self.geometry().page_size].into_boxed_slice();
        let id = self.add_page(page);
        (id, self.dirty_mut(id))
    }

    pub(crate) fn add_page(&mut self, page: Box<[u8]>) -> PageId {
        let id = self.alloc_run(1);
        self.dirty.insert(id, page);
        id
    }

    /// Copy-on-write: returns a dirty page with the content of `r`, which is `r` itself
    /// if this transaction already made it dirty, else a copy at a new page id (the
    /// committed page is freed: snapshots keep reading it).
    pub(crate) fn shadow(&mut self, r: &ChildRef) -> Result<PageId> {
        let id = r.page();
        if self.dirty.contains_key(&id) {
            return Ok(id);
        }
        let mut copy: Box<[u8]> = self.reader.page(id)?.into();
        node::set_txn(&mut copy, self.txn);
        self.free_page(r)?;
        Ok(self.add_page(copy))
    }

    /// Frees a page this transaction no longer references.
    pub(crate) fn free_page(&mut self, r: &ChildRef) -> Result<()> {
        let id = r.page();
        if self.dirty.remove(&id).is_some() {
            // Written by this transaction only: nobody else can see it.
            let fresh = self.free.insert(id, 1);
            assert!(fresh, "dirty page {id:?} was also free");
            return Ok(());
        }
        self.free_run(id, 1, r.txn())
    }

    /// Frees the blob holding an overflow value.
    pub(crate) fn free_blob(&mut self, o: &OverflowRef) -> Result<()> {
        let pages = self.geometry().blob_pages(o.len.get());
        self.reader.forget(o.blob.page());
        self.free_run(o.blob.page(), pages, o.blob.txn())
    }

    fn free_run(&mut self, id: PageId, pages: u64, writer: TxnId) -> Result<()> {
        let out_of_range =
            id.0.checked_add(pages)
                .is_none_or(|end| end > self.page_count.0);
        if out_of_range || id < self.geometry().first_data_page() || self.free.contains(id) {
            return Err(Error::corrupted(
                id.0,
                "freed page is outside the file or already free",
            ));
        }
        if writer == self.txn {
            // Written by this transaction only: nobody else can see it.
            if !self.free.insert(id, pages) {
                return Err(Error::corrupted(id.0, "page freed twice"));
            }
        } else if writer > self.durable {
            self.freed_volatile.push((id, pages));
        } else {
            self.freed.push((id, pages));
        }
        Ok(())
    }

    /// The committed pages this transaction freed, as a set. A page freed twice means the
    /// file references it twice: `Corrupted`.
    /// The committed pages this transaction freed: (reachable by the durable fallback,
    /// written after it). A page freed twice means the file references it twice.
    fn freed_runs(&mut self) -> Result<(PageRuns, PageRuns)> {
        let mut sets = [PageRuns::new(), PageRuns::new()];
        for (set, list) in sets
            .iter_mut()
            .zip([&mut self.freed, &mut self.freed_volatile])
        {
            list.sort_unstable();
            *set = PageRuns::from_sorted(list)
                .ok_or_else(|| Error::corrupted(list[0].0.0, "a page was freed twice"))?;
        }
        let [durable, volatile] = sets;
        if PageRuns::union([&durable, &volatile]).is_none() {
            return Err(Error::corrupted(0, "a page was freed twice"));
        }
        Ok((durable, volatile))
    }

    /// Writes a blob now (large values do not wait in memory for the commit) into pages
    /// no snapshot can reach, and returns its reference with its checksum.
    pub(crate) fn write_blob(&mut self, payload: &[u8]) -> Result<OverflowRef> {
        let g = self.geometry();
        let pages = g.blob_pages(payload.len() as u64);
        let id = self.alloc_run(pages);
        let blob = self.write_blob_at(id, pages, payload)?;
        Ok(OverflowRef {
            blob,
            len: zerocopy::little_endian::U64::new(payload.len() as u64),
        })
    }

    fn write_blob_at(&mut self, id: PageId, pages: u64, payload: &[u8]) -> Result<ChildRef> {
        let g = self.geometry();
        let mut head = [0u8; BLOB_HEADER_BYTES];
        node::init_blob(&mut head, self.txn, payload.len() as u64);
        let padding =
            vec![0; (pages * g.page_bytes()) as usize - BLOB_HEADER_BYTES - payload.len()];
        let mut h = crc32fast::Hasher::new();
        h.update(&head[..4]);
        h.update(&[0; 4]);
        h.update(&head[8..]);
        h.update(payload);
        h.update(&padding);
        let checksum = h.finalize();
        head[4..8].copy_from_slice(&checksum.to_le_bytes());
        let end = g.offset(PageId(id.0 + pages));
        self.storage.ensure_len(end)?;
        self.storage.write_pages(id, &[&head, payload, &padding])?;
        self.reader.extend_limit(self.page_count);
        Ok(ChildRef::new(id, checksum, self.txn))
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
}

/// The one write transaction. Changes are visible only to it until `commit`; dropping it
/// without committing discards them.
pub struct WriteTxn {
    shared: Arc<Shared>,
    writer: ArcMutexGuard<RawMutex, Writer>,
    base: Arc<Snapshot>,
    pages: TxnPages,
    catalog: TreeRecord,
    /// Trees opened or deleted in this transaction: (record now or None if deleted,
    /// record at the start or None if absent).
    trees: BTreeMap<String, (Option<TreeRecord>, Option<TreeRecord>)>,
    durability: Durability,
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
        let pages = TxnPages {
            txn: TxnId(base.meta.txn().0 + 1),
            scratch: Vec::new(),
            storage: Arc::clone(&shared.storage),
            reader: shared.storage.reader(base.meta.page_count()),
            dirty: HashMap::default(),
            free: writer.free.clone(),
            freed: Vec::new(),
            freed_volatile: Vec::new(),
            durable: writer.durable,
            page_count: base.meta.page_count(),
            failed: None,
        };
        Ok(WriteTxn {
            shared: Arc::clone(shared),
            catalog: base.meta.catalog,
            writer,
            base,
            pages,
            trees: BTreeMap::new(),
            durability: shared.durability,
        })
    }

    /// Opens a tree for reading and writing, creating it if absent (the new tree exists
    /// once the transaction commits). One tree at a time: drop it to open another.
    pub fn open_tree(&mut self, name: &str) -> Result<WriteTree<'_>> {
        let record = self.tree_record(name)?.unwrap_or(TreeRecord::EMPTY);
        self.trees.entry(name.to_string()).or_insert((None, None)).0 = Some(record);
        Ok(WriteTree {
            txn: self,
            name: name.to_string(),
            record,
        })
    }

    /// Deletes a tree and frees its pages; true if it existed.
    pub fn delete_tree(&mut self, name: &str) -> Result<bool> {
        let Some(record) = self.tree_record(name)? else {
            return Ok(false);
        };
        let freed = tree::free_all(&mut self.pages, &record);
        self.pages.note_failure(freed)?;
        self.trees.get_mut(name).expect("looked up").0 = None;
        Ok(true)
    }

    /// The names of all trees as this transaction sees them, in byte order.
    pub fn tree_names(&self) -> Result<Vec<String>> {
        let mut names: std::collections::BTreeSet<String> =
            tree_names(&self.pages, self.catalog)?.into_iter().collect();
        for (name, (now, _)) in &self.trees {
            match now {
                Some(_) => names.insert(name.clone()),
                None => names.remove(name),
            };
        }
        Ok(names.into_iter().collect())
    }

    /// The current record of `name`, remembering its original in `self.trees`.
    pub(crate) fn tree_record(&mut self, name: &str) -> Result<Option<TreeRecord>> {
        let g = self.pages.geometry();
        if name.len() > g.key_len_max() {
            return Err(Error::KeyTooLarge {
                size: name.len(),
                max: g.key_len_max(),
            });
        }
        if let Some((now, _)) = self.trees.get(name) {
            return Ok(*now);
        }
        let found = find_tree(&self.pages, &self.catalog, name)?;
        self.trees.insert(name.to_string(), (found, found));
        Ok(found)
    }

    /// Sets the durability of this transaction's commit.
    pub fn set_durability(&mut self, durability: Durability) {
        self.durability = durability;
    }

    /// Discards every change.
    pub fn abort(self) {}

    /// Replaces the record of `name` (the bulk loader's freshly built tree).
    pub(crate) fn set_tree_record(&mut self, name: &str, record: TreeRecord) {
        self.trees.entry(name.to_string()).or_insert((None, None)).0 = Some(record);
    }

    pub(crate) fn pages_mut(&mut self) -> &mut TxnPages {
        &mut self.pages
    }

    /// Makes the changes visible to new readers, and durable if the durability is
    /// `Immediate`. See FORMAT.md#commit-protocol.
    pub fn commit(mut self) -> Result<()> {
        if let Some(why) = self.pages.failed.take() {
            return Err(Error::Io(std::io::Error::other(format!(
                "nothing committed: an earlier change in this transaction failed ({why})"
            ))));
        }
        let changed_trees: Vec<(String, Option<TreeRecord>)> = std::mem::take(&mut self.trees)
            .into_iter()
            .filter(|(_, (now, before))| match (now, before) {
                (Some(a), Some(b)) => !a.same_as(b),
                (None, None) => false,
                _ => true,
            })
            .map(|(name, (now, _))| (name, now))
            .collect();
        let nothing_changed = changed_trees.is_empty()
            && self.pages.dirty.is_empty()
            && self.pages.freed.is_empty()
            && self.pages.freed_volatile.is_empty();
        if nothing_changed {
            if self.durability == Durability::Immediate
                && self.writer.durable < self.base.meta.txn()
            {
                return self.make_durable();
            }
            return Ok(());
        }
        for (name, record) in changed_trees {
            match record {
                Some(mut r) => {
                    r.root = tree::seal_dirty(&mut self.pages, r.root)?;
                    tree::insert(
                        &mut self.pages,
                        &mut self.catalog,
                        name.as_bytes(),
                        r.as_bytes(),
                    )?;
                }
                None => {
                    tree::remove(&mut self.pages, &mut self.catalog, name.as_bytes())?;
                }
            }
        }
        self.catalog.root = tree::seal_dirty(&mut self.pages, self.catalog.root)?;
        let old_free_list = self.base.meta.free_list;
        if !old_free_list.is_null() {
            let pages = self.old_free_list_pages(&old_free_list)?;
            self.pages
                .free_run(old_free_list.page(), pages, old_free_list.txn())?;
        }
        let (freed, freed_volatile) = self.pages.freed_runs()?;
        let free_list = self.write_free_list(&[&freed, &freed_volatile])?;
        let meta = Meta {
            txn: self.pages.txn.0.into(),
            durable_before: self.writer.durable.0.into(),
            page_count: self.pages.page_count.0.into(),
            catalog: self.catalog,
            free_list,
            ..self.base.meta
        };
        self.write_dirty_pages()?;
        let fallback_runs = self.writer.pending.fallback_runs() + freed.run_count();
        if self.durability == Durability::Immediate || fallback_runs > FALLBACK_RUNS_MAX {
            self.write_meta(&meta)?;
        }
        let w = &mut *self.writer;
        w.free = std::mem::take(&mut self.pages.free);
        w.pending.add(self.pages.txn, freed, true);
        w.pending.add(self.pages.txn, freed_volatile, false);
        *self.shared.current.write() = Arc::new(Snapshot { meta });
        Ok(())
    }

    /// Writes the base snapshot's meta so that it becomes durable (after `None` commits).
    fn make_durable(&mut self) -> Result<()> {
        let meta = Meta {
            durable_before: self.writer.durable.0.into(),
            ..self.base.meta
        };
        self.write_meta(&meta)
    }

    /// Writes `meta` into the slot that does not hold the durable fallback, then syncs:
    /// the commit's one fdatasync covers its pages, its meta and any file growth.
    fn write_meta(&mut self, meta: &Meta) -> Result<()> {
        let slot = 1 - self.writer.durable_slot;
        write_meta_slot(&self.shared.storage, slot, meta)?;
        self.shared.storage.sync()?;
        self.writer.durable = meta.txn();
        self.writer.durable_slot = slot;
        Ok(())
    }

    /// Writes the free list of the state being committed into a blob, allocated from
    /// the free pages themselves. See FORMAT.md#free-list.
    fn write_free_list(&mut self, freed: &[&PageRuns]) -> Result<ChildRef> {
        let sets_before = self
            .writer
            .pending
            .all()
            .map(PageRuns::run_count)
            .sum::<usize>()
            + self.pages.free.run_count()
            + freed.iter().map(|f| f.run_count()).sum::<usize>();
        if sets_before == 0 {
            return Ok(ChildRef::NULL);
        }
        // Taking the blob's pages from the free set can split a run of the union in two,
        // so size it for one more run than all the sets hold now; unused room stays zero.
        let g = self.pages.geometry();
        let blob_pages = g.blob_pages(PageRuns::encoded_len(sets_before + 1));
        let id = self.pages.alloc_run(blob_pages);
        let all = std::iter::once(&self.pages.free)
            .chain(freed.iter().copied())
            .chain(self.writer.pending.all());
        let union =
            PageRuns::union(all).ok_or_else(|| Error::corrupted(id.0, "free page sets overlap"))?;
        let capacity = (blob_pages * g.page_bytes()) as usize - node::BLOB_HEADER_BYTES;
        let mut payload = Vec::with_capacity(capacity);
        union.encode(&mut payload);
        assert!(payload.len() <= capacity, "free list outgrew its blob");
        payload.resize(capacity, 0);
        self.pages.write_blob_at(id, blob_pages, &payload)
    }

    fn old_free_list_pages(&self, old: &ChildRef) -> Result<u64> {
        let head = self.pages.reader.page(old.page())?;
        let h = zerocopy::FromBytes::ref_from_prefix(head)
            .map(|(h, _): (&node::BlobHeader, _)| h.len.get())
            .map_err(|_| Error::corrupted(old.page.get(), "free list header"))?;
        Ok(self.pages.geometry().blob_pages(h))
    }

    /// Writes every dirty page, adjacent pages in one pwritev.
    fn write_dirty_pages(&mut self) -> Result<()> {
        let storage = Arc::clone(&self.shared.storage);
        let g = self.pages.geometry();
        storage.ensure_len(g.offset(self.pages.page_count))?;
        let mut ids: Vec<PageId> = self.pages.dirty.keys().copied().collect();
        ids.sort_unstable();
        let mut start = 0;
        while start < ids.len() {
            let mut end = start + 1;
            while end < ids.len() && ids[end].0 == ids[end - 1].0 + 1 {
                end += 1;
            }
            let bufs: Vec<&[u8]> = ids[start..end]
                .iter()
                .map(|id| &self.pages.dirty[id][..])
                .collect();
            debug_assert!(
                bufs.iter()
                    .all(|b| page_checksum(b) == crate::page::header(b).checksum.get())
            );
            storage.write_pages(ids[start], &bufs)?;
            start = end;
        }
        Ok(())
    }
}

pub(crate) fn write_meta_slot(storage: &Storage, slot: u64, meta: &Meta) -> Result<()> {
    assert!(slot < 2, "meta slot {slot}");
    let bytes = meta.encode();
    storage.write_at(slot * crate::page::META_SLOT_BYTES, &[&bytes])
}

/// A tree in a [`WriteTxn`]: reads see the transaction's own writes.
pub struct WriteTree<'t> {
    txn: &'t mut WriteTxn,
    name: String,
    record: TreeRecord,
}

impl WriteTree<'_> {
    /// Inserts `key` → `value`, replacing any previous value.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        let r = tree::insert(&mut self.txn.pages, &mut self.record, key, value);
        self.txn.pages.note_failure(r)
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, key: &[u8]) -> Result<bool> {
        let r = tree::remove(&mut self.txn.pages, &mut self.record, key);
        self.txn.pages.note_failure(r)
    }

    /// The value stored under `key`, borrowed until the tree is next modified.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        tree::get(&self.txn.pages, &self.record, key)
    }

    /// Entries with keys in `range`, ascending (or descending with `.rev()`).
    pub fn range<K: AsRef<[u8]>, R: RangeBounds<K>>(&self, range: R) -> Result<Range<'_>> {
        let (lower, upper) = owned_bounds(&range);
        Ok(Range::new(&self.txn.pages, self.record, lower, upper))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<Range<'_>> {
        self.range::<&[u8], _>(..)
    }

    /// The number of entries.
    pub fn len(&self) -> Result<u64> {
        Ok(self.record.entries.get())
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.record.entries.get() == 0)
    }
}

impl Drop for WriteTree<'_> {
    fn drop(&mut self) {
        if let Some(entry) = self.txn.trees.get_mut(&self.name) {
            entry.0 = Some(self.record);
        }
    }
}
