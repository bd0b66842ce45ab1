//! A tree of the write transaction: its handle, how the handle reads the transaction's
//! pages (under the transaction's lock, with slices that borrow the handle), and its
//! changes. See `write_txn` for the transaction itself.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::cursor::{KeyRange, Range, owned_bounds, prefix_bounds};
use crate::error::Result;
use crate::page::{Geometry, PageId};
use crate::prune;
use crate::tree::{self, Pages, TreeRecord};
use crate::txn_pages::{BlobRun, TxnPages};
use crate::write_txn::{TxnInner, TxnLock};
use crate::{node, reserve, stream};

/// A tree in a [`WriteTxn`](crate::WriteTxn): reads see the transaction's own writes. Every change goes
/// straight into the transaction: leaking or dropping the handle loses nothing, and a
/// change that is interrupted (an error, or a panic the caller catches) makes the
/// transaction refuse to commit. `Send + Sync`.
pub struct WriteTree<'t> {
    view: TreeView<'t>,
    _alive: AliveMark,
}

/// A blob run that `insert_from` took and has not (yet) put in the tree: given back to
/// the allocator unless adopted, also when the user's reader panics.
struct TakenRun<'t> {
    lock: &'t TxnLock,
    run: Option<BlobRun>,
}

impl TakenRun<'_> {
    fn give_back(&mut self) -> Result<()> {
        match self.run.take() {
            Some(run) => self.lock.with(|inner| inner.pages.give_back_run(&run)),
            None => Ok(()),
        }
    }
}

impl Drop for TakenRun<'_> {
    fn drop(&mut self) {
        // Only a panic gets here with the run still taken; an error giving it back
        // (a reentrant borrow) would leave it taken, and `Database::check` would report
        // it, but a panic is already under way.
        let _ = self.give_back();
    }
}

/// Tells the transaction that a handle was dropped, so that opening its tree again
/// need not freeze the dirty pages. It borrows nothing: a handle can be dropped after
/// the transaction committed (the borrow checker ends a handle's borrow at its last
/// use, and `WriteTree` has no `Drop` of its own for that reason).
struct AliveMark(Arc<AtomicBool>);

impl Drop for AliveMark {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// How a tree handle reads pages: through the transaction, under its lock, for as
/// long as the handle is borrowed.
struct TreeView<'t> {
    lock: &'t TxnLock,
    /// Where the tree's state is kept in `TouchedTrees`.
    slot: usize,
    /// The tree's generation when this handle was opened.
    generation: u64,
    geometry: Geometry,
}

impl TreeView<'_> {
    /// The tree's record, unless the handle is stale or an earlier change failed. Ends
    /// the handle's reservation, if any: a call through `&self` means the bytes it handed
    /// out are no longer borrowed.
    fn record(&self) -> Result<TreeRecord> {
        let found = self.lock.with_ref(|TxnInner { pages, trees }| {
            pages.usable()?;
            let record = trees.current_record(self.slot, self.generation)?;
            Ok((!trees.is_reserved(self.slot)).then_some(record))
        })?;
        match found {
            Some(record) => Ok(record),
            None => self.lock.with(|TxnInner { pages, trees }| {
                let record = *trees.record_to_change(self.slot, self.generation, pages)?;
                pages.usable().map(|()| record)
            }),
        }
    }

    /// `read` applied to the transaction's pages, for a handle that is not stale, with
    /// the slice it returns borrowed from this view rather than from the lock.
    #[allow(unsafe_code)]
    fn read(&self, read: impl FnOnce(&TxnPages) -> Result<&[u8]>) -> Result<&[u8]> {
        self.lock.with_ref(|TxnInner { pages, trees }| {
            trees.check_current(self.slot, self.generation)?;
            let bytes: *const [u8] = read(pages)?;
            // SAFETY: the slice is a dirty page of this tree (a `DirtyPage`, which never
            // moves) or a committed page or own blob read through the transaction's
            // reader (bytes of its map, whose old maps it keeps, or of its pread
            // buffers, which it never drops or changes while it lives); the reader and
            // the dirty pages live as long as the transaction, which this view borrows.
            // What remains is that the bytes do not change while the slice (which
            // borrows this handle) lives. Committed pages never change during a
            // transaction. A dirty page or own blob is changed or freed only by a change
            // of its own tree (a tree's references lead only to its own pages:
            // `TxnPages::shadow` checks what it copies), and a change needs `&mut` of
            // the tree's newest handle: this one, whose borrow excludes it, or a newer
            // one, whose opening replaced every dirty page by a copy, keeping the
            // original unchanged until the transaction ends, and keeps the pages of
            // freed own blobs from reuse until the commit (`TouchedTrees::supersede`,
            // `TxnPages::freeze`). Deleting the tree supersedes this handle the same
            // way, and the commit consumes the transaction.
            Ok(unsafe { &*bytes })
        })
    }
}

impl Pages for TreeView<'_> {
    fn page(&self, id: PageId) -> Result<&[u8]> {
        self.read(|pages| pages.page(id))
    }

    fn run(&self, id: PageId, count: u64) -> Result<&[u8]> {
        self.read(|pages| pages.run(id, count))
    }

    fn geometry(&self) -> Geometry {
        self.geometry
    }

    fn pages_readable(&self) -> u64 {
        self.lock
            .with_ref(|inner| Ok(inner.pages.pages_readable()))
            .unwrap_or(0)
    }
}

impl<'t> WriteTree<'t> {
    /// The handle of generation `generation` of the tree in `slot`; `alive` is cleared
    /// when it is dropped.
    pub(crate) fn new(
        lock: &'t TxnLock,
        slot: usize,
        generation: u64,
        geometry: Geometry,
        alive: Arc<AtomicBool>,
    ) -> WriteTree<'t> {
        WriteTree {
            view: TreeView {
                lock,
                slot,
                generation,
                geometry,
            },
            _alive: AliveMark(alive),
        }
    }
}

impl WriteTree<'_> {
    /// Inserts `key` → `value`, replacing any previous value.
    pub fn insert(&mut self, key: &[u8], value: &[u8]) -> Result<()> {
        self.change(|pages, record| tree::insert(pages, record, key, value))
    }

    /// Inserts `key` → a value of `len` bytes read from `reader`, replacing any previous
    /// value: for values larger than memory (up to 1 TiB). Memory stays bounded (three
    /// 4 MiB buffers) whatever `len` is: the value goes straight to its overflow pages,
    /// chunk by chunk (a writer thread writes while `reader` fills the next chunk;
    /// `O_DIRECT` from 8 MiB where the file system allows), and the tree changes only
    /// once all of it is written. A value
    /// small enough to live inside its leaf is read into memory and inserted as
    /// [`insert`](Self::insert) would (it is under half a page).
    ///
    /// Exactly `len` bytes are read; what `reader` could give past them is left there.
    /// A reader that ends early is [`Error::Io`](crate::Error::Io) with
    /// `ErrorKind::UnexpectedEof` (saying how many bytes came), and a reader's own error
    /// is returned as `Error::Io`: either way the tree is unchanged, the pages taken for
    /// the value are free again, and the transaction stays usable. `reader` runs
    /// without the transaction's lock held, so it may itself read or change other trees
    /// of the transaction (not this one: it is borrowed), and other threads' changes
    /// are not held up. If this tree's handle becomes stale meanwhile (the tree opened
    /// again or deleted), the value is dropped and the error is `Error::StaleTree`.
    /// Sizes are limited as for `insert`.
    ///
    /// ```
    /// use std::io::Read;
    ///
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut files = wtx.open_tree("files")?;
    /// // Any `Read`: a file, a socket, a decompressor. Here 10 MB of a repeated byte.
    /// let mut source = std::io::repeat(b'x').take(10_000_000);
    /// files.insert_from(b"big", 10_000_000, &mut source)?;
    /// assert_eq!(files.get(b"big")?.map(<[u8]>::len), Some(10_000_000));
    ///
    /// // A reader that ends early changes nothing.
    /// let err = files.insert_from(b"short", 100_000, &mut &[0u8; 10][..]);
    /// assert!(matches!(err, Err(mapkv::Error::Io(_))));
    /// assert_eq!(files.get(b"short")?, None);
    /// drop(files);
    /// wtx.commit()?;
    /// # Ok(()) }
    /// ```
    pub fn insert_from(&mut self, key: &[u8], len: u64, reader: &mut impl Read) -> Result<()> {
        let g = self.view.geometry;
        let align = self.change(|_, record| Ok(record.value_align()))?;
        tree::check_sizes(&g, align, key, len)?;
        if node::value_fits_inline(key.len(), len, g.page_size, align) {
            let mut value = vec![0; len as usize];
            stream::fill(reader, &mut value, 0, len)?;
            return self.insert(key, &value);
        }
        // 1. Take the run under the lock. 2. Fill it without the lock. 3. Under the lock
        // again, point the key at it. The run is unreferenced until then: on any
        // failure (or a panic in `reader`) it goes back to the allocator.
        // A growth of the file that found no room gave the run back: the transaction
        // stays usable (`change` sees `Ok`), and the growth's error is returned.
        let run = self.change(|pages, _| pages.take_blob_run(len, node::blob_pad(align)))??;
        let mut taken = TakenRun {
            lock: self.view.lock,
            run: Some(run),
        };
        let run = taken.run.as_ref().expect("just set");
        let checksum = match stream::write_blob_from(run, g.page_size, reader) {
            Ok(checksum) => checksum,
            Err(e) => {
                taken.give_back()?;
                return Err(e);
            }
        };
        let mut adopted = false;
        let r = self.change(|pages, record| {
            let o = pages.adopt_blob(run, checksum);
            adopted = true;
            tree::insert_overflow(pages, record, key, o)
        });
        if adopted {
            // The blob is the transaction's own now: a failed insert left the
            // transaction failed, and freeing the run is for its abort.
            taken.run = None;
        } else if r.is_err() {
            taken.give_back()?;
        }
        r
    }

    /// Inserts `key` → `len` zero bytes, replacing any previous value, and returns those
    /// bytes for the caller to fill in place, as LMDB's `MDB_RESERVE` does: a value
    /// produced straight into the database (encoded, decompressed, received) needs no
    /// buffer of its own. The slice is the value's final place, aligned as the tree's
    /// [`value_align`](crate::TreeOptions::value_align) says: inside its leaf page, or
    /// for a value too large to live there, the payload of its overflow blob, which is
    /// held in memory until the reservation ends and then written (stream values larger
    /// than memory with [`insert_from`](Self::insert_from) instead).
    ///
    /// The reservation ends at the next call on this handle, at the commit, or, once the
    /// handle is dropped, when the tree is opened again. While this handle is alive and
    /// not called again, opening the same tree again or deleting it is
    /// [`Error::Reserved`](crate::Error::Reserved): the bytes may still be being
    /// written. Other trees are not affected. Sizes are limited as for
    /// [`insert`](Self::insert).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut squares = wtx.open_tree("squares")?;
    /// for n in 0u32..100 {
    ///     let value = squares.insert_reserve(&n.to_be_bytes(), 8)?;
    ///     value[..4].copy_from_slice(&(n * n).to_le_bytes()); // the rest stays zero
    /// }
    /// assert_eq!(squares.get(&7u32.to_be_bytes())?, Some(&[49, 0, 0, 0, 0, 0, 0, 0][..]));
    ///
    /// // A value of a megabyte goes to an overflow blob, filled in place all the same.
    /// squares.insert_reserve(b"big", 1 << 20)?.fill(7);
    /// drop(squares);
    /// wtx.commit()?;
    /// let rtx = db.begin_read()?;
    /// let big = rtx.open_tree("squares")?.get(b"big")?.map(|v| v.iter().all(|&b| b == 7));
    /// assert_eq!(big, Some(true));
    /// # Ok(()) }
    /// ```
    #[allow(unsafe_code)]
    pub fn insert_reserve(&mut self, key: &[u8], len: usize) -> Result<&mut [u8]> {
        // Sizes and the blob's memory first, outside a change: their errors leave the
        // transaction usable.
        let align = self.change(|_, record| Ok(record.value_align()))?;
        let image = reserve::place(&self.view.geometry, align, key, len)?;
        let view = &self.view;
        let bytes = view.lock.with(|TxnInner { pages, trees }| {
            let record = trees.record_to_change(view.slot, view.generation, pages)?;
            let (reservation, bytes) = pages.change_tree(align, |pages| {
                reserve::reserve(pages, record, key, len, image)
            })?;
            trees.set_reservation(view.slot, reservation);
            Ok(bytes)
        })?;
        // SAFETY: `bytes` lies in a live allocation that nothing else reads or writes
        // while the returned slice lives: a dirty leaf of this tree or the reservation's
        // blob image, both owned through raw pointers (`DirtyPage`), so moving their
        // owners asserts nothing about the bytes, and kept until the reservation ends
        // (the leaf's id is kept too: only this tree's changes move or free its pages).
        // The slice borrows this handle mutably, so this handle cannot be used while it
        // lives; the transaction's other paths keep off the bytes while the reservation
        // stands: reopening or deleting this tree is refused while this handle is alive
        // (`TouchedTrees::supersede`), reopening another tree freezes every dirty page
        // but this one (`TxnPages::freeze`), other trees' changes touch only their own
        // pages, and the commit consumes the transaction, which this handle borrows. The
        // reservation ends (blob written, leaf read) only once the slice is dead: at this
        // handle's next call, after it was dropped, or at the commit.
        Ok(unsafe { &mut *bytes })
    }

    /// Adds `key` → `value` after the tree's last entry: for keys that arrive in
    /// ascending order (time series, log positions). It goes down the tree's rightmost
    /// edge without searching, and a full page is cut where the entry goes, so appended
    /// pages stay full. A `key` not greater than the tree's last key is refused with
    /// [`Error::Unsorted`](crate::Error::Unsorted), `index` being the tree's entry count
    /// (the position the entry would have had), and nothing changes. Sizes are limited as
    /// for [`insert`](Self::insert).
    ///
    /// ```
    /// use mapkv::{Database, Error, Result};
    ///
    /// # fn main() -> Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = Database::open(dir.path().join("log.mapkv"))?;
    /// let w = db.begin_write()?;
    /// let mut log = w.open_tree("log")?;
    /// for i in 0u64..1000 {
    ///     log.append(&i.to_be_bytes(), b"entry")?;
    /// }
    /// assert!(matches!(
    ///     log.append(&5u64.to_be_bytes(), b"late"),
    ///     Err(Error::Unsorted { index: 1000 })
    /// ));
    /// assert_eq!(log.len()?, 1000);
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

    /// Removes every entry with a key in `range` (see [`KeyRange`]); returns how many.
    ///
    /// Subtrees wholly inside the range are freed without being copied, so the pages a
    /// commit writes grow with the depth of the tree, not with the size of the range.
    /// An empty or inverted range removes nothing.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut log = wtx.open_tree("log")?;
    /// for day in 1u32..=31 {
    ///     log.insert(&day.to_be_bytes(), b"entry")?;
    /// }
    /// // Retention: everything before day 25.
    /// assert_eq!(log.remove_range(..25u32.to_be_bytes())?, 24);
    /// assert_eq!(log.remove_range(b"a".as_slice()..=b"c")?, 0);
    /// assert_eq!(log.remove_range(..)?, 7);
    /// assert!(log.is_empty()?);
    /// # Ok(()) }
    /// ```
    pub fn remove_range<K: AsRef<[u8]>, R: KeyRange<K>>(&mut self, range: R) -> Result<u64> {
        let (lower, upper) = range.bounds();
        self.change(|pages, record| prune::remove_range(pages, record, lower, upper))
    }

    /// Removes every entry for which `keep(key, value)` returns false; returns how many.
    /// `keep` sees each entry once, in key order. It may not use this transaction (its
    /// trees answer `Error::Reentrant`): it runs in the middle of the change.
    ///
    /// Leaves in which every entry stays are read but not copied.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut t = wtx.open_tree("t")?;
    /// for (k, v) in [(b"a", b"1"), (b"b", b"2"), (b"c", b"3")] {
    ///     t.insert(k, v)?;
    /// }
    /// assert_eq!(t.retain(|_key, value| value != b"2")?, 1);
    /// assert_eq!(t.get(b"b")?, None);
    /// assert_eq!(t.len()?, 2);
    /// # Ok(()) }
    /// ```
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) -> Result<u64> {
        self.change(|pages, record| prune::retain(pages, record, &mut keep))
    }

    /// Inserts `key` → `value` and returns the value it replaced, if any: one descent,
    /// as `insert`.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut t = wtx.open_tree("config")?;
    /// assert_eq!(t.replace(b"mode", b"fast")?, None);
    /// assert_eq!(t.replace(b"mode", b"safe")?, Some(b"fast".to_vec()));
    /// assert_eq!(t.take(b"mode")?, Some(b"safe".to_vec()));
    /// assert_eq!(t.take(b"mode")?, None);
    /// # Ok(()) }
    /// ```
    pub fn replace(&mut self, key: &[u8], value: &[u8]) -> Result<Option<Vec<u8>>> {
        self.change(|pages, record| tree::replace(pages, record, key, value))
    }

    /// Removes `key` and returns its value, if it was present. One descent, as
    /// `remove`.
    pub fn take(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.change(|pages, record| tree::take(pages, record, key))
    }

    /// Sets `key` to what `f` makes of its current value (`None` if absent): `Some(new)`
    /// stores `new`, `None` removes the key. For counters, compare-and-swap and other
    /// read-modify-write steps; `f` runs once, and nothing changes if it returns what
    /// is there.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let mut hits = wtx.open_tree("hits")?;
    /// let bump = |old: Option<&[u8]>| {
    ///     let n = old.map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap()));
    ///     Some((n + 1).to_le_bytes().to_vec())
    /// };
    /// hits.update(b"/index.html", bump)?;
    /// hits.update(b"/index.html", bump)?;
    /// assert_eq!(hits.get(b"/index.html")?, Some(&2u64.to_le_bytes()[..]));
    ///
    /// // Compare-and-swap: replace "v1" by "v2" only if "v1" is there.
    /// hits.insert(b"version", b"v1")?;
    /// hits.update(b"version", |old| match old {
    ///     Some(b"v1") => Some(b"v2".to_vec()),
    ///     other => other.map(<[u8]>::to_vec),
    /// })?;
    /// assert_eq!(hits.get(b"version")?, Some(&b"v2"[..]));
    /// # Ok(()) }
    /// ```
    pub fn update(
        &mut self,
        key: &[u8],
        f: impl FnOnce(Option<&[u8]>) -> Option<Vec<u8>>,
    ) -> Result<()> {
        let old = self.get(key)?;
        let new = f(old);
        if old == new.as_deref() {
            return Ok(());
        }
        match new {
            Some(value) => self.insert(key, &value),
            None => self.remove(key).map(|_| ()),
        }
    }

    /// The value stored under `key`, borrowed until the tree is next modified.
    pub fn get(&self, key: &[u8]) -> Result<Option<&[u8]>> {
        tree::get(&self.view, &self.view.record()?, key)
    }

    /// Entries with keys in `range`, ascending (or descending with `.rev()`); see
    /// [`KeyRange`] for the ranges it takes.
    pub fn range<K: AsRef<[u8]>, R: KeyRange<K>>(&self, range: R) -> Result<Range<'_>> {
        let (lower, upper) = owned_bounds(&range);
        Ok(Range::new(&self.view, self.view.record()?, lower, upper))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<Range<'_>> {
        self.range(..)
    }

    /// The entries whose keys start with `prefix`, ascending (or descending with
    /// `.rev()`).
    pub fn prefix(&self, prefix: &[u8]) -> Result<Range<'_>> {
        let (lower, upper) = prefix_bounds(prefix);
        Ok(Range::new(&self.view, self.view.record()?, lower, upper))
    }

    /// The entry with the smallest key, or `None` if the tree is empty.
    pub fn first(&self) -> Result<Option<(&[u8], &[u8])>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key, or `None` if the tree is empty.
    pub fn last(&self) -> Result<Option<(&[u8], &[u8])>> {
        self.iter()?.next_back().transpose()
    }

    /// The number of entries.
    pub fn len(&self) -> Result<u64> {
        Ok(self.view.record()?.entries.get())
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Which tree this handle is, and of which opening (a typed table checks that its
    /// tree was not swapped for another).
    pub(crate) fn identity(&self) -> (usize, u64) {
        (self.view.slot, self.view.generation)
    }

    /// Runs `f` on the transaction's pages and this tree's record. A panic in `f` leaves the transaction marked failed
    /// (`TxnPages::change`): it refuses to commit.
    pub(crate) fn change<T>(
        &mut self,
        f: impl FnOnce(&mut TxnPages, &mut TreeRecord) -> Result<T>,
    ) -> Result<T> {
        let view = &self.view;
        view.lock.with(|TxnInner { pages, trees }| {
            let record = trees.record_to_change(view.slot, view.generation, pages)?;
            pages.change_tree(record.value_align(), |pages| f(pages, record))
        })
    }
}
