//! Packing: the cells of neighbouring leaves cut into as few full pages as hold them, and
//! the branch above them rebuilt to match (compaction in place; `crate::compact`).
//! Removes leave leaves as little as a quarter full; `compact_to` writes full ones, and
//! this brings a file compacted in place to the same fill. See
//! FORMAT.md#compaction-in-place.

use super::{
    BRANCH_CELL_HEADER_BYTES, Cell, Node, SLOT_BYTES, build, is_underfull, separator, slots_start,
    split_point,
};
use crate::error::{Error, Result};
use crate::page::{ChildRef, PageId, PageKind, TxnId};
use crate::page_buf::PageBox;

/// Where to cut `cells` (in key order) into the fewest leaves that hold them, and at
/// least `fewest` (1 or 2): the index at which each leaf after the first starts. Each
/// leaf takes cells while they fit, which needs the fewest pages; if that leaves the
/// last leaf underfull, or a single leaf where two are wanted, the last two are cut
/// where a split would cut them. `id` names the page that errors blame.
pub(crate) fn pack_cuts(
    id: PageId,
    page_size: usize,
    cells: &[Cell],
    fewest: usize,
) -> Result<Vec<usize>> {
    let kind = PageKind::Leaf;
    let room = page_size - slots_start(kind);
    let mut cuts = Vec::new();
    let mut used = 0;
    for (j, cell) in cells.iter().enumerate() {
        let size = cell.footprint();
        if size > room {
            return Err(Error::corrupted(id.0, "a cell larger than its page"));
        }
        if used + size > room {
            cuts.push(j);
            used = 0;
        }
        used += size;
    }
    let too_few = cuts.is_empty() && fewest > 1;
    if too_few || !cuts.is_empty() && is_underfull(slots_start(kind) + used, page_size) {
        let first = cuts.len().checked_sub(2).map_or(0, |i| cuts[i]);
        let two = &cells[first..];
        let at = split_point(id, kind, page_size, two.len(), |j| Ok(two[j].footprint()))?.at;
        match cuts.last_mut() {
            Some(last) if !too_few => *last = first + at,
            _ => cuts.push(first + at),
        }
    }
    Ok(cuts)
}

/// Leaves holding `cells` cut at `cuts` (`pack_cuts`), and the separator before each
/// leaf after the first.
pub(crate) fn build_leaves(
    page_size: usize,
    txn: TxnId,
    cells: &[Cell],
    cuts: &[usize],
) -> (Vec<PageBox>, Vec<Vec<u8>>) {
    let bounds: Vec<usize> = std::iter::once(0)
        .chain(cuts.iter().copied())
        .chain(std::iter::once(cells.len()))
        .collect();
    let leaves = bounds
        .windows(2)
        .map(|w| {
            let mut page = PageBox::zeroed(page_size);
            build(&mut page, PageKind::Leaf, txn, None, &cells[w[0]..w[1]]);
            page
        })
        .collect();
    let separators = cuts
        .iter()
        .map(|&at| separator(cells[at - 1].key, cells[at].key).to_vec())
        .collect();
    (leaves, separators)
}

/// A branch over `children` (the first is its leftmost child) separated by
/// `separators`; None if they do not fit in one page.
pub(crate) fn build_branch(
    page_size: usize,
    txn: TxnId,
    children: &[ChildRef],
    separators: &[Vec<u8>],
) -> Option<PageBox> {
    let kind = PageKind::Branch;
    let need: usize = (separators.iter())
        .map(|s| SLOT_BYTES + BRANCH_CELL_HEADER_BYTES + s.len())
        .sum();
    if need > page_size - slots_start(kind) {
        return None;
    }
    let encoded: Vec<Vec<u8>> = (separators.iter().zip(&children[1..]))
        .map(|(key, child)| {
            let mut cell = Vec::new();
            super::encode_branch_cell(&mut cell, key, child);
            cell
        })
        .collect();
    let cells: Vec<Cell> = (separators.iter().zip(&encoded))
        .map(|(key, bytes)| Cell { key, bytes })
        .collect();
    let mut page = PageBox::zeroed(page_size);
    build(&mut page, kind, txn, Some(&children[0]), &cells);
    Some(page)
}

/// Every cell of `nodes`, in order.
pub(crate) fn all_cells<'a>(nodes: &[Node<'a>]) -> Result<Vec<Cell<'a>>> {
    let mut cells = Vec::new();
    for node in nodes {
        for i in 0..node.len() {
            cells.push(node.cell(i)?);
        }
    }
    Ok(cells)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cells_of(sizes: &[usize]) -> (Vec<Vec<u8>>, Vec<Vec<u8>>) {
        let keys: Vec<Vec<u8>> = (0..sizes.len() as u32)
            .map(|i| i.to_be_bytes().to_vec())
            .collect();
        let bytes = sizes.iter().map(|&n| vec![0; n - SLOT_BYTES]).collect();
        (keys, bytes)
    }

    #[test]
    fn cells_are_cut_into_the_fewest_pages_and_the_last_is_not_underfull() {
        let room = 4096 - slots_start(PageKind::Leaf);
        // 10 cells of a fifth of a page: greedy takes 4 per page (the fifth does not
        // quite fit), so 3 pages: 4, 4, 2 — the last is 2/5 full, not underfull.
        let size = room / 5 + 1;
        let (keys, bytes) = cells_of(&[size; 10]);
        let cells: Vec<Cell> = keys
            .iter()
            .zip(&bytes)
            .map(|(key, bytes)| Cell { key, bytes })
            .collect();
        assert_eq!(pack_cuts(PageId(9), 4096, &cells, 1).unwrap(), [4, 8]);
        // 9 cells: 4, 4, 1 leaves the last a fifth full; the last two become 3 and 2
        // or 2 and 3.
        let cuts = pack_cuts(PageId(9), 4096, &cells[..9], 1).unwrap();
        assert_eq!(cuts.len(), 2);
        assert_eq!(cuts[0], 4);
        assert!(cuts[1] == 6 || cuts[1] == 7, "{cuts:?}");
        // Everything in one page: no cut, unless two pages are wanted (below the root).
        assert!(
            pack_cuts(PageId(9), 4096, &cells[..3], 1)
                .unwrap()
                .is_empty()
        );
        assert_eq!(pack_cuts(PageId(9), 4096, &cells[..3], 2).unwrap().len(), 1);
    }

    #[test]
    fn a_cell_larger_than_a_page_is_corruption() {
        let (keys, bytes) = cells_of(&[5000]);
        let cells = [Cell {
            key: &keys[0],
            bytes: &bytes[0],
        }];
        assert!(matches!(
            pack_cuts(PageId(9), 4096, &cells, 1),
            Err(Error::Corrupted { .. })
        ));
    }
}
