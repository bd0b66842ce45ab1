//! Keys and values from Python.

use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyMemoryView};
use pyo3::{Borrowed, FromPyObject};

/// A key or value passed in: a `bytes` object is read in place; any other object with
/// the buffer protocol (`bytearray`, `memoryview`, a numpy array, ...) is copied once.
/// Anything else (`str`, `int`, ...) is a `TypeError`, as in py-lmdb.
pub(crate) enum BytesIn<'a, 'py> {
    Borrowed(&'a [u8]),
    Copied(Bound<'py, PyBytes>),
}

impl BytesIn<'_, '_> {
    pub(crate) fn as_slice(&self) -> &[u8] {
        match self {
            BytesIn::Borrowed(b) => b,
            BytesIn::Copied(b) => b.as_bytes(),
        }
    }
}

impl<'a, 'py> FromPyObject<'a, 'py> for BytesIn<'a, 'py> {
    type Error = PyErr;

    fn extract(obj: Borrowed<'a, 'py, PyAny>) -> PyResult<Self> {
        if let Ok(bytes) = <&'a [u8]>::extract(obj) {
            return Ok(BytesIn::Borrowed(bytes));
        }
        // The buffer protocol's C API is in the stable ABI only from 3.11, so go through
        // a memoryview, which raises TypeError for objects without the protocol.
        let view = PyMemoryView::from(&obj)?;
        let copy = view.call_method0("tobytes")?.cast_into::<PyBytes>()?;
        Ok(BytesIn::Copied(copy))
    }
}
