//! Compaction in place: ordinary copy-on-write commits that copy every page lying past
//! the point where the pages in use would end if they were packed, into the lowest free
//! pages, until the end of the file is free and can be cut off. Readers keep running:
//! what their snapshots still reach is freed, and cut, by a later commit once they end.
//! See FORMAT.md#compaction-in-place.

use std::sync::Arc;

use crate::db::Shared;
use crate::error::Result;
use crate::node::{self, Cell, LeafValue, Node, OverflowRef, encode_leaf_cell};
use crate::page::{ChildRef, PageId};
use crate::tree::{self, Pages, TreeRecord};
use crate::txn::Durability;
use crate::txn_pages::TxnPages;
use crate::write_txn::WriteTxn;

/// Pages one pass copies at most, so that its copies (held in memory until the commit)
/// stay within 64 MiB at the default page size.
const PASS_PAGES_MAX: u64 = 16 * 1024;

/// Pages a pass keeps free for the catalog's path and the free-list record.
const PASS_OVERHEAD_PAGES: u64 = 32;

/// Passes at most: each pass moves what it can; a pass that neither moves a page nor
/// shortens the file ends the compaction early.
const PASSES_MAX: u32 = 64;

/// What `Database::compact` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactStats {
    /// Pages copied to a lower place (nodes, pages of large values).
    pub pages_moved: u64,
    /// Commits made.
    pub passes: u32,
    /// The file's length before, in bytes.
    pub file_size_before: u64,
    /// The file's length after, in bytes.
    pub file_size_after: u64,
}

/// Runs passes until the end of the file stops moving. See `Database::compact`.
pub(crate) fn compact(shared: &Arc<Shared>) -> Result<CompactStats> {
    let mut stats = CompactStats {
        file_size_before: shared.storage.file_len(),
        ..CompactStats::default()
    };
    while stats.passes < PASSES_MAX {
        let mut txn = WriteTxn::begin(shared)?;
        txn.set_durability(Durability::Immediate);
        txn.compacting = true;
        let end_before = txn.pages.get_mut().end();
        let moved = txn.move_pages_down()?;
        txn.commit()?;
        stats.passes += 1;
        stats.pages_moved += moved;
        let end_after = shared.current.read().meta.page_count();
        if moved == 0 && end_after >= end_before {
            break;
        }
    }
    stats.file_size_after = shared.storage.file_len();
    Ok(stats)
}

impl WriteTxn {
    /// Copies the pages past a point chosen so that the free pages below it can take
    /// them, and the copies of the branches above them (a tenth more, and the catalog's
    /// path and the free-list record): at most `PASS_PAGES_MAX` of them.
    fn move_pages_down(&mut self) -> Result<u64> {
        let pages = self.pages.get_mut();
        pages.alloc.prefer_lowest();
        let end = pages.end().0;
        let first = pages.geometry().first_data_page().0;
        let free = pages.alloc.free();
        // The lowest point whose free pages below cover the pages in use above it.
        let covered = |at: u64| {
            let below = free.pages_below(PageId(at));
            let in_use_above = (end - at) - (free.page_count() - below);
            below >= in_use_above + in_use_above / 10 + PASS_OVERHEAD_PAGES
        };
        let (mut lo, mut hi) = (first, end);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            match covered(mid) {
                true => hi = mid,
                false => lo = mid + 1,
            }
        }
        let from = PageId(lo);
        let room = free.pages_below(from).saturating_sub(PASS_OVERHEAD_PAGES);
        let mut budget = (room - room / 11).min(PASS_PAGES_MAX);

        let mut moved = 0;
        for name in self.tree_names()? {
            let mut tree = self.open_tree(&name)?;
            moved += tree.change(|pages, record| relocate(pages, record, from, &mut budget))?;
        }
        let mut catalog = self.catalog;
        moved += self
            .pages
            .get_mut()
            .change(|pages| relocate(pages, &mut catalog, from, &mut budget))?;
        self.catalog = catalog;
        Ok(moved)
    }
}

/// Copies (shadows) every page of `tree` at or past `from`, and the branches above them,
/// while `budget` lasts; large values past `from` are written again. Returns the pages
/// moved.
fn relocate(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    from: PageId,
    budget: &mut u64,
) -> Result<u64> {
    if tree.root.is_null() {
        return Ok(0);
    }
    let mut moved = 0;
    if let Some(root) =
        relocate_below(pages, tree.root, tree.depth.get(), from, budget, &mut moved)?
    {
        tree.root = root;
    }
    Ok(moved)
}

/// `relocate` below `r`: Some(new reference) if the node was copied.
fn relocate_below(
    pages: &mut TxnPages,
    r: ChildRef,
    levels: u32,
    from: PageId,
    budget: &mut u64,
    moved: &mut u64,
) -> Result<Option<ChildRef>> {
    if *budget == 0 || (r.txn() == pages.txn && pages.is_dirty(r.page())) {
        return Ok(None);
    }
    let (children, blobs) = {
        let node = tree::load(&*pages, &r, levels)?;
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        if node.is_leaf() {
            for i in 0..node.len() {
                if let LeafValue::Overflow(o) = node.value(i)? {
                    if o.blob.page() >= from {
                        blobs.push((i, o));
                    }
                }
            }
        } else {
            for i in 0..=node.len() {
                children.push(node.child(i)?);
            }
        }
        (children, blobs)
    };
    let mut changed = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        if let Some(copy) = relocate_below(pages, c, levels - 1, from, budget, moved)? {
            changed.push((i, copy));
        }
    }
    let here = r.page() >= from;
    if !here && changed.is_empty() && blobs.is_empty() {
        return Ok(None);
    }
    let id = pages.shadow(&r)?;
    if here {
        *moved += 1;
        *budget = budget.saturating_sub(1);
    }
    for (i, copy) in changed {
        node::set_child(pages.dirty_mut(id), i, &copy)?;
    }
    for (i, o) in blobs {
        move_value(pages, id, i, &o, budget, moved)?;
    }
    Ok(Some(pages.dirty_ref(id)))
}

/// Writes the large value of slot `i` of dirty leaf `id` again (into the lowest free
/// run that holds it) and points the leaf at the copy.
fn move_value(
    pages: &mut TxnPages,
    id: PageId,
    i: usize,
    o: &OverflowRef,
    budget: &mut u64,
    moved: &mut u64,
) -> Result<()> {
    let value = tree::overflow_value(&*pages, o)?.to_vec();
    let copy = pages.write_blob(&value)?;
    pages.free_blob(o)?;
    let key = Node::parse(pages.dirty(id), id)?.key(i)?.to_vec();
    let mut cell = Vec::new();
    encode_leaf_cell(&mut cell, &key, &LeafValue::Overflow(copy));
    let leaf = pages.dirty_mut(id);
    node::remove_cell(leaf, id, i)?;
    let cell = Cell {
        key: &key,
        bytes: &cell,
    };
    let fits = node::insert_cell(leaf, id, crate::page::PageKind::Leaf, i, cell)?;
    assert!(fits, "a cell of the same size fits where it was");
    let blob_pages = pages.geometry().blob_pages(o.len.get());
    *moved += blob_pages;
    *budget = budget.saturating_sub(blob_pages);
    Ok(())
}
