//! # mapkv
//!
//! An embedded key-value store: a copy-on-write B-tree over a memory-mapped file.
//!
//! - **Zero-copy reads**: `get` and iteration return `&[u8]` borrowed straight from the
//!   mapped file, valid for the whole read transaction.
//! - **Transactions by page shadowing**: a write transaction never changes a page that a
//!   committed snapshot can see. One writer and any number of readers at once; readers
//!   never block the writer or each other.
//! - **One fdatasync per commit, no WAL**: every page carries a checksum that its parent
//!   also keeps (a Merkle tree), so recovery detects a torn last commit and falls back
//!   to the one before.
//! - Named trees, large values on overflow pages, integrity check, compaction, stats,
//!   a bulk loader for sorted data.
//!
//! ```
//! use mapkv::{Database, Result};
//!
//! fn main() -> Result<()> {
//!     let dir = tempfile::tempdir()?;
//!     let db = Database::open(dir.path().join("example.mapkv"))?;
//!
//!     let mut wtx = db.begin_write()?;
//!     {
//!         let mut fruit = wtx.open_tree("fruit")?;
//!         fruit.insert(b"apple", b"red")?;
//!         fruit.insert(b"banana", b"yellow")?;
//!     }
//!     wtx.commit()?;
//!
//!     let rtx = db.begin_read()?;
//!     let fruit = rtx.open_tree("fruit")?;
//!     assert_eq!(fruit.get(b"apple")?, Some(&b"red"[..]));
//!     let keys: Vec<&[u8]> = fruit.iter()?.map(|e| e.map(|(k, _)| k)).collect::<Result<_>>()?;
//!     assert_eq!(keys, [&b"apple"[..], b"banana"]);
//!     Ok(())
//! }
//! ```
//!
//! The file format is described in `FORMAT.md` in the repository.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod bulk;
mod check;
mod cursor;
mod db;
mod error;
mod freelist;
mod meta;
mod node;
mod page;
mod storage;
mod tree;
mod txn;

pub use bulk::{BulkOptions, BulkStats};
pub use check::CheckReport;
pub use cursor::Range;
pub use db::{Database, Options, Stats, TreeStats};
pub use error::{Error, Result};
pub use txn::{Durability, ReadTree, ReadTxn, WriteTree, WriteTxn};

/// Hooks for crash and fault-injection tests and fuzzers. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::storage::Backend;
    use crate::{Database, Options, Result};

    /// Opens a database whose file operations go through `backend` (no lock is taken,
    /// nothing is mapped unless the backend offers a file).
    pub fn open_with_backend(backend: Box<dyn Backend>, options: Options) -> Result<Database> {
        Database::open_backend(backend, options, None)
    }
}
