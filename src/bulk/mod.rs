//! Bulk loading: a tree built bottom-up from sorted entries ([`builder`]), its pages
//! written sequentially past the committed end of the file in large aligned chunks by a
//! writer thread ([`writer`]), with `O_DIRECT` where the file system allows ([`direct`]),
//! then one commit. See FORMAT.md#bulk-load.

mod builder;
pub(crate) mod direct;
mod writer;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(crate) use builder::TreeBuilder;
pub(crate) use writer::SeqWriter;

use crate::db::{Shared, seal_file};
use crate::error::{Error, Result};
use crate::page::TxnId;
use crate::tree::{self, TreeRecord};
use crate::txn::{Durability, Snapshot};
use crate::write_txn::WriteTxn;

/// How [`Database::bulk_load_with`](crate::Database::bulk_load_with) builds and writes
/// the tree. `BulkOptions::new()` gives the defaults, which `bulk_load` uses.
#[derive(Clone, Debug)]
pub struct BulkOptions {
    fill_percent: u8,
    direct_io: bool,
}

impl Default for BulkOptions {
    fn default() -> BulkOptions {
        BulkOptions {
            fill_percent: 100,
            direct_io: true,
        }
    }
}

impl BulkOptions {
    /// The defaults: leaves filled completely, `O_DIRECT` where the file system allows.
    pub fn new() -> BulkOptions {
        BulkOptions::default()
    }

    /// How full to make each leaf, in percent of the page: 50 to 100 (default 100).
    /// Lower values leave room for later inserts between the loaded keys, so they do
    /// not split leaves at once; branch pages are always filled. Other values give
    /// `Error::InvalidOptions` when the load starts.
    pub fn fill_percent(mut self, percent: u8) -> BulkOptions {
        self.fill_percent = percent;
        self
    }

    /// Whether to try `O_DIRECT` writes (default true). With false, or where the file
    /// system refuses direct I/O, pages are written through the page cache and made
    /// durable by the commit's fdatasync; [`BulkStats::direct_io`] says which ran.
    pub fn direct_io(mut self, yes: bool) -> BulkOptions {
        self.direct_io = yes;
        self
    }

    fn validate(&self) -> Result<()> {
        if !(50..=100).contains(&self.fill_percent) {
            return Err(Error::InvalidOptions(format!(
                "bulk load fill factor {} % is not between 50 and 100",
                self.fill_percent
            )));
        }
        Ok(())
    }
}

/// What `Database::bulk_load` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BulkStats {
    /// Entries loaded.
    pub entries: u64,
    /// Pages written (leaves, branches, overflow pages).
    pub pages: u64,
    /// Bytes of those pages written to the file (the commit's few pages not included).
    pub bytes_written: u64,
    /// Whether the pages were written with O_DIRECT (false: buffered writes + fdatasync).
    pub direct_io: bool,
    /// Why O_DIRECT was not used, when it was not (not requested, a backend without a
    /// file, or the file system's refusal).
    pub direct_io_refused: Option<String>,
    /// Wall time of the whole load, commit included.
    pub elapsed: Duration,
}

/// Entries read ahead in one batch (see `load`).
const LOOKAHEAD: usize = 16;

/// Bytes at the head of a key or value touched when it is read ahead: the builder then
/// copies the rest sequentially, which the hardware prefetcher follows.
const TOUCH_BYTES: usize = 256;

/// Loads one byte of each cache line at the head of `bytes` (an xor of them, so the
/// loads cannot be optimised away). Bytes 64 apart, and the last one: a slice that does
/// not start at a line boundary ends in one more line than its length suggests.
#[inline]
fn touch(bytes: &[u8]) -> u8 {
    let end = bytes.len().min(TOUCH_BYTES);
    let Some(&last) = bytes[..end].last() else {
        return 0;
    };
    let (mut acc, mut at) = (last, 0);
    while at < end {
        acc ^= bytes[at];
        at += 64;
    }
    acc
}

/// `Database::bulk_load_with` on the write transaction `txn`: builds the tree from
/// `entries`, writes it past the committed end (`path`: the database file, for the
/// direct descriptor), and commits once, durably; then seals the commit (`seal_load`).
/// Any error before the commit drops `txn`, which leaves the database as it was: the
/// pages written belong to nothing.
pub(crate) fn load<I, K, V>(
    mut txn: WriteTxn,
    shared: &Shared,
    path: &Path,
    tree_name: &str,
    entries: I,
    options: &BulkOptions,
) -> Result<BulkStats>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<[u8]>,
    V: AsRef<[u8]>,
{
    let started = Instant::now();
    options.validate()?;
    let existing = txn.tree_record(tree_name)?.unwrap_or(TreeRecord::EMPTY);
    if existing.entries.get() > 0 {
        return Err(Error::TreeNotEmpty(tree_name.to_string()));
    }
    // An emptied tree may still own a root leaf: free it, or it would leak.
    tree::free_all(txn.pages_mut(), &existing)?;
    let storage = &shared.storage;
    let geometry = storage.geometry;
    let (start, txn_id) = {
        let pages = txn.pages_mut();
        (pages.end(), pages.txn)
    };
    let direct_path = options.direct_io.then_some(path);
    let mut out = SeqWriter::start(Arc::clone(storage), start, direct_path)?;
    let mut builder = TreeBuilder::new(geometry, txn_id)
        .leaf_fill_percent(options.fill_percent)
        .for_tree(&existing);
    // Entries are taken from the input LOOKAHEAD at a time and their first bytes loaded
    // together, before any is added: each entry is a few hundred instructions of work,
    // more than the CPU can look ahead by itself, so entries that are scattered in
    // memory (borrowed from a large array in key order, say) would otherwise cost one
    // full cache miss after another; loaded together, the misses overlap (without this,
    // a load from such an array takes 1.6 times as long).
    let mut input = entries.into_iter();
    let mut ahead: Vec<(K, V)> = Vec::with_capacity(LOOKAHEAD);
    loop {
        ahead.extend(input.by_ref().take(LOOKAHEAD));
        if ahead.is_empty() {
            break;
        }
        let touched = ahead.iter().fold(0, |acc, (key, value)| {
            acc ^ touch(key.as_ref()) ^ touch(value.as_ref())
        });
        std::hint::black_box(touched);
        for (key, value) in ahead.drain(..) {
            // The builder checks the order (`Unsorted`) and the sizes.
            builder.add(&mut out, key.as_ref(), value.as_ref())?;
        }
    }
    let entries = builder.entries();
    let record = builder.finish(&mut out)?;
    let end = out.next();
    let report = out.finish()?;
    // The pages up to `end` now belong to this transaction; the commit writes the
    // catalog, the free list and the meta after them (or in free pages), then syncs once.
    txn.pages_mut().set_end(end);
    txn.set_tree_record(tree_name, record)?;
    txn.set_durability(Durability::Immediate);
    txn.commit()?;
    seal_load(shared, txn_id);
    Ok(BulkStats {
        entries,
        pages: end.0 - start.0,
        bytes_written: report.bytes_written,
        direct_io: report.direct_io,
        direct_io_refused: report.refused,
        elapsed: started.elapsed(),
    })
}

/// After the load's commit `txn` (its meta in slot `s`, synced): writes the same meta,
/// marked as needing no verification, into the other slot, syncs, and makes that the
/// writer's durable slot; so a crash right after a load opens without reading the loaded
/// tree back, which verification at open would otherwise do in full. FORMAT.md#bulk-load
/// says why a crash at any point of this is safe.
///
/// Nothing is done if another commit came in between. A failed write or sync here
/// poisons the handle like any other (the next write reports it), but the load stands:
/// its commit was durable before this began, and slot `s` still holds it.
fn seal_load(shared: &Shared, txn: TxnId) {
    let mut writer = shared.writer.lock();
    let meta = shared.current.read().meta;
    if meta.txn() != txn || writer.durable != txn {
        return;
    }
    let slot = 1 - writer.durable_slot;
    if seal_file(&shared.storage, &meta, slot).is_ok() {
        writer.durable_slot = slot;
        let sealed = crate::meta::Meta {
            durable_before: meta.txn,
            ..meta
        };
        // The snapshot differs from the one published only in `durable_before`, which
        // tells the clean close that nothing is left to seal.
        *shared.current.write() = Arc::new(Snapshot { meta: sealed });
    }
}
