//! Cursors in py-lmdb's manner: a position in one tree that `first`, `last`,
//! `set_range`, `set_key`, `next` and `prev` move, and iterators that walk from it.

use std::ops::Bound as Limit;
use std::sync::Arc;

use mapkv::Range;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView, PyTuple};

use crate::bytes::BytesIn;
use crate::errors::{ToPyResult, ended};
use crate::read::{Guard, Snapshot, value_out};
use crate::view::Exporter;
use crate::write::WriteTransaction;

/// A position in a tree, from `txn.cursor(tree)`.
///
/// Unpositioned at first; `first()`, `last()`, `set_range(key)`, `set_key(key)`,
/// `next()` and `prev()` move it and return whether it now stands on an entry (moving
/// past either end leaves it unpositioned; `next()` and `prev()` on an unpositioned
/// cursor go to the first and the last entry). `key()`, `value()` and `item()` read the
/// current entry (`b""` when unpositioned). Iterating over the cursor is `iternext()`.
///
/// A cursor belongs to its transaction: once that ends, using the cursor raises
/// `ValueError` (memoryviews already returned stay valid), and a read transaction's end
/// closes its cursors, so that they no longer hold its snapshot. In a write transaction the
/// cursor sees the transaction's own writes; there its entries are copies, and
/// `buffer=True` gives memoryviews of those copies.
#[pyclass(module = "mapkv", weakref)]
pub struct Cursor {
    source: Source,
    /// Values as zero-copy memoryviews instead of `bytes`.
    buffer: bool,
}

enum Source {
    Read(Box<ReadCursor>),
    Write(WriteCursor),
    Closed,
}

/// How to move.
#[derive(Clone, Copy)]
enum Seek<'k> {
    First,
    Last,
    /// The first entry whose key is at least this.
    AtLeast(&'k [u8]),
    Next,
    Prev,
}

#[derive(Clone, Copy, PartialEq)]
enum Direction {
    Forward,
    Backward,
}

struct ReadCursor {
    /// Declared before `snapshot`: it borrows from it.
    walk: Walk,
    snapshot: Arc<Snapshot>,
    /// The owner of the snapshot's views (the transaction's).
    exporter: Exporter,
}

/// Where a read cursor stands, in bytes and ranges of its snapshot.
struct Walk {
    ranges: Ranges,
    /// The current entry.
    position: Option<(&'static [u8], &'static [u8])>,
    tree: Option<String>,
}

/// The ranges that produced the current position, kept so that stepping on in the same
/// direction continues them instead of descending from the root again: a full scan costs
/// what the mapkv iterator costs.
#[derive(Default)]
struct Ranges {
    /// Entries after the position, ascending.
    forward: Option<Range<'static>>,
    /// Entries before the position, descending.
    backward: Option<Range<'static>>,
}

struct WriteCursor {
    txn: Py<WriteTransaction>,
    tree: Option<String>,
    /// The current entry, copied: the transaction's pages change with its writes.
    position: Option<(Vec<u8>, Vec<u8>)>,
}

impl Cursor {
    pub(crate) fn read(
        snapshot: Arc<Snapshot>,
        exporter: Exporter,
        tree: Option<String>,
        buffer: bool,
    ) -> Cursor {
        Cursor {
            source: Source::Read(Box::new(ReadCursor {
                walk: Walk {
                    ranges: Ranges::default(),
                    position: None,
                    tree,
                },
                snapshot,
                exporter,
            })),
            buffer,
        }
    }

    pub(crate) fn write(txn: Py<WriteTransaction>, tree: Option<String>, buffer: bool) -> Cursor {
        Cursor {
            source: Source::Write(WriteCursor {
                txn,
                tree,
                position: None,
            }),
            buffer,
        }
    }

    /// Moves; true if the cursor now stands on an entry.
    fn seek(&mut self, py: Python<'_>, seek: Seek<'_>) -> PyResult<bool> {
        match &mut self.source {
            Source::Read(c) => {
                let ReadCursor { walk, snapshot, .. } = &mut **c;
                let moved = {
                    let mut guard = snapshot.lock();
                    if guard.is_open() {
                        Some(walk.seek(&mut guard, seek))
                    } else {
                        None
                    }
                };
                match moved {
                    Some(r) => r.py_err(),
                    None => {
                        // Let go of the snapshot now rather than when the cursor dies.
                        self.source = Source::Closed;
                        Err(ended("the cursor's transaction"))
                    }
                }
            }
            Source::Write(c) => c.seek(py, seek),
            Source::Closed => Err(ended("cursor")),
        }
    }

    fn key_out<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        Ok(PyBytes::new(
            py,
            match &self.source {
                Source::Read(c) => c.walk.position.map_or(&[][..], |(k, _)| k),
                Source::Write(c) => c.position.as_ref().map_or(&[][..], |(k, _)| k),
                Source::Closed => return Err(ended("cursor")),
            },
        ))
    }

    fn value_out<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        match &self.source {
            Source::Read(c) => {
                let value = c.walk.position.map_or(&[][..], |(_, v)| v);
                // SAFETY: the position's bytes were returned by the transaction of
                // `c.snapshot`, which is `c.exporter`'s (or are the empty static slice).
                unsafe { value_out(py, &c.exporter, value, self.buffer) }
            }
            Source::Write(c) => {
                let value = c.position.as_ref().map_or(&[][..], |(_, v)| v);
                let bytes = PyBytes::new(py, value).into_any();
                if self.buffer {
                    Ok(PyMemoryView::from(&bytes)?.into_any())
                } else {
                    Ok(bytes)
                }
            }
            Source::Closed => Err(ended("cursor")),
        }
    }

    /// `ValueError` once the cursor's transaction has ended (as `seek` says it then),
    /// so that `key()`, `value()` and `item()` do not go on showing the last entry.
    fn check_open(&self, py: Python<'_>) -> PyResult<()> {
        let open = match &self.source {
            Source::Read(c) => c.snapshot.lock().is_open(),
            Source::Write(c) => c.txn.bind(py).try_borrow()?.is_open(),
            Source::Closed => false,
        };
        match open {
            true => Ok(()),
            false => Err(ended("the cursor's transaction")),
        }
    }

    fn positioned(&self) -> bool {
        match &self.source {
            Source::Read(c) => c.walk.position.is_some(),
            Source::Write(c) => c.position.is_some(),
            Source::Closed => false,
        }
    }
}

impl Walk {
    /// `guard` is the lock of the snapshot the walk reads.
    fn seek(&mut self, guard: &mut Guard<'_>, seek: Seek<'_>) -> mapkv::Result<bool> {
        let ranges = &mut self.ranges;
        let Some(tree) = guard.tree(self.tree.as_deref())? else {
            *ranges = Ranges::default();
            self.position = None;
            return Ok(false);
        };
        let (seek, direction) = resolve(seek, self.position.is_some());
        let continued = match seek {
            Seek::Next => ranges.forward.take(),
            Seek::Prev => ranges.backward.take(),
            _ => None,
        };
        let mut range = match continued {
            Some(range) => range,
            None => tree.range(bounds(seek, self.position.map(|(k, _)| k)))?,
        };
        let entry = match direction {
            Direction::Forward => range.next(),
            Direction::Backward => range.next_back(),
        };
        *ranges = Ranges::default();
        self.position = None;
        let Some((key, value)) = entry.transpose()? else {
            return Ok(false);
        };
        match direction {
            Direction::Forward => ranges.forward = Some(range),
            Direction::Backward => ranges.backward = Some(range),
        }
        self.position = Some((key, value));
        Ok(true)
    }
}

impl ReadCursor {
    fn unposition(&mut self) {
        self.walk.ranges = Ranges::default();
        self.walk.position = None;
    }
}

impl WriteCursor {
    fn seek(&mut self, py: Python<'_>, seek: Seek<'_>) -> PyResult<bool> {
        let (seek, direction) = resolve(seek, self.position.is_some());
        let (lower, upper) = bounds(seek, self.position.as_ref().map(|(k, _)| &k[..]));
        let entry = self.txn.bind(py).try_borrow_mut()?.first_in(
            self.tree.as_deref(),
            (lower, upper),
            direction == Direction::Forward,
        )?;
        self.position = entry;
        Ok(self.position.is_some())
    }
}

/// The key range in which `seek` looks, from the current key `at`.
/// `Next` and `Prev` on an unpositioned cursor start from the first and last entry;
/// returns the seek to make and the direction it walks.
fn resolve(seek: Seek<'_>, positioned: bool) -> (Seek<'_>, Direction) {
    let seek = match (seek, positioned) {
        (Seek::Next, false) => Seek::First,
        (Seek::Prev, false) => Seek::Last,
        (seek, _) => seek,
    };
    let direction = match seek {
        Seek::Last | Seek::Prev => Direction::Backward,
        _ => Direction::Forward,
    };
    (seek, direction)
}

fn bounds<'k>(seek: Seek<'k>, at: Option<&'k [u8]>) -> (Limit<&'k [u8]>, Limit<&'k [u8]>) {
    match (seek, at) {
        (Seek::AtLeast(k), _) => (Limit::Included(k), Limit::Unbounded),
        (Seek::Next, Some(k)) => (Limit::Excluded(k), Limit::Unbounded),
        (Seek::Prev, Some(k)) => (Limit::Unbounded, Limit::Excluded(k)),
        _ => (Limit::Unbounded, Limit::Unbounded),
    }
}

#[pymethods]
impl Cursor {
    /// Moves to the first entry; False if the tree is empty.
    fn first(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.seek(py, Seek::First)
    }

    /// Moves to the last entry; False if the tree is empty.
    fn last(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.seek(py, Seek::Last)
    }

    /// Moves to the first entry whose key is at least `key`; False if there is none.
    fn set_range(&mut self, py: Python<'_>, key: BytesIn<'_, '_>) -> PyResult<bool> {
        self.seek(py, Seek::AtLeast(key.as_slice()))
    }

    /// Moves to the entry whose key is `key`; if there is none, the cursor ends up
    /// unpositioned and this returns False.
    fn set_key(&mut self, py: Python<'_>, key: BytesIn<'_, '_>) -> PyResult<bool> {
        let key = key.as_slice();
        if self.seek(py, Seek::AtLeast(key))? && self.key_out(py)?.as_bytes() == key {
            return Ok(true);
        }
        match &mut self.source {
            Source::Read(c) => c.unposition(),
            Source::Write(c) => c.position = None,
            Source::Closed => {}
        }
        Ok(false)
    }

    /// Moves to the next entry (the first, if unpositioned); False past the end.
    fn next(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.seek(py, Seek::Next)
    }

    /// Moves to the previous entry (the last, if unpositioned); False past the start.
    fn prev(&mut self, py: Python<'_>) -> PyResult<bool> {
        self.seek(py, Seek::Prev)
    }

    /// The current key (`b""` when unpositioned).
    fn key<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        self.check_open(py)?;
        self.key_out(py)
    }

    /// The current value (`b""` when unpositioned): `bytes`, or a memoryview with
    /// `buffer=True`.
    fn value<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.check_open(py)?;
        self.value_out(py)
    }

    /// The current `(key, value)`.
    fn item<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        self.check_open(py)?;
        PyTuple::new(py, [self.key_out(py)?.into_any(), self.value_out(py)?])
    }

    /// An iterator that yields the current entry, then steps forward, until the end.
    /// Unpositioned, it starts at the first entry. Yields `(key, value)`, or only keys
    /// or only values if the other is turned off.
    #[pyo3(signature = (keys=true, values=true))]
    fn iternext(slf: Py<Self>, keys: bool, values: bool) -> CursorIter {
        CursorIter::new(slf, Direction::Forward, keys, values)
    }

    /// Like `iternext`, backwards; unpositioned, it starts at the last entry.
    #[pyo3(signature = (keys=true, values=true))]
    fn iterprev(slf: Py<Self>, keys: bool, values: bool) -> CursorIter {
        CursorIter::new(slf, Direction::Backward, keys, values)
    }

    fn __iter__(slf: Py<Self>) -> CursorIter {
        CursorIter::new(slf, Direction::Forward, true, true)
    }

    /// Releases the cursor (and its hold on the snapshot or transaction) before it is
    /// collected; a read transaction's end does this for its cursors.
    pub(crate) fn close(&mut self) {
        self.source = Source::Closed;
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_args))]
    fn __exit__(&mut self, _args: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }
}

/// From `Cursor.iternext()` / `iterprev()`: walks the cursor it came from.
#[pyclass(module = "mapkv")]
pub struct CursorIter {
    cursor: Py<Cursor>,
    direction: Direction,
    keys: bool,
    values: bool,
    state: IterState,
}

#[derive(PartialEq)]
enum IterState {
    /// The first item is the cursor's current entry, if it has one.
    Fresh,
    Walking,
    /// Past the end: stays so (an unpositioned cursor's next step would start over).
    Done,
}

impl CursorIter {
    fn new(cursor: Py<Cursor>, direction: Direction, keys: bool, values: bool) -> CursorIter {
        CursorIter {
            cursor,
            direction,
            keys,
            values,
            state: IterState::Fresh,
        }
    }
}

#[pymethods]
impl CursorIter {
    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __next__<'py>(&mut self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.state == IterState::Done {
            return Ok(None);
        }
        let mut cursor = self.cursor.bind(py).try_borrow_mut()?;
        let on_entry = if self.state == IterState::Fresh && cursor.positioned() {
            // The current entry is read without a step, and a step is what would notice
            // that the transaction ended: ask as `key()` does.
            cursor.check_open(py)?;
            true
        } else if self.direction == Direction::Forward {
            cursor.seek(py, Seek::Next)?
        } else {
            cursor.seek(py, Seek::Prev)?
        };
        if !on_entry {
            self.state = IterState::Done;
            return Ok(None);
        }
        self.state = IterState::Walking;
        Ok(Some(match (self.keys, self.values) {
            (true, true) => {
                PyTuple::new(py, [cursor.key_out(py)?.into_any(), cursor.value_out(py)?])?
                    .into_any()
            }
            (true, false) => cursor.key_out(py)?.into_any(),
            (false, _) => cursor.value_out(py)?,
        }))
    }
}
