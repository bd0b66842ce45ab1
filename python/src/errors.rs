//! The exception hierarchy: `mapkv.Error` and one subclass per kind of `mapkv::Error`.
//! I/O errors are Python's own `OSError` (with `errno` where the system gave one), so
//! `FileNotFoundError` and `PermissionError` arise as usual; everything else mapkv
//! reports is a `mapkv.Error`.

use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::{PyErr, Python, create_exception};

create_exception!(
    mapkv,
    Error,
    PyException,
    "Base class of every error mapkv reports, but for I/O errors, which are OSError."
);
create_exception!(
    mapkv,
    Corrupted,
    Error,
    "The file is inconsistent: a checksum, bound or structural rule does not hold. \
     Attributes: page (int), reason (str)."
);
create_exception!(
    mapkv,
    Locked,
    Error,
    "The file is open read-write by another handle, in this process or another; or the \
     handle was opened before os.fork() and this is the child (open the database anew \
     there once the parent has closed it)."
);
create_exception!(
    mapkv,
    ReadOnly,
    Error,
    "A write on a database opened with readonly=True."
);
create_exception!(
    mapkv,
    KeyTooLarge,
    Error,
    "A key (or tree name) longer than the page size allows. Attributes: size, max."
);
create_exception!(
    mapkv,
    ValueTooLarge,
    Error,
    "A value longer than the format allows. Attributes: size, max."
);
create_exception!(
    mapkv,
    TreeNotFound,
    Error,
    "A named tree that does not exist. Attribute: name."
);
create_exception!(
    mapkv,
    TreeNotEmpty,
    Error,
    "bulk_load into a tree that already holds entries. Attribute: name."
);
create_exception!(
    mapkv,
    Unsorted,
    Error,
    "bulk_load input whose keys are not strictly ascending. Attribute: index, the \
     zero-based position of the first entry not greater than the one before it."
);
create_exception!(
    mapkv,
    InvalidOptions,
    Error,
    "An option out of range, or a file that does not fit the options."
);

/// An `OSError` with the operating system's error number where there is one, also when
/// mapkv wrapped the error to name the file (its source is then the OS error): Python
/// picks the subclass from the number (`FileNotFoundError`, `PermissionError`, ...) and
/// callers can match on `errno`.
fn os_error(io: std::io::Error, message: String) -> PyErr {
    let errno = io.raw_os_error().or_else(|| {
        io.get_ref()
            .and_then(|inner| inner.source())
            .and_then(|source| source.downcast_ref::<std::io::Error>())
            .and_then(std::io::Error::raw_os_error)
    });
    match errno {
        Some(errno) => pyo3::exceptions::PyOSError::new_err((errno, message)),
        None => PyErr::from(io),
    }
}

/// The Python exception for `e`, with its fields as attributes where it has any.
pub(crate) fn to_py(e: mapkv::Error) -> PyErr {
    let message = e.to_string();
    Python::attach(|py| match e {
        mapkv::Error::Io(io) => os_error(io, message),
        mapkv::Error::Corrupted { page, reason } => {
            with_attrs(py, Corrupted::new_err(message), |v| {
                v.setattr("page", page)?;
                v.setattr("reason", reason)
            })
        }
        mapkv::Error::TreeNotFound(name) => with_attrs(py, TreeNotFound::new_err(message), |v| {
            v.setattr("name", name)
        }),
        mapkv::Error::TreeNotEmpty(name) => with_attrs(py, TreeNotEmpty::new_err(message), |v| {
            v.setattr("name", name)
        }),
        mapkv::Error::Unsorted { index } => with_attrs(py, Unsorted::new_err(message), |v| {
            v.setattr("index", index)
        }),
        mapkv::Error::KeyTooLarge { size, max } => {
            with_attrs(py, KeyTooLarge::new_err(message), |v| {
                v.setattr("size", size)?;
                v.setattr("max", max)
            })
        }
        mapkv::Error::ValueTooLarge { size, max } => {
            with_attrs(py, ValueTooLarge::new_err(message), |v| {
                v.setattr("size", size)?;
                v.setattr("max", max)
            })
        }
        // A handle used in a forked child: its parent process holds the file.
        mapkv::Error::Locked | mapkv::Error::Forked => Locked::new_err(message),
        mapkv::Error::ReadOnly => ReadOnly::new_err(message),
        mapkv::Error::InvalidOptions(_) => InvalidOptions::new_err(message),
        // `mapkv::Error` is non-exhaustive: a kind added later is still an Error.
        _ => Error::new_err(message),
    })
}

/// `err` with attributes set by `set`. Setting an attribute on a fresh exception can
/// fail only for want of memory; the exception's message says everything anyway, so
/// such a failure is dropped rather than hiding the error being reported.
fn with_attrs(
    py: Python<'_>,
    err: PyErr,
    set: impl FnOnce(&Bound<'_, pyo3::exceptions::PyBaseException>) -> PyResult<()>,
) -> PyErr {
    let _ = set(err.value(py));
    err
}

/// Extension so that `?` turns `mapkv::Result` into `PyResult`.
pub(crate) trait ToPyResult<T> {
    fn py_err(self) -> PyResult<T>;
}

impl<T> ToPyResult<T> for mapkv::Result<T> {
    fn py_err(self) -> PyResult<T> {
        self.map_err(to_py)
    }
}

/// The error for any use of a transaction, cursor or database after it ended.
pub(crate) fn ended(what: &str) -> PyErr {
    PyValueError::new_err(format!("{what} has ended"))
}

/// Adds the exception classes to the module.
pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    m.add("Error", py.get_type::<Error>())?;
    m.add("Corrupted", py.get_type::<Corrupted>())?;
    m.add("Locked", py.get_type::<Locked>())?;
    m.add("ReadOnly", py.get_type::<ReadOnly>())?;
    m.add("KeyTooLarge", py.get_type::<KeyTooLarge>())?;
    m.add("ValueTooLarge", py.get_type::<ValueTooLarge>())?;
    m.add("TreeNotFound", py.get_type::<TreeNotFound>())?;
    m.add("TreeNotEmpty", py.get_type::<TreeNotEmpty>())?;
    m.add("Unsorted", py.get_type::<Unsorted>())?;
    m.add("InvalidOptions", py.get_type::<InvalidOptions>())?;
    Ok(())
}
