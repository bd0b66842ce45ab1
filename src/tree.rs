//! B-tree operations on one tree: lookups, copy-on-write inserts and removes with splits
//! and merges, freeing a whole tree, and sealing the checksums of a commit's new pages
//! bottom-up. See FORMAT.md#node-pages.

use std::mem::size_of;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::fences::Fences;
use crate::node::{
    self, Cell, Hint, LeafValue, Node, OverflowRef, Run, ValueAlign, encode_leaf_cell,
    prefetch_head,
};
use crate::page::{ChildRef, Geometry, PageId, PageKind, VALUE_LEN_MAX, seal};
use crate::tree_options::TreeOptions;
use crate::txn_pages::TxnPages;

mod append;
mod grow;
mod rebalance;
mod share;

pub(crate) use append::append;
pub(crate) use grow::{Grow, set_root};
use grow::{Put, attach, put_cell, replace_pair};
pub(crate) use rebalance::{attach_or_rebalance, is_underfull_now};
use share::{Siblings, share_with_sibling};

/// No tree is deeper than this; a descent that goes further has met a cycle in a corrupt
/// file. Branch fan-out is at least 3, so 3^40 leaves is far beyond any file.
pub(crate) const DEPTH_MAX: u32 = 40;

/// Where a tree lives: the catalog's value for each tree name, and the catalog itself in
/// the meta page. See FORMAT.md#tree-record.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct TreeRecord {
    /// The root page, or null for an empty tree.
    pub root: ChildRef,
    pub entries: U64,
    /// Levels from the root to the leaves (1 = the root is a leaf; 0 = empty).
    pub depth: U32,
    /// The tree's options (`TreeOptions::encode`): value alignment, typed layout.
    pub values: U32,
}
pub(crate) const TREE_RECORD_BYTES: usize = size_of::<TreeRecord>();
const _: () = assert!(TREE_RECORD_BYTES == 36);

impl TreeRecord {
    pub(crate) const EMPTY: TreeRecord = TreeRecord {
        root: ChildRef::NULL,
        entries: U64::ZERO,
        depth: U32::ZERO,
        values: U32::ZERO,
    };

    /// An empty tree with the options of `self`.
    pub(crate) fn emptied(&self) -> TreeRecord {
        TreeRecord {
            values: self.values,
            ..TreeRecord::EMPTY
        }
    }

    /// The options the tree was created with (checked by `decode`).
    pub(crate) fn options(&self) -> TreeOptions {
        TreeOptions::decode(self.values.get()).unwrap_or_default()
    }

    /// Where a value stored in this tree must start.
    pub(crate) fn value_align(&self) -> ValueAlign {
        ValueAlign::of(self.options().alignment())
    }

    pub(crate) fn decode(bytes: &[u8], page: PageId) -> Result<TreeRecord> {
        let r = TreeRecord::read_from_bytes(bytes)
            .map_err(|_| Error::corrupted(page.0, "tree record has the wrong size"))?;
        let consistent =
            (r.depth.get() == 0) == r.root.is_null() && (r.entries.get() == 0 || !r.root.is_null());
        if r.depth.get() > DEPTH_MAX || !consistent || TreeOptions::decode(r.values.get()).is_none()
        {
            return Err(Error::corrupted(
                page.0,
                format!("inconsistent tree record {r:?}"),
            ));
        }
        Ok(r)
    }

    pub(crate) fn same_as(&self, other: &TreeRecord) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

/// Read access to pages, for lookups and cursors: the committed pages of a snapshot, or a
/// write transaction's view including its dirty pages. `Sync`, so that a snapshot and what reads it can be shared between threads.
pub(crate) trait Pages: Sync {
    fn page(&self, id: PageId) -> Result<&[u8]>;
    fn run(&self, id: PageId, pages: u64) -> Result<&[u8]>;
    fn geometry(&self) -> Geometry;
    /// How many pages can be read: a walk that loads more nodes than this has met
    /// references that share pages (a corrupt file), however it is shaped.
    fn pages_readable(&self) -> u64;
}

/// Parses the node `r` points to, checking that it lies at the depth the parent implies.
/// Starts the loads of the node's header and first slots together (`prefetch_head`):
/// on a page not in the CPU's caches they overlap rather than follow one another.
/// Inlined: it is most of a lookup's step (with `#[inline]` alone it stayed a call, and
/// a get cost 10 % more instructions).
#[inline(always)]
pub(crate) fn load<'a, P: Pages + ?Sized>(
    pages: &'a P,
    r: &ChildRef,
    levels_left: u32,
) -> Result<Node<'a>> {
    let id = r.page();
    let bytes = pages.page(id)?;
    prefetch_head(bytes);
    parse_at_depth(bytes, id, levels_left)
}

/// Parses the node at `id`, which its parent places `levels_left` levels above the
/// leaves: leaves exactly at the bottom, branches above it.
#[inline(always)]
pub(crate) fn parse_at_depth(bytes: &[u8], id: PageId, levels_left: u32) -> Result<Node<'_>> {
    let node = Node::parse(bytes, id)?;
    if node.is_leaf() != (levels_left == 1) || levels_left == 0 {
        return Err(wrong_depth(&node, levels_left));
    }
    Ok(node)
}

#[cold]
#[inline(never)]
fn wrong_depth(node: &Node, levels_left: u32) -> Error {
    Error::corrupted(
        node.id().0,
        format!(
            "{:?} page found where the tree has {levels_left} levels left",
            node.kind()
        ),
    )
}

/// The bytes of a value, following an overflow reference if needed. Inlined: the
/// inline case is on every read's hot path.
#[inline]
pub(crate) fn resolve<'a, P: Pages + ?Sized>(pages: &'a P, v: LeafValue<'a>) -> Result<&'a [u8]> {
    match v {
        LeafValue::Inline(b) => Ok(b),
        LeafValue::Overflow(o) => overflow_value(pages, &o),
    }
}

pub(crate) fn overflow_value<'a, P: Pages + ?Sized>(
    pages: &'a P,
    o: &OverflowRef,
) -> Result<&'a [u8]> {
    let len = o.value_len();
    let id = o.blob.page();
    if len > VALUE_LEN_MAX {
        return Err(Error::corrupted(
            id.0,
            format!("overflow value of {len} bytes"),
        ));
    }
    let run = pages.run(id, o.pages(&pages.geometry()))?;
    let payload = node::blob_payload(run, id)?;
    let pad = payload.as_ptr() as usize - run.as_ptr() as usize - node::BLOB_HEADER_BYTES;
    if payload.len() as u64 != len || pad as u64 != o.pad() {
        return Err(Error::corrupted(
            id.0,
            "overflow length or padding differs from its leaf",
        ));
    }
    Ok(payload)
}

pub(crate) fn get<'a, P: Pages + ?Sized>(
    pages: &'a P,
    tree: &TreeRecord,
    key: &[u8],
) -> Result<Option<&'a [u8]>> {
    match find_slot(pages, tree, key)? {
        Some((node, i)) => Ok(Some(resolve(pages, node.leaf_entry(i)?.1)?)),
        None => Ok(None),
    }
}

/// The leaf that holds `key` and its slot there, or `None` if the key is absent.
/// Inlined into `get`, whose hot path it is: called, it cost `get` 6 % more
/// instructions (callgrind).
#[inline(always)]
fn find_slot<'a, P: Pages + ?Sized>(
    pages: &'a P,
    tree: &TreeRecord,
    key: &[u8],
) -> Result<Option<(Node<'a>, usize)>> {
    if tree.root.is_null() {
        return Ok(None);
    }
    let mut r = tree.root;
    let mut levels = tree.depth.get();
    loop {
        let node = load(pages, &r, levels)?;
        if node.is_leaf() {
            return Ok(node.search(key)?.ok().map(|i| (node, i)));
        }
        r = node.child(node.child_index(key)?)?;
        levels -= 1;
    }
}

/// Where a value is stored, found without reading an overflow value's run.
pub(crate) enum ValueAt<'a> {
    /// Inside leaf `page`, `offset` bytes from its start.
    Inline {
        page: PageId,
        offset: usize,
        bytes: &'a [u8],
    },
    /// In the blob the reference names (not yet read or checked).
    Overflow(OverflowRef),
}

/// Where `key`'s value is stored, or `None` if the key is absent.
pub(crate) fn find_value<'a, P: Pages + ?Sized>(
    pages: &'a P,
    tree: &TreeRecord,
    key: &[u8],
) -> Result<Option<ValueAt<'a>>> {
    let Some((node, i)) = find_slot(pages, tree, key)? else {
        return Ok(None);
    };
    Ok(Some(match node.value(i)? {
        LeafValue::Inline(bytes) => ValueAt::Inline {
            page: node.id(),
            offset: node.value_offset(i)?,
            bytes,
        },
        LeafValue::Overflow(o) => ValueAt::Overflow(o),
    }))
}

// ---- writes --------------------------------------------------------------------------

/// Checks key and value sizes against the limits of this page size.
pub(crate) fn check_sizes(
    g: &Geometry,
    align: ValueAlign,
    key: &[u8],
    value_len: u64,
) -> Result<()> {
    // The padding around an aligned value comes out of the key's room, so that a cell
    // with the longest key still fits where any cell must (two to a page).
    let max = g.key_len_max() - 2 * (align.bytes() - 1);
    if key.len() > max {
        return Err(Error::KeyTooLarge {
            size: key.len(),
            max,
        });
    }
    if value_len > VALUE_LEN_MAX {
        return Err(Error::ValueTooLarge {
            size: value_len,
            max: VALUE_LEN_MAX,
        });
    }
    Ok(())
}

/// Inserts or overwrites `key`.
pub(crate) fn insert(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    value: &[u8],
) -> Result<()> {
    insert_keeping(pages, tree, key, value, None).map(drop)
}

/// `insert`, copying the value it replaces into `old`; whether there was one.
fn insert_keeping(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    value: &[u8],
    old: Option<&mut Vec<u8>>,
) -> Result<bool> {
    check_sizes(
        &pages.geometry(),
        tree.value_align(),
        key,
        value.len() as u64,
    )?;
    let stored = store_value(pages, tree, key, value)?;
    insert_value(pages, tree, key, &stored, old)
}

/// How `value` is stored next to `key` in `tree`: inline, or written to a blob now.
pub(crate) fn store_value<'v>(
    pages: &mut TxnPages,
    tree: &TreeRecord,
    key: &[u8],
    value: &'v [u8],
) -> Result<LeafValue<'v>> {
    let align = tree.value_align();
    let page_size = pages.geometry().page_size;
    Ok(
        match node::value_fits_inline(key.len(), value.len() as u64, page_size, align) {
            true => LeafValue::Inline(value),
            false => LeafValue::Overflow(pages.write_blob(value, node::blob_pad(align))?),
        },
    )
}

/// Inserts or overwrites `key` with a value already written to the blob `o` names
/// (`WriteTree::insert_from`); the caller checked the sizes before writing it.
pub(crate) fn insert_overflow(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    o: OverflowRef,
) -> Result<()> {
    insert_value(pages, tree, key, &LeafValue::Overflow(o), None).map(drop)
}

/// Puts `checksum` into the reference of `key`'s overflow value, the blob at `blob`
/// this transaction reserved (`crate::reserve`) and has now written. The leaf must be
/// dirty and name that blob: anything else is corruption.
pub(crate) fn set_blob_checksum(
    pages: &mut TxnPages,
    tree: &TreeRecord,
    key: &[u8],
    blob: PageId,
    checksum: u32,
) -> Result<()> {
    let vanished = || Error::corrupted(blob.0, "the leaf of a reserved value no longer names it");
    let (leaf, at) = {
        let (node, i) = find_slot(&*pages, tree, key)?.ok_or_else(vanished)?;
        match node.value(i)? {
            LeafValue::Overflow(o) if o.blob.page() == blob && o.blob.txn() == pages.txn => {
                (node.id(), node.value_offset(i)?)
            }
            _ => return Err(vanished()),
        }
    };
    if !pages.is_dirty(leaf) {
        return Err(vanished());
    }
    let (r, _) = ChildRef::mut_from_prefix(&mut pages.dirty_mut(leaf)[at..])
        .map_err(|_| Error::corrupted(leaf.0, "an overflow reference runs past its page"))?;
    r.checksum = U32::new(checksum);
    Ok(())
}

/// Inserts the leaf cell of `key` → `stored`; whether the key was there.
fn insert_value(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    stored: &LeafValue,
    old: Option<&mut Vec<u8>>,
) -> Result<bool> {
    let mut cell = std::mem::take(&mut pages.scratch);
    encode_leaf_cell(&mut cell, key, stored, tree.value_align());
    let result = insert_cell(pages, tree, Cell { key, bytes: &cell }, old);
    pages.scratch = cell;
    result
}

/// Inserts or overwrites `key` and returns the value it replaced, in one descent.
pub(crate) fn replace(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    value: &[u8],
) -> Result<Option<Vec<u8>>> {
    let mut old = Vec::new();
    let existed = insert_keeping(pages, tree, key, value, Some(&mut old))?;
    Ok(existed.then_some(old))
}

/// Removes `key` and returns its value, in one descent.
pub(crate) fn take(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
) -> Result<Option<Vec<u8>>> {
    let mut old = Vec::new();
    Ok(remove_keeping(pages, tree, key, Some(&mut old))?.then_some(old))
}

fn insert_cell(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    cell: Cell,
    old: Option<&mut Vec<u8>>,
) -> Result<bool> {
    if tree.root.is_null() {
        let txn = pages.txn;
        let (id, page) = pages.alloc_page();
        node::build(page, PageKind::Leaf, txn, None, &[cell]);
        tree.root = pages.dirty_ref(id);
        tree.depth = U32::new(1);
        tree.entries = U64::new(1);
        return Ok(false);
    }
    let existed = edit(pages, tree, cell.key, LeafEdit::Put(cell), old)?;
    if !existed {
        // The count comes from the file: one that cannot grow is corrupt.
        let entries = tree.entries.get().checked_add(1).ok_or_else(|| {
            Error::corrupted(tree.root.page.get(), "tree record counts 2^64 - 1 entries")
        })?;
        tree.entries = U64::new(entries);
    }
    Ok(existed)
}

/// A change to one leaf entry.
#[derive(Clone, Copy)]
enum LeafEdit<'c> {
    /// Insert the cell, replacing the entry with the same key if any.
    Put(Cell<'c>),
    /// Remove the entry with the key, if any.
    Delete,
}

/// Applies `change` to `key`'s leaf in the non-empty `tree`, in one descent: each level
/// searches its page once, and the pages on the path are shadowed and changed on the
/// way back up, splitting or rebalancing nodes. Returns whether the key existed (its
/// value copied into `old` if given); a `Delete` of an absent key changes nothing (no
/// page is shadowed or freed).
fn edit(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    change: LeafEdit,
    old: Option<&mut Vec<u8>>,
) -> Result<bool> {
    let root = tree.root;
    let levels = tree.depth.get();
    let Some((grow, existed)) = edit_below(pages, root, key, levels, change, old, Siblings::NONE)?
    else {
        return Ok(false);
    };
    set_root(pages, tree, grow)?;
    collapse_root(pages, tree)?;
    Ok(existed)
}

/// `edit` below `r`, `levels` above the leaves: looks `key` up in the committed or dirty
/// page `r` names, then (unless the change is a `Delete` of an absent key: `None`) shadows
/// the page and applies the change at the slot or child index this lookup found, without
/// searching again: the shadow is a copy of the page searched. Returns what became of the
/// node and whether the key existed. The call stack holds the path: each frame its
/// branch's reference and the index of the child taken. A leaf is told where its
/// `siblings` are, to share cells with one rather than split.
fn edit_below(
    pages: &mut TxnPages,
    r: ChildRef,
    key: &[u8],
    levels: u32,
    change: LeafEdit,
    old: Option<&mut Vec<u8>>,
    siblings: Siblings,
) -> Result<Option<(Grow, bool)>> {
    let (child, i, child_siblings) = {
        let node = load(&*pages, &r, levels)?;
        if node.is_leaf() {
            let slot = node.search(key)?;
            return edit_leaf(pages, &r, slot, change, old, siblings);
        }
        let i = node.child_index(key)?;
        let child_siblings = match (levels, change) {
            (2, LeafEdit::Put(_)) => Siblings::of(r, i),
            _ => Siblings::NONE,
        };
        (node.child(i)?, i, child_siblings)
    };
    let below = edit_below(pages, child, key, levels - 1, change, old, child_siblings)?;
    let Some((grow, existed)) = below else {
        return Ok(None);
    };
    // A new key only adds to its leaf: one underfull after it was underfull before (a
    // run of inserts opened it with one cell, FORMAT.md#insert-hints) and is left so.
    // A remove, or an overwrite that shrank a value, rebalances.
    Ok(Some((
        attach_or_rebalance(pages, &r, i, &child, grow, existed)?,
        existed,
    )))
}

/// Applies `change` at `slot` (found by the lookup) of the leaf `r` names, shadowing it
/// first; `None`, changing nothing, for a `Delete` of an absent key. A new key that does
/// not fit may share the leaf's cells with one of its `siblings`.
fn edit_leaf(
    pages: &mut TxnPages,
    r: &ChildRef,
    slot: std::result::Result<usize, usize>,
    change: LeafEdit,
    old: Option<&mut Vec<u8>>,
    siblings: Siblings,
) -> Result<Option<(Grow, bool)>> {
    if matches!(change, LeafEdit::Delete) && slot.is_err() {
        return Ok(None);
    }
    let id = pages.shadow(r)?;
    if let Ok(i) = slot {
        let blob = {
            let value = Node::parse(pages.dirty(id), id)?.value(i)?;
            if let Some(old) = old {
                old.extend_from_slice(resolve(&*pages, value)?);
            }
            match value {
                LeafValue::Overflow(o) => Some(o),
                LeafValue::Inline(_) => None,
            }
        };
        if let Some(o) = blob {
            pages.free_blob(&o)?;
        }
        // A value of the same size takes the old one's place; the page is left as it
        // was otherwise (its hint too).
        if let LeafEdit::Put(cell) = change
            && node::replace_cell(pages.dirty_mut(id), id, i, cell)?
        {
            return Ok(Some((Grow::One(pages.dirty_ref(id)), true)));
        }
        node::remove_cell(pages.dirty_mut(id), id, i)?;
    }
    let grow = match (change, slot) {
        // An overwrite keeps the hint: it says where new keys arrive.
        (LeafEdit::Put(cell), Ok(i)) => put_cell(pages, id, PageKind::Leaf, i, cell, None)?.grow,
        (LeafEdit::Put(cell), Err(i)) => put_new_key(pages, id, i, cell, None, siblings)?,
        (LeafEdit::Delete, _) => Grow::One(pages.dirty_ref(id)),
    };
    Ok(Some((grow, slot.is_ok())))
}

/// Inserts a new key's `cell` at slot `pos` of dirty leaf `id`. If the leaf is full and
/// the insert continues a run (`run`, else the one the leaf's hint shows), the leaf is
/// cut at the insertion point; otherwise it shares its cells with one of its
/// `siblings` if that has room, else is cut evenly. The page that takes the cell records
/// the new hint.
fn put_new_key(
    pages: &mut TxnPages,
    id: PageId,
    pos: usize,
    cell: Cell,
    run: Option<Run>,
    siblings: Siblings,
) -> Result<Grow> {
    let (adjacent, run, full) = match run {
        Some(run) => (Some(run), Some(run), false),
        None => {
            let page = pages.dirty(id);
            let node = Node::parse(page, id)?;
            let hint = Hint::of(page);
            let adjacent = hint.adjacent(&node, pos)?;
            let full = page.len() - node.used_bytes() < cell.footprint();
            (adjacent, adjacent.filter(|&run| hint.continues(run)), full)
        }
    };
    let shared = match (run, full) {
        (None, true) => share_with_sibling(pages, id, pos, cell, siblings)?,
        _ => None,
    };
    let put = match shared {
        Some(put) => put,
        None => put_cell(pages, id, PageKind::Leaf, pos, cell, run)?,
    };
    Hint::after(cell.key, adjacent).write(pages.dirty_mut(put.cell_page));
    Ok(put.grow)
}

/// Removes `key`; false (and nothing changes) if it is absent.
pub(crate) fn remove(pages: &mut TxnPages, tree: &mut TreeRecord, key: &[u8]) -> Result<bool> {
    remove_keeping(pages, tree, key, None)
}

/// `remove`, copying the value into `old`.
fn remove_keeping(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    old: Option<&mut Vec<u8>>,
) -> Result<bool> {
    if tree.root.is_null() || !edit(pages, tree, key, LeafEdit::Delete, old)? {
        return Ok(false);
    }
    tree.entries = U64::new(tree.entries.get().saturating_sub(1));
    Ok(true)
}

/// A root branch with one child is replaced by that child; an empty root leaf by nothing.
pub(crate) fn collapse_root(pages: &mut TxnPages, tree: &mut TreeRecord) -> Result<()> {
    loop {
        let root = tree.root;
        let node = load(&*pages, &root, tree.depth.get())?;
        let next = match (node.is_leaf(), node.len()) {
            (false, 0) => node.child(0)?,
            (true, 0) => ChildRef::NULL,
            _ => return Ok(()),
        };
        pages.free_page(&root)?;
        tree.root = next;
        tree.depth = U32::new(tree.depth.get() - 1);
        if next.is_null() {
            return Ok(());
        }
    }
}

/// Frees every page of the tree (for `delete_tree`): every key goes, so their order
/// does not matter here.
pub(crate) fn free_all(pages: &mut TxnPages, tree: &TreeRecord) -> Result<()> {
    if !tree.root.is_null() {
        free_below(pages, tree.root, tree.depth.get(), None)?;
    }
    Ok(())
}

/// Frees the subtree at `r`, `levels` above the leaves, and the blobs of its values;
/// returns the number of entries its leaves held. With `fences`, every node must lie
/// within them (its children within theirs), or the change fails as corrupt: the caller
/// frees the subtree because its fences lie inside a range, and must not free keys
/// outside it.
///
/// Frees the node `r` before what it references, so that a corrupt file whose
/// references share a page stops at the second visit (`a page was freed twice`)
/// instead of walking the shared subtree again and again.
pub(crate) fn free_below(
    pages: &mut TxnPages,
    r: ChildRef,
    levels: u32,
    fences: Option<&Fences>,
) -> Result<u64> {
    let (children, blobs, entries) = {
        let node = load(&*pages, &r, levels)?;
        if let Some(f) = fences {
            f.check(&node)?;
        }
        let mut children = Vec::new();
        let mut blobs = Vec::new();
        let mut entries = 0;
        if node.is_leaf() {
            entries = node.len() as u64;
            for i in 0..node.len() {
                if let LeafValue::Overflow(o) = node.value(i)? {
                    blobs.push(o);
                }
            }
        } else {
            for i in 0..=node.len() {
                let below = fences.map(|f| f.child(&node, i)).transpose()?;
                children.push((node.child(i)?, below));
            }
        }
        (children, blobs, entries)
    };
    pages.free_page(&r)?;
    for o in blobs {
        pages.free_blob(&o)?;
    }
    let mut entries = entries;
    for (c, below) in children {
        // Saturates rather than wraps: a corrupt count then exceeds the tree record's,
        // which the caller reports.
        let freed = free_below(pages, c, levels - 1, below.as_ref())?;
        entries = entries.saturating_add(freed);
    }
    Ok(entries)
}

/// Seals this transaction's dirty pages below `r`, children first: each takes the next
/// page id from `ids` (its final place in the file), and its checksum and id go into its
/// parent. Returns `r` as its parent must now hold it.
pub(crate) fn seal_dirty(
    pages: &mut TxnPages,
    r: ChildRef,
    ids: &mut dyn Iterator<Item = PageId>,
) -> Result<ChildRef> {
    let id = r.page();
    if r.is_null() || r.txn() != pages.txn || !pages.is_dirty(id) {
        return Ok(r);
    }
    let mut buf = pages.take(id);
    let (kind, dirty_children): (PageKind, Vec<(usize, ChildRef)>) = {
        let node = Node::parse(&buf, id)?;
        let mut dirty = Vec::new();
        if !node.is_leaf() {
            for i in 0..=node.len() {
                let c = node.child(i)?;
                // Only children this transaction wrote can be dirty; their reference says so.
                if c.txn() == pages.txn && pages.is_dirty(c.page()) {
                    dirty.push((i, c));
                }
            }
        }
        (node.kind(), dirty)
    };
    for (i, c) in dirty_children {
        let sealed = seal_dirty(pages, c, ids)?;
        node::set_child(&mut buf, i, &sealed)?;
    }
    node::tighten(&mut buf, kind);
    let checksum = seal(&mut buf);
    let placed = ids.next().expect("the commit placed every dirty page");
    pages.sealed_nodes.record(placed, checksum);
    pages.put_sealed(placed, buf);
    Ok(ChildRef::new(placed, checksum, pages.txn))
}
