//! Appending a key past the tree's last: down the rightmost edge without a search, the
//! new entry at the end of the last leaf, and every full node on the way cut at the
//! insertion point (the old cells stay full on the left). See FORMAT.md#insert-hints.

use zerocopy::little_endian::U64;

use super::{
    Pages, Siblings, TreeRecord, attach, check_sizes, insert, load, put_new_key, set_root,
};
use crate::error::{Error, Result};
use crate::node::{self, Node, Run, encode_leaf_cell};
use crate::page::ChildRef;
use crate::txn_pages::TxnPages;

/// Inserts `key` → `value` after the tree's last entry. `Error::Unsorted` with `index`
/// the tree's entry count (where the entry would have gone in a sorted input) if `key`
/// is not greater than the last key; nothing changes then.
pub(crate) fn append(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    let g = pages.geometry();
    check_sizes(&g, tree.value_align(), key, value.len() as u64)?;
    if tree.root.is_null() {
        return insert(pages, tree, key, value);
    }
    // Checked before anything is written (a large value's blob included), so that a
    // refused key leaves the transaction as it was.
    let path = rightmost_path(&*pages, tree, key)?;
    let entries = tree.entries.get().checked_add(1).ok_or_else(|| {
        Error::corrupted(tree.root.page.get(), "tree record counts 2^64 - 1 entries")
    })?;
    let stored = super::store_value(pages, tree, key, value)?;
    let mut cell = std::mem::take(&mut pages.scratch);
    encode_leaf_cell(&mut cell, key, &stored, tree.value_align());
    let result = append_cell(pages, tree, &path, node::Cell { key, bytes: &cell });
    pages.scratch = cell;
    result?;
    tree.entries = U64::new(entries);
    Ok(())
}

/// The references from the root down the rightmost edge to the last leaf, once `key`
/// is known to belong after the last key. A last key below a separator on the way, or
/// an empty leaf under a branch, is a corrupt tree: appending there would seal a
/// misplaced key with a valid checksum.
fn rightmost_path<P: Pages + ?Sized>(
    pages: &P,
    tree: &TreeRecord,
    key: &[u8],
) -> Result<Vec<ChildRef>> {
    let mut path = Vec::with_capacity(tree.depth.get() as usize);
    let mut r = tree.root;
    let mut levels = tree.depth.get();
    // The greatest separator on the way: every key of the last leaf is at least this.
    let mut lower: Option<&[u8]> = None;
    loop {
        path.push(r);
        let node: Node = load(pages, &r, levels)?;
        let Some(last) = node.len().checked_sub(1) else {
            if node.is_leaf() && levels == tree.depth.get() {
                return Ok(path); // an empty root leaf: any key goes
            }
            return Err(Error::corrupted(
                node.id().0,
                format!("empty {:?} page below the root", node.kind()),
            ));
        };
        let last_key = node.key(last)?;
        if lower.is_some_and(|l| last_key < l) {
            return Err(Error::corrupted(
                node.id().0,
                "a key below its parent's separator",
            ));
        }
        if node.is_leaf() {
            if key <= last_key {
                return Err(Error::Unsorted {
                    index: tree.entries.get(),
                });
            }
            return Ok(path);
        }
        lower = Some(last_key);
        r = node.child(last + 1)?;
        levels -= 1;
    }
}

/// Puts `cell` at the end of the leaf at the bottom of `path`, then the split, if any,
/// into each branch above it as its last child; every split is cut at the insertion
/// point.
fn append_cell(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    path: &[ChildRef],
    cell: node::Cell,
) -> Result<()> {
    let (leaf, branches) = path.split_last().expect("a path has a leaf");
    let id = pages.shadow(leaf)?;
    let end = Node::parse(pages.dirty(id), id)?.len();
    let mut grow = put_new_key(pages, id, end, cell, Some(Run::Up), Siblings::NONE)?;
    for r in branches.iter().rev() {
        let id = pages.shadow(r)?;
        let last = Node::parse(pages.dirty(id), id)?.len();
        grow = attach(pages, id, last, grow)?;
    }
    set_root(pages, tree, grow)
}
