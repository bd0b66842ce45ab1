//! Inserts into a full leaf that share its cells with a sibling instead of splitting it,
//! when the sibling is a page this transaction already made dirty. See
//! FORMAT.md#node-pages ("Fill").
//!
//! Random inserts leave leaves about 70 % full (each split leaves two half-full pages).
//! Sharing a full leaf's cells with a neighbour that has room keeps the page count and
//! fills both, so a large transaction of random inserts (a load) writes fewer, fuller
//! leaves. Only dirty neighbours are used: sharing with a committed one would copy and
//! write one more page in a commit that splits nothing otherwise.

use super::{Grow, Pages, Put};
use crate::error::{Error, Result};
use crate::node::{self, Cell, Node, shares_with};
use crate::page::{ChildRef, PageId};
use crate::txn_pages::TxnPages;

/// Where a leaf's siblings are: its parent and its index there. Only siblings this
/// transaction already made dirty (so that editing them writes no more pages) are used,
/// and those are looked up only when the leaf is full.
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

    /// The dirty sibling with the fewer used bytes, with its side and used bytes. A
    /// parent that is not dirty has no dirty children.
    fn roomiest(&self, pages: &TxnPages) -> Result<Option<(Side, PageId, usize)>> {
        let Some((parent, i)) = self.parent else {
            return Ok(None);
        };
        let parent_id = parent.page();
        if parent.txn() != pages.txn || !pages.is_dirty(parent_id) {
            return Ok(None);
        }
        let parent = Node::parse(pages.dirty(parent_id), parent_id)?;
        let mut best: Option<(Side, PageId, usize)> = None;
        for (side, j) in [(Side::Right, i + 1), (Side::Left, i.wrapping_sub(1))] {
            if j > parent.len() {
                continue;
            }
            let r = parent.child(j)?;
            let id = r.page();
            if r.txn() != pages.txn || !pages.is_dirty(id) {
                continue;
            }
            let node = Node::parse(pages.dirty(id), id)?;
            if !node.is_leaf() {
                return Err(Error::corrupted(id.0, "a leaf's sibling is not a leaf"));
            }
            let used = node.used_bytes();
            if best.is_none_or(|(_, _, b)| used < b) {
                best = Some((side, id, used));
            }
        }
        Ok(best)
    }
}

/// `cell` does not fit at slot `pos` of the dirty leaf `id`: if its roomier dirty
/// sibling can take enough cells ([`shares_with`]), moves cells between the two so that
/// they are cut evenly with the new cell (no page is added) and says what became of
/// them; `None`, changing nothing, if the leaf must split.
pub(super) fn share_with_sibling(
    pages: &mut TxnPages,
    id: PageId,
    pos: usize,
    cell: Cell,
    siblings: Siblings,
) -> Result<Option<Put>> {
    let Some((side, partner, partner_used)) = siblings.roomiest(pages)? else {
        return Ok(None);
    };
    let page_size = pages.geometry().page_size;
    let used = Node::parse(pages.dirty(id), id)?.used_bytes() + cell.footprint();
    if !shares_with(used, partner_used, page_size) {
        return Ok(None);
    }
    if partner == id {
        return Err(Error::corrupted(id.0, "a branch references a page twice"));
    }
    let (left_id, right_id, at) = match side {
        Side::Right => (id, partner, pos),
        Side::Left => {
            let before = Node::parse(pages.dirty(partner), partner)?.len();
            (partner, id, before + pos)
        }
    };
    // Out of the map while both pages are edited, and back in before any error returns.
    let mut right = pages.take(right_id);
    let shared = node::share_leaves(
        pages.dirty_mut(left_id),
        left_id,
        &mut right,
        right_id,
        at,
        cell,
    );
    pages.put(right_id, right);
    let Some((sep, cell_left)) = shared? else {
        return Ok(None);
    };
    let grow = Grow::Shared(
        side,
        pages.dirty_ref(left_id),
        sep,
        pages.dirty_ref(right_id),
    );
    Ok(Some(Put {
        grow,
        cell_page: if cell_left { left_id } else { right_id },
    }))
}
