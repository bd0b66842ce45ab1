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
//!   holds one must not begin another ([`Database::try_begin_write`] does not wait).
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

/// Hooks for crash and fault-injection tests and fuzzers. Not part of the stable API.
#[doc(hidden)]
pub mod testing {
    pub use crate::backend::Backend;
    use crate::{Database, Options, Result};

    /// Opens a database whose file operations go through `backend` (no lock is taken,
    /// nothing is mapped unless the backend offers a file).
    pub fn open_with_backend(backend: Box<dyn Backend>, options: Options) -> Result<Database> {
        Database::open_backend(backend, options, None)
    }

    /// Parses `bytes` as a branch or leaf page and reads every slot, key, value (inline
    /// bytes or overflow reference) and child reference, and checks the slot prefixes;
    /// then as the first page of a blob. For fuzzers: any bytes give `Ok` or
    /// `Error::Corrupted`, never a panic. Returns the node's slot count.
    pub fn decode_page(bytes: &[u8]) -> Result<usize> {
        use crate::node::{LeafValue, Node, blob_payload};
        use crate::page::PageId;
        let id = PageId(2);
        let _ = blob_payload(bytes, id);
        let node = Node::parse(bytes, id)?;
        let _ = (node.kind(), node.txn(), node.used_bytes());
        for i in 0..node.len() {
            let key = node.key(i)?;
            if node.is_leaf() {
                if let LeafValue::Overflow(o) = node.value(i)? {
                    let _ = (o.blob.page(), o.value_len());
                }
            }
            // A search for a key that is present must find it unless the page is corrupt
            // in a way only `check` reports (wrong prefixes, keys out of order).
            let _ = node.search(key)?;
        }
        if !node.is_leaf() {
            for i in 0..=node.len() {
                let _ = node.child(i)?.page();
            }
            let _ = node.child_index(b"fuzz")?;
        }
        node.verify_prefixes()?;
        Ok(node.len())
    }

    /// Decodes a meta slot; a meta that decodes must encode again to the same bytes
    /// (`Meta::encode` panics on a meta that `decode` would reject: the paired check).
    pub fn decode_meta(bytes: &[u8]) -> Result<u64> {
        let meta = crate::meta::Meta::decode(bytes, 0)?;
        let encoded = meta.encode();
        assert_eq!(
            &encoded[..],
            &bytes[..encoded.len()],
            "meta re-encodes differently"
        );
        Ok(meta.txn().0)
    }

    /// Decodes a free-list payload whose runs must lie in `first..end`; what decodes
    /// must encode back to the same bytes (up to the zero padding). Returns the page count.
    pub fn decode_free_list(bytes: &[u8], first: u64, end: u64) -> Result<u64> {
        use crate::freelist::PageRuns;
        use crate::page::PageId;
        let runs = PageRuns::decode(bytes, PageId(first), PageId(end), PageId(2))?;
        let mut encoded = Vec::new();
        runs.encode(&mut encoded);
        assert_eq!(
            &encoded[..],
            &bytes[..encoded.len()],
            "free list re-encodes differently"
        );
        Ok(runs.page_count())
    }

    /// Decodes a free-list record (format 2) and applies it to the empty set (4 KiB
    /// pages), as the full record at the bottom of a chain is; returns the free pages.
    pub fn decode_free_record(bytes: &[u8]) -> Result<u64> {
        crate::free_chain::apply_full(bytes)
    }

    /// Committed pages `txn` has copied (shadowed) so far: what its changes cost in page
    /// copies, including copies that were freed again and never reach the file.
    pub fn pages_copied(txn: &crate::WriteTxn) -> u64 {
        txn.pages_copied()
    }

    /// Decodes a tree record (36 bytes; anything else is an error).
    pub fn decode_tree_record(bytes: &[u8]) -> Result<u64> {
        let r = crate::tree::TreeRecord::decode(bytes, crate::page::PageId(2))?;
        Ok(r.entries.get())
    }
}
