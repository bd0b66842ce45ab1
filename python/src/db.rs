//! `mapkv.open` and the `Database` object.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, ThreadId};
use std::time::Duration;

use mapkv::{Durability, Options};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyIterator, PyList, PyTuple};

use crate::bytes::BytesIn;
use crate::errors::{Error, InvalidOptions, ToPyResult, ended};
use crate::read::ReadTransaction;
use crate::write::WriteTransaction;

/// An open database, shared by the `Database` object and the transactions it began:
/// the file stays open until the last of them is gone.
pub(crate) struct Handle {
    /// Taken only by `drop`.
    db: Option<mapkv::Database>,
    /// Who holds the writer lock, if anyone: a second `begin(write=True)` (or
    /// `bulk_load`) on the thread that took it would wait for itself forever, so it is
    /// refused.
    writer: Mutex<Option<Claim>>,
    /// Claims made so far, to tell them apart.
    claims: AtomicU64,
}

/// A claim to the writer lock: the thread that took it, and a number of its own, so
/// that whoever ends the transaction (on whichever thread) clears this claim and no
/// later one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claim {
    thread: ThreadId,
    serial: u64,
}

impl Drop for Handle {
    /// Whoever drops the last reference to a database (a view's or a transaction's
    /// deallocation, an abort, the database object's) runs its clean close, which may
    /// sync the file: without the GIL, so that other threads run meanwhile. Every
    /// holder of a mapkv transaction holds a `Handle` too, and drops the transaction
    /// first, so the close happens here. (During interpreter shutdown, when PyO3 may
    /// not attach, nothing else runs anyway: the close keeps the GIL then.)
    fn drop(&mut self) {
        let db = self.db.take();
        Python::try_attach(|py| py.detach(move || drop(db)));
    }
}

impl Handle {
    pub(crate) fn db(&self) -> &mapkv::Database {
        self.db.as_ref().expect("only drop takes the database")
    }

    fn writer(&self) -> std::sync::MutexGuard<'_, Option<Claim>> {
        self.writer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this thread took the writer lock and has not given it up.
    fn is_writer(&self) -> bool {
        self.writer()
            .is_some_and(|c| c.thread == thread::current().id())
    }

    /// Refuses to wait for the writer lock on the thread that took it (even if the
    /// transaction has since moved to another thread, which may end it).
    ///
    /// A write transaction that was dropped inside a reference cycle holds the lock
    /// until the cycle collector frees it, so this collects once before refusing.
    fn check_not_writer(&self, py: Python<'_>) -> PyResult<()> {
        if self.is_writer() {
            // Finalizers run here: nothing of ours is locked.
            py.import("gc")?.call_method0("collect")?;
        }
        if self.is_writer() {
            return Err(Error::new_err(
                "this thread holds the write transaction: commit or abort it first \
                 (waiting for another would wait for itself forever)",
            ));
        }
        Ok(())
    }

    /// Called on the thread that just took the writer lock.
    fn writer_started(&self) -> Claim {
        let claim = Claim {
            thread: thread::current().id(),
            serial: self.claims.fetch_add(1, Ordering::Relaxed),
        };
        *self.writer() = Some(claim);
        claim
    }

    /// Called when the writer lock taken with `claim` is given up (before or after it
    /// is released: a newer claim, of whoever took the lock next, stays).
    pub(crate) fn writer_finished(&self, claim: Claim) {
        let mut writer = self.writer();
        if *writer == Some(claim) {
            *writer = None;
        }
    }
}

/// How long one slice of the wait for the writer lock lasts: the longest a Ctrl-C
/// waits to be seen, and short next to a person's patience; long enough that the
/// slices cost nothing (the lock is handed on within a slice, not at its end).
const WRITER_WAIT_SLICE: Duration = Duration::from_millis(50);

/// Begins the write transaction, waiting without the GIL while another is alive.
///
/// Python runs signal handlers only when the main thread runs Python code, so a wait
/// in one long call would not see Ctrl-C until the writer ends (never, if that writer
/// waits for this thread). The wait is cut in slices, and a handler's exception
/// (`KeyboardInterrupt`) ends it; off the main thread `check_signals` does nothing.
fn wait_for_writer(py: Python<'_>, handle: &Handle) -> PyResult<mapkv::WriteTxn> {
    loop {
        let txn = py
            .detach(|| handle.db().try_begin_write_for(WRITER_WAIT_SLICE))
            .py_err()?;
        if let Some(txn) = txn {
            return Ok(txn);
        }
        py.check_signals()?;
    }
}

/// An open database file, from `mapkv.open()`.
///
/// Any number of read transactions and one write transaction at a time, from any
/// threads; readers never wait for the writer, nor the writer for readers. `close()`
/// (or the end of a `with` block) lets go of the file once the transactions, cursors
/// and memoryviews made from it are gone too.
#[pyclass(module = "mapkv", frozen)]
pub struct Database {
    handle: Mutex<Option<Arc<Handle>>>,
    path: PathBuf,
}

impl Database {
    fn handle(&self) -> PyResult<Arc<Handle>> {
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or_else(|| ended("database"))
    }
}

pub(crate) fn parse_durability(name: &str) -> PyResult<Durability> {
    match name {
        "immediate" => Ok(Durability::Immediate),
        "none" => Ok(Durability::None),
        _ => Err(InvalidOptions::new_err(format!(
            "durability must be \"immediate\" or \"none\", not {name:?}"
        ))),
    }
}

/// Opens (creating if missing, unless `readonly`) the database file at `path`.
///
/// - `page_size`: bytes, a power of two from 4096 to 65536; fixed when the file is made.
/// - `mmap_size`: read at most this many bytes of the file through the memory map and
///   the rest with pread (None: the whole file; 0: no map at all).
/// - `cache_size`: bytes of pages read with pread kept between transactions.
/// - `read_ahead`: False advises the kernel that reads are random (for a file larger
///   than memory read at random: a miss then reads one page, not 128 KiB around it).
/// - `durability`: "immediate" (a commit returns once on disk) or "none" (visible at
///   once, durable with the next immediate commit or a clean close; never corrupt).
/// - `readonly`: no writes; several read-only handles may share the file.
///
/// Raises `Locked` if the file is open read-write elsewhere, `InvalidOptions`, or
/// `OSError` (e.g. `FileNotFoundError` for a missing file opened read-only).
#[pyfunction]
// One parameter per keyword argument of the Python function.
#[allow(clippy::too_many_arguments)]
#[pyo3(signature = (path, *, page_size=None, mmap_size=None, cache_size=None, read_ahead=true, durability=None, readonly=false))]
pub(crate) fn open(
    py: Python<'_>,
    path: PathBuf,
    page_size: Option<usize>,
    mmap_size: Option<u64>,
    cache_size: Option<u64>,
    read_ahead: bool,
    durability: Option<String>,
    readonly: bool,
) -> PyResult<Database> {
    let mut options = Options::new().read_only(readonly).read_ahead(read_ahead);
    if let Some(bytes) = page_size {
        options = options.page_size(bytes);
    }
    if let Some(bytes) = mmap_size {
        options = options.mmap_size(bytes);
    }
    if let Some(bytes) = cache_size {
        options = options.cache_size(bytes);
    }
    if let Some(name) = durability {
        options = options.durability(parse_durability(&name)?);
    }
    let at = path.clone();
    let db = py.detach(move || options.open(at)).py_err()?;
    Ok(Database {
        handle: Mutex::new(Some(Arc::new(Handle {
            db: Some(db),
            writer: Mutex::new(None),
            claims: AtomicU64::new(0),
        }))),
        path,
    })
}

#[pymethods]
impl Database {
    /// Begins a transaction: a read snapshot, or with `write=True` the write
    /// transaction (waiting, without holding the GIL, while another thread has it;
    /// Ctrl-C interrupts the wait with `KeyboardInterrupt`).
    /// `buffers=True` makes `buffer=True` the default of the transaction's `get` and
    /// `cursor` (as py-lmdb's `begin(buffers=True)`, but the views stay valid).
    /// `durability` ("immediate" or "none") overrides the database's for this commit
    /// (checked, then ignored, for a read transaction).
    #[pyo3(signature = (write=false, *, buffers=false, durability=None))]
    fn begin(
        &self,
        py: Python<'_>,
        write: bool,
        buffers: bool,
        durability: Option<String>,
    ) -> PyResult<Py<PyAny>> {
        let handle = self.handle()?;
        // Checked for either kind, so that a misspelt name is never silently ignored;
        // a read transaction has no commit for it to apply to.
        let durability = durability.as_deref().map(parse_durability).transpose()?;
        if !write {
            let txn = handle.db().begin_read().py_err()?;
            let txn = ReadTransaction::new(py, txn, Arc::clone(&handle), buffers)?;
            return Ok(Py::new(py, txn)?.into_any());
        }
        handle.check_not_writer(py)?;
        let txn = wait_for_writer(py, &handle)?;
        let claim = handle.writer_started();
        let mut txn = WriteTransaction::new(txn, Arc::clone(&handle), claim, buffers);
        if let Some(d) = durability {
            txn.set_durability(d)?;
        }
        Ok(Py::new(py, txn)?.into_any())
    }

    /// Loads `entries`, an iterable of `(key, value)` tuples with strictly ascending
    /// keys, into `tree`, which must be absent or empty: built bottom-up, written
    /// sequentially, committed durably at once. Returns figures of the load as a dict.
    ///
    /// Raises `Unsorted` (attribute `index`) or `TreeNotEmpty` and leaves the database
    /// unchanged; an exception raised by the iterable also leaves it unchanged and is
    /// raised again. The GIL is held only while entries are taken from the iterable.
    fn bulk_load<'py>(
        &self,
        py: Python<'py>,
        tree: String,
        entries: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let handle = self.handle()?;
        handle.check_not_writer(py)?;
        let mut feed = Feed::new(entries.try_iter()?.unbind(), Arc::clone(&handle));
        feed.fill(py)?;
        let result = py.detach(|| handle.db().bulk_load(&tree, &mut feed));
        if let Some(claim) = feed.claim {
            handle.writer_finished(claim);
        }
        let stats = match (result, feed.error.take()) {
            (Err(mapkv::Error::Unsorted { index }), Some(e)) if Some(index) == feed.stop_index => {
                return Err(e);
            }
            (result, _) => result.py_err()?,
        };
        let d = PyDict::new(py);
        d.set_item("entries", stats.entries)?;
        d.set_item("pages", stats.pages)?;
        d.set_item("bytes_written", stats.bytes_written)?;
        d.set_item("direct_io", stats.direct_io)?;
        d.set_item("direct_io_refused", stats.direct_io_refused)?;
        d.set_item("elapsed_s", stats.elapsed.as_secs_f64())?;
        Ok(d)
    }

    /// Verifies every page the newest commit reaches (checksums, key order, B-tree
    /// shape, free-page accounting), without the GIL. Returns counts as a dict; raises
    /// `Corrupted`.
    fn check<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let handle = self.handle()?;
        let report = py.detach(|| handle.db().check()).py_err()?;
        let d = PyDict::new(py);
        d.set_item("trees", report.trees)?;
        d.set_item("entries", report.entries)?;
        d.set_item("node_pages", report.node_pages)?;
        d.set_item("overflow_pages", report.overflow_pages)?;
        d.set_item("free_pages", report.free_pages)?;
        d.set_item("data_pages", report.data_pages)?;
        Ok(d)
    }

    /// Space and shape figures of the newest commit, as a dict (`trees` is a list of
    /// dicts with `name`, `entries` and `depth`).
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let handle = self.handle()?;
        let stats = py.detach(|| handle.db().stats()).py_err()?;
        let d = PyDict::new(py);
        d.set_item("page_size", stats.page_size)?;
        d.set_item("file_size_bytes", stats.file_size_bytes)?;
        d.set_item("page_count", stats.page_count)?;
        d.set_item("pages_in_use", stats.pages_in_use)?;
        d.set_item("pages_free", stats.pages_free)?;
        d.set_item("txn_id", stats.txn_id)?;
        d.set_item("oldest_reader_txn_age", stats.oldest_reader_txn_age)?;
        d.set_item("free_runs", stats.free_runs)?;
        d.set_item("commits", stats.commits)?;
        d.set_item("pages_written", stats.pages_written)?;
        d.set_item("syncs", stats.syncs)?;
        let trees = PyList::empty(py);
        for t in stats.trees {
            let tree = PyDict::new(py);
            tree.set_item("name", t.name)?;
            tree.set_item("entries", t.entries)?;
            tree.set_item("depth", t.depth)?;
            trees.append(tree)?;
        }
        d.set_item("trees", trees)?;
        Ok(d)
    }

    /// Writes a compacted copy of the newest commit to `path`, which must not exist,
    /// without the GIL; writers may go on meanwhile.
    fn compact_to(&self, py: Python<'_>, path: PathBuf) -> PyResult<()> {
        let handle = self.handle()?;
        py.detach(|| handle.db().compact_to(path)).py_err()
    }

    /// Compacts the file in place, without the GIL: packs the leaves into full pages,
    /// moves the pages past where the pages in use would end into free space, with
    /// ordinary commits, and cuts the file. Waits for a write transaction of another
    /// thread to end; raises if this thread holds one. Returns ``leaves_merged``,
    /// ``pages_moved``, ``passes``, ``file_size_before``, ``file_size_after``.
    fn compact<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let handle = self.handle()?;
        handle.check_not_writer(py)?;
        let stats = py.detach(|| handle.db().compact()).py_err()?;
        let d = PyDict::new(py);
        d.set_item("leaves_merged", stats.leaves_merged)?;
        d.set_item("pages_moved", stats.pages_moved)?;
        d.set_item("passes", stats.passes)?;
        d.set_item("file_size_before", stats.file_size_before)?;
        d.set_item("file_size_after", stats.file_size_after)?;
        Ok(d)
    }

    /// The names of all trees, in byte order.
    fn tree_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let handle = self.handle()?;
        let names = handle.db().begin_read().and_then(|r| r.tree_names());
        PyList::new(py, names.py_err()?)
    }

    /// Lets go of the database: the file closes (cleanly, without the GIL) once the
    /// transactions, cursors and memoryviews made from it are gone too. Using the
    /// object afterwards raises `ValueError`.
    fn close(&self) {
        // Taken out first: the lock is not held while the handle drops.
        let handle = self
            .handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        drop(handle);
    }

    /// The path the database was opened with.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.handle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_none()
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    fn __repr__(&self) -> String {
        let state = if self.closed() { "closed" } else { "open" };
        format!("<mapkv.Database {:?} {state}>", self.path)
    }
}

/// Entries taken from the iterable per batch, and bytes at most.
const BATCH_ENTRIES: usize = 4096;
const BATCH_BYTES: usize = 16 << 20;

/// The bulk loader's input: `(key, value)` pairs taken from a Python iterable a batch at
/// a time, so that the load runs without the GIL and takes it once per batch.
///
/// `Database::bulk_load` takes plain pairs and cannot be told that its input failed. So
/// when the iterable raises, the feed hands out the last key again: the load stops with
/// `Unsorted` at that position (`stop_index`), which leaves the database unchanged, and
/// the Python exception is raised instead.
struct Feed {
    source: Py<PyIterator>,
    /// Told when the load holds the writer lock (the feed is pulled only then), so
    /// that Python code the iterable runs cannot wait for the lock on this thread.
    handle: Arc<Handle>,
    claim: Option<Claim>,
    batch: std::vec::IntoIter<(Vec<u8>, Vec<u8>)>,
    exhausted: bool,
    /// Entries handed out so far.
    handed_out: u64,
    /// The last key of the batch before the current one is taken: the last key handed
    /// out whenever a new batch is needed.
    last_key: Vec<u8>,
    error: Option<PyErr>,
    stop_index: Option<u64>,
}

impl Feed {
    fn new(source: Py<PyIterator>, handle: Arc<Handle>) -> Feed {
        Feed {
            source,
            handle,
            claim: None,
            batch: Vec::new().into_iter(),
            exhausted: false,
            handed_out: 0,
            last_key: Vec::new(),
            error: None,
            stop_index: None,
        }
    }

    fn fill(&mut self, py: Python<'_>) -> PyResult<()> {
        let mut source = self.source.bind(py).clone();
        let mut batch = Vec::new();
        let mut bytes = 0;
        while batch.len() < BATCH_ENTRIES && bytes < BATCH_BYTES {
            let Some(item) = source.next() else {
                self.exhausted = true;
                break;
            };
            let item = item?;
            let (key, value): (BytesIn<'_, '_>, BytesIn<'_, '_>) = item.extract()?;
            let (key, value) = (key.as_slice().to_vec(), value.as_slice().to_vec());
            bytes += key.len() + value.len();
            batch.push((key, value));
        }
        if let Some((key, _)) = batch.last() {
            self.last_key.clone_from(key);
        }
        self.batch = batch.into_iter();
        Ok(())
    }
}

impl Iterator for Feed {
    type Item = (Vec<u8>, Vec<u8>);

    fn next(&mut self) -> Option<(Vec<u8>, Vec<u8>)> {
        if self.claim.is_none() {
            self.claim = Some(self.handle.writer_started());
        }
        loop {
            if let Some(entry) = self.batch.next() {
                self.handed_out += 1;
                return Some(entry);
            }
            if self.exhausted {
                return None;
            }
            if let Err(e) = Python::attach(|py| self.fill(py)) {
                // A failed fill changed nothing, so `last_key` is the last key handed
                // out (there is one: a first batch that failed was raised before the
                // load began).
                self.error = Some(e);
                self.stop_index = Some(self.handed_out);
                self.exhausted = true;
                return Some((self.last_key.clone(), Vec::new()));
            }
        }
    }
}
