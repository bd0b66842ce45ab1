//! Rebalancing after a remove (or an overwrite that shrinks a value): which pair of
//! sibling nodes to even out, and evening them out in place. See FORMAT.md#node-pages
//! ("Fill").

use zerocopy::IntoBytes;

use super::{Grow, Pages, attach, load, replace_pair};
use crate::error::{Error, Result};
use crate::node::{self, Evened, Node, is_sparse, is_underfull, merges_with};
use crate::page::{ChildRef, PageId};
use crate::txn_pages::TxnPages;

/// Shadows the branch `r` and puts `grow` (what became of its child `i`, which `r`
/// referenced as `was`) into it, rebalancing the child with a sibling if `may_rebalance`
/// and the child wants it ([`pair_to_rebalance`]): one step of the way back up from a
/// changed leaf. Returns what became of the branch.
pub(crate) fn attach_or_rebalance(
    pages: &mut TxnPages,
    r: &ChildRef,
    i: usize,
    was: &ChildRef,
    grow: Grow,
    may_rebalance: bool,
) -> Result<Grow> {
    let pair = match may_rebalance {
        true => pair_to_rebalance(pages, r, i, &grow)?,
        false => None,
    };
    if pair.is_none() && stays_put(pages, r, was, &grow) {
        return Ok(Grow::One(pages.dirty_ref(r.page())));
    }
    let id = pages.shadow(r)?;
    match (grow, pair) {
        (Grow::One(c), Some(a)) => {
            node::set_child(pages.dirty_mut(id), i, &c)?;
            rebalance(pages, id, a)
        }
        (grow, _) => attach(pages, id, i, grow),
    }
}

/// Whether the branch `r` is left as it is by `grow`, what became of its child `was`: the
/// child was this transaction's page before the change and still is, under the same id,
/// and `r` is this transaction's page too, so `r` references it already. Most changes
/// of a large transaction end so at every level above the leaf: shadowing `r` and
/// writing the same reference again cost a remove about 8 % of its instructions.
fn stays_put(pages: &TxnPages, r: &ChildRef, was: &ChildRef, grow: &Grow) -> bool {
    matches!(grow, Grow::One(c) if c.as_bytes() == was.as_bytes())
        && pages.is_own(was)
        && pages.is_own(r)
}

/// Which pair of children of the branch `r` to rebalance after a remove (or a shrinking
/// overwrite) made its child `i` into `grow`: `Some(a)` for children `a` and `a + 1`.
/// An underfull child is paired with its right sibling (the left one for the last
/// child); a sparse leaf with whichever of the two, right first, fits with it in seven
/// eighths of a page, or with none (FORMAT.md#node-pages, "Fill"). Trying both sides
/// matters when many keys go: a leaf whose last remove came early is merged by its
/// left neighbour's later removes. Reads the siblings, changes nothing.
fn pair_to_rebalance(
    pages: &TxnPages,
    r: &ChildRef,
    i: usize,
    grow: &Grow,
) -> Result<Option<usize>> {
    let Grow::One(c) = grow else {
        return Ok(None);
    };
    let page_size = pages.geometry().page_size;
    let node = Node::parse(pages.dirty(c.page()), c.page())?;
    let used = node.used_bytes();
    let underfull = is_underfull(used, page_size);
    if !(underfull || node.is_leaf() && is_sparse(used, page_size)) {
        return Ok(None);
    }
    let parent = Node::parse(pages.page(r.page())?, r.page())?;
    let n = parent.len();
    if n == 0 {
        return Ok(None); // A root with a single child: collapse_root handles it.
    }
    if underfull {
        return Ok(Some(if i < n { i } else { i - 1 }));
    }
    let fits = |j: usize| -> Result<bool> {
        let sibling = load(pages, &parent.child(j)?, 1)?;
        Ok(merges_with(used, sibling.used_bytes(), page_size))
    };
    if i < n && fits(i + 1)? {
        return Ok(Some(i));
    }
    if i > 0 && fits(i - 1)? {
        return Ok(Some(i - 1));
    }
    Ok(None)
}

/// Whether what became of a node (a dirty page) leaves it underfull, so its parent
/// rebalances it.
pub(crate) fn is_underfull_now(pages: &TxnPages, grow: &Grow) -> Result<bool> {
    Ok(match grow {
        Grow::One(r) => {
            let node = Node::parse(pages.dirty(r.page()), r.page())?;
            is_underfull(node.used_bytes(), pages.geometry().page_size)
        }
        Grow::Split(..) | Grow::Shared(..) => false,
    })
}

/// Children `a` and `a + 1` of dirty branch `parent` are to be evened out
/// ([`pair_to_rebalance`]): merges them, or shares cells between them as a split of all
/// their cells would, editing both pages (dirty after shadowing) in place.
fn rebalance(pages: &mut TxnPages, parent: PageId, a: usize) -> Result<Grow> {
    let (ra, rb, sep) = {
        let node = Node::parse(pages.dirty(parent), parent)?;
        (node.child(a)?, node.child(a + 1)?, node.key(a)?.to_vec())
    };
    let ida = pages.shadow(&ra)?;
    let idb = pages.shadow(&rb)?;
    if ida == idb || ida == parent || idb == parent {
        return Err(Error::corrupted(
            parent.0,
            "a branch references a page twice",
        ));
    }
    // Out of the map while both pages are edited, and back in before any error returns.
    let mut right = pages.take(idb);
    let evened = node::even_out(pages.dirty_mut(ida), ida, &sep, &mut right, idb);
    pages.put(idb, right);
    let evened = evened?;
    let (ref_a, ref_b) = (pages.dirty_ref(ida), pages.dirty_ref(idb));
    match evened {
        Evened::Merged => {
            let p = pages.dirty_mut(parent);
            node::remove_cell(p, parent, a)?;
            node::set_child(p, a, &ref_a)?;
            pages.free_page(&ref_b)?;
            Ok(Grow::One(pages.dirty_ref(parent)))
        }
        Evened::Shared(new_sep) => replace_pair(pages, parent, a, &ref_a, &new_sep, &ref_b),
    }
}
