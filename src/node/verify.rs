//! What the write path checks before it copies a committed node, and `check` on every
//! node: the cells tile the cell area, the keys ascend and match their slot prefixes,
//! and (for the write path) no reference names a writer after the snapshot. One pass over
//! the cells does all of it: a shadow copy of a page runs it, and it was the larger part
//! of a removal's cost when it took four.

use std::cmp::Ordering;

use zerocopy::FromBytes;

use super::{
    LEAF_CELL_HEADER_BYTES, LeafHead, LeafValue, Node, NodeHeader, ValueAlign, cell_bytes_max,
    compare_keys, prefix_bytes,
};
use crate::error::Result;
use crate::page::{ChildRef, PageKind, TxnId, key_len_max};

impl Node<'_> {
    /// Checks, in one pass over the cells:
    /// - what editing the page relies on: every cell lies in the cell area, is no larger
    ///   than a cell may be and overlaps no other, holds a key no longer than a key may
    ///   be, and the live cells and the holes (`frag_bytes`) fill the cell area exactly,
    ///   so that compaction fits, a split always finds a cut, and a separator it moves
    ///   up fits a branch cell;
    /// - what searches rely on: the keys ascend strictly, begin with the bytes the slot
    ///   prefixes skip (those of slot 0's key), and match their slot prefixes;
    /// - with `newest`, that every reference (children, overflow blobs) names a writer no
    ///   later than it: once a committed node is copied, a reference that named the
    ///   writing transaction would pass for one of its own pages.
    pub(crate) fn verify(&self, newest: Option<TxnId>) -> Result<()> {
        let max = cell_bytes_max(self.kind, self.bytes.len());
        let key_max = key_len_max(self.bytes.len());
        let area = self.bytes.len() - self.cells_start;
        // One bit per byte of the cell area (on the stack up to 4 KiB pages): a cell
        // overlaps another iff one of its bits is set already. No sort of the offsets.
        let mut small = [0u64; 64];
        let mut large = Vec::new();
        let words = area.div_ceil(64);
        let map = match words <= small.len() {
            true => &mut small[..words],
            false => {
                large.resize(words, 0);
                &mut large[..]
            }
        };
        let shared = self.shared_bytes()?;
        let mut previous: Option<&[u8]> = None;
        let mut cell_bytes = 0;
        for i in 0..self.len() {
            let cell = self.cell(i)?;
            if cell.footprint() > max {
                return Err(self.bad(format!(
                    "cell {i} takes {} bytes, more than a cell may ({max})",
                    cell.footprint()
                )));
            }
            // A leaf cell may hold a key longer than any key may be, its value shorter:
            // split, such a key would make a separator larger than a branch cell may be.
            if cell.key.len() > key_max {
                return Err(self.bad(format!(
                    "key {i} of {} bytes, longer than a key may be ({key_max})",
                    cell.key.len()
                )));
            }
            // `cell` checked that it lies in the cell area.
            let start = cell.bytes.as_ptr() as usize - self.bytes.as_ptr() as usize;
            if !mark_once(map, start - self.cells_start, cell.bytes.len()) {
                return Err(self.bad("cells overlap".into()));
            }
            cell_bytes += cell.bytes.len();
            self.verify_prefix(i, cell.key, shared)?;
            if previous.is_some_and(|p| compare_keys(p, cell.key) != Ordering::Less) {
                return Err(self.bad(format!("keys out of order at slot {i}")));
            }
            previous = Some(cell.key);
            if let Some(newest) = newest {
                let r = match self.kind {
                    PageKind::Leaf => match cell.leaf_value(self.id)? {
                        LeafValue::Overflow(o) => Some(o.blob),
                        LeafValue::Inline(_) => None,
                    },
                    _ => Some(cell.child()),
                };
                self.verify_writer(r, newest)?;
            }
        }
        if let (Some(newest), false) = (newest, self.is_leaf()) {
            self.verify_writer(Some(self.child(0)?), newest)?;
        }
        let frag = NodeHeader::ref_from_prefix(self.bytes)
            .expect("parsed")
            .0
            .frag_bytes
            .get();
        if cell_bytes + frag as usize != area {
            return Err(self.bad(format!(
                "cells of {cell_bytes} bytes and {frag} bytes of holes in a cell area of {area}"
            )));
        }
        Ok(())
    }

    /// For a leaf of a tree whose values are aligned to `align`: every cell starts and
    /// ends at a multiple of it, and so does the part before its value (an inline value
    /// or an overflow reference). Cells are moved as bytes and packed from the page's
    /// end, so a cell of another length would move the values after it off the
    /// alignment (FORMAT.md#aligned-values). Nothing to check in branches and in
    /// unaligned trees.
    pub(crate) fn verify_aligned(&self, align: ValueAlign) -> Result<()> {
        let n = align.bytes();
        if n == 1 || !self.is_leaf() {
            return Ok(());
        }
        for i in 0..self.len() {
            let cell = self.cell(i)?;
            // `cell` checked that it lies in the page.
            let start = cell.bytes.as_ptr() as usize - self.bytes.as_ptr() as usize;
            let value = LEAF_CELL_HEADER_BYTES + cell.key.len() + LeafHead::read(cell.bytes).lead();
            let aligned = |at: usize| at.is_multiple_of(n);
            if !(aligned(start) && aligned(cell.bytes.len()) && aligned(value)) {
                return Err(self.bad(format!(
                    "cell {i} at {start}, of {} bytes, in a tree aligned to {n}",
                    cell.bytes.len()
                )));
            }
        }
        Ok(())
    }

    /// Checks the slot prefixes against the keys, and that every key begins with the
    /// bytes they skip (`verify` does this too; the page decoding fuzz target uses it).
    pub(crate) fn verify_prefixes(&self) -> Result<()> {
        let shared = self.shared_bytes()?;
        (0..self.len()).try_for_each(|i| self.verify_prefix(i, self.key(i)?, shared))
    }

    /// The bytes every key begins with: the first `skip` of slot 0's key.
    fn shared_bytes(&self) -> Result<&[u8]> {
        match self.len() {
            0 => Ok(&[]),
            _ => self
                .key(0)?
                .get(..self.skip.into())
                .ok_or_else(|| self.bad(format!("skips {} bytes of a shorter key", self.skip))),
        }
    }

    fn verify_prefix(&self, i: usize, key: &[u8], shared: &[u8]) -> Result<()> {
        let Some(rest) = key.strip_prefix(shared) else {
            return Err(self.bad(format!("key {i} lacks the bytes its slot skips")));
        };
        match self.slot(i).prefix == prefix_bytes(rest) {
            true => Ok(()),
            false => Err(self.bad(format!("slot {i} prefix does not match its key"))),
        }
    }

    fn verify_writer(&self, r: Option<ChildRef>, newest: TxnId) -> Result<()> {
        match r.is_some_and(|r| r.txn() > newest) {
            true => Err(self.bad(format!(
                "a reference names a writer after snapshot {}",
                newest.0
            ))),
            false => Ok(()),
        }
    }
}

/// Sets the bits `start..start + len` of `map` (`len` > 0); false, leaving the map
/// partly set, if one of them was set already.
fn mark_once(map: &mut [u64], start: usize, len: usize) -> bool {
    let end = start + len;
    let mut at = start;
    while at < end {
        let (word, bit) = (at / 64, at % 64);
        let bits = (64 - bit).min(end - at);
        let mask = (u64::MAX >> (64 - bits)) << bit;
        if map[word] & mask != 0 {
            return false;
        }
        map[word] |= mask;
        at += bits;
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mark_once_refuses_any_byte_marked_twice() {
        let mut map = [0u64; 4];
        assert!(mark_once(&mut map, 0, 64));
        assert!(mark_once(&mut map, 70, 130), "across words 1 to 3");
        assert!(!mark_once(&mut map, 199, 2), "the last byte of the run");
        assert!(mark_once(&mut map, 64, 6), "the gap, exactly");
        assert!(!mark_once(&mut map, 63, 1), "the first run's last byte");
        assert_eq!(map, [u64::MAX, u64::MAX, u64::MAX, (1 << 8) - 1]);
    }
}
