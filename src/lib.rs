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
//! - **Serving straight from the file**: every value has a byte range in the file that
//!   stays put while the read transaction lives ([`ReadTree::get_extent`]), so it can go
//!   to a socket with `sendfile(2)` ([`ReadTree::send_value`]) or be streamed
//!   ([`ReadTree::value_reader`]) without being copied into memory. Going in, a value
//!   can be written in place ([`WriteTree::insert_reserve`]) or streamed from a reader
//!   ([`WriteTree::insert_from`]).
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
//!     let wtx = db.begin_write()?;
//!     let mut fruit = wtx.open_tree("fruit")?;
//!     fruit.insert(b"apple", b"red")?;
//!     fruit.insert(b"banana", b"yellow")?;
//!     wtx.commit()?;
//!
//!     let rtx = db.begin_read()?;
//!     let fruit = rtx.open_tree("fruit")?;
//!     assert_eq!(fruit.get(b"apple")?, Some(&b"red"[..]));
//!     let keys: Vec<&[u8]> = fruit.iter()?.keys().collect::<Result<_>>()?;
//!     assert_eq!(keys, [&b"apple"[..], b"banana"]);
//!     Ok(())
//! }
//! ```
//!
//! # Thread rules
//!
//! - [`Database`] is `Send + Sync`: share it between threads (`Arc` or `&`).
//! - [`ReadTxn`] and [`ReadTree`] are `Send + Sync`: one snapshot can be read by many
//!   threads at once (`std::thread::scope`); [`Range`] is `Send`.
//! - [`WriteTxn`] is `Send + Sync`: it may move to another thread and commit or drop
//!   there, and its [`WriteTree`]s are `Send + Sync`: scoped threads may read and change
//!   its trees; changes take turns. One write transaction at a time: a thread that
//!   holds one must not begin another ([`Database::try_begin_write`] does not wait;
//!   [`Database::try_begin_write_for`] waits a bounded time).
//!
//! The file format is described in `FORMAT.md` in the repository.

#![deny(missing_docs)]
#![deny(unsafe_code)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod alloc;
mod atomic_file;
mod backend;
mod bulk;
mod cache;
mod check;
mod commit;
mod compact;
mod cursor;
mod db;
mod dirty_page;
mod error;
mod extent;
mod fences;
mod fork;
mod free_chain;
mod freelist;
mod held_runs;
mod meta;
mod node;
mod page;
mod page_buf;
mod path_error;
mod prune;
mod registry;
mod reserve;
mod sealed_nodes;
mod storage;
mod stream;
mod tree;
mod tree_options;
mod txn;
mod txn_pages;
mod typed;
mod write_tree;
mod write_txn;

pub use bulk::{BulkOptions, BulkStats};
pub use check::CheckReport;
pub use compact::CompactStats;
pub use cursor::{KeyRange, Keys, Range, Values};
pub use db::{Database, Options, PAGE_SIZE_DEFAULT, Stats, TreeStats};
pub use error::{Error, Result};
pub use extent::ValueExtent;
pub use page::{VALUE_LEN_MAX, key_len_max};
pub use tree_options::TreeOptions;
pub use txn::{Durability, ReadTree, ReadTxn};
#[cfg(feature = "bytemuck")]
pub use typed::Bytemuck;
pub use typed::{
    Key, KeyBounds, KeyRef, ReadTable, Table, TableRange, ValueCodec, WriteTable, Zerocopy,
};
pub use write_tree::WriteTree;
pub use write_txn::WriteTxn;

#[doc(hidden)]
pub mod testing;
