//! The write transaction.

use std::collections::HashSet;
use std::ops::Bound as Limit;
use std::sync::Arc;

use mapkv::{WriteTree, WriteTxn};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList, PyMemoryView};

use crate::bytes::BytesIn;
use crate::cursor::Cursor;
use crate::db::{Claim, Handle};
use crate::errors::{ToPyResult, ended, to_py};
use crate::read::DEFAULT_TREE;

/// The database's one write transaction, from `Database.begin(write=True)`.
///
/// In a `with` block it commits when the block ends normally and aborts when it ends
/// with an exception; otherwise call `commit()` or `abort()`. Dropping it uncommitted
/// aborts. It may be used, ended or collected on any thread (one call at a time; a call
/// while another is under way raises `RuntimeError`), but the thread that began it
/// cannot begin another write transaction until it ends. Reads see the transaction's
/// own writes, as copies: `buffer=True` gives memoryviews of copies here.
#[pyclass(module = "mapkv")]
pub struct WriteTransaction {
    txn: Option<WriteTxn>,
    /// Dropped when the transaction ends (after it: see `Handle::drop`), so that an
    /// ended transaction object does not keep the database open; with the claim to the
    /// writer lock to give up then.
    handle: Option<(Arc<Handle>, Claim)>,
    /// The trees that exist as this transaction sees them, loaded when first needed
    /// (reads of a tree that does not exist must not create it).
    trees: Option<HashSet<String>>,
    /// Values as memoryviews (of copies) unless a call says otherwise.
    buffers: bool,
}

impl WriteTransaction {
    pub(crate) fn new(
        txn: WriteTxn,
        handle: Arc<Handle>,
        claim: Claim,
        buffers: bool,
    ) -> WriteTransaction {
        WriteTransaction {
            txn: Some(txn),
            handle: Some((handle, claim)),
            trees: None,
            buffers,
        }
    }

    /// Whether the transaction is still open (neither committed nor aborted).
    pub(crate) fn is_open(&self) -> bool {
        self.txn.is_some()
    }

    pub(crate) fn set_durability(&mut self, durability: mapkv::Durability) -> PyResult<()> {
        self.txn()?.set_durability(durability);
        Ok(())
    }

    fn txn(&mut self) -> PyResult<&mut WriteTxn> {
        self.txn.as_mut().ok_or_else(|| ended("write transaction"))
    }

    /// Whether the tree `name` exists now.
    fn exists(&mut self, name: &str) -> PyResult<bool> {
        if self.trees.is_none() {
            let names = self.txn()?.tree_names().py_err()?;
            self.trees = Some(names.into_iter().collect());
        }
        Ok(self.trees.as_ref().is_some_and(|t| t.contains(name)))
    }

    /// Runs `f` on the tree `name` (the default tree for `None`). With `create`, the
    /// tree is created if absent; without, an absent default tree gives `Ok(None)` and
    /// any other absent tree `TreeNotFound`.
    fn with_tree<R>(
        &mut self,
        name: Option<&str>,
        create: bool,
        f: impl FnOnce(&mut WriteTree<'_>) -> mapkv::Result<R>,
    ) -> PyResult<Option<R>> {
        let name = name.unwrap_or(DEFAULT_TREE);
        if !create && !self.exists(name)? {
            return match name {
                DEFAULT_TREE => Ok(None),
                _ => Err(to_py(mapkv::Error::TreeNotFound(name.to_string()))),
            };
        }
        let txn = self
            .txn
            .as_mut()
            .ok_or_else(|| ended("write transaction"))?;
        // Opening creates the tree (it exists from here on, whatever `f` does).
        let mut tree = txn.open_tree(name).py_err()?;
        if let Some(trees) = &mut self.trees
            && !trees.contains(name)
        {
            trees.insert(name.to_string());
        }
        f(&mut tree).py_err().map(Some)
    }

    /// The first entry of `tree` within `bounds` (the last one if not `forward`), copied:
    /// the cursor's step in a write transaction.
    pub(crate) fn first_in(
        &mut self,
        tree: Option<&str>,
        bounds: (Limit<&[u8]>, Limit<&[u8]>),
        forward: bool,
    ) -> PyResult<Option<(Vec<u8>, Vec<u8>)>> {
        let entry = self.with_tree(tree, false, |t| {
            let mut range = t.range(bounds)?;
            let entry = if forward {
                range.next()
            } else {
                range.next_back()
            };
            Ok(entry.transpose()?.map(|(k, v)| (k.to_vec(), v.to_vec())))
        })?;
        Ok(entry.flatten())
    }

    /// Takes the transaction out, for commit or abort, first giving up its claim to the
    /// writer lock; the caller drops the handle after the transaction.
    fn finish(&mut self) -> PyResult<(WriteTxn, Option<Arc<Handle>>)> {
        let txn = self.txn.take().ok_or_else(|| ended("write transaction"))?;
        let handle = self.handle.take().map(|(handle, claim)| {
            handle.writer_finished(claim);
            handle
        });
        Ok((txn, handle))
    }
}

impl Drop for WriteTransaction {
    fn drop(&mut self) {
        if let Some((handle, claim)) = &self.handle {
            handle.writer_finished(*claim);
        }
    }
}

#[pymethods]
impl WriteTransaction {
    /// The value stored under `key` in `tree`, or `default` if there is none (this
    /// transaction's writes included). `buffer=True` gives a memoryview of a copy.
    #[pyo3(signature = (key, default=None, *, tree=None, buffer=None))]
    fn get<'py>(
        &mut self,
        py: Python<'py>,
        key: BytesIn<'_, 'py>,
        default: Option<Bound<'py, PyAny>>,
        tree: Option<String>,
        buffer: Option<bool>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let buffer = buffer.unwrap_or(self.buffers);
        let key = key.as_slice();
        let found = self
            .with_tree(tree.as_deref(), false, |t| {
                Ok(t.get(key)?.map(|v| PyBytes::new(py, v)))
            })?
            .flatten();
        match found {
            Some(bytes) if buffer => Ok(PyMemoryView::from(bytes.as_any())?.into_any()),
            Some(bytes) => Ok(bytes.into_any()),
            None => Ok(default.unwrap_or_else(|| py.None().into_bound(py))),
        }
    }

    /// Stores `value` under `key` in `tree` (created if absent), replacing any value.
    ///
    /// `append=True` (py-lmdb's `MDB_APPEND`): `key` must sort after every key of the
    /// tree, which then fills its pages completely, as a bulk load does; raises
    /// `Unsorted` otherwise, with the tree unchanged.
    #[pyo3(signature = (key, value, *, tree=None, append=false))]
    fn put(
        &mut self,
        key: BytesIn<'_, '_>,
        value: BytesIn<'_, '_>,
        tree: Option<String>,
        append: bool,
    ) -> PyResult<()> {
        let (key, value) = (key.as_slice(), value.as_slice());
        self.with_tree(tree.as_deref(), true, |t| match append {
            true => t.append(key, value),
            false => t.insert(key, value),
        })?;
        Ok(())
    }

    /// Stores `value` under `key` and returns the value it replaced (bytes), or None.
    #[pyo3(signature = (key, value, *, tree=None))]
    fn replace<'py>(
        &mut self,
        py: Python<'py>,
        key: BytesIn<'_, '_>,
        value: BytesIn<'_, '_>,
        tree: Option<String>,
    ) -> PyResult<Option<Bound<'py, PyBytes>>> {
        let (key, value) = (key.as_slice(), value.as_slice());
        let old = self.with_tree(tree.as_deref(), true, |t| t.replace(key, value))?;
        Ok(old.flatten().map(|v| PyBytes::new(py, &v)))
    }

    /// Removes `key` and returns its value (bytes), or `default` if it was absent.
    #[pyo3(signature = (key, default=None, *, tree=None))]
    fn pop<'py>(
        &mut self,
        py: Python<'py>,
        key: BytesIn<'_, 'py>,
        default: Option<Bound<'py, PyAny>>,
        tree: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let key = key.as_slice();
        let old = self.with_tree(tree.as_deref(), false, |t| t.take(key))?;
        Ok(match old.flatten() {
            Some(v) => PyBytes::new(py, &v).into_any(),
            None => default.unwrap_or_else(|| py.None().into_bound(py)),
        })
    }

    /// Removes every key `k` of `tree` with `start <= k < end` (None: unbounded on that
    /// side) in one pass, and returns how many were removed.
    #[pyo3(signature = (start=None, end=None, *, tree=None))]
    fn delete_range(
        &mut self,
        start: Option<BytesIn<'_, '_>>,
        end: Option<BytesIn<'_, '_>>,
        tree: Option<String>,
    ) -> PyResult<u64> {
        let lower = start
            .as_ref()
            .map_or(Limit::Unbounded, |k| Limit::Included(k.as_slice()));
        let upper = end
            .as_ref()
            .map_or(Limit::Unbounded, |k| Limit::Excluded(k.as_slice()));
        let removed = self.with_tree(tree.as_deref(), false, |t| t.remove_range((lower, upper)))?;
        Ok(removed.unwrap_or(0))
    }

    /// Removes `key` from `tree`; True if it was present.
    #[pyo3(signature = (key, *, tree=None))]
    fn delete(&mut self, key: BytesIn<'_, '_>, tree: Option<String>) -> PyResult<bool> {
        let key = key.as_slice();
        Ok(self
            .with_tree(tree.as_deref(), false, |t| t.remove(key))?
            .unwrap_or(false))
    }

    /// Deletes the tree `name` and all its entries; True if it existed.
    fn delete_tree(&mut self, name: String) -> PyResult<bool> {
        let existed = self.txn()?.delete_tree(&name).py_err()?;
        if let Some(trees) = &mut self.trees {
            trees.remove(&name);
        }
        Ok(existed)
    }

    /// A cursor over `tree` that sees this transaction's writes (see `Cursor`).
    #[pyo3(signature = (tree=None, *, buffer=None))]
    fn cursor(
        slf: Bound<'_, Self>,
        tree: Option<String>,
        buffer: Option<bool>,
    ) -> PyResult<Cursor> {
        let buffer = {
            let mut txn = slf.borrow_mut();
            txn.txn()?;
            buffer.unwrap_or(txn.buffers)
        };
        Ok(Cursor::write(slf.unbind(), tree, buffer))
    }

    /// The number of entries in `tree`.
    #[pyo3(signature = (tree=None))]
    fn len(&mut self, tree: Option<String>) -> PyResult<u64> {
        Ok(self
            .with_tree(tree.as_deref(), false, |t| t.len())?
            .unwrap_or(0))
    }

    /// The names of all trees as this transaction sees them, in byte order.
    fn tree_names<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.txn()?.tree_names().py_err()?)
    }

    /// Makes the changes visible to new readers, and durable (unless the transaction's
    /// durability is "none"). Other threads run while it waits for the disk.
    fn commit(&mut self, py: Python<'_>) -> PyResult<()> {
        let (txn, handle) = self.finish()?;
        let committed = py.detach(move || txn.commit());
        drop(handle);
        committed.py_err()
    }

    /// Discards the changes.
    fn abort(&mut self) -> PyResult<()> {
        if self.txn.is_some() {
            let (txn, handle) = self.finish()?;
            txn.abort();
            drop(handle);
        }
        Ok(())
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    /// Commits if the block ended normally, aborts if it raised.
    fn __exit__(
        &mut self,
        py: Python<'_>,
        exc_type: Option<Bound<'_, PyAny>>,
        _exc_value: Option<Bound<'_, PyAny>>,
        _traceback: Option<Bound<'_, PyAny>>,
    ) -> PyResult<bool> {
        match (exc_type, &self.txn) {
            (_, None) => {}
            (None, Some(_)) => self.commit(py)?,
            (Some(_), Some(_)) => self.abort()?,
        }
        Ok(false)
    }

    fn __repr__(&self) -> &'static str {
        match self.txn {
            Some(_) => "<mapkv.WriteTransaction open>",
            None => "<mapkv.WriteTransaction ended>",
        }
    }
}
