//! Transactions: read snapshots registered in the reader table, the single write
//! transaction with its dirty pages and page allocator, and commit.
//! See FORMAT.md#commit-protocol and FORMAT.md#page-reuse.

use std::io::{Read, Seek};
use std::os::fd::AsFd;
use std::sync::Arc;

use crate::cursor::{KeyRange, Range, owned_bounds, prefix_bounds};
use crate::db::Shared;
use crate::error::{Error, Result};
use crate::extent::{self, ValueExtent, ValueReader};
use crate::meta::Meta;
use crate::registry::Registration;
use crate::storage::PageReader;
use crate::tree::{self, Pages, TreeRecord};
use crate::tree_options::TreeOptions;

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

// ---- read transactions -----------------------------------------------------------------

/// A consistent snapshot of the database. Cheap to begin; never blocks the writer.
/// Everything it returns borrows from it and stays valid until it is dropped.
/// `Send + Sync`: several threads may read one snapshot at once. It keeps the file
/// open, so it may outlive the `Database` handle that began it.
pub struct ReadTxn {
    shared: Arc<Shared>,
    snapshot: Arc<Snapshot>,
    reader: PageReader,
    slot: Registration,
}

impl ReadTxn {
    pub(crate) fn begin(shared: &Arc<Shared>) -> ReadTxn {
        // Registering while holding the read lock means a writer that publishes a newer
        // snapshot afterwards and then scans the table will see this reader.
        let (snapshot, slot) = {
            let current = shared.current.read();
            let slot = shared.readers.register(current.meta.txn().0);
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

    /// Opens an existing tree; `Error::TreeNotFound` if there is none by that name
    /// ([`try_open_tree`](Self::try_open_tree) says `None` instead).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let mut wtx = db.begin_write()?;
    /// wtx.open_tree("users")?.insert(b"ada", b"1815")?;
    /// wtx.commit()?;
    ///
    /// let rtx = db.begin_read()?;
    /// let users = rtx.open_tree("users")?;
    /// assert_eq!(users.get(b"ada")?, Some(&b"1815"[..]));
    /// assert!(matches!(rtx.open_tree("posts"), Err(mapkv::Error::TreeNotFound(_))));
    /// # Ok(()) }
    /// ```
    pub fn open_tree(&self, name: &str) -> Result<ReadTree<'_>> {
        self.try_open_tree(name)?
            .ok_or_else(|| Error::TreeNotFound(name.to_string()))
    }

    /// Opens an existing tree, or `None` if there is none by that name (a tree that was
    /// never written reads as absent, which is often the same as empty).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let rtx = db.begin_read()?;
    /// let count = match rtx.try_open_tree("events")? {
    ///     Some(events) => events.len()?,
    ///     None => 0,
    /// };
    /// assert_eq!(count, 0);
    /// # Ok(()) }
    /// ```
    pub fn try_open_tree(&self, name: &str) -> Result<Option<ReadTree<'_>>> {
        let found = find_tree(&self.reader, &self.snapshot.meta.catalog, name)?;
        Ok(found.map(|record| ReadTree { txn: self, record }))
    }

    /// Opens an existing tree that must have been created with `options`
    /// (`WriteTxn::open_tree_with`), else `Error::InvalidOptions`; `TreeNotFound` if
    /// there is none by that name.
    pub fn open_tree_with(&self, name: &str, options: TreeOptions) -> Result<ReadTree<'_>> {
        options.encode()?;
        let tree = self.open_tree(name)?;
        tree.record.options().check_opened_with(&options, name)?;
        Ok(tree)
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

pub(crate) fn tree_names(pages: &dyn Pages, catalog: TreeRecord) -> Result<Vec<String>> {
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

/// A tree as seen by a [`ReadTxn`]. `Send + Sync`: several threads may read it at once
/// (for example in `std::thread::scope`), and everything it returns borrows the
/// transaction, not the tree.
pub struct ReadTree<'t> {
    txn: &'t ReadTxn,
    record: TreeRecord,
}

impl<'t> ReadTree<'t> {
    /// The options the tree was created with: its values' alignment, and whether it is
    /// a typed table's.
    pub fn options(&self) -> TreeOptions {
        self.record.options()
    }

    /// The value stored under `key`, borrowed for the whole transaction.
    pub fn get(&self, key: &[u8]) -> Result<Option<&'t [u8]>> {
        tree::get(&self.txn.reader, &self.record, key)
    }

    /// Where `key`'s value lies in the database file, or `None` if the key is absent:
    /// for sending it with `sendfile(2)` or `splice(2)` ([`ValueExtent::send_to`]), or
    /// reading it with `pread` from [`ValueExtent::as_fd`](std::os::fd::AsFd::as_fd).
    /// The range stays valid, and its bytes unchanged, while this transaction lives,
    /// whatever writers do meanwhile (FORMAT.md#value-extents). The same at every
    /// `mmap_size`, 0 included.
    ///
    /// An inline value lies inside its leaf page; a large value in its overflow run,
    /// after the run's header. For a large value, this checks what [`get`](Self::get)
    /// checks (the run's header records the value's length, the run lies inside the
    /// file) and reads only the run's first page, not the value; like `get`, it does not
    /// verify the value's checksum, which would read it all ([`Database::check`]
    /// does).
    ///
    /// A database opened on a custom storage backend that has no file gives
    /// `Error::Io` of kind `Unsupported`.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// use std::os::unix::fs::FileExt;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// wtx.open_tree("media")?.insert(b"clip", &[7; 100_000])?;
    /// wtx.commit()?;
    ///
    /// let rtx = db.begin_read()?;
    /// let media = rtx.open_tree("media")?;
    /// let extent = media.get_extent(b"clip")?.expect("present");
    /// assert_eq!(extent.len(), 100_000);
    /// // The bytes are in the database file, at `offset()`.
    /// let file = std::fs::File::from(std::os::fd::AsFd::as_fd(&extent).try_clone_to_owned()?);
    /// let mut head = [0; 4];
    /// file.read_exact_at(&mut head, extent.offset())?;
    /// assert_eq!(head, [7; 4]);
    /// # Ok(()) }
    /// ```
    ///
    /// [`Database::check`]: crate::Database::check
    pub fn get_extent(&self, key: &[u8]) -> Result<Option<ValueExtent<'t>>> {
        let reader = &self.txn.reader;
        match extent::locate(reader, &self.record, key)? {
            Some(at) => Ok(Some(ValueExtent::new(reader, at)?)),
            None => Ok(None),
        }
    }

    /// Sends `key`'s whole value to `out` (a socket, pipe or file) with `sendfile(2)`
    /// where it can, and returns the bytes sent, or `None` if the key is absent. See
    /// [`ValueExtent::send_to`] for the fallbacks, non-blocking `out`s (fewer bytes
    /// than the value's length come back: send the rest with
    /// `get_extent(key)?.send_to(out, sent..)`) and errors, which never harm the
    /// database, and for why this transaction must stay alive until the peer has read
    /// the bytes, not only until this returns (the kernel reads them from the file's
    /// pages when the peer takes them, and a later commit may reuse those pages once
    /// the transaction has ended).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// use std::io::Read;
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// wtx.open_tree("pages")?.insert(b"/index.html", b"<h1>hello</h1>")?;
    /// wtx.commit()?;
    ///
    /// let (mut client, server) = std::os::unix::net::UnixStream::pair()?;
    /// let rtx = db.begin_read()?;
    /// let pages = rtx.open_tree("pages")?;
    /// assert_eq!(pages.send_value(b"/index.html", &server)?, Some(14));
    /// assert_eq!(pages.send_value(b"/missing", &server)?, None);
    /// drop(server);
    /// let mut got = String::new();
    /// client.read_to_string(&mut got)?;
    /// assert_eq!(got, "<h1>hello</h1>");
    /// # Ok(()) }
    /// ```
    pub fn send_value(&self, key: &[u8], out: &impl AsFd) -> Result<Option<u64>> {
        match self.get_extent(key)? {
            Some(extent) => Ok(Some(extent.send_to(out, ..)?)),
            None => Ok(None),
        }
    }

    /// `key`'s value as a stream (`Read + Seek`), or `None` if the key is absent: read
    /// from the map when the value is mapped, else with `pread` into the caller's
    /// buffers, so a value larger than memory can be read piece by piece at
    /// `mmap_size(0)`. Valid while this transaction lives; works on every storage
    /// backend. Checks the value as [`get_extent`](Self::get_extent) does.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// use std::io::{Read, Seek, SeekFrom};
    /// # let dir = tempfile::tempdir()?;
    /// let db = mapkv::Options::new().mmap_size(0).open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// let big: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
    /// wtx.open_tree("blobs")?.insert(b"big", &big)?;
    /// wtx.commit()?;
    ///
    /// let rtx = db.begin_read()?;
    /// let blobs = rtx.open_tree("blobs")?;
    /// let mut r = blobs.value_reader(b"big")?.expect("present");
    /// r.seek(SeekFrom::Start(999_990))?;
    /// let mut tail = Vec::new();
    /// r.read_to_end(&mut tail)?;
    /// assert_eq!(tail, big[999_990..]);
    /// # Ok(()) }
    /// ```
    pub fn value_reader(&self, key: &[u8]) -> Result<Option<impl Read + Seek + Send + 't>> {
        let reader = &self.txn.reader;
        Ok(extent::locate(reader, &self.record, key)?.map(|at| ValueReader::new(reader, at)))
    }

    /// Entries with keys in `range`, ascending (or descending with `.rev()`); see
    /// [`KeyRange`] for the ranges it takes.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let mut wtx = db.begin_write()?;
    /// let mut t = wtx.open_tree("t")?;
    /// for i in 0u32..10 {
    ///     t.insert(&i.to_be_bytes(), b"")?;
    /// }
    /// drop(t);
    /// wtx.commit()?;
    ///
    /// let rtx = db.begin_read()?;
    /// let t = rtx.open_tree("t")?;
    /// let last_three: Vec<&[u8]> = t.range(..)?.rev().take(3).map(|e| e.map(|(k, _)| k)).collect::<mapkv::Result<_>>()?;
    /// assert_eq!(last_three, [9u32.to_be_bytes(), 8u32.to_be_bytes(), 7u32.to_be_bytes()]);
    /// assert_eq!(t.range(2u32.to_be_bytes()..5u32.to_be_bytes())?.count(), 3);
    /// # Ok(()) }
    /// ```
    pub fn range<K: AsRef<[u8]>, R: KeyRange<K>>(&self, range: R) -> Result<Range<'t>> {
        let (lower, upper) = owned_bounds(&range);
        Ok(Range::new(&self.txn.reader, self.record, lower, upper))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<Range<'t>> {
        self.range(..)
    }

    /// The entries whose keys start with `prefix`, ascending (or descending with
    /// `.rev()`).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let mut wtx = db.begin_write()?;
    /// let mut t = wtx.open_tree("paths")?;
    /// for k in ["etc/hosts", "etc/passwd", "home/ada", "etcetera"] {
    ///     t.insert(k.as_bytes(), b"")?;
    /// }
    /// let under_etc: Vec<&[u8]> = t.prefix(b"etc/")?.keys().collect::<mapkv::Result<_>>()?;
    /// assert_eq!(under_etc, [&b"etc/hosts"[..], b"etc/passwd"]);
    /// # Ok(()) }
    /// ```
    pub fn prefix(&self, prefix: &[u8]) -> Result<Range<'t>> {
        let (lower, upper) = prefix_bounds(prefix);
        Ok(Range::new(&self.txn.reader, self.record, lower, upper))
    }

    /// The entry with the smallest key, or `None` if the tree is empty.
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let mut wtx = db.begin_write()?;
    /// let mut log = wtx.open_tree("log")?;
    /// for seq in [3u64, 1, 2] {
    ///     log.insert(&seq.to_be_bytes(), b"entry")?;
    /// }
    /// assert_eq!(log.first()?.map(|(k, _)| k), Some(&1u64.to_be_bytes()[..]));
    /// assert_eq!(log.last()?.map(|(k, _)| k), Some(&3u64.to_be_bytes()[..]));
    /// # Ok(()) }
    /// ```
    pub fn first(&self) -> Result<Option<(&'t [u8], &'t [u8])>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key, or `None` if the tree is empty.
    pub fn last(&self) -> Result<Option<(&'t [u8], &'t [u8])>> {
        self.iter()?.next_back().transpose()
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
