//! Fences: the keys a node may hold, from the keys of its ancestors. A child of a branch
//! holds keys `>=` the branch key on its left and `<` the one on its right; nested
//! branches narrow the range, and the root has none (FORMAT.md#invariants).
//!
//! `check` verifies every node against its fences. The write paths that act on a key
//! range without reading each key, `remove_range` (which frees whole subtrees by their
//! fences) and `retain` (which steps from leaf to leaf by them), verify each node they
//! reach too: a crafted parent that lists its children in the wrong order would
//! otherwise make them delete keys outside the range, or skip keys, without an error.

use crate::error::{Error, Result};
use crate::node::Node;

/// Checks that every key of `node` (a leaf's keys, a branch's separators) is `>= lower`
/// and `< upper` (None: unbounded), by the first and the last: they bound the others if
/// the keys ascend. `check` and a copy for editing verify that; a node freed whole is
/// not read key by key, so one crafted out of order inside can still lose keys outside
/// its fences (FORMAT.md, "The write path trusts nothing").
pub(crate) fn check_within(node: &Node, lower: Option<&[u8]>, upper: Option<&[u8]>) -> Result<()> {
    let Some(last) = node.len().checked_sub(1) else {
        return Ok(());
    };
    let (first_key, last_key) = (node.key(0)?, node.key(last)?);
    if lower.is_some_and(|l| first_key < l) || upper.is_some_and(|u| last_key >= u) {
        return Err(Error::corrupted(
            node.id().0,
            "a key outside its parent's range",
        ));
    }
    Ok(())
}

/// A node's fences, owned, so that no page stays borrowed while the tree is edited.
#[derive(Clone, Debug, Default)]
pub(crate) struct Fences {
    lower: Option<Vec<u8>>,
    upper: Option<Vec<u8>>,
}

impl Fences {
    /// The root's: none.
    pub(crate) fn root() -> Fences {
        Fences::default()
    }

    /// Every key below is `>=` this (None: unbounded).
    pub(crate) fn lower(&self) -> Option<&[u8]> {
        self.lower.as_deref()
    }

    /// Every key below is `<` this (None: unbounded).
    pub(crate) fn upper(&self) -> Option<&[u8]> {
        self.upper.as_deref()
    }

    /// Checks that `node`'s keys lie within these fences.
    pub(crate) fn check(&self, node: &Node) -> Result<()> {
        check_within(node, self.lower(), self.upper())
    }

    /// The fences of child `i` of the branch `node` these fences belong to. With `node`
    /// checked against them, the child's lie within them.
    pub(crate) fn child(&self, node: &Node, i: usize) -> Result<Fences> {
        let (lower, upper) = child_fences(node, i, self.lower(), self.upper())?;
        Ok(Fences {
            lower: lower.map(<[u8]>::to_vec),
            upper: upper.map(<[u8]>::to_vec),
        })
    }
}

/// A node's fences, borrowed from its ancestors' pages: (lower, upper).
pub(crate) type Borrowed<'k> = (Option<&'k [u8]>, Option<&'k [u8]>);

/// The fences of child `i` of the branch `node`, whose own are `lower` and `upper`: the
/// branch keys on either side of it, or the branch's own fence at either end.
pub(crate) fn child_fences<'k>(
    node: &Node<'k>,
    i: usize,
    lower: Option<&'k [u8]>,
    upper: Option<&'k [u8]>,
) -> Result<Borrowed<'k>> {
    let lower = match i {
        0 => lower,
        _ => Some(node.key(i - 1)?),
    };
    let upper = match i == node.len() {
        true => upper,
        false => Some(node.key(i)?),
    };
    Ok((lower, upper))
}
