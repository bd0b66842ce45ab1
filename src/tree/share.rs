//! Inserts into a full leaf that share its cells with a sibling instead of splitting it.
//! See FORMAT.md#node-pages ("Fill").
//!
//! Random inserts split full leaves into two half-full ones, which leaves leaves about
//! 70 % full. Moving cells into a neighbour that has room keeps the page count and fills
//! both. It writes no more pages than the split it replaces: two leaves either way (the
//! sibling copied, or the split's new page).

use super::{Grow, Pages, Put, load};
use crate::error::{Error, Result};
use crate::node::{self, Cell, Node, ShareCut, shares_with};
use crate::page::{ChildRef, PageId};
use crate::txn_pages::TxnPages;

/// Where a leaf's siblings are: its parent and its index there.
#[derive(Clone, Copy)]
pub(crate) struct Siblings {
    parent: Option<(ChildRef, usize)>,
}

/// Which neighbour a node shared its cells with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Left,
    Right,
}

impl Siblings {
    /// None: at the root, where a leaf has no siblings, and for edits that never split.
    pub(crate) const NONE: Siblings = Siblings { parent: None };

    /// The siblings of child `i` of the branch `parent`, whose children are leaves.
    pub(crate) fn of(parent: ChildRef, i: usize) -> Siblings {
        Siblings {
            parent: Some((parent, i)),
        }
    }
}

/// A share found to work, not yet carried out.
struct Plan {
    side: Side,
    sibling: ChildRef,
    /// The new cell's index in the list of both leaves' cells.
    at: usize,
    cut: ShareCut,
}

/// `cell` does not fit at slot `pos` of the dirty leaf `id`: if a sibling (the right
/// one, else the left) can take enough cells ([`shares_with`]), copies it if it is not
/// dirty yet, moves cells between the two so that they are cut evenly with the new cell
/// (no page is added) and says what became of them; `None`, changing nothing, if the
/// leaf must split.
pub(super) fn share_with_sibling(
    pages: &mut TxnPages,
    id: PageId,
    pos: usize,
    cell: Cell,
    siblings: Siblings,
) -> Result<Option<Put>> {
    let Some((parent, i)) = siblings.parent else {
        return Ok(None);
    };
    for side in [Side::Right, Side::Left] {
        if let Some(plan) = plan(pages, (parent, i), side, id, pos, cell)? {
            return share(pages, id, plan, cell).map(Some);
        }
    }
    Ok(None)
}

/// Whether the sibling of child `i` of `parent` on `side` can share with the full leaf
/// `id` taking `cell` at `pos`: the plan if so. Reads only.
fn plan(
    pages: &TxnPages,
    (parent, i): (ChildRef, usize),
    side: Side,
    id: PageId,
    pos: usize,
    cell: Cell,
) -> Result<Option<Plan>> {
    let parent = load(pages, &parent, 2)?;
    let j = match side {
        Side::Right if i < parent.len() => i + 1,
        Side::Left if i > 0 => i - 1,
        _ => return Ok(None),
    };
    let sibling = parent.child(j)?;
    if sibling.page() == id {
        return Err(Error::corrupted(id.0, "a branch references a page twice"));
    }
    let full = pages.dirty(id);
    let other = load(pages, &sibling, 1)?;
    let used = Node::parse(full, id)?.used_bytes() + cell.footprint();
    if !shares_with(used, other.used_bytes(), pages.geometry().page_size) {
        return Ok(None);
    }
    let (full, other_bytes) = ((id, full), (sibling.page(), other.bytes()));
    let ((left_id, left), (right_id, right), at) = match side {
        Side::Right => (full, other_bytes, pos),
        Side::Left => (other_bytes, full, other.len() + pos),
    };
    let cut = node::share_cut(left, left_id, right, right_id, at, cell)?;
    Ok(cut.map(|cut| Plan {
        side,
        sibling,
        at,
        cut,
    }))
}

/// Carries out `plan` for the full dirty leaf `id` and the new `cell`.
fn share(pages: &mut TxnPages, id: PageId, plan: Plan, cell: Cell) -> Result<Put> {
    // A committed sibling is verified and copied: the plan read the same bytes.
    let partner = pages.shadow(&plan.sibling)?;
    let (left_id, right_id) = match plan.side {
        Side::Right => (id, partner),
        Side::Left => (partner, id),
    };
    // Out of the map while both pages are edited, and back in before any error returns.
    let mut right = pages.take(right_id);
    let left = pages.dirty_mut(left_id);
    let shared = node::share_leaves(
        left, left_id, &mut right, right_id, plan.at, cell, &plan.cut,
    );
    pages.put(right_id, right);
    let cell_left = shared?;
    let grow = Grow::Shared(
        plan.side,
        pages.dirty_ref(left_id),
        plan.cut.sep,
        pages.dirty_ref(right_id),
    );
    Ok(Put {
        grow,
        cell_page: if cell_left { left_id } else { right_id },
    })
}
