//! Building a tree bottom-up from sorted entries: leaves filled in order (up to the fill
//! factor), each branch level built from the level below, pages handed to the
//! [`SeqWriter`] as they complete. Memory: two pages per level (the one being filled and
//! the one held back to even out the end), whatever the number of entries.
//! Used by `Database::bulk_load` and `Database::compact_to`. See FORMAT.md#bulk-load.

use zerocopy::little_endian::{U32, U64};

use super::writer::SeqWriter;

use crate::error::{Error, Result};
use crate::node::{
    self, Cell, Evened, LeafValue, Node, ValueAlign, encode_branch_cell, encode_leaf_cell,
    is_underfull,
};
use crate::page::{Geometry, PageId, PageKind, TxnId};
use crate::tree::{self, DEPTH_MAX, TreeRecord};

/// One level of the tree under construction: the page being filled and the full page
/// before it, held back so the last two pages can be evened out at the end.
struct Level {
    kind: PageKind,
    current: Box<[u8]>,
    /// The key that separates `held` from `current` (None while `current` is the first
    /// page of the level).
    separator_before_current: Option<Vec<u8>>,
    held: Option<HeldPage>,
    pages_written: u64,
}

/// A full page not yet written, with the key that separates it from the page before it
/// (None for the first page of its level).
type HeldPage = (Box<[u8]>, Option<Vec<u8>>);

/// Builds one tree from entries in strictly ascending key order.
pub(crate) struct TreeBuilder {
    geometry: Geometry,
    txn: TxnId,
    levels: Vec<Level>,
    entries: u64,
    /// Buffers for encoding a leaf cell (values stored in a blob) and a branch cell.
    leaf_cell: Vec<u8>,
    branch_cell: Vec<u8>,
    /// Separator buffers whose branch cell has been written, for the next separators
    /// (so a page costs no allocation of its own).
    spare_keys: Vec<Vec<u8>>,
    /// Leaves take cells while they use at most this many bytes (the fill factor).
    leaf_bytes_max: usize,
    /// The options field of the tree's record, and the alignment of its values.
    values: U32,
    align: ValueAlign,
}

impl TreeBuilder {
    pub(crate) fn new(geometry: Geometry, txn: TxnId) -> TreeBuilder {
        TreeBuilder {
            geometry,
            txn,
            levels: Vec::new(),
            entries: 0,
            leaf_cell: Vec::new(),
            branch_cell: Vec::new(),
            spare_keys: Vec::new(),
            leaf_bytes_max: geometry.page_size,
            values: U32::ZERO,
            align: ValueAlign::NONE,
        }
    }

    /// Builds a tree with the options of `like` (its values aligned as they ask).
    pub(crate) fn for_tree(mut self, like: &TreeRecord) -> TreeBuilder {
        self.values = like.values;
        self.align = like.value_align();
        self
    }

    /// Fills leaves to `percent` of the page (branches are always filled): room for
    /// later inserts between loaded keys without splits. `percent` is in 50..=100, so
    /// no leaf is underfull.
    pub(crate) fn leaf_fill_percent(mut self, percent: u8) -> TreeBuilder {
        assert!((50..=100).contains(&percent), "fill {percent} %");
        self.leaf_bytes_max = self.geometry.page_size * percent as usize / 100;
        self
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds the next entry. `Unsorted` (its index) unless its key is greater than every
    /// key added before, `KeyTooLarge` or `ValueTooLarge` if it is too large.
    ///
    /// Inlined into the caller's loop: the common case, an entry that fits in the
    /// current leaf, is encoded straight into it in a few dozen instructions.
    #[inline]
    pub(crate) fn add(&mut self, out: &mut SeqWriter, key: &[u8], value: &[u8]) -> Result<()> {
        // The key before is the current leaf's last: no copy of it is needed.
        if let Some(leaf) = self.levels.first()
            && let Some(before) = node::last_leaf_key(&leaf.current)
            && !ascending(before, key)
        {
            return Err(Error::Unsorted {
                index: self.entries,
            });
        }
        tree::check_sizes(&self.geometry, self.align, key, value.len() as u64)?;
        let inline = node::value_fits_inline(
            key.len(),
            value.len() as u64,
            self.geometry.page_size,
            self.align,
        );
        if inline
            && let Some(leaf) = self.levels.first_mut()
            && node::push_inline_within(
                &mut leaf.current,
                key,
                value,
                self.leaf_bytes_max,
                self.align,
            )
        {
            self.entries += 1;
            return Ok(());
        }
        self.add_to_new_leaf_or_blob(out, key, value, inline)
    }

    /// The rest of `add`: a value stored in a blob, or an entry for a new leaf (the
    /// current one is full, or there is none yet).
    #[inline(never)]
    fn add_to_new_leaf_or_blob(
        &mut self,
        out: &mut SeqWriter,
        key: &[u8],
        value: &[u8],
        inline: bool,
    ) -> Result<()> {
        if inline {
            let leaf = self.level(out, 0);
            if let Some(last) = node::last_leaf_key(&leaf.current) {
                let between = node::separator(last, key);
                let separator = self.key_buffer(between);
                self.start_page(out, 0, separator)?;
            }
            let leaf = &mut self.levels[0].current;
            let pushed =
                node::push_inline_within(leaf, key, value, self.leaf_bytes_max, self.align);
            assert!(pushed, "an entry stored inline fits an empty leaf");
        } else {
            let pad = node::blob_pad(self.align);
            let stored = LeafValue::Overflow(out.blob(value, pad, self.txn)?);
            let mut cell = std::mem::take(&mut self.leaf_cell);
            encode_leaf_cell(&mut cell, key, &stored, self.align);
            let pushed = self.push(out, 0, Cell { key, bytes: &cell });
            self.leaf_cell = cell;
            pushed?;
        }
        self.entries += 1;
        Ok(())
    }

    /// An empty node of `kind`, in a buffer the writer gives back if it has one (no
    /// allocation and no zeroing of a whole page per page: the writer zeroes the free
    /// space of each page before sealing it).
    fn fresh_page(&mut self, out: &mut SeqWriter, kind: PageKind) -> Box<[u8]> {
        let mut page = out
            .spare_page()
            .unwrap_or_else(|| vec![0; self.geometry.page_size].into_boxed_slice());
        node::init(&mut page, kind, self.txn);
        page
    }

    /// Level `at` (leaves are level 0), started with an empty page if it is new.
    fn level(&mut self, out: &mut SeqWriter, at: usize) -> &mut Level {
        if self.levels.len() == at {
            let kind = if at == 0 {
                PageKind::Leaf
            } else {
                PageKind::Branch
            };
            let current = self.fresh_page(out, kind);
            self.levels.push(Level {
                kind,
                current,
                separator_before_current: None,
                held: None,
                pages_written: 0,
            });
        }
        &mut self.levels[at]
    }

    /// Appends a cell to level `at`, starting a new page when the current one is full.
    fn push(&mut self, out: &mut SeqWriter, at: usize, cell: Cell) -> Result<()> {
        let leaf_bytes_max = self.leaf_bytes_max;
        let level = self.level(out, at);
        let kind = level.kind;
        let pushed = match kind {
            PageKind::Leaf => {
                node::push_cell_within(&mut level.current, kind, cell, leaf_bytes_max)
            }
            _ => node::push_cell(&mut level.current, kind, cell),
        };
        if pushed {
            return Ok(());
        }
        // The page is full. A new leaf starts with `cell`; a new branch with `cell`'s
        // child as its leftmost, and `cell`'s key separates it from the full one.
        if kind == PageKind::Leaf {
            let last = node::last_leaf_key(&level.current).expect("a full leaf has keys");
            let between = node::separator(last, cell.key);
            let separator = self.key_buffer(between);
            self.start_page(out, at, separator)?;
            let pushed = node::push_cell(&mut self.levels[at].current, kind, cell);
            assert!(pushed, "one cell fits an empty page");
        } else {
            let separator = self.key_buffer(cell.key);
            self.start_page(out, at, separator)?;
            node::set_leftmost(&mut self.levels[at].current, &cell.child());
        }
        Ok(())
    }

    /// `key` in a separator buffer, reused if one is spare.
    fn key_buffer(&mut self, key: &[u8]) -> Vec<u8> {
        let mut buffer = self.spare_keys.pop().unwrap_or_default();
        buffer.clear();
        buffer.extend_from_slice(key);
        buffer
    }

    /// Replaces level `at`'s full page with an empty one: the full page is held back
    /// (`separator` is the key between it and the new page) and the page held before it
    /// is written.
    fn start_page(&mut self, out: &mut SeqWriter, at: usize, separator: Vec<u8>) -> Result<()> {
        let fresh = self.fresh_page(out, self.levels[at].kind);
        let level = &mut self.levels[at];
        let full = std::mem::replace(&mut level.current, fresh);
        let full_separator = level.separator_before_current.replace(separator);
        if let Some((held, held_sep)) = level.held.replace((full, full_separator)) {
            self.write_up(out, at, held, held_sep)?;
        }
        Ok(())
    }

    /// Writes a finished page of level `at` and adds it to the level above.
    fn write_up(
        &mut self,
        out: &mut SeqWriter,
        at: usize,
        page: Box<[u8]>,
        separator: Option<Vec<u8>>,
    ) -> Result<()> {
        let r = out.page(page, self.txn)?;
        self.levels[at].pages_written += 1;
        if at + 1 >= DEPTH_MAX as usize {
            return Err(crate::error::Error::corrupted(
                r.page.get(),
                "bulk tree too deep",
            ));
        }
        match separator {
            None => {
                // The first page of this level: the leftmost child of the parent level.
                node::set_leftmost(&mut self.level(out, at + 1).current, &r);
                Ok(())
            }
            Some(sep) => {
                let mut cell = std::mem::take(&mut self.branch_cell);
                encode_branch_cell(&mut cell, &sep, &r);
                let pushed = self.push(
                    out,
                    at + 1,
                    Cell {
                        key: &sep,
                        bytes: &cell,
                    },
                );
                self.branch_cell = cell;
                self.spare_keys.push(sep);
                pushed
            }
        }
    }

    /// Writes the remaining pages and returns the tree's record.
    pub(crate) fn finish(mut self, out: &mut SeqWriter) -> Result<TreeRecord> {
        if self.entries == 0 {
            return Ok(TreeRecord {
                values: self.values,
                ..TreeRecord::EMPTY
            });
        }
        let mut at = 0;
        loop {
            self.even_out_last_two(at)?;
            let level = &mut self.levels[at];
            if level.pages_written == 0 && level.held.is_none() {
                // The only page of its level: the root.
                let root = std::mem::take(&mut level.current);
                let r = out.page(root, self.txn)?;
                let r = out.resolve(r)?;
                return Ok(TreeRecord {
                    root: r,
                    entries: U64::new(self.entries),
                    depth: U32::new(at as u32 + 1),
                    values: self.values,
                });
            }
            let current = std::mem::take(&mut level.current);
            let current_sep = level.separator_before_current.take();
            if let Some((held, held_sep)) = level.held.take() {
                self.write_up(out, at, held, held_sep)?;
            }
            self.write_up(out, at, current, current_sep)?;
            at += 1;
        }
    }

    /// If the level's last page is underfull, merges it into the held page or shares
    /// cells between the two, as a remove would.
    fn even_out_last_two(&mut self, at: usize) -> Result<()> {
        let page_size = self.geometry.page_size;
        let level = &mut self.levels[at];
        let Some((mut held, held_sep)) = level.held.take() else {
            return Ok(());
        };
        let current = Node::parse(&level.current, PageId(0))?;
        if !is_underfull(current.used_bytes(), page_size) {
            level.held = Some((held, held_sep));
            return Ok(());
        }
        let sep = level
            .separator_before_current
            .take()
            .expect("a held page has a successor");
        match node::even_out(&mut held, PageId(0), &sep, &mut level.current, PageId(0))? {
            Evened::Merged => {
                level.current = held;
                level.separator_before_current = held_sep;
            }
            Evened::Shared(new_sep) => {
                level.held = Some((held, held_sep));
                level.separator_before_current = Some(new_sep);
            }
        }
        Ok(())
    }
}

/// `before < key`, deciding most pairs of keys by their first eight bytes alone (one
/// comparison of two integers rather than a call to `memcmp`).
#[inline]
fn ascending(before: &[u8], key: &[u8]) -> bool {
    if let (Some(a), Some(b)) = (before.first_chunk::<8>(), key.first_chunk::<8>()) {
        let (a, b) = (u64::from_be_bytes(*a), u64::from_be_bytes(*b));
        if a != b {
            return a < b;
        }
    }
    before < key
}

#[cfg(test)]
mod tests {
    use super::ascending;

    #[test]
    fn ascending_agrees_with_slice_order() {
        let keys: [&[u8]; 9] = [
            b"",
            b"\0",
            b"abc",
            b"abcdefgh",
            b"abcdefgh\0",
            b"abcdefghz",
            b"abcdefgi",
            b"\xff\xff\xff\xff\xff\xff\xff\xff",
            b"\xff\xff\xff\xff\xff\xff\xff\xff\0",
        ];
        for a in keys {
            for b in keys {
                assert_eq!(ascending(a, b), a < b, "{a:?} < {b:?}");
            }
        }
    }
}
