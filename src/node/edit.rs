//! Building and editing dirty node pages: empty nodes, cells placed, inserted and removed
//! in place, compaction of the cell area, and the two-way split point shared by inserts,
//! the bulk loader and compaction.

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, IntoBytes};

use super::*;
use crate::page_buf::PageBox;

/// Makes `page` an empty node of `kind` written by `txn`.
pub(crate) fn init(page: &mut [u8], kind: PageKind, txn: TxnId) {
    let len = page.len();
    page[..slots_start(kind)].fill(0);
    let h = NodeHeader::mut_from_prefix(page).expect("page size").0;
    h.page.kind = kind as u8;
    h.page.txn = U64::new(txn.0);
    h.cells_start = U32::new(len as u32);
}

/// A dirty node's slot count, lowest cell offset and hole bytes.
#[inline]
fn layout(page: &mut [u8]) -> (usize, usize, usize) {
    let h = node_header_mut(page);
    (
        h.page.count.get() as usize,
        h.cells_start.get() as usize,
        h.frag_bytes.get() as usize,
    )
}

#[inline]
pub(super) fn node_header_mut(page: &mut [u8]) -> &mut NodeHeader {
    NodeHeader::mut_from_prefix(page).expect("page size").0
}

pub(crate) fn set_leftmost(page: &mut [u8], child: &ChildRef) {
    page[NODE_HEADER_BYTES..NODE_HEADER_BYTES + 20].copy_from_slice(child.as_bytes());
}

/// Branch: replaces child `i` (0 = leftmost).
pub(crate) fn set_child(page: &mut [u8], i: usize, child: &ChildRef) -> Result<()> {
    let count = Node::parse(page, PageId(0))?.len();
    child_ref_bytes(page, PageId(0), count, i)?.copy_from_slice(child.as_bytes());
    Ok(())
}

/// Branch: replaces each child reference `r`, leftmost first, with `f(i, r)`, in one
/// pass over the page (`set_child` for each would parse the page for each).
pub(crate) fn replace_children(
    page: &mut [u8],
    id: PageId,
    mut f: impl FnMut(usize, ChildRef) -> Result<ChildRef>,
) -> Result<()> {
    let count = Node::parse(page, id)?.len();
    for i in 0..=count {
        let bytes = child_ref_bytes(page, id, count, i)?;
        let child = ChildRef::read_from_bytes(bytes).expect("ref size");
        bytes.copy_from_slice(f(i, child)?.as_bytes());
    }
    Ok(())
}

/// Branch: the bytes of child `i`'s reference (0: the leftmost, in the header; else the
/// start of slot `i - 1`'s cell), of a page whose header `parse` accepted with `count`
/// slots.
fn child_ref_bytes(page: &mut [u8], id: PageId, count: usize, i: usize) -> Result<&mut [u8]> {
    assert!(i <= count, "child {i} of a branch with {count} slots");
    let at = match i {
        0 => NODE_HEADER_BYTES,
        _ => {
            // In bounds: parse checked that the slots end before the cells.
            let slot_at = slots_start(PageKind::Branch) + (i - 1) * SLOT_BYTES;
            let slot = Slot::ref_from_bytes(&page[slot_at..slot_at + SLOT_BYTES]);
            slot.expect("slot size").offset.get() as usize
        }
    };
    page.get_mut(at..at + BRANCH_CELL_HEADER_BYTES)
        .ok_or_else(|| Error::corrupted(id.0, format!("child {i} at {at} out of bounds")))
}

/// Appends a cell after the existing slots (cells must arrive in key order) of a page
/// being built. Returns false, changing nothing, if it does not fit contiguously.
pub(crate) fn push_cell(page: &mut [u8], kind: PageKind, cell: Cell) -> bool {
    let count = header(page).count.get() as usize;
    place_cell(page, kind, count, cell)
}

/// `push_cell`, unless the node would then use more than `used_max` bytes (header, slots
/// and live cells, as `Node::used_bytes`): the bulk loader's fill factor. An empty node
/// takes any cell that fits, so every page holds at least one.
pub(crate) fn push_cell_within(
    page: &mut [u8],
    kind: PageKind,
    cell: Cell,
    used_max: usize,
) -> bool {
    let (count, cells_start, frag) = layout(page);
    let used = slots_start(kind) + count * SLOT_BYTES + page.len() - cells_start - frag;
    if count > 0 && used + cell.footprint() > used_max {
        return false;
    }
    push_cell(page, kind, cell)
}

/// Leaf: appends `key` → inline `value` after the existing slots, encoding the cell in
/// place (the bulk loader's hot path: `encode_leaf_cell` + `push_cell_within` without
/// the intermediate copy). Returns false, changing nothing, where `push_cell_within`
/// would, or if the cell does not fit contiguously (holes: use `push_cell_within`).
#[inline]
pub(crate) fn push_inline_within(
    page: &mut [u8],
    key: &[u8],
    value: &[u8],
    used_max: usize,
    align: ValueAlign,
) -> bool {
    let (count, cells_start, frag) = layout(page);
    let slots_end = slots_start(PageKind::Leaf) + count * SLOT_BYTES;
    let cell_len = inline_cell_len(key.len(), value.len(), align);
    let need = SLOT_BYTES + cell_len;
    let used = slots_end + page.len() - cells_start - frag;
    if (count > 0 && used + need > used_max) || cells_start - slots_end < need {
        return false;
    }
    let at = cells_start - cell_len;
    write_inline_cell(&mut page[at..cells_start], key, value, align);
    prefix::admit(page, PageKind::Leaf, key);
    write_slot(page, slots_end, key, at);
    let h = node_header_mut(page);
    h.page.count = U16::new(count as u16 + 1);
    h.cells_start = U32::new(at as u32);
    true
}

/// The key of a dirty leaf's last slot (None if it has none): the bulk loader checks the
/// order of its input against it instead of keeping a copy of the previous key.
#[inline]
pub(crate) fn last_leaf_key(page: &[u8]) -> Option<&[u8]> {
    let h = NodeHeader::ref_from_prefix(page).expect("page size").0;
    let count = h.page.count.get() as usize;
    let at = slots_start(PageKind::Leaf) + count.checked_sub(1)? * SLOT_BYTES;
    let slot = Slot::ref_from_bytes(&page[at..at + SLOT_BYTES]).expect("slot size");
    let key_at = slot.offset.get() as usize + LEAF_CELL_HEADER_BYTES;
    Some(&page[key_at..key_at + slot.key_len.get() as usize])
}

/// Zeroes the free space between the slots and the cells, so that a page built in a
/// reused buffer holds nothing but its own content.
pub(crate) fn zero_free_space(page: &mut [u8], kind: PageKind) {
    let (count, cells_start) = {
        let h = node_header_mut(page);
        (h.page.count.get() as usize, h.cells_start.get() as usize)
    };
    page[slots_start(kind) + count * SLOT_BYTES..cells_start].fill(0);
}

/// Inserts `cell` at slot `i` of dirty node `id`, compacting the page first if holes
/// make that necessary. `Ok(false)`, changing nothing, if the page is too full.
pub(crate) fn insert_cell(
    page: &mut [u8],
    id: PageId,
    kind: PageKind,
    i: usize,
    cell: Cell,
) -> Result<bool> {
    if place_cell(page, kind, i, cell) {
        return Ok(true);
    }
    let (count, cells_start, frag) = layout(page);
    let gap = cells_start - (slots_start(kind) + count * SLOT_BYTES);
    if gap + frag < cell.footprint() {
        return Ok(false);
    }
    compact(page, id, kind)?;
    Ok(place_cell(page, kind, i, cell))
}

/// Inserts `cell` at slot `i` if it fits between the slots and the cells; false,
/// changing nothing, if not.
fn place_cell(page: &mut [u8], kind: PageKind, i: usize, cell: Cell) -> bool {
    let (count, cells_start, _) = layout(page);
    let slots_end = slots_start(kind) + count * SLOT_BYTES;
    if cells_start - slots_end < cell.footprint() {
        return false;
    }
    prefix::admit(page, kind, cell.key);
    let at = cells_start - cell.bytes.len();
    page[at..cells_start].copy_from_slice(cell.bytes);
    let slot_at = slots_start(kind) + i * SLOT_BYTES;
    page.copy_within(slot_at..slots_end, slot_at + SLOT_BYTES);
    write_slot(page, slot_at, cell.key, at);
    let h = node_header_mut(page);
    h.page.count = U16::new(count as u16 + 1);
    h.cells_start = U32::new(at as u32);
    true
}

/// Writes the slot at byte `slot_at` for a cell with `key` at offset `cell_at`; `key`
/// shares the bytes the page's slot prefixes skip (`prefix::admit` saw to it).
pub(super) fn write_slot(page: &mut [u8], slot_at: usize, key: &[u8], cell_at: usize) {
    let skip = prefix::skip_of(page);
    let slot = Slot {
        prefix: prefix_bytes(prefix::past_skip(key, skip)),
        offset: U16::new(cell_at as u16),
        key_len: U16::new(key.len() as u16),
    };
    page[slot_at..slot_at + SLOT_BYTES].copy_from_slice(slot.as_bytes());
}

/// Overwrites the cell of slot `i` with `cell` in place if the two have the same key and
/// length (an overwrite by a value of the same size, or of one large value by another):
/// slot, offset and alignment stay as they are. False, changing nothing, otherwise. A
/// remove and an insert would need room for the new cell before the old one's hole is
/// reclaimed, which a full leaf has not: they compacted it about every other time.
pub(crate) fn replace_cell(page: &mut [u8], id: PageId, i: usize, cell: Cell) -> Result<bool> {
    let node = Node::parse(page, id)?;
    let old = node.cell(i)?;
    if old.key != cell.key || old.bytes.len() != cell.bytes.len() {
        return Ok(false);
    }
    // `cell` checked that the cell lies in the page.
    let at = node.slot(i).offset.get() as usize;
    page[at..at + cell.bytes.len()].copy_from_slice(cell.bytes);
    Ok(true)
}

/// Removes slot `i`; its cell becomes a hole (counted in `frag_bytes`).
pub(crate) fn remove_cell(page: &mut [u8], id: PageId, i: usize) -> Result<()> {
    siblings::remove_range(page, id, i..i + 1)
}

/// Rewrites the page with its cells packed against the end and no holes. Their sizes
/// were accounted for in the header (`Node::verify`), so they fit; if they do
/// not, the page lied about its cells.
pub(super) fn compact(page: &mut [u8], id: PageId, kind: PageKind) -> Result<()> {
    let old = page.to_vec();
    let node = Node::parse(&old, id)?;
    let txn = node.txn();
    let leftmost = (kind == PageKind::Branch)
        .then(|| node.child(0))
        .transpose()?;
    init(page, kind, txn);
    // The same cells in the same slots: the insert hint still holds.
    Hint::of(&old).write(page);
    if let Some(l) = leftmost {
        set_leftmost(page, &l);
    }
    for i in 0..node.len() {
        if !push_cell(page, kind, node.cell(i)?) {
            return Err(Error::corrupted(
                id.0,
                "cells overlap: they do not fit once compacted",
            ));
        }
    }
    Ok(())
}

/// How a list of cells that overflows one page is cut into two.
pub(crate) struct TwoWay {
    /// Leaves: the first cell of the right page. Branches: the cell whose key moves up
    /// to the parent and whose child becomes the right page's leftmost child.
    pub at: usize,
}

/// Chooses the most even cut of `len` cells, the footprint of cell `j` (slot and cell
/// bytes) being `footprint(j)`, into two pages that both fit. Leaves keep every cell;
/// branches move the cut cell up. With cells at most `cell_bytes_max`, a cut always
/// exists; only cells from a corrupt page `id` can leave none.
pub(crate) fn split_point(
    id: PageId,
    kind: PageKind,
    page_size: usize,
    len: usize,
    footprint: impl Fn(usize) -> Result<usize>,
) -> Result<TwoWay> {
    let room = page_size - slots_start(kind);
    let mut total = 0;
    for j in 0..len {
        total += footprint(j)?;
    }
    let mut best: Option<(usize, usize)> = None;
    let mut left = 0;
    for at in 0..len {
        let size = footprint(at)?;
        let right = match kind {
            PageKind::Leaf => total - left,
            _ => total - left - size,
        };
        let valid_cut = at > 0 && (kind == PageKind::Leaf || at + 1 < len);
        if valid_cut && left <= room && right <= room {
            let skew = left.abs_diff(right);
            if best.is_none_or(|(_, s)| skew < s) {
                best = Some((at, skew));
            }
        }
        left += size;
    }
    let (at, _) = best.ok_or_else(|| {
        Error::corrupted(
            id.0,
            format!(
                "no two-way split of {len} cells ({total} bytes) in {kind:?} pages of {page_size}"
            ),
        )
    })?;
    Ok(TwoWay { at })
}

/// The shortest key `s` with `left < s <= right`, given `left < right`: branch pages
/// keep only as many bytes as separate two children.
pub(crate) fn separator<'k>(left: &[u8], right: &'k [u8]) -> &'k [u8] {
    let common = left.iter().zip(right).take_while(|(a, b)| a == b).count();
    &right[..(common + 1).min(right.len())]
}

/// Writes a fresh node holding `cells` in order (they must fit) over every byte of
/// `page`, whatever it held (a recycled buffer: [`TxnPages::blank_page`]).
///
/// [`TxnPages::blank_page`]: crate::txn_pages::TxnPages::blank_page
pub(crate) fn build(
    page: &mut [u8],
    kind: PageKind,
    txn: TxnId,
    leftmost: Option<&ChildRef>,
    cells: &[Cell],
) {
    init(page, kind, txn);
    if let Some(l) = leftmost {
        set_leftmost(page, l);
    }
    for c in cells {
        assert!(push_cell(page, kind, *c), "build: cells do not fit");
    }
    zero_free_space(page, kind);
}

/// A node cut in two: the left page, the key that separates them, the right page.
pub(crate) type TwoPages = (PageBox, Vec<u8>, PageBox);

/// Cuts `cells` (too many for one page) into two new pages, at `cut` if given (a cut
/// that fits, from `run_cut`), else where `split_point` puts it; returns them with the
/// key that separates them and the cut. Branches move the cut cell's key up and its
/// child becomes the right page's leftmost. The pages are built in `buffers`, whatever
/// they held (both a page long).
pub(crate) fn build_two(
    id: PageId,
    kind: PageKind,
    txn: TxnId,
    leftmost: Option<&ChildRef>,
    cells: &[Cell],
    cut: Option<usize>,
    [mut left, mut right]: [PageBox; 2],
) -> Result<(TwoPages, usize)> {
    let page_size = left.len();
    let cut = match cut {
        Some(at) => at,
        None => {
            split_point(id, kind, page_size, cells.len(), |j| {
                Ok(cells[j].footprint())
            })?
            .at
        }
    };
    let (sep, right_leftmost, right_cells) = match kind {
        PageKind::Leaf => (
            separator(cells[cut - 1].key, cells[cut].key).to_vec(),
            None,
            &cells[cut..],
        ),
        _ => (
            cells[cut].key.to_vec(),
            Some(cells[cut].child()),
            &cells[cut + 1..],
        ),
    };
    build(&mut left, kind, txn, leftmost, &cells[..cut]);
    build(&mut right, kind, txn, right_leftmost.as_ref(), right_cells);
    Ok(((left, sep, right), cut))
}

/// Whether a full leaf using `used_bytes` with a new cell (headers, slots and the cell
/// counted) and a sibling leaf using `sibling_used_bytes` fit in two pages filled to
/// seven eighths on average: then the insert shares the cells between the two instead of
/// splitting. Each page keeps about an eighth free for the next inserts; the two hold
/// more than a page, so no remove merges them back at once ([`merges_with`]).
pub(crate) fn shares_with(used_bytes: usize, sibling_used_bytes: usize, page_size: usize) -> bool {
    used_bytes + sibling_used_bytes <= page_size / 4 * 7
}

/// A node is underfull below a quarter page; removes rebalance such nodes.
pub(crate) fn is_underfull(used_bytes: usize, page_size: usize) -> bool {
    used_bytes < page_size / 4
}

/// A leaf is sparse below half a page: a remove merges it with its sibling if
/// [`merges_with`] says so.
pub(crate) fn is_sparse(used_bytes: usize, page_size: usize) -> bool {
    used_bytes < page_size / 2
}

/// Whether two sibling leaves using `used_bytes` and `sibling_used_bytes` (headers and
/// slots included) fit in seven eighths of a page together: merged, they leave an eighth
/// free, so the next few inserts do not split them again at once, and the two halves of
/// a split (half a page each) need an eighth of a page removed before they merge again.
pub(crate) fn merges_with(used_bytes: usize, sibling_used_bytes: usize, page_size: usize) -> bool {
    used_bytes + sibling_used_bytes - slots_start(PageKind::Leaf) <= page_size / 8 * 7
}
