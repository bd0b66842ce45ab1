//! Compaction in place: ordinary copy-on-write commits that first pack the leaves of
//! every tree into full pages, then copy every page lying past the point where the pages
//! in use would end if they were packed, into the lowest free pages, until the end of the
//! file is free and can be cut off. Readers keep running: what their snapshots still
//! reach is freed, and cut, by a later commit once they end.
//! See FORMAT.md#compaction-in-place.

use std::sync::Arc;

use crate::db::Shared;
use crate::error::Result;
use crate::extent::{self, ValueReader};
use crate::node::{self, Cell, LeafValue, Node, OverflowRef, ValueAlign, encode_leaf_cell};
use crate::page::{ChildRef, PageId, PageKind};
use crate::stream;
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
    /// Leaves emptied by packing their neighbours' entries into full pages.
    pub leaves_merged: u64,
    /// Pages copied to a lower place (nodes, pages of large values).
    pub pages_moved: u64,
    /// Commits made.
    pub passes: u32,
    /// The file's length before, in bytes.
    pub file_size_before: u64,
    /// The file's length after, in bytes.
    pub file_size_after: u64,
}

/// Packs the leaves, then runs passes that move pages down until the end of the file
/// stops moving. See `Database::compact`.
pub(crate) fn compact(shared: &Arc<Shared>) -> Result<CompactStats> {
    let mut stats = CompactStats {
        file_size_before: shared.storage.file_len(),
        ..CompactStats::default()
    };
    pack_trees(shared, &mut stats, PASS_PAGES_MAX)?;
    let moving_passes = stats.passes + PASSES_MAX;
    while stats.passes < moving_passes {
        let mut txn = compaction_txn(shared)?;
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

/// A durable write transaction that folds the free list and places everything it
/// writes in the lowest free pages.
fn compaction_txn(shared: &Arc<Shared>) -> Result<WriteTxn> {
    let mut txn = WriteTxn::begin(shared)?;
    txn.set_durability(Durability::Immediate);
    txn.compacting = true;
    txn.pages.get_mut().alloc.prefer_lowest();
    Ok(txn)
}

/// Where a packing pass starts: a tree, and a key in the first bottom branch it packs.
struct PackFrom {
    tree: String,
    key: Vec<u8>,
}

/// Packs the leaves of every tree (`Packer`), in passes of at most `pass_pages` pages,
/// each one commit.
fn pack_trees(shared: &Arc<Shared>, stats: &mut CompactStats, pass_pages: u64) -> Result<()> {
    let mut from = PackFrom {
        tree: String::new(),
        key: Vec::new(),
    };
    loop {
        let mut txn = compaction_txn(shared)?;
        let mut packer = Packer {
            pass_pages,
            ..Packer::default()
        };
        let next = txn.pack_pass(&from, &mut packer)?;
        txn.commit()?;
        stats.passes += 1;
        stats.leaves_merged += packer.merged;
        match next {
            Some(next) => from = next,
            None => return Ok(()),
        }
    }
}

impl WriteTxn {
    /// Copies the pages past a point chosen so that the free pages below it can take
    /// them, and the copies of the branches above them (a tenth more, and the catalog's
    /// path and the free-list record): at most `PASS_PAGES_MAX` of them.
    fn move_pages_down(&mut self) -> Result<u64> {
        let pages = self.pages.get_mut();
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

    /// Packs the trees from `from` on (in name order) until the packer's budget is
    /// spent; returns where the next pass starts, or None once every tree is packed.
    fn pack_pass(&mut self, from: &PackFrom, packer: &mut Packer) -> Result<Option<PackFrom>> {
        for name in self.tree_names()? {
            if name < from.tree {
                continue;
            }
            let key = (name == from.tree).then_some(&from.key[..]);
            let mut tree = self.open_tree(&name)?;
            tree.change(|pages, record| packer.pack(pages, record, key))?;
            if let Some(key) = packer.stop.take() {
                return Ok(Some(PackFrom { tree: name, key }));
            }
        }
        Ok(None)
    }
}

/// One packing pass: cuts the cells under each bottom branch (a branch whose children
/// are leaves) into the fewest full leaves, and rebuilds the branch over them, while
/// the pass's pages last.
#[derive(Default)]
struct Packer {
    /// Pages the pass may copy or rebuild.
    pass_pages: u64,
    /// Pages copied or rebuilt so far.
    spent: u64,
    /// Leaves emptied so far.
    merged: u64,
    /// Set when the pages ran out: a key in the first bottom branch left for the next pass.
    stop: Option<Vec<u8>>,
}

impl Packer {
    /// Packs `tree`'s bottom branches from the one that holds `from` (else the first).
    fn pack(
        &mut self,
        pages: &mut TxnPages,
        tree: &mut TreeRecord,
        from: Option<&[u8]>,
    ) -> Result<()> {
        if tree.depth.get() < 2 {
            return Ok(());
        }
        let lower = from.unwrap_or(&[]);
        let depth = tree.depth.get();
        if let Some(root) = self.pack_below(pages, tree.root, depth, true, from, lower)? {
            tree.root = root;
            tree::collapse_root(pages, tree)?;
        }
        Ok(())
    }

    /// `pack` below branch `r` (the tree's root if `is_root`), whose keys start at `lower`
    /// (the key to resume at if the pages run out before its first bottom branch):
    /// Some(new reference) if it changed.
    fn pack_below(
        &mut self,
        pages: &mut TxnPages,
        r: ChildRef,
        levels: u32,
        is_root: bool,
        from: Option<&[u8]>,
        lower: &[u8],
    ) -> Result<Option<ChildRef>> {
        if levels == 2 {
            return self.pack_leaves_under(pages, r, is_root, lower);
        }
        let (children, keys, start) = {
            let node = tree::load(&*pages, &r, levels)?;
            let children = (0..=node.len())
                .map(|i| node.child(i))
                .collect::<Result<Vec<_>>>()?;
            let keys = (0..node.len())
                .map(|i| Ok(node.key(i)?.to_vec()))
                .collect::<Result<Vec<_>>>()?;
            let start = from.map_or(Ok(0), |k| node.child_index(k))?;
            (children, keys, start)
        };
        let mut changed = Vec::new();
        for (i, child) in children.into_iter().enumerate().skip(start) {
            let (child_from, child_lower) = match i == start {
                true => (from, lower),
                false => (None, &keys[i - 1][..]),
            };
            if let Some(copy) =
                self.pack_below(pages, child, levels - 1, false, child_from, child_lower)?
            {
                changed.push((i, copy));
            }
            if self.stop.is_some() {
                break;
            }
        }
        if changed.is_empty() {
            return Ok(None);
        }
        let id = pages.shadow(&r)?;
        self.spent += 1;
        for (i, copy) in changed {
            node::set_child(pages.dirty_mut(id), i, &copy)?;
        }
        Ok(Some(pages.dirty_ref(id)))
    }

    /// Cuts the cells of the leaves under bottom branch `r` into the fewest full leaves
    /// and rebuilds `r` over them, unless they are as few as can be already, or the
    /// pass's pages run out first (then `stop` is set to `lower`). Below the root a branch
    /// keeps at least two children (one key), so there it keeps two leaves at least.
    fn pack_leaves_under(
        &mut self,
        pages: &mut TxnPages,
        r: ChildRef,
        is_root: bool,
        lower: &[u8],
    ) -> Result<Option<ChildRef>> {
        let fewest = if is_root { 1 } else { 2 };
        let g = pages.geometry();
        let leaves = {
            let node = tree::load(&*pages, &r, 2)?;
            (0..=node.len())
                .map(|i| node.child(i))
                .collect::<Result<Vec<_>>>()?
        };
        // Worth it only if their bytes would take fewer pages.
        let room = g.page_size - node::slots_start(PageKind::Leaf);
        let mut bytes = 0;
        for leaf in &leaves {
            bytes += tree::load(&*pages, leaf, 1)?.used_bytes() - node::slots_start(PageKind::Leaf);
        }
        if bytes.div_ceil(room).max(fewest) >= leaves.len() {
            return Ok(None);
        }
        // The bytes count no cell's boundary: cut as the packing will, the cells may still
        // need as many leaves, and copying them would gain nothing (and grow the file of a
        // compacted database that is compacted again).
        let packed = {
            let nodes = (leaves.iter())
                .map(|l| tree::load(&*pages, l, 1))
                .collect::<Result<Vec<_>>>()?;
            let cells = node::all_cells(&nodes)?;
            node::pack_cuts(r.page(), g.page_size, &cells, fewest)?.len() + 1
        };
        if packed >= leaves.len() {
            return Ok(None);
        }
        let cost = leaves.len() as u64 + 1;
        if self.spent > 0 && self.spent + cost > self.pass_pages {
            self.stop = Some(lower.to_vec());
            return Ok(None);
        }
        self.spent += cost;
        // Copying each leaf first checks it (`TxnPages::shadow`); the copies are then
        // rewritten with the packed cells, and the ones left over are dropped.
        let ids = (leaves.iter())
            .map(|l| pages.shadow(l))
            .collect::<Result<Vec<_>>>()?;
        let (packed, separators) = {
            let nodes = (ids.iter())
                .map(|&id| Node::parse(pages.dirty(id), id))
                .collect::<Result<Vec<_>>>()?;
            let cells = node::all_cells(&nodes)?;
            let cuts = node::pack_cuts(r.page(), g.page_size, &cells, fewest)?;
            node::build_leaves(g.page_size, pages.txn, &cells, &cuts)
        };
        let children: Vec<ChildRef> = ids[..packed.len()]
            .iter()
            .map(|&id| pages.dirty_ref(id))
            .collect();
        let branch = node::build_branch(g.page_size, pages.txn, &children, &separators);
        let id = pages.shadow(&r)?;
        let Some(branch) = branch else {
            // The new separators do not fit one branch (long keys): keep the leaves as
            // they were, at their copies.
            for (i, &leaf) in ids.iter().enumerate() {
                let copy = pages.dirty_ref(leaf);
                node::set_child(pages.dirty_mut(id), i, &copy)?;
            }
            return Ok(Some(pages.dirty_ref(id)));
        };
        for (&leaf, page) in ids.iter().zip(packed) {
            pages.put(leaf, page);
        }
        for &leaf in &ids[children.len()..] {
            let copy = pages.dirty_ref(leaf);
            pages.free_page(&copy)?;
        }
        pages.put(id, branch);
        self.merged += (ids.len() - children.len()) as u64;
        Ok(Some(pages.dirty_ref(id)))
    }
}

/// Copies (shadows) every page of `tree` at or past `from`, and the branches above them,
/// while `budget` lasts; large values with pages at or past `from` are written again. Returns the pages
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
    let align = tree.value_align();
    if let Some(root) = relocate_below(
        pages,
        tree.root,
        tree.depth.get(),
        from,
        align,
        budget,
        &mut moved,
    )? {
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
    align: ValueAlign,
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
            let g = pages.geometry();
            for i in 0..node.len() {
                if let LeafValue::Overflow(o) = node.value(i)? {
                    // Every value with pages at or past `from`, also one that starts
                    // below it: `from` was chosen counting all of them. Only down: a
                    // value that no lower run holds waits for a later pass.
                    // (The run lookup scans the free runs: only for values past `from`.)
                    let blob_pages = o.pages(&g);
                    let past = o.blob.page().0.saturating_add(blob_pages) > from.0;
                    if past
                        && (pages.alloc.lowest_run_holding(blob_pages))
                            .is_some_and(|at| at < o.blob.page())
                    {
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
        if let Some(copy) = relocate_below(pages, c, levels - 1, from, align, budget, moved)? {
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
        move_value(pages, id, i, &o, align, budget, moved)?;
    }
    Ok(Some(pages.dirty_ref(id)))
}

/// Writes the large value of slot `i` of dirty leaf `id` again into the lowest free run
/// that holds it, if that run lies lower (else it stays), and points the leaf at the
/// copy. The value is copied in pieces, as `insert_from` writes one: it may be larger
/// than memory.
fn move_value(
    pages: &mut TxnPages,
    id: PageId,
    i: usize,
    o: &OverflowRef,
    align: ValueAlign,
    budget: &mut u64,
    moved: &mut u64,
) -> Result<()> {
    let pad = node::blob_pad(align);
    let Some(run) = pages.take_blob_run_below(o.value_len(), pad, o.blob.page())? else {
        return Ok(());
    };
    let page_size = pages.geometry().page_size;
    let copied = extent::locate_blob(&pages.reader, o).and_then(|at| {
        let mut value = ValueReader::new(&pages.reader, at);
        stream::write_blob_from(&run, page_size, &mut value)
    });
    let checksum = match copied {
        Ok(checksum) => checksum,
        Err(e) => {
            pages.give_back_run(&run)?;
            return Err(e);
        }
    };
    let copy = pages.adopt_blob(&run, checksum);
    // Verifies the old blob's checksum (in pieces too): a corrupt one fails the change,
    // so its bytes never reach the file under the copy's fresh checksum.
    pages.free_blob(o)?;
    let key = Node::parse(pages.dirty(id), id)?.key(i)?.to_vec();
    let mut cell = Vec::new();
    encode_leaf_cell(&mut cell, &key, &LeafValue::Overflow(copy), align);
    let leaf = pages.dirty_mut(id);
    node::remove_cell(leaf, id, i)?;
    let cell = Cell {
        key: &key,
        bytes: &cell,
    };
    let fits = node::insert_cell(leaf, id, crate::page::PageKind::Leaf, i, cell)?;
    assert!(fits, "a cell of the same size fits where it was");
    let blob_pages = o.pages(&pages.geometry());
    *moved += blob_pages;
    *budget = budget.saturating_sub(blob_pages);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Database;

    fn key(i: u64) -> [u8; 8] {
        i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()
    }

    /// Passes of a few pages each resume where the last stopped, across trees, and
    /// leave every tree packed, checked and whole.
    #[test]
    fn packing_in_small_passes_resumes_across_trees() -> Result<()> {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::open(dir.path().join("db"))?;
        let w = db.begin_write()?;
        for name in ["a", "b", "c"] {
            let mut t = w.open_tree(name)?;
            for i in 0..20_000u64 {
                t.insert(&key(i), &[i as u8; 40])?;
            }
        }
        w.commit()?;
        let w = db.begin_write()?;
        for name in ["a", "c"] {
            let mut t = w.open_tree(name)?;
            for i in (0..20_000u64).filter(|i| i % 4 != 0) {
                t.remove(&key(i))?;
            }
        }
        w.commit()?;
        let in_use = |db: &Database| db.stats().map(|s| s.pages_in_use);
        let before = in_use(&db)?;
        let mut stats = CompactStats::default();
        pack_trees(&db.shared, &mut stats, 40)?;
        assert!(stats.passes > 5, "{stats:?}");
        assert!(stats.leaves_merged > 0, "{stats:?}");
        let after = in_use(&db)?;
        assert!(
            after + stats.leaves_merged / 2 < before,
            "{before} -> {after}, {stats:?}"
        );
        db.check()?;
        // A second round finds nothing left to pack.
        let mut again = CompactStats::default();
        pack_trees(&db.shared, &mut again, 40)?;
        assert_eq!(again.leaves_merged, 0, "{again:?}");
        let r = db.begin_read()?;
        for name in ["a", "b", "c"] {
            let t = r.open_tree(name)?;
            let kept = |i: &u64| name == "b" || i.is_multiple_of(4);
            assert_eq!(t.len()?, (0..20_000u64).filter(kept).count() as u64);
            for i in (0..20_000u64).filter(kept) {
                assert_eq!(t.get(&key(i))?, Some(&[i as u8; 40][..]), "{name} {i}");
            }
        }
        Ok(())
    }

    /// Trees of every shape, most of their keys removed at random, then compacted: the
    /// packed trees pass `check` (no branch below the root is left with a single child)
    /// and hold what they held.
    #[test]
    fn packed_trees_of_random_shapes_pass_check() -> Result<()> {
        for seed in 0..24u64 {
            let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            let dir = tempfile::tempdir().unwrap();
            let db = Database::open(dir.path().join("db"))?;
            let n = 200 + next() % 60_000;
            let value_len = (next() % 300) as usize;
            // Half the seeds: 900-byte keys that share all but their last 8 bytes, so
            // separators are long, a branch holds a few keys, and a bottom branch over
            // two or three leaves is not underfull.
            let long = seed % 2 == 1;
            let key = |i: u64| match long {
                true => [&[b'a'; 892][..], &key(i)].concat(),
                false => key(i).to_vec(),
            };
            let n = if long { n % 3000 } else { n };
            let w = db.begin_write()?;
            {
                let mut t = w.open_tree("t")?;
                for i in 0..n {
                    t.insert(&key(i), &vec![i as u8; value_len])?;
                }
            }
            w.commit()?;
            let keep = 1 + next() % 60; // percent of the keys kept
            let mut model = std::collections::BTreeMap::new();
            let w = db.begin_write()?;
            {
                let mut t = w.open_tree("t")?;
                for i in 0..n {
                    match next() % 100 < keep {
                        true => drop(model.insert(key(i), vec![i as u8; value_len])),
                        false => drop(t.remove(&key(i))?),
                    }
                }
            }
            w.commit()?;
            let mut stats = CompactStats::default();
            pack_trees(&db.shared, &mut stats, 1 + next() % 200)?;
            db.check().inspect_err(|_| {
                eprintln!("seed {seed}: n {n}, values {value_len}, keep {keep} %");
            })?;
            let r = db.begin_read()?;
            let t = r.open_tree("t")?;
            let got: Vec<(Vec<u8>, Vec<u8>)> = t
                .iter()?
                .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
                .collect::<Result<_>>()?;
            let want: Vec<(Vec<u8>, Vec<u8>)> = model.into_iter().collect();
            assert_eq!(got, want, "seed {seed}");
        }
        Ok(())
    }
}
