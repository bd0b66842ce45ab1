//! Python bindings of mapkv: the module `mapkv`, in py-lmdb's habits, with values as
//! zero-copy memoryviews that keep their snapshot alive instead of dangling.
//! See python/README.md for the API and python/mapkv.pyi for its signatures.

#![deny(unsafe_op_in_unsafe_fn)]

mod bytes;
mod cursor;
mod db;
mod errors;
mod read;
mod view;
mod write;

use pyo3::prelude::*;

#[pymodule]
#[pyo3(name = "mapkv")]
fn init(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(db::open, m)?)?;
    m.add_class::<db::Database>()?;
    m.add_class::<read::ReadTransaction>()?;
    m.add_class::<write::WriteTransaction>()?;
    m.add_class::<cursor::Cursor>()?;
    m.add_class::<cursor::CursorIter>()?;
    m.add("DEFAULT_TREE", read::DEFAULT_TREE)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    errors::register(m)?;
    view::register(m)?;
    Ok(())
}
