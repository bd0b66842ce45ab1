//! Two sibling nodes evened out in place after a remove left one of them underfull: cells
//! move from one dirty page into the other (between branches the parent's separator moves
//! down, and a new one up when they share), instead of both being rebuilt in fresh pages.
//! The policy is a split's: one page if every cell fits, else the most even cut.
//! See FORMAT.md#node-pages ("Fill").

use std::ops::Range;

use zerocopy::little_endian::{U16, U32};

use super::{
    BRANCH_CELL_HEADER_BYTES, Cell, Node, SLOT_BYTES, compact, encode_branch_cell, insert_cell,
    node_header_mut, separator, set_leftmost, slots_start, split_point, write_slot,
};
use crate::error::{Error, Result};
use crate::page::{PageId, PageKind};

/// What became of two siblings.
pub(crate) enum Evened {
    /// Every cell is in the left page now; the right page holds nothing the tree needs.
    Merged,
    /// Both pages keep cells; the key that separates them now.
    Shared(Vec<u8>),
}

/// Evens out the dirty sibling nodes `left` and `right`, which `sep` separates in their
/// parent: moves every cell of `right` into `left` if they fit one page, else moves cells
/// across so that the two are cut where a split of all their cells would cut them.
pub(crate) fn even_out(
    left: &mut [u8],
    left_id: PageId,
    sep: &[u8],
    right: &mut [u8],
    right_id: PageId,
) -> Result<Evened> {
    let pair = Pair::new(left, left_id, sep, right, right_id)?;
    if pair.fits_one() {
        let all = pair.right.len();
        append_from_right(left, left_id, sep, right, right_id, all)?;
        return Ok(Evened::Merged);
    }
    let kind = pair.left.kind();
    let at = split_point(left_id, kind, left.len(), pair.len(), |j| pair.footprint(j))?.at;
    let up = pair.key_up(at)?;
    let (left_len, down) = (pair.left.len(), pair.down());
    if at < left_len {
        prepend_from_left(left, left_id, sep, right, right_id, at)?;
        remove_range(left, left_id, at..left_len)?;
    } else if at > left_len {
        let moved = at - left_len - down;
        append_from_right(left, left_id, sep, right, right_id, moved)?;
        if kind == PageKind::Branch {
            // The cut cell's key moves up; its child becomes the right page's leftmost.
            let cut = Node::parse(right, right_id)?.cell(moved)?.child();
            set_leftmost(right, &cut);
        }
        remove_range(right, right_id, 0..moved + down)?;
    }
    Ok(Evened::Shared(up))
}

/// Where [`share_leaves`] cuts two sibling leaves and a new cell: before index `cut` of
/// the list of their cells with the new one, with the key that then separates them.
pub(crate) struct ShareCut {
    cut: usize,
    pub sep: Vec<u8>,
}

/// Plans making room for a new `cell` at index `at` of the cells of the leaf `left` and
/// then those of its right sibling `right`: the cut where a split of all their cells and
/// the new one would cut them. `None` if no cut fits both pages. Reads only: the pages
/// may still be committed ones, to be copied once the plan is known to work.
pub(crate) fn share_cut(
    left: &[u8],
    left_id: PageId,
    right: &[u8],
    right_id: PageId,
    at: usize,
    cell: Cell,
) -> Result<Option<ShareCut>> {
    let pair = Pair::new(left, left_id, &[], right, right_id)?;
    if pair.left.kind() != PageKind::Leaf || at > pair.len() {
        return Err(Error::corrupted(left_id.0, "a leaf shared with a branch"));
    }
    // The new key was placed by a search of its own leaf alone: against the sibling's
    // keys only the parent's separator orders it, and a crafted sibling may hold a key
    // on the wrong side of it (`Pair::new` checks the two pages' order, not this).
    let below = match at.checked_sub(1) {
        Some(i) => pair.key(i)? < cell.key,
        None => true,
    };
    let above = at == pair.len() || cell.key < pair.key(at)?;
    if !(below && above) {
        let page = if below { right_id } else { left_id };
        return Err(Error::corrupted(
            page.0,
            "a new key out of order with its leaf's sibling",
        ));
    }
    // Index `j` of the list with the new cell: the new cell, or the pair's cell `i`.
    let old = |j: usize| (j != at).then(|| if j < at { j } else { j - 1 });
    let footprint = |j| old(j).map_or(Ok(cell.footprint()), |i| pair.footprint(i));
    let key = |j| old(j).map_or(Ok(cell.key), |i| pair.key(i));
    let Some(cut) = walk_to_even_cut(&pair, at, cell.footprint(), footprint)? else {
        return Ok(None);
    };
    let sep = separator(key(cut - 1)?, key(cut)?).to_vec();
    Ok(Some(ShareCut { cut, sep }))
}

/// Carries out `plan` ([`share_cut`] of the same pages, now dirty): moves cells between
/// the leaves `left` and `right` and inserts the new `cell` at index `at` of the list;
/// returns whether the cell went into `left`.
pub(crate) fn share_leaves(
    left: &mut [u8],
    left_id: PageId,
    right: &mut [u8],
    right_id: PageId,
    at: usize,
    cell: Cell,
    plan: &ShareCut,
) -> Result<bool> {
    let (cut, left_len) = (plan.cut, Node::parse(left, left_id)?.len());
    let cell_left = at < cut;
    // The old cells that end up in the left page.
    let keep = if cell_left { cut - 1 } else { cut };
    if keep < left_len {
        prepend_from_left(left, left_id, &[], right, right_id, keep)?;
        remove_range(left, left_id, keep..left_len)?;
    } else if keep > left_len {
        let moved = keep - left_len;
        append_from_right(left, left_id, &[], right, right_id, moved)?;
        remove_range(right, right_id, 0..moved)?;
    }
    match cell_left {
        true => put_one(left, left_id, at, cell)?,
        false => put_one(right, right_id, at - cut, cell)?,
    }
    Ok(cell_left)
}

/// The most even cut of the cells of the leaf pair and a new cell of `cell_bytes` at
/// index `at` (`footprint(j)` of the list with it), if both sides fit a page: walks from
/// the pages' present boundary, reading only the cells that would move (the two sides'
/// difference shrinks along the walk until the best cut, then grows). The pages may be
/// committed ones not yet checked: cells that add up to more than their pages' used
/// bytes are `Corrupted`.
fn walk_to_even_cut(
    pair: &Pair,
    at: usize,
    cell_bytes: usize,
    footprint: impl Fn(usize) -> Result<usize>,
) -> Result<Option<usize>> {
    let payload = |n: &Node| n.used_bytes() - slots_start(PageKind::Leaf);
    let (left_bytes, right_bytes) = (payload(&pair.left), payload(&pair.right));
    let total = left_bytes + right_bytes + cell_bytes;
    let len = pair.len() + 1;
    let overlap = || Error::corrupted(pair.right.id().0, "cells overlap in a leaf or its sibling");
    // The boundary now, the new cell counted on the left if it is at the left's end.
    let mut cut = pair.left.len() + usize::from(at <= pair.left.len());
    let mut left = left_bytes + if at <= pair.left.len() { cell_bytes } else { 0 };
    let skew = |left: usize| (2 * left).abs_diff(total);
    while cut > 1 {
        let fewer = left.checked_sub(footprint(cut - 1)?).ok_or_else(overlap)?;
        if skew(fewer) >= skew(left) {
            break;
        }
        (cut, left) = (cut - 1, fewer);
    }
    while cut + 1 < len {
        let more = left + footprint(cut)?;
        if skew(more) >= skew(left) {
            break;
        }
        (cut, left) = (cut + 1, more);
    }
    let right = total.checked_sub(left).ok_or_else(overlap)?;
    let room = pair.left.bytes().len() - slots_start(PageKind::Leaf);
    Ok((left <= room && right <= room).then_some(cut))
}

/// The cells of two siblings as one ordered list: the left page's, then for branches the
/// separator from their parent (with the right page's leftmost child), then the right's.
struct Pair<'a> {
    left: Node<'a>,
    sep: &'a [u8],
    right: Node<'a>,
}

impl<'a> Pair<'a> {
    fn new(
        left: &'a [u8],
        left_id: PageId,
        sep: &'a [u8],
        right: &'a [u8],
        right_id: PageId,
    ) -> Result<Pair<'a>> {
        let (left, right) = (Node::parse(left, left_id)?, Node::parse(right, right_id)?);
        if left.kind() != right.kind() || left.bytes().len() != right.bytes().len() {
            return Err(Error::corrupted(right_id.0, "siblings of different kinds"));
        }
        let pair = Pair { left, sep, right };
        match pair.in_order()? {
            true => Ok(pair),
            false => Err(Error::corrupted(right_id.0, "siblings out of order")),
        }
    }

    /// Whether the left page's keys come before the right page's, with (for branches)
    /// the separator between them. Each page was checked alone when it was read; only
    /// their parent's order puts them side by side, and a crafted parent can swap them.
    /// Joined unsorted, they would make a page whose keys its slot prefixes cannot skip.
    fn in_order(&self) -> Result<bool> {
        let last = match self.left.len().checked_sub(1) {
            Some(i) => Some(self.left.key(i)?),
            None => None,
        };
        let first = match self.right.len() {
            0 => None,
            _ => Some(self.right.key(0)?),
        };
        let sep = (self.down() == 1).then_some(self.sep);
        let before = |a: Option<&[u8]>, b: Option<&[u8]>, strictly: bool| match (a, b) {
            (Some(a), Some(b)) if strictly => a < b,
            (Some(a), Some(b)) => a <= b,
            _ => true,
        };
        Ok(before(last, first, true) && before(last, sep, false) && before(sep, first, false))
    }

    /// 1 for branches, whose separator moves down between the two pages' cells.
    fn down(&self) -> usize {
        usize::from(self.left.kind() == PageKind::Branch)
    }

    fn len(&self) -> usize {
        self.left.len() + self.down() + self.right.len()
    }

    /// The slot and cell bytes of the separator as a branch cell.
    fn sep_footprint(&self) -> usize {
        SLOT_BYTES + BRANCH_CELL_HEADER_BYTES + self.sep.len()
    }

    fn footprint(&self, j: usize) -> Result<usize> {
        Ok(match j.checked_sub(self.left.len()) {
            None => self.left.cell(j)?.footprint(),
            Some(0) if self.down() == 1 => self.sep_footprint(),
            Some(k) => self.right.cell(k - self.down())?.footprint(),
        })
    }

    fn key(&self, j: usize) -> Result<&'a [u8]> {
        match j.checked_sub(self.left.len()) {
            None => self.left.key(j),
            Some(0) if self.down() == 1 => Ok(self.sep),
            Some(k) => self.right.key(k - self.down()),
        }
    }

    /// Whether every cell (and the separator, for branches) fits in one page.
    fn fits_one(&self) -> bool {
        let kind = self.left.kind();
        let down = self.down() * self.sep_footprint();
        let right_cells = self.right.used_bytes() - slots_start(kind);
        self.left.used_bytes() + right_cells + down <= self.left.bytes().len()
    }

    /// The separator for a cut before cell `at` (`0 < at < len`): for leaves the
    /// shortest key between the cells either side, for branches the cut cell's key.
    fn key_up(&self, at: usize) -> Result<Vec<u8>> {
        Ok(match self.left.kind() {
            PageKind::Leaf => separator(self.key(at - 1)?, self.key(at)?).to_vec(),
            _ => self.key(at)?.to_vec(),
        })
    }
}

/// Appends to `left` the separator pulled down from the parent (branches: with the right
/// page's leftmost child), then the first `n` cells of `right`.
fn append_from_right(
    left: &mut [u8],
    left_id: PageId,
    sep: &[u8],
    right: &[u8],
    right_id: PageId,
    n: usize,
) -> Result<()> {
    let src = Node::parse(right, right_id)?;
    let mut at = Node::parse(left, left_id)?.len();
    if src.kind() == PageKind::Branch {
        let mut cell = Vec::new();
        encode_branch_cell(&mut cell, sep, &src.child(0)?);
        put_one(
            left,
            left_id,
            at,
            Cell {
                key: sep,
                bytes: &cell,
            },
        )?;
        at += 1;
    }
    insert_from(left, left_id, at, &src, 0..n)
}

/// Puts in front of the cells of `right` those of `left` from `from` on (branches: the
/// cell at `from` moves up instead, its child becoming the right page's leftmost, and the
/// separator pulled down from the parent goes before the right page's old leftmost
/// child).
fn prepend_from_left(
    left: &[u8],
    left_id: PageId,
    sep: &[u8],
    right: &mut [u8],
    right_id: PageId,
    mut from: usize,
) -> Result<()> {
    let src = Node::parse(left, left_id)?;
    if src.kind() == PageKind::Branch {
        let old_leftmost = Node::parse(right, right_id)?.child(0)?;
        let mut cell = Vec::new();
        encode_branch_cell(&mut cell, sep, &old_leftmost);
        put_one(
            right,
            right_id,
            0,
            Cell {
                key: sep,
                bytes: &cell,
            },
        )?;
        set_leftmost(right, &src.cell(from)?.child());
        from += 1;
    }
    insert_from(right, right_id, 0, &src, from..src.len())
}

/// Inserts `cell` at slot `at` of dirty node `id`; an error if it does not fit.
fn put_one(page: &mut [u8], id: PageId, at: usize, cell: Cell) -> Result<()> {
    let kind = Node::parse(page, id)?.kind();
    match insert_cell(page, id, kind, at, cell)? {
        true => Ok(()),
        false => Err(no_room(id)),
    }
}

fn no_room(id: PageId) -> Error {
    Error::corrupted(
        id.0,
        "a sibling's cells do not fit: a page misstated its size",
    )
}

/// Inserts the cells `range` of `src` at slot `at` of the dirty node `dst` (of the same
/// kind), in order, compacting `dst` first if holes leave too little room between its
/// slots and cells. An error, changing nothing, if they do not fit even then.
pub(super) fn insert_from(
    dst: &mut [u8],
    dst_id: PageId,
    at: usize,
    src: &Node,
    range: Range<usize>,
) -> Result<()> {
    let mut need = 0;
    for i in range.clone() {
        need += src.cell(i)?.footprint();
    }
    let node = Node::parse(dst, dst_id)?;
    let (kind, count) = (node.kind(), node.len());
    let gap = node.cells_start - (slots_start(kind) + count * SLOT_BYTES);
    if kind != src.kind() || at > count || gap + node.frag_bytes() < need {
        return Err(no_room(dst_id));
    }
    if gap < need {
        compact(dst, dst_id, kind)?;
    }
    // The moved keys are sorted: those between the first and the last share what both
    // share with `dst`'s keys.
    if !range.is_empty() {
        super::prefix::admit(dst, kind, src.key(range.start)?);
        super::prefix::admit(dst, kind, src.key(range.end - 1)?);
    }
    let mut cells_start = Node::parse(dst, dst_id)?.cells_start;
    let slot_at = slots_start(kind) + at * SLOT_BYTES;
    let slots_end = slots_start(kind) + count * SLOT_BYTES;
    dst.copy_within(slot_at..slots_end, slot_at + range.len() * SLOT_BYTES);
    for (j, i) in range.clone().enumerate() {
        let cell = src.cell(i)?;
        cells_start -= cell.bytes.len();
        dst[cells_start..cells_start + cell.bytes.len()].copy_from_slice(cell.bytes);
        write_slot(dst, slot_at + j * SLOT_BYTES, cell.key, cells_start);
    }
    let h = node_header_mut(dst);
    h.page.count = U16::new((count + range.len()) as u16);
    h.cells_start = U32::new(cells_start as u32);
    Ok(())
}

/// Removes the slots `range` of dirty node `id`; their cells become holes (counted in
/// `frag_bytes`).
pub(crate) fn remove_range(page: &mut [u8], id: PageId, range: Range<usize>) -> Result<()> {
    let node = Node::parse(page, id)?;
    let (kind, count) = (node.kind(), node.len());
    if range.start > range.end || range.end > count {
        return Err(Error::corrupted(
            id.0,
            format!("slots {range:?} of {count} removed"),
        ));
    }
    let mut freed = 0;
    for i in range.clone() {
        freed += node.cell(i)?.bytes.len();
    }
    let start = slots_start(kind);
    page.copy_within(
        start + range.end * SLOT_BYTES..start + count * SLOT_BYTES,
        start + range.start * SLOT_BYTES,
    );
    let h = node_header_mut(page);
    h.page.count = U16::new((count - range.len()) as u16);
    h.frag_bytes = U16::new(h.frag_bytes.get() + freed as u16);
    if range.len() == count {
        h.prefix_skip = U16::ZERO; // an empty node skips nothing (FORMAT.md#prefix-skip)
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::{
        LeafValue, ValueAlign, build, encode_leaf_cell, insert_cell, is_underfull, remove_cell,
    };
    use crate::page::{ChildRef, TxnId};

    const PAGE: usize = 4096;

    fn key(i: usize, len: usize) -> Vec<u8> {
        let mut k = format!("k{i:04}").into_bytes();
        k.resize(len.max(5), b'.');
        k
    }

    /// A leaf cell for key `i` with a value of `value_len` bytes: the key and the cell.
    fn leaf_cell(i: usize, key_len: usize, value_len: usize) -> (Vec<u8>, Vec<u8>) {
        let k = key(i, key_len);
        let mut cell = Vec::new();
        let value = vec![7u8; value_len];
        encode_leaf_cell(&mut cell, &k, &LeafValue::Inline(&value), ValueAlign::NONE);
        (k, cell)
    }

    /// A leaf with keys `keys` (each `key_len` long) and values of `value_len` bytes.
    fn leaf(keys: impl IntoIterator<Item = usize>, key_len: usize, value_len: usize) -> Box<[u8]> {
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = keys
            .into_iter()
            .map(|i| leaf_cell(i, key_len, value_len))
            .collect();
        let cells: Vec<Cell> = encoded
            .iter()
            .map(|(k, c)| Cell { key: k, bytes: c })
            .collect();
        let mut page = vec![0; PAGE].into_boxed_slice();
        build(&mut page, PageKind::Leaf, TxnId(1), None, &cells);
        page
    }

    fn child(i: usize) -> ChildRef {
        ChildRef::new(PageId(100 + i as u64), 0, TxnId(1))
    }

    /// A branch with keys `keys` and children 100 + (first key's index) onwards.
    fn branch(keys: Range<usize>, key_len: usize) -> Box<[u8]> {
        let leftmost = child(keys.start);
        let encoded: Vec<(Vec<u8>, Vec<u8>)> = keys
            .map(|i| {
                let k = key(i, key_len);
                let mut cell = Vec::new();
                encode_branch_cell(&mut cell, &k, &child(i + 1));
                (k, cell)
            })
            .collect();
        let cells: Vec<Cell> = encoded
            .iter()
            .map(|(k, c)| Cell { key: k, bytes: c })
            .collect();
        let mut page = vec![0; PAGE].into_boxed_slice();
        build(
            &mut page,
            PageKind::Branch,
            TxnId(1),
            Some(&leftmost),
            &cells,
        );
        page
    }

    /// The keys of the pages in order, with the separator between them for branches
    /// (where it moved down), and the children in order.
    fn flatten(pages: &[&[u8]], seps: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u64>) {
        let (mut keys, mut children) = (Vec::new(), Vec::new());
        for (n, page) in pages.iter().enumerate() {
            let node = Node::parse(page, PageId(n as u64)).unwrap();
            node.verify(None).unwrap();
            if n > 0 && !node.is_leaf() {
                keys.push(seps[n - 1].to_vec());
            }
            for i in 0..node.len() {
                keys.push(node.key(i).unwrap().to_vec());
            }
            if !node.is_leaf() {
                children.extend((0..=node.len()).map(|i| node.child(i).unwrap().page().0));
            }
        }
        (keys, children)
    }

    /// Evens out the two pages and checks that the cells (keys, children) stay in order,
    /// that the separator separates, and the fill: returns whether they merged.
    fn even_out_and_check(mut left: Box<[u8]>, mut right: Box<[u8]>, sep: &[u8]) -> bool {
        let before = flatten(&[&left, &right], &[sep]);
        let evened = even_out(&mut left, PageId(1), sep, &mut right, PageId(2)).unwrap();
        let (l, r) = (
            Node::parse(&left, PageId(1)).unwrap(),
            Node::parse(&right, PageId(2)).unwrap(),
        );
        match evened {
            Evened::Merged => {
                assert_eq!(flatten(&[&left], &[]), before);
                true
            }
            Evened::Shared(up) => {
                assert_eq!(flatten(&[&left, &right], &[&up]), before);
                if l.is_leaf() {
                    assert!(l.key(l.len() - 1).unwrap() < &up[..] && &up[..] <= r.key(0).unwrap());
                }
                assert!(l.len() > 0 && r.len() > 0);
                assert!(
                    !is_underfull(l.used_bytes(), PAGE),
                    "left {}",
                    l.used_bytes()
                );
                assert!(
                    !is_underfull(r.used_bytes(), PAGE),
                    "right {}",
                    r.used_bytes()
                );
                false
            }
        }
    }

    #[test]
    fn leaves_merge_when_they_fit_one_page() {
        let (left, right) = (leaf(0..5, 8, 20), leaf(5..9, 8, 20));
        assert!(even_out_and_check(left, right, &key(5, 8)));
    }

    #[test]
    fn leaves_share_cells_either_way() {
        // 12 cells of 350 bytes: more than a page, cut 6 + 6.
        let (small, big) = (leaf(0..2, 8, 350), leaf(2..12, 8, 350));
        assert!(!even_out_and_check(small, big, &key(2, 8)));
        let (big, small) = (leaf(0..10, 8, 350), leaf(10..12, 8, 350));
        assert!(!even_out_and_check(big, small, &key(10, 8)));
    }

    #[test]
    fn holes_in_the_receiving_leaf_are_compacted_away() {
        // The left leaf's removed cells leave holes: the right's cells fit only without.
        let mut left = leaf(0..10, 8, 300);
        for _ in 0..8 {
            remove_cell(&mut left, PageId(1), 1).unwrap();
        }
        let right = leaf(10..22, 8, 300);
        assert!(!even_out_and_check(left.clone(), right, &key(10, 8)));
        let right = leaf(10..18, 8, 300);
        assert!(even_out_and_check(left, right, &key(10, 8)));
    }

    #[test]
    fn branches_merge_pulling_the_separator_down() {
        let (left, right) = (branch(0..3, 10), branch(4..6, 10));
        assert!(even_out_and_check(left, right, &key(3, 10)));
        let (left, right) = (branch(0..0, 10), branch(1..2, 10));
        assert!(even_out_and_check(left, right, &key(0, 10)));
    }

    #[test]
    fn branches_share_moving_a_new_separator_up() {
        // Keys of 400 bytes: ten cells fill a page.
        let (small, big) = (branch(0..1, 400), branch(2..11, 400));
        assert!(!even_out_and_check(small, big, &key(1, 400)));
        let (big, small) = (branch(0..9, 400), branch(10..11, 400));
        assert!(!even_out_and_check(big, small, &key(9, 400)));
    }

    /// Whether the leaf has no room for one more cell of key `new` and a 300-byte value.
    fn is_full(leaf: &[u8], new: usize) -> bool {
        let (k, c) = leaf_cell(new, 8, 300);
        let cell = Cell { key: &k, bytes: &c };
        !insert_cell(&mut Box::from(leaf), PageId(1), PageKind::Leaf, 0, cell).unwrap()
    }

    /// Shares the leaves `left` and `right` making room for key `new` (a 300-byte value)
    /// at index `at` of their cells, which must succeed: the cells stay in order with the
    /// new one among them, the separator separates, and the two sides differ by a cell at
    /// most (all cells are alike). Returns whether the new cell went left.
    fn share_and_check(mut left: Box<[u8]>, mut right: Box<[u8]>, at: usize, new: usize) -> bool {
        let (k, c) = leaf_cell(new, 8, 300);
        let cell = Cell { key: &k, bytes: &c };
        let mut expected = flatten(&[&left, &right], &[]).0;
        expected.insert(at, k.clone());
        let plan = share_cut(&left, PageId(1), &right, PageId(2), at, cell).unwrap();
        let plan = plan.expect("shared");
        let sep = plan.sep.clone();
        let went_left =
            share_leaves(&mut left, PageId(1), &mut right, PageId(2), at, cell, &plan).unwrap();
        assert_eq!(flatten(&[&left, &right], &[]).0, expected);
        let (l, r) = (
            Node::parse(&left, PageId(1)).unwrap(),
            Node::parse(&right, PageId(2)).unwrap(),
        );
        assert!(l.key(l.len() - 1).unwrap() < &sep[..] && &sep[..] <= r.key(0).unwrap());
        assert_eq!(went_left, k < sep);
        assert!(l.used_bytes().abs_diff(r.used_bytes()) <= cell.footprint());
        went_left
    }

    #[test]
    fn a_full_leaf_shares_with_its_right_sibling() {
        // Twelve cells of 320 bytes (slot, length, key, value) fill a page: a thirteenth
        // does not fit. Even keys only, so that odd ones go between them.
        let full = || leaf((0..24).step_by(2), 8, 300);
        assert!(is_full(&full(), 1));
        let right = || leaf([40, 42], 8, 300);
        // The new key at the left end stays left; at the right end it moves right.
        assert!(share_and_check(full(), right(), 1, 1));
        assert!(share_and_check(full(), right(), 2, 3));
        assert!(!share_and_check(full(), right(), 12, 23));
    }

    #[test]
    fn a_full_leaf_shares_with_its_left_sibling() {
        let left = || leaf([0, 2], 8, 300);
        let full = || leaf((10..34).step_by(2), 8, 300);
        assert!(is_full(&full(), 9));
        // Index 2 is the full leaf's first slot: the new key moves left with it.
        assert!(share_and_check(left(), full(), 2, 9));
        assert!(!share_and_check(left(), full(), 14, 33));
    }

    #[test]
    fn leaves_too_full_to_share_have_no_cut() {
        // Eight cells of 509 bytes fill a page exactly: seventeen fit no two pages.
        let (left, right) = (leaf((0..16).step_by(2), 8, 489), leaf(20..28, 8, 489));
        let (k, c) = leaf_cell(1, 8, 489);
        let cell = Cell { key: &k, bytes: &c };
        let plan = share_cut(&left, PageId(1), &right, PageId(2), 1, cell).unwrap();
        assert!(plan.is_none());
    }

    /// Catches: `Pair` joining pages their parent lists out of order. The merge made an
    /// unsorted page, and sealing it panicked (slot prefixes longer than a key).
    #[test]
    fn siblings_out_of_order_are_corrupt() {
        let out_of_order = |r: Result<Evened>| matches!(r, Err(Error::Corrupted { page: 2, ref reason }) if reason.contains("out of order"));
        // Leaves that would merge, swapped.
        let (mut left, mut right) = (leaf(5..9, 8, 20), leaf(0..5, 8, 20));
        let r = even_out(&mut left, PageId(1), &key(5, 8), &mut right, PageId(2));
        assert!(out_of_order(r));
        // Branches in order, but with a separator above the right one's keys.
        let (mut left, mut right) = (branch(0..3, 10), branch(4..6, 10));
        let r = even_out(&mut left, PageId(1), &key(7, 10), &mut right, PageId(2));
        assert!(out_of_order(r));
        // A share: the keys of the full leaf come after those of its right sibling.
        let (full, right) = (leaf((40..64).step_by(2), 8, 300), leaf([0, 2], 8, 300));
        let (k, c) = leaf_cell(41, 8, 300);
        let cell = Cell { key: &k, bytes: &c };
        let r = share_cut(&full, PageId(1), &right, PageId(2), 1, cell);
        assert!(matches!(r, Err(Error::Corrupted { page: 2, .. })));
    }

    #[test]
    fn siblings_of_different_kinds_are_corrupt() {
        let (mut left, mut right) = (leaf(0..2, 8, 10), branch(3..4, 8));
        let r = even_out(&mut left, PageId(1), &key(2, 8), &mut right, PageId(2));
        assert!(matches!(r, Err(Error::Corrupted { page: 2, .. })));
    }
}
