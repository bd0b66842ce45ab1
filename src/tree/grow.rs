//! What a changed node hands its parent, and the parent's side of it: a node that
//! outgrows its page splits in two, and the parent takes the new page (or the pair a
//! full leaf shared its cells with, `share.rs`), splitting in turn; a root that splits
//! gets a new root above it. See FORMAT.md#node-pages.

use zerocopy::little_endian::U32;

use super::share::Side;
use super::{DEPTH_MAX, Pages, TreeRecord};
use crate::error::{Error, Result};
use crate::node::{self, Cell, Node, Run, encode_branch_cell};
use crate::page::{ChildRef, PageId, PageKind};
use crate::txn_pages::TxnPages;

/// What a changed node hands its parent.
pub(crate) enum Grow {
    /// The node (possibly at a new page id after shadowing).
    One(ChildRef),
    /// The node became two; keys `>= separator` are in the right one. With a run: the
    /// node was cut at its edge for a run of inserts going that way (the old cells
    /// stayed together, the new one's page is at the edge: the right one going up, the
    /// left one going down), so its parent, if the node is its child at the same edge,
    /// cuts there too (`node::run_cut`).
    Split(ChildRef, Vec<u8>, ChildRef, Option<Run>),
    /// A full leaf shared its cells with the sibling on that side instead of splitting:
    /// the pair is now the left page, the separator, the right page (`src/tree/share.rs`).
    Shared(Side, ChildRef, Vec<u8>, ChildRef),
}

pub(crate) fn set_root(pages: &mut TxnPages, tree: &mut TreeRecord, grow: Grow) -> Result<()> {
    match grow {
        Grow::One(r) => tree.root = r,
        Grow::Shared(..) => {
            return Err(Error::corrupted(
                tree.root.page.get(),
                "a root shared its cells with a sibling",
            ));
        }
        Grow::Split(left, sep, right, _) => {
            if tree.depth.get() >= DEPTH_MAX {
                return Err(Error::corrupted(
                    left.page.get(),
                    "tree grew past the depth limit",
                ));
            }
            let mut cell = Vec::new();
            encode_branch_cell(&mut cell, &sep, &right);
            let txn = pages.txn;
            let (id, page) = pages.alloc_page();
            let cells = [Cell {
                key: &sep,
                bytes: &cell,
            }];
            node::build(page, PageKind::Branch, txn, Some(&left), &cells);
            tree.root = pages.dirty_ref(id);
            tree.depth = U32::new(tree.depth.get() + 1);
        }
    }
    Ok(())
}

/// Puts `grow` (what became of child `i`) into the dirty branch `id`.
pub(super) fn attach(pages: &mut TxnPages, id: PageId, i: usize, grow: Grow) -> Result<Grow> {
    match grow {
        Grow::One(r) => {
            node::set_child(pages.dirty_mut(id), i, &r)?;
            Ok(Grow::One(pages.dirty_ref(id)))
        }
        Grow::Split(left, sep, right, edge) => {
            let p = pages.dirty_mut(id);
            node::set_child(p, i, &left)?;
            let len = Node::parse(p, id)?.len();
            // The run goes on at this branch's edge only if the child was at that edge.
            let run = edge.filter(|run| match run {
                Run::Up => i == len,
                Run::Down => i == 0,
            });
            put_branch_cell(pages, id, i, &sep, &right, run)
        }
        Grow::Shared(side, left, sep, right) => {
            let first = match side {
                Side::Right => Some(i),
                Side::Left => i.checked_sub(1),
            };
            let first = first.ok_or_else(|| {
                Error::corrupted(id.0, "the first child shared cells with its left sibling")
            })?;
            replace_pair(pages, id, first, &left, &sep, &right)
        }
    }
}

/// Children `first` and `first + 1` of the dirty branch `id` became `left` and `right`,
/// separated by `sep`: puts them in place of the old pair and its separator.
pub(super) fn replace_pair(
    pages: &mut TxnPages,
    id: PageId,
    first: usize,
    left: &ChildRef,
    sep: &[u8],
    right: &ChildRef,
) -> Result<Grow> {
    let p = pages.dirty_mut(id);
    node::remove_cell(p, id, first)?;
    node::set_child(p, first, left)?;
    put_branch_cell(pages, id, first, sep, right, None)
}

/// Inserts the cell of separator `sep` and child `right` at slot `pos` of the dirty
/// branch `id` (`put_cell`, splitting it if full).
///
/// `sep` must lie strictly between the branch's keys either side of `pos`. It was taken
/// from the child's keys, which a point insert or remove never checks against the range
/// the branch gives the child (FORMAT.md#the-write-path-trusts-nothing): a misplaced key
/// in a crafted child would otherwise make the branch unsorted, and keys of its other
/// children unreachable.
fn put_branch_cell(
    pages: &mut TxnPages,
    id: PageId,
    pos: usize,
    sep: &[u8],
    right: &ChildRef,
    run: Option<Run>,
) -> Result<Grow> {
    let node = Node::parse(pages.dirty(id), id)?;
    let above = match pos.checked_sub(1) {
        Some(i) => node.key(i)? < sep,
        None => true,
    };
    let below = pos == node.len() || sep < node.key(pos)?;
    if !(above && below) {
        return Err(Error::corrupted(
            id.0,
            "a separator from a child lies outside the range its branch gives it",
        ));
    }
    let mut cell = Vec::new();
    encode_branch_cell(&mut cell, sep, right);
    let cell = Cell {
        key: sep,
        bytes: &cell,
    };
    Ok(put_cell(pages, id, PageKind::Branch, pos, cell, run)?.grow)
}

/// What `put_cell` did.
pub(super) struct Put {
    /// What became of the node.
    pub(super) grow: Grow,
    /// Leaves: the page that took the new cell.
    pub(super) cell_page: PageId,
}

/// Inserts `cell` at slot `pos` of dirty node `id`, splitting it if it is full: at the
/// insertion point if the insert continues a `run` and such a cut fits, else evenly.
pub(super) fn put_cell(
    pages: &mut TxnPages,
    id: PageId,
    kind: PageKind,
    pos: usize,
    cell: Cell,
    run: Option<Run>,
) -> Result<Put> {
    if node::insert_cell(pages.dirty_mut(id), id, kind, pos, cell)? {
        return Ok(Put {
            grow: Grow::One(pages.dirty_ref(id)),
            cell_page: id,
        });
    }
    let old = pages.take(id);
    let page_size = pages.geometry().page_size;
    let ((left, sep, right), cut, edge) = {
        let node = Node::parse(&old, id)?;
        let mut cells = (0..node.len())
            .map(|i| node.cell(i))
            .collect::<Result<Vec<_>>>()?;
        cells.insert(pos, cell);
        let leftmost = (kind == PageKind::Branch)
            .then(|| node.child(0))
            .transpose()?;
        let run_cut = run.and_then(|r| node::run_cut(kind, page_size, &cells, pos, r));
        // Cut at the edge: the new cell alone on its side (branches are cut for a run
        // only at their edge).
        let edge = match (kind, run, run_cut) {
            (_, _, None) => None,
            (PageKind::Leaf, Some(Run::Up), Some(at)) if at == pos && at + 1 == cells.len() => {
                Some(Run::Up)
            }
            (PageKind::Leaf, Some(Run::Down), Some(1)) if pos == 0 => Some(Run::Down),
            (PageKind::Leaf, ..) => None,
            (_, run, Some(_)) => run,
        };
        let buffers = [pages.blank_page(), pages.blank_page()];
        let txn = pages.txn;
        let (two, cut) =
            node::build_two(id, kind, txn, leftmost.as_ref(), &cells, run_cut, buffers)?;
        (two, cut, edge)
    };
    pages.recycle(old);
    pages.put(id, left);
    let right_id = pages.add_page(right);
    Ok(Put {
        grow: Grow::Split(pages.dirty_ref(id), sep, pages.dirty_ref(right_id), edge),
        cell_page: if pos < cut { id } else { right_id },
    })
}
