//! Read transactions: one mapkv `ReadTxn`, shared by the Python transaction object, its
//! cursors and the memoryviews of its values, and kept alive by whichever lives longest.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use mapkv::{ReadTree, ReadTxn};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyWeakrefMethods, PyWeakrefReference};

use crate::bytes::BytesIn;
use crate::cursor::Cursor;
use crate::db::Handle;
use crate::errors::{ToPyResult, ended};
use crate::view::Exporter;

/// The tree that `tree=None` names. It reads as empty while it does not exist; any other
/// tree that does not exist is `TreeNotFound`.
pub(crate) const DEFAULT_TREE: &str = "main";

/// A mapkv read transaction, with the trees looked up in it and whether the Python
/// transaction is still open behind a lock. `ReadTxn`, `ReadTree` and `Range` are `Send`
/// and `Sync` (mapkv's lookups take no lock): the lock guards the cache and the flag.
///
/// Lifetimes: `ReadTree<'static>`, `Range<'static>` and `&'static [u8]` taken from a
/// snapshot really live as long as the snapshot: whoever holds one also holds an
/// `Arc<Snapshot>` for at least as long (a cursor's field, a view's owner, a local in
/// the method that uses it). The snapshot sits in its `Arc` from construction on, so
/// `txn` never moves while anything borrows it.
pub(crate) struct Snapshot {
    /// Declared before `txn`, so dropped first: the trees borrow `txn`.
    state: Mutex<State>,
    /// Reached through a [`Guard`], with the trees looked up so far.
    txn: ReadTxn,
    /// Declared after `txn`, so dropped after it: if this is the last reference to the
    /// database, its clean close runs in `Handle::drop`, without the GIL.
    _handle: Arc<Handle>,
}

struct State {
    /// Every tree looked up so far, and `None` for the default tree if the snapshot
    /// has none (a snapshot never changes, so neither answer goes stale).
    trees: Vec<(String, Option<ReadTree<'static>>)>,
    /// False once the Python transaction ended: its cursors stop working, while views
    /// of its values stay valid.
    open: bool,
}

/// A snapshot's transaction with exclusive use of its tree cache and open flag.
///
/// Never make a Python object while holding one: that can run arbitrary Python code (a
/// garbage collection calls finalizers), which may use the same snapshot and would
/// then wait for this lock forever. Gather mapkv results under the lock, convert after.
pub(crate) struct Guard<'s> {
    state: MutexGuard<'s, State>,
    txn: &'static ReadTxn,
}

impl Snapshot {
    pub(crate) fn new(txn: ReadTxn, handle: Arc<Handle>) -> Arc<Snapshot> {
        Arc::new(Snapshot {
            state: Mutex::new(State {
                trees: Vec::new(),
                open: true,
            }),
            txn,
            _handle: handle,
        })
    }

    pub(crate) fn lock(&self) -> Guard<'_> {
        // A panic under the lock leaves at most a tree lookup unrecorded.
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let txn: *const ReadTxn = &self.txn;
        // SAFETY: `self` lives in an `Arc` (the only constructor puts it there) and
        // `txn` is never moved out, so the reference stays valid while any
        // `Arc<Snapshot>` lives; everything derived from it is used only by holders of
        // one (see the type's comment).
        let txn: &'static ReadTxn = unsafe { &*txn };
        Guard { state, txn }
    }
}

impl Guard<'_> {
    /// The tree `name` (the default tree for `None`): `Ok(None)` if it is the default
    /// tree and does not exist, `TreeNotFound` for any other tree that does not.
    pub(crate) fn tree(&mut self, name: Option<&str>) -> mapkv::Result<Option<&ReadTree<'static>>> {
        let name = name.unwrap_or(DEFAULT_TREE);
        let trees = &mut self.state.trees;
        let i = match trees.iter().position(|(n, _)| n == name) {
            Some(i) => i,
            None => {
                // Absent trees other than the default are not recorded: a caller trying
                // many names would grow the list without bound.
                let tree = match self.txn.open_tree(name) {
                    Ok(tree) => Some(tree),
                    Err(mapkv::Error::TreeNotFound(_)) if name == DEFAULT_TREE => None,
                    Err(e) => return Err(e),
                };
                trees.push((name.to_string(), tree));
                trees.len() - 1
            }
        };
        match &trees[i].1 {
            Some(tree) => Ok(Some(tree)),
            None if name == DEFAULT_TREE => Ok(None),
            None => Err(mapkv::Error::TreeNotFound(name.to_string())),
        }
    }

    pub(crate) fn is_open(&self) -> bool {
        self.state.open
    }

    fn end(&mut self) {
        self.state.open = false;
    }

    fn tree_names(&self) -> mapkv::Result<Vec<String>> {
        self.txn.tree_names()
    }
}

/// A value as Python gets it: `bytes`, or a zero-copy `memoryview`.
///
/// # Safety
/// `value` must be bytes that the transaction of `exporter`'s snapshot returned.
pub(crate) unsafe fn value_out<'py>(
    py: Python<'py>,
    exporter: &Exporter,
    value: &[u8],
    buffer: bool,
) -> PyResult<Bound<'py, PyAny>> {
    if buffer {
        // SAFETY: the caller's guarantee is `view`'s.
        unsafe { exporter.view(py, value) }
    } else {
        Ok(PyBytes::new(py, value).into_any())
    }
}

/// A read-only snapshot of the database, from `Database.begin()`.
///
/// Use it in a `with` block, or end it with `abort()` (or `commit()`, the same for a
/// read transaction). Memoryviews it returned stay valid after it ends: each keeps the
/// snapshot alive, and with it the pages it reads (they cannot be reused by writers
/// until the last view is gone).
#[pyclass(module = "mapkv")]
pub struct ReadTransaction {
    /// The snapshot, and the owner of its views; `None` once the transaction ended.
    open: Option<(Arc<Snapshot>, Exporter)>,
    /// Values as memoryviews unless a call says otherwise (`begin(buffers=True)`).
    buffers: bool,
    /// The cursors it made, weakly: its end closes those still alive, so that none
    /// keeps the snapshot (and the pages it reaches, which writers then cannot reuse)
    /// until it is next used or collected. Memoryviews keep it, by design.
    cursors: Vec<Py<PyWeakrefReference>>,
    /// When `cursors` reaches this length, the dead references are dropped (and this
    /// doubles past what is left): a transaction that makes many cursors holds a list
    /// as long as the live ones, at an amortized constant cost per cursor.
    prune_at: usize,
}

/// The first length at which `ReadTransaction::cursors` is pruned.
const PRUNE_AT_FIRST: usize = 16;

impl ReadTransaction {
    pub(crate) fn new(
        py: Python<'_>,
        txn: ReadTxn,
        handle: Arc<Handle>,
        buffers: bool,
    ) -> PyResult<ReadTransaction> {
        let snapshot = Snapshot::new(txn, handle);
        let exporter = Exporter::new(py, &snapshot)?;
        Ok(ReadTransaction {
            open: Some((snapshot, exporter)),
            buffers,
            cursors: Vec::new(),
            prune_at: PRUNE_AT_FIRST,
        })
    }

    fn snapshot(&self) -> PyResult<&(Arc<Snapshot>, Exporter)> {
        self.open.as_ref().ok_or_else(|| ended("read transaction"))
    }

    fn end(&mut self, py: Python<'_>) {
        if let Some((snapshot, _)) = self.open.take() {
            snapshot.lock().end();
        }
        for cursor in self.cursors.drain(..) {
            let cursor = cursor.bind(py).upgrade_as::<Cursor>();
            // One in use on another thread (borrowed) lets go at its next step.
            if let Ok(Some(cursor)) = cursor
                && let Ok(mut cursor) = cursor.try_borrow_mut()
            {
                cursor.close();
            }
        }
    }

    /// Notes `cursor` among the ones `end` closes.
    fn track(&mut self, py: Python<'_>, cursor: &Bound<'_, Cursor>) -> PyResult<()> {
        if self.cursors.len() >= self.prune_at {
            self.cursors.retain(|c| c.bind(py).upgrade().is_some());
            self.prune_at = (2 * self.cursors.len()).max(PRUNE_AT_FIRST);
        }
        self.cursors
            .push(PyWeakrefReference::new(cursor.as_any())?.unbind());
        Ok(())
    }
}

#[pymethods]
impl ReadTransaction {
    /// The value stored under `key` in `tree`, or `default` if there is none.
    ///
    /// With `buffer=True` (the default in a transaction begun with `buffers=True`) the
    /// value is a read-only `memoryview` of the database's own bytes, without a copy; it
    /// stays valid after the transaction ends.
    #[pyo3(signature = (key, default=None, *, tree=None, buffer=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        key: BytesIn<'_, 'py>,
        default: Option<Bound<'py, PyAny>>,
        tree: Option<String>,
        buffer: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let buffer = buffer.unwrap_or(self.buffers);
        let (snapshot, exporter) = self.snapshot()?;
        let found = {
            let mut guard = snapshot.lock();
            match guard.tree(tree.as_deref()) {
                Ok(Some(t)) => t.get(key.as_slice()),
                Ok(None) => Ok(None),
                Err(e) => Err(e),
            }
        };
        match found.py_err()? {
            // SAFETY: `value` was returned by the transaction of `snapshot`, which is
            // `exporter`'s.
            Some(value) => unsafe { value_out(py, exporter, value, buffer) },
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// A cursor over `tree`, unpositioned. Iterating over it yields `(key, value)` pairs
    /// in key order; with `buffer=True` (the transaction's `buffers` by default) values
    /// are zero-copy memoryviews (keys are always `bytes`).
    #[pyo3(signature = (tree=None, *, buffer=None))]
    fn cursor<'py>(
        &mut self,
        py: Python<'py>,
        tree: Option<String>,
        buffer: Option<bool>,
    ) -> PyResult<Bound<'py, Cursor>> {
        let buffer = buffer.unwrap_or(self.buffers);
        let (snapshot, exporter) = self.snapshot()?;
        let cursor = Cursor::read(Arc::clone(snapshot), exporter.clone_ref(py), tree, buffer);
        let cursor = Bound::new(py, cursor)?;
        self.track(py, &cursor)?;
        Ok(cursor)
    }

    /// The number of entries in `tree` (stored in the tree: no scan).
    #[pyo3(signature = (tree=None))]
    fn len(&self, tree: Option<String>) -> PyResult<u64> {
        let (snapshot, _) = self.snapshot()?;
        let n = {
            let mut guard = snapshot.lock();
            match guard.tree(tree.as_deref()) {
                Ok(Some(t)) => t.len(),
                Ok(None) => Ok(0),
                Err(e) => Err(e),
            }
        };
        n.py_err()
    }

    /// The names of all trees in this snapshot, in byte order.
    fn tree_names<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let names = self.snapshot()?.0.lock().tree_names();
        PyList::new(py, names.py_err()?)
    }

    /// Ends the transaction (the same as `abort()` for a read transaction).
    fn commit(&mut self, py: Python<'_>) {
        self.end(py);
    }

    /// Ends the transaction and closes its cursors. Memoryviews of its values stay
    /// valid.
    fn abort(&mut self, py: Python<'_>) {
        self.end(py);
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, py: Python<'_>, _args: &Bound<'_, pyo3::types::PyTuple>) -> bool {
        self.end(py);
        false
    }

    fn __repr__(&self) -> &'static str {
        match self.open {
            Some(_) => "<mapkv.ReadTransaction open>",
            None => "<mapkv.ReadTransaction ended>",
        }
    }
}
