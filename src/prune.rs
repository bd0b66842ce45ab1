//! Removing many entries at once: every entry in a key range (`remove_range`), or every
//! entry a predicate rejects (`retain`), with fewer page copies than one `remove` per
//! entry. The fill rules kept are `remove`'s (FORMAT.md#node-pages, "Fill").

use std::ops::{Bound, Range};

use zerocopy::little_endian::U64;

use crate::error::{Error, Result};
use crate::fences::Fences;
use crate::node::{self, LeafValue, Node, OverflowRef};
use crate::page::{ChildRef, PageId};
use crate::tree::{self, DEPTH_MAX, Grow, TreeRecord, load, resolve};
use crate::txn_pages::TxnPages;

/// Removes every entry whose key lies between `lower` and `upper`; returns how many.
///
/// One descent visits the two boundary paths (to the leaf of each bound) together: the
/// boundary leaves are shadowed once each and lose all their keys in the range at once,
/// and every child of a branch that lies wholly inside the range is freed with its
/// subtree, never shadowed. Then `settle` rebalances the nodes left underfull, which
/// all lie on the two boundary paths and are all dirty by then: it walks pages in memory
/// and reads (and copies) only the siblings it rebalances them with. An empty tree or a
/// range with no keys in the tree changes nothing.
pub(crate) fn remove_range(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    lower: Bound<&[u8]>,
    upper: Bound<&[u8]>,
) -> Result<u64> {
    let range = KeyRange { lower, upper };
    if tree.root.is_null() || range.is_empty() {
        return Ok(0);
    }
    let mut walk = Prune {
        range,
        removed: 0,
        loads_left: pages.pages_readable(),
    };
    let root = walk.prune(pages, tree.root, tree.depth.get(), &Fences::root())?;
    let root_page = tree.root.page.get();
    let entries = entries_left(tree, walk.removed)?;
    match root {
        Pruned::Same => return Ok(0),
        Pruned::Gone if entries != 0 => {
            return Err(Error::corrupted(
                root_page,
                "tree record counts more entries than its leaves hold",
            ));
        }
        Pruned::Gone => *tree = tree.emptied(),
        Pruned::Changed(root) => {
            tree.root = root;
            tree.entries = U64::new(entries);
            settle(pages, tree, range.lower_end(), range.upper_end())?;
        }
    }
    Ok(walk.removed)
}

/// Removes every entry for which `keep(key, value)` is false (large values are read from
/// their blobs first); returns how many.
///
/// Leaves are visited in key order, one descent from the root each: the descent decides
/// every entry of its leaf first, then shadows the leaf only if some entry goes, removes
/// all of those at once and rebalances on the way back up. A leaf that keeps every entry
/// is read, never copied. `keep` sees each entry once, even where a rebalance moved
/// entries already decided into the leaf that is visited next.
pub(crate) fn retain(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    keep: &mut dyn FnMut(&[u8], &[u8]) -> bool,
) -> Result<u64> {
    let mut walk = Retain {
        keep,
        removed: 0,
        decided: None,
        fence: None,
    };
    // The key of the next leaf to visit: the upper fence of the one before.
    let mut from: Option<Vec<u8>> = None;
    while !tree.root.is_null() {
        let (root, depth) = (tree.root, tree.depth.get());
        let grow = walk.visit(pages, root, depth, from.as_deref(), Fences::root())?;
        if let Some(grow) = grow {
            tree::set_root(pages, tree, grow)?;
            tree::collapse_root(pages, tree)?;
        }
        let Some(fence) = walk.fence.take() else {
            break;
        };
        // Fences strictly ascend in a sound tree; this bounds the walk in any file.
        if from.as_ref().is_some_and(|f| fence <= *f) {
            return Err(Error::corrupted(
                tree.root.page.get(),
                "branch keys out of order",
            ));
        }
        from = Some(fence);
    }
    let entries = entries_left(tree, walk.removed)?;
    tree.entries = U64::new(entries);
    Ok(walk.removed)
}

/// The keys between two bounds.
#[derive(Clone, Copy)]
struct KeyRange<'k> {
    lower: Bound<&'k [u8]>,
    upper: Bound<&'k [u8]>,
}

impl KeyRange<'_> {
    /// Whether the bounds leave no key between them (inverted, or equal and not both
    /// included).
    fn is_empty(&self) -> bool {
        match (self.lower, self.upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
                l >= u
            }
            _ => false,
        }
    }

    /// The slots of leaf `node` whose keys lie in the range.
    fn slots(&self, node: &Node) -> Result<Range<usize>> {
        let start = match self.lower {
            Bound::Unbounded => 0,
            Bound::Included(l) => node.search(l)?.unwrap_or_else(|i| i),
            Bound::Excluded(l) => node.search(l)?.map_or_else(|i| i, |i| i + 1),
        };
        let end = match self.upper {
            Bound::Unbounded => node.len(),
            Bound::Included(u) => node.search(u)?.map_or_else(|i| i, |i| i + 1),
            Bound::Excluded(u) => node.search(u)?.unwrap_or_else(|i| i),
        };
        Ok(start..end.max(start))
    }

    /// The children of branch `node` that can hold keys in the range: from the one that
    /// covers the lower bound to the one that covers the upper bound.
    fn children(&self, node: &Node) -> Result<Range<usize>> {
        let first = match self.lower {
            Bound::Unbounded => 0,
            Bound::Included(l) | Bound::Excluded(l) => node.child_index(l)?,
        };
        let last = match self.upper {
            Bound::Unbounded => node.len(),
            Bound::Included(u) | Bound::Excluded(u) => node.child_index(u)?,
        };
        Ok(first..last.max(first) + 1)
    }

    /// Whether every key a node with fences `f` may hold lies in the range. A side
    /// without a fence (the root's, or its first or last child's) is inside only if the
    /// range is unbounded on that side.
    fn holds_all(&self, f: &Fences) -> bool {
        let above_lower = match (self.lower, f.lower()) {
            (Bound::Unbounded, _) => true,
            (_, None) => false,
            (Bound::Included(l), Some(fence)) => fence >= l,
            (Bound::Excluded(l), Some(fence)) => fence > l,
        };
        let below_upper = match (self.upper, f.upper()) {
            (Bound::Unbounded, _) => true,
            (_, None) => false,
            (Bound::Included(u) | Bound::Excluded(u), Some(fence)) => fence <= u,
        };
        above_lower && below_upper
    }

    fn lower_end(&self) -> Towards<'_> {
        match self.lower {
            Bound::Unbounded => Towards::First,
            Bound::Included(k) | Bound::Excluded(k) => Towards::Key(k),
        }
    }

    fn upper_end(&self) -> Towards<'_> {
        match self.upper {
            Bound::Unbounded => Towards::Last,
            Bound::Included(k) | Bound::Excluded(k) => Towards::Key(k),
        }
    }
}

/// What became of a node in `Prune`.
enum Pruned {
    /// Nothing was removed below it.
    Same,
    /// It lost entries or children and is dirty now (possibly underfull).
    Changed(ChildRef),
    /// It lost every entry; its page is freed.
    Gone,
}

/// The walk of `remove_range`.
struct Prune<'k> {
    range: KeyRange<'k>,
    removed: u64,
    /// Nodes it may still load: a sound tree's walk loads each node once, while a
    /// corrupt file whose references share pages would otherwise send it down the same
    /// subtree from both boundary paths, again and again (exponential in the depth).
    loads_left: u64,
}

impl Prune<'_> {
    /// Removes the entries in the range below `r` (`levels` above the leaves), whose
    /// keys must lie within `fences`.
    fn prune(
        &mut self,
        pages: &mut TxnPages,
        r: ChildRef,
        levels: u32,
        fences: &Fences,
    ) -> Result<Pruned> {
        self.loads_left = self
            .loads_left
            .checked_sub(1)
            .ok_or_else(|| Error::corrupted(r.page.get(), "tree references share pages"))?;
        if levels == 1 {
            return self.prune_leaf(pages, r, fences);
        }
        // Each child that can hold keys in the range, with its fences.
        let (children, child_count) = {
            let node = load(&*pages, &r, levels)?;
            fences.check(&node)?;
            let mut children = Vec::new();
            for i in self.range.children(&node)? {
                children.push((i, node.child(i)?, fences.child(&node, i)?));
            }
            (children, node.len() + 1)
        };
        let mut gone = Vec::new();
        let mut changed = Vec::new();
        for (i, child, f) in children {
            if self.range.holds_all(&f) {
                // Inside the range: freed whole, never shadowed. Its nodes are still
                // read: branches keep no entry counts, and the tree record's count must
                // stay exact; their large values' blobs must be freed too; and each
                // node's keys must lie within its fences, which only a sound file
                // guarantees.
                self.removed += tree::free_below(pages, child, levels - 1, Some(&f))?;
                gone.push(i);
                continue;
            }
            match self.prune(pages, child, levels - 1, &f)? {
                Pruned::Same => {}
                Pruned::Changed(c) => changed.push((i, c)),
                Pruned::Gone => gone.push(i),
            }
        }
        if gone.is_empty() && changed.is_empty() {
            return Ok(Pruned::Same);
        }
        if gone.len() == child_count {
            pages.free_page(&r)?;
            return Ok(Pruned::Gone);
        }
        let id = pages.shadow(&r)?;
        let page = pages.dirty_mut(id);
        for (i, c) in changed {
            node::set_child(page, i, &c)?;
        }
        for run in runs_last_first(&gone) {
            remove_children(page, id, run)?;
        }
        Ok(Pruned::Changed(pages.dirty_ref(id)))
    }

    fn prune_leaf(&mut self, pages: &mut TxnPages, r: ChildRef, fences: &Fences) -> Result<Pruned> {
        let (slots, blobs, len) = {
            let node = load(&*pages, &r, 1)?;
            fences.check(&node)?;
            let slots = self.range.slots(&node)?;
            (slots.clone(), overflow_refs(&node, slots)?, node.len())
        };
        if slots.is_empty() {
            return Ok(Pruned::Same);
        }
        self.removed += slots.len() as u64;
        let pruned = if slots.len() == len {
            pages.free_page(&r)?;
            Pruned::Gone
        } else {
            let id = pages.shadow(&r)?;
            node::remove_range(pages.dirty_mut(id), id, slots)?;
            Pruned::Changed(pages.dirty_ref(id))
        };
        for o in blobs {
            pages.free_blob(&o)?;
        }
        Ok(pruned)
    }
}

/// The overflow references of slots `slots` of leaf `node`.
fn overflow_refs(node: &Node, slots: Range<usize>) -> Result<Vec<OverflowRef>> {
    let mut refs = Vec::new();
    for i in slots {
        if let LeafValue::Overflow(o) = node.value(i)? {
            refs.push(o);
        }
    }
    Ok(refs)
}

/// The ascending indices `sorted` as runs of consecutive ones, the last run first: each
/// can be removed from a page without moving the indices of the runs still to come.
fn runs_last_first(sorted: &[usize]) -> Vec<Range<usize>> {
    let mut runs: Vec<Range<usize>> = Vec::new();
    for &i in sorted.iter().rev() {
        match runs.last_mut() {
            Some(run) if run.start == i + 1 => run.start = i,
            _ => runs.push(i..i + 1),
        }
    }
    runs
}

/// Removes children `gone` (not all of them) from the dirty branch `id`: with each, the
/// key on its left, or for the leftmost ones the key on the right of the last removed,
/// whose child becomes the leftmost.
fn remove_children(page: &mut [u8], id: PageId, gone: Range<usize>) -> Result<()> {
    if gone.start > 0 {
        return node::remove_range(page, id, gone.start - 1..gone.end - 1);
    }
    let leftmost = Node::parse(page, id)?.child(gone.end)?;
    node::set_leftmost(page, &leftmost);
    node::remove_range(page, id, 0..gone.end)
}

/// Which path a `settle` descent takes.
#[derive(Clone, Copy)]
enum Towards<'k> {
    First,
    Key(&'k [u8]),
    Last,
}

/// Rebalances the underfull nodes a range removal left on its two boundary paths, then
/// collapses the root. A pass goes down each path through the dirty pages only (a page
/// this transaction did not write is unchanged, and so is all below it) and rebalances
/// bottom-up as `remove` does. One pass can leave work for another: a branch left with a
/// single child cannot rebalance that child until its own parent merges it with a
/// sibling, and two underfull neighbours merged can still be underfull. Passes repeat
/// until one finds nothing underfull: a pass per level is plenty for a sound tree, and
/// the limit only stops a corrupt one that never settles.
fn settle(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    lower: Towards,
    upper: Towards,
) -> Result<()> {
    for _ in 0..DEPTH_MAX + 2 {
        let mut underfull = false;
        for end in [lower, upper] {
            if tree.root.is_null() {
                return Ok(());
            }
            if let Some(grow) =
                settle_below(pages, tree.root, tree.depth.get(), end, &mut underfull)?
            {
                tree::set_root(pages, tree, grow)?;
            }
            tree::collapse_root(pages, tree)?;
        }
        if !underfull {
            return Ok(());
        }
    }
    Ok(())
}

/// `settle` below `r`: `None` if `r` is not a page this transaction wrote.
fn settle_below(
    pages: &mut TxnPages,
    r: ChildRef,
    levels: u32,
    end: Towards,
    underfull: &mut bool,
) -> Result<Option<Grow>> {
    if r.txn() != pages.txn || !pages.is_dirty(r.page()) {
        return Ok(None);
    }
    let (child, i) = {
        let node = load(&*pages, &r, levels)?;
        if node.is_leaf() {
            return Ok(Some(Grow::One(r)));
        }
        let i = match end {
            Towards::First => 0,
            Towards::Key(k) => node.child_index(k)?,
            Towards::Last => node.len(),
        };
        (node.child(i)?, i)
    };
    let Some(grow) = settle_below(pages, child, levels - 1, end, underfull)? else {
        return Ok(Some(Grow::One(r)));
    };
    let child_underfull = tree::is_underfull_now(pages, &grow)?;
    if !child_underfull && matches!(grow, Grow::One(_)) {
        // A dirty child keeps its page id: `r` references it already.
        return Ok(Some(Grow::One(r)));
    }
    *underfull |= child_underfull;
    Ok(Some(tree::attach_or_rebalance(
        pages, &r, i, &child, grow, true,
    )?))
}

/// The walk of `retain`.
struct Retain<'f> {
    keep: &'f mut dyn FnMut(&[u8], &[u8]) -> bool,
    removed: u64,
    /// The last key decided: entries up to it are never offered to `keep` again.
    decided: Option<Vec<u8>>,
    /// The upper fence of the leaf the last descent reached: the lowest key of the
    /// leaves after it. None if it was the last leaf.
    fence: Option<Vec<u8>>,
}

impl Retain<'_> {
    /// Decides the entries of the leaf covering `from` (the first leaf if None) below
    /// `r`, whose keys must lie within `fences`, removes those `keep` rejects, and
    /// rebalances on the way back up; None if every entry stays.
    fn visit(
        &mut self,
        pages: &mut TxnPages,
        r: ChildRef,
        levels: u32,
        from: Option<&[u8]>,
        fences: Fences,
    ) -> Result<Option<Grow>> {
        if levels == 1 {
            return self.visit_leaf(pages, r, fences);
        }
        let (child, i, below) = {
            let node = load(&*pages, &r, levels)?;
            fences.check(&node)?;
            let i = match from {
                Some(k) => node.child_index(k)?,
                None => 0,
            };
            (node.child(i)?, i, fences.child(&node, i)?)
        };
        let Some(grow) = self.visit(pages, child, levels - 1, from, below)? else {
            return Ok(None);
        };
        Ok(Some(tree::attach_or_rebalance(
            pages, &r, i, &child, grow, true,
        )?))
    }

    fn visit_leaf(
        &mut self,
        pages: &mut TxnPages,
        r: ChildRef,
        fences: Fences,
    ) -> Result<Option<Grow>> {
        let (gone, blobs) = {
            let node = load(&*pages, &r, 1)?;
            // A leaf outside its fences would send the walk to the wrong next leaf.
            fences.check(&node)?;
            self.fence = fences.upper().map(<[u8]>::to_vec);
            let start = match &self.decided {
                None => 0,
                Some(k) => node.search(k)?.map_or_else(|i| i, |i| i + 1),
            };
            let mut gone = Vec::new();
            let mut blobs = Vec::new();
            for i in start..node.len() {
                let (key, value) = (node.key(i)?, node.value(i)?);
                if !(self.keep)(key, resolve(&*pages, value)?) {
                    gone.push(i);
                    if let LeafValue::Overflow(o) = value {
                        blobs.push(o);
                    }
                }
            }
            if start < node.len() {
                self.decided = Some(node.key(node.len() - 1)?.to_vec());
            }
            (gone, blobs)
        };
        if gone.is_empty() {
            return Ok(None);
        }
        let id = pages.shadow(&r)?;
        for o in blobs {
            pages.free_blob(&o)?;
        }
        let page = pages.dirty_mut(id);
        for run in runs_last_first(&gone) {
            node::remove_range(page, id, run)?;
        }
        self.removed += gone.len() as u64;
        Ok(Some(Grow::One(pages.dirty_ref(id))))
    }
}

/// The tree's entry count less `removed`: fewer entries in the record than the leaves
/// held is a corrupt record.
fn entries_left(tree: &TreeRecord, removed: u64) -> Result<u64> {
    tree.entries.get().checked_sub(removed).ok_or_else(|| {
        Error::corrupted(
            tree.root.page.get(),
            "tree record counts fewer entries than its leaves hold",
        )
    })
}
