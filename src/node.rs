//! Branch and leaf pages: read views that bounds-check every offset taken from the page,
//! in-place edits of dirty pages, and the split/merge policy shared by inserts, removes,
//! the bulk loader and compaction (siblings are merged or share cells in place, in
//! `siblings`). See FORMAT.md#node-pages.

use std::cmp::Ordering;
use std::mem::size_of;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::page::{ChildRef, PageHeader, PageId, PageKind, TxnId, header, header_mut};

mod blob;
mod edit;
mod leaf_cell;
mod pack;
mod prefix;
mod runs;
mod siblings;
mod verify;
use blob::OVERFLOW_REF_BYTES;
pub(crate) use blob::{
    BLOB_HEADER_BYTES, OverflowRef, blob_header, blob_pad, blob_payload, init_blob,
};
pub(crate) use edit::{
    build, build_two, init, insert_cell, is_sparse, is_underfull, last_leaf_key, merges_with,
    push_cell, push_cell_within, push_inline_within, remove_cell, replace_cell, replace_children,
    separator, set_child, set_leftmost, shares_with, split_point, zero_free_space,
};
use edit::{compact, node_header_mut, write_slot};
use leaf_cell::{LEAF_CELL_HEADER_BYTES, LeafHead, inline_cell_len, write_inline_cell};
pub(crate) use leaf_cell::{ValueAlign, encode_leaf_cell, value_fits_inline};
pub(crate) use pack::{all_cells, build_branch, build_leaves, pack_cuts};
pub(crate) use prefix::tighten;
use prefix::{against_shared, compare_prefix, prefix_bytes};
pub(crate) use runs::{Hint, Run, run_cut};
pub(crate) use siblings::{Evened, ShareCut, even_out, remove_range, share_cut, share_leaves};

/// Header of branch and leaf pages. See FORMAT.md#node-pages.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct NodeHeader {
    pub page: PageHeader,
    /// Offset of the lowest cell byte; cells fill the page from the end downwards.
    pub cells_start: U32,
    /// Bytes between `cells_start` and the page end that belong to no cell (holes left
    /// by removed cells), so the used size is known without walking the cells.
    pub frag_bytes: U16,
    /// How many leading bytes, shared by every key of the node, the slot prefixes skip
    /// (`prefix`). 0 in files before version 4, where these were `frag_bytes`' high half.
    pub prefix_skip: U16,
}
const _: () = assert!(size_of::<NodeHeader>() == 24);

/// One slot of the slot array; slots are sorted by key. See FORMAT.md#node-pages.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct Slot {
    /// Four bytes of the key from byte `prefix_skip` on, zero-padded (`prefix`): most
    /// binary-search probes compare these as a big-endian integer and never leave the
    /// slot array.
    pub prefix: [u8; 4],
    pub offset: U16,
    pub key_len: U16,
}
const SLOT_BYTES: usize = size_of::<Slot>();
const _: () = assert!(SLOT_BYTES == 8);

const NODE_HEADER_BYTES: usize = size_of::<NodeHeader>();
const BRANCH_CELL_HEADER_BYTES: usize = size_of::<ChildRef>();

/// Where the slot array starts: branches keep their leftmost child before it.
pub(crate) fn slots_start(kind: PageKind) -> usize {
    match kind {
        PageKind::Branch => NODE_HEADER_BYTES + size_of::<ChildRef>(),
        _ => NODE_HEADER_BYTES,
    }
}

fn cell_header_bytes(kind: PageKind) -> usize {
    match kind {
        PageKind::Branch => BRANCH_CELL_HEADER_BYTES,
        _ => LEAF_CELL_HEADER_BYTES,
    }
}

/// The largest slot + cell that a node of `kind` accepts: two always fit in one page.
pub(crate) fn cell_bytes_max(kind: PageKind, page_size: usize) -> usize {
    (page_size - slots_start(kind)) / 2
}

/// A value as stored in a leaf.
#[derive(Clone, Copy, Debug)]
pub(crate) enum LeafValue<'a> {
    Inline(&'a [u8]),
    Overflow(OverflowRef),
}

/// Keys compared as byte strings, eight bytes at a time as big-endian integers while
/// both have eight more: searches compare whole keys only when the slot prefixes tie,
/// which for keys such as big-endian integers below 2^32 or zero-padded decimal counters
/// is every time, and a call to memcmp per probe was a fifth of such a lookup.
#[inline(always)]
fn compare_keys(mut a: &[u8], mut b: &[u8]) -> Ordering {
    while let (Some((x, a_rest)), Some((y, b_rest))) =
        (a.split_first_chunk::<8>(), b.split_first_chunk::<8>())
    {
        match u64::from_be_bytes(*x).cmp(&u64::from_be_bytes(*y)) {
            Ordering::Equal => (a, b) = (a_rest, b_rest),
            unequal => return unequal,
        }
    }
    a.cmp(b)
}

/// A read-only view of a branch or leaf page. `parse` checks the header; every accessor
/// checks the offsets it follows, so a corrupt page gives `Error::Corrupted`.
#[derive(Clone, Copy)]
pub(crate) struct Node<'a> {
    bytes: &'a [u8],
    /// The slot array, `count` slots (checked by `parse` to end before `cells_start`).
    slots: &'a [Slot],
    id: PageId,
    kind: PageKind,
    cells_start: usize,
    /// Leading key bytes the slot prefixes skip (`prefix`); from the page, unchecked.
    skip: u16,
}

/// The bytes `prefetch_head` asks for: the header and up to 29 slots (BENCHMARKS.md,
/// "Prefetching a node's head", measured 256, 512 and 1,024).
const HEAD_BYTES: usize = 256;
/// A cache line.
const LINE: usize = 64;

/// Asks the CPU to start loading a node's header and first slots (all of a leaf's, up
/// to 29 slots), before the header is read: on a page not in the CPU's caches the
/// misses of a binary search then overlap instead of following one another. A hint on
/// x86_64 (`prefetcht0`); elsewhere it does nothing.
#[inline(always)]
pub(crate) fn prefetch_head(bytes: &[u8]) {
    for at in (0..bytes.len().min(HEAD_BYTES)).step_by(LINE) {
        prefetch(&bytes[at]);
    }
}

#[inline(always)]
fn prefetch(byte: &u8) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        // SAFETY: `_mm_prefetch` is unsafe only for its target feature, SSE, which every
        // x86_64 CPU has. A prefetch is a hint: it changes nothing the program can see,
        // and never faults (the address is a byte of a live slice anyway).
        #[allow(unsafe_code)]
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(std::ptr::from_ref(byte).cast())
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = byte;
}

impl<'a> Node<'a> {
    /// Inlined, with the errors out of line: every step of a lookup parses a node.
    #[inline(always)]
    pub(crate) fn parse(bytes: &'a [u8], id: PageId) -> Result<Node<'a>> {
        match Node::try_parse(bytes, id) {
            Some(node) => Ok(node),
            None => Err(Node::parse_error(bytes, id)),
        }
    }

    /// The checks of `parse`, without saying which failed.
    #[inline(always)]
    fn try_parse(bytes: &'a [u8], id: PageId) -> Option<Node<'a>> {
        let h = NodeHeader::ref_from_prefix(bytes).ok()?.0;
        let kind = match PageKind::from_byte(h.page.kind) {
            Some(k @ (PageKind::Branch | PageKind::Leaf)) => k,
            _ => return None,
        };
        let count = h.page.count.get() as usize;
        let cells_start = h.cells_start.get() as usize;
        let slots_end = slots_start(kind) + count * SLOT_BYTES;
        if slots_end > cells_start
            || cells_start > bytes.len()
            || h.frag_bytes.get() as usize > bytes.len() - cells_start
        {
            return None;
        }
        // In bounds and a whole number of slots: checked just above.
        let slots = <[Slot]>::ref_from_bytes(&bytes[slots_start(kind)..slots_end]).ok()?;
        Some(Node {
            bytes,
            slots,
            id,
            kind,
            cells_start,
            // An empty node has no key to check against: it skips nothing.
            skip: if count == 0 { 0 } else { h.prefix_skip.get() },
        })
    }

    /// Why `try_parse` refused `bytes`.
    #[cold]
    #[inline(never)]
    fn parse_error(bytes: &[u8], id: PageId) -> Error {
        let Ok((h, _)) = NodeHeader::ref_from_prefix(bytes) else {
            return Error::corrupted(id.0, "page shorter than a node header");
        };
        let kind = match PageKind::from_byte(h.page.kind) {
            Some(k @ (PageKind::Branch | PageKind::Leaf)) => k,
            _ => {
                return Error::corrupted(
                    id.0,
                    format!("expected a branch or leaf page, found kind {}", h.page.kind),
                );
            }
        };
        let count = h.page.count.get() as usize;
        let cells_start = h.cells_start.get() as usize;
        let slots_end = slots_start(kind) + count * SLOT_BYTES;
        if slots_end > cells_start || cells_start > bytes.len() {
            return Error::corrupted(
                id.0,
                format!("{count} slots end at {slots_end}, past the cells at {cells_start}"),
            );
        }
        Error::corrupted(id.0, "fragmented byte count too large")
    }

    pub(crate) fn id(&self) -> PageId {
        self.id
    }

    pub(crate) fn kind(&self) -> PageKind {
        self.kind
    }

    pub(crate) fn is_leaf(&self) -> bool {
        self.kind == PageKind::Leaf
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn txn(&self) -> TxnId {
        TxnId(header(self.bytes).txn.get())
    }

    pub(crate) fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Header, slots and live cells: what a rebuilt copy of this page would occupy.
    pub(crate) fn used_bytes(&self) -> usize {
        slots_start(self.kind) + self.len() * SLOT_BYTES + self.bytes.len()
            - self.cells_start
            - self.frag_bytes()
    }

    /// Bytes of holes in the cell area (left by removed cells).
    fn frag_bytes(&self) -> usize {
        let h = NodeHeader::ref_from_prefix(self.bytes).expect("parsed").0;
        h.frag_bytes.get() as usize
    }

    /// Slot `i` (panics past the slot count, a caller's bug: counts come from `len`).
    #[inline]
    fn slot(&self, i: usize) -> Slot {
        self.slots[i]
    }

    /// The whole cell of slot `i` (cell header, key, inline value or overflow reference).
    #[inline]
    pub(crate) fn cell(&self, i: usize) -> Result<Cell<'a>> {
        let s = self.slot(i);
        let start = s.offset.get() as usize;
        let key_len = s.key_len.get() as usize;
        let key_start = start + cell_header_bytes(self.kind);
        let key_end = key_start + key_len;
        if start < self.cells_start || key_end > self.bytes.len() {
            return Err(self.bad(format!("cell {i} at {start}+{key_len} out of bounds")));
        }
        let end = match self.kind {
            PageKind::Leaf => {
                let head = LeafHead::read(&self.bytes[start..]);
                if !head.is_well_formed() {
                    return Err(self.bad(format!("cell {i} has a malformed head")));
                }
                key_end + head.after_key()
            }
            _ => key_end,
        };
        if end > self.bytes.len() {
            return Err(self.bad(format!("cell {i} runs past the page end")));
        }
        Ok(Cell {
            key: &self.bytes[key_start..key_end],
            bytes: &self.bytes[start..end],
        })
    }

    /// The key of slot `i`, checked to lie in the cell area. (What follows the key, the
    /// value or its length, is checked by `cell` and `leaf_entry`, which read it.)
    #[inline]
    pub(crate) fn key(&self, i: usize) -> Result<&'a [u8]> {
        let s = self.slot(i);
        let start = s.offset.get() as usize;
        let key_start = start + cell_header_bytes(self.kind);
        let key_end = key_start + s.key_len.get() as usize;
        match self.bytes.get(key_start..key_end) {
            Some(key) if start >= self.cells_start => Ok(key),
            _ => Err(self.cell_out_of_bounds(i)),
        }
    }

    /// Leaf only: the key and value of slot `i`, checked as `cell` checks them, in one
    /// pass over the slot and cell header (the hot path of gets and iteration).
    #[inline(always)]
    pub(crate) fn leaf_entry(&self, i: usize) -> Result<(&'a [u8], LeafValue<'a>)> {
        debug_assert!(self.is_leaf());
        let s = self.slot(i);
        let start = s.offset.get() as usize;
        let key_start = start + LEAF_CELL_HEADER_BYTES;
        let key_end = key_start + s.key_len.get() as usize;
        let head = match self.bytes.get(start..key_end) {
            Some(head) if start >= self.cells_start => head,
            _ => return Err(self.cell_out_of_bounds(i)),
        };
        let (head, key) = head.split_at(LEAF_CELL_HEADER_BYTES);
        let head = LeafHead::read(head);
        let value_start = key_end + head.lead();
        if !head.is_overflow() {
            return match self.bytes.get(value_start..value_start + head.value_len()) {
                Some(value) => Ok((key, LeafValue::Inline(value))),
                None => Err(self.cell_past_end(i)),
            };
        }
        match self
            .bytes
            .get(value_start..value_start + OVERFLOW_REF_BYTES)
        {
            Some(r) => Ok((
                key,
                LeafValue::Overflow(OverflowRef::read_from_bytes(r).expect("reference size")),
            )),
            None => Err(self.cell_past_end(i)),
        }
    }

    #[cold]
    #[inline(never)]
    fn cell_out_of_bounds(&self, i: usize) -> Error {
        let s = self.slot(i);
        let (start, key_len) = (s.offset.get(), s.key_len.get());
        self.bad(format!("cell {i} at {start}+{key_len} out of bounds"))
    }

    #[cold]
    #[inline(never)]
    fn cell_past_end(&self, i: usize) -> Error {
        self.bad(format!("cell {i} runs past the page end"))
    }

    /// Binary search: `Ok(i)` if slot `i` holds `key`, else `Err(i)` where it would go.
    ///
    /// First the slot prefixes alone, with `partition_point` (branch-free in the standard
    /// library, and without the bounds checks of a hand-written loop): the first slot
    /// whose prefix is not below the key's. Usually that settles it; only when that
    /// slot's prefix equals the key's are whole keys compared, and the slots that share
    /// the prefix searched with them. Inlined into the descents (called, it cost a get
    /// 10 % more instructions).
    ///
    /// In a node whose slot prefixes skip the bytes all its keys share (`prefix`), the
    /// search first checks that the key begins with them, out of line: inline, that
    /// path cost searches that never take it 14 % more instructions (callgrind).
    #[inline(always)]
    pub(crate) fn search(&self, key: &[u8]) -> Result<std::result::Result<usize, usize>> {
        if self.skip > 0 {
            return self.search_past_shared(key);
        }
        self.search_slots(key, key)
    }

    /// `search` in a node that skips shared bytes: a key that does not begin with them
    /// (those of slot 0's key) sorts before or after every key here; one that does is
    /// searched by what follows them.
    #[cold]
    #[inline(never)]
    fn search_past_shared(&self, key: &[u8]) -> Result<std::result::Result<usize, usize>> {
        let shared = self
            .key(0)?
            .get(..self.skip.into())
            .ok_or_else(|| self.bad(format!("skips {} bytes of a shorter key", self.skip)))?;
        match against_shared(key, shared) {
            Ordering::Less => Ok(Err(0)),
            Ordering::Greater => Ok(Err(self.len())),
            Ordering::Equal => self.search_slots(key, &key[shared.len()..]),
        }
    }

    /// The binary search of `search`, with `rest` the bytes of `key` that the slot
    /// prefixes cover.
    #[inline(always)]
    fn search_slots(&self, key: &[u8], rest: &[u8]) -> Result<std::result::Result<usize, usize>> {
        let slots = self.slots;
        let target = u32::from_be_bytes(prefix_bytes(rest));
        let below = |s: &Slot| u32::from_be_bytes(s.prefix) < target;
        let first = slots.partition_point(below);
        match slots.get(first) {
            Some(s) if u32::from_be_bytes(s.prefix) == target => {}
            _ => return Ok(Err(first)),
        }
        // Slots from `first` share the key's prefix until one does not: compare keys,
        // `first`'s at once (usually the key itself, or the only slot with its prefix).
        match compare_keys(self.key(first)?, key) {
            Ordering::Equal => return Ok(Ok(first)),
            Ordering::Greater => return Ok(Err(first)),
            Ordering::Less => {}
        }
        let (mut lo, mut hi) = (first + 1, slots.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let ord = match compare_prefix(slots[mid].prefix, target) {
                Ordering::Equal => compare_keys(self.key(mid)?, key),
                o => o,
            };
            match ord {
                Ordering::Less => lo = mid + 1,
                Ordering::Greater => hi = mid,
                Ordering::Equal => return Ok(Ok(mid)),
            }
        }
        Ok(Err(lo))
    }

    /// Leaf only: the value of slot `i`.
    pub(crate) fn value(&self, i: usize) -> Result<LeafValue<'a>> {
        debug_assert!(self.is_leaf());
        self.cell(i)?.leaf_value(self.id)
    }

    /// Leaf only: where the value of slot `i` starts in the page (for an inline value, its
    /// bytes; for an overflow value, its reference), bounds-checked as `cell` checks them.
    pub(crate) fn value_offset(&self, i: usize) -> Result<usize> {
        debug_assert!(self.is_leaf());
        let cell = self.cell(i)?;
        let lead = LeafHead::read(cell.bytes).lead();
        Ok(self.slot(i).offset.get() as usize + LEAF_CELL_HEADER_BYTES + cell.key.len() + lead)
    }

    /// Branch only: child `i` of `len() + 1`; child 0 is the leftmost. The cell of a
    /// right child is checked as `key` checks it (its key lies in the cell area).
    #[inline]
    pub(crate) fn child(&self, i: usize) -> Result<ChildRef> {
        debug_assert!(!self.is_leaf());
        let at = match i.checked_sub(1) {
            None => NODE_HEADER_BYTES,
            Some(j) => {
                let s = self.slot(j);
                let start = s.offset.get() as usize;
                let key_end = start + BRANCH_CELL_HEADER_BYTES + s.key_len.get() as usize;
                if start < self.cells_start || key_end > self.bytes.len() {
                    return Err(self.cell_out_of_bounds(j));
                }
                start
            }
        };
        // In bounds: the leftmost child lies before the slots (parse checked they end
        // within the page), a cell's child before its key (checked just above).
        let r = &self.bytes[at..at + BRANCH_CELL_HEADER_BYTES];
        Ok(ChildRef::read_from_bytes(r).expect("ref size"))
    }

    /// Branch only: which child covers `key`.
    #[inline(always)]
    pub(crate) fn child_index(&self, key: &[u8]) -> Result<usize> {
        Ok(match self.search(key)? {
            Ok(i) => i + 1,
            Err(i) => i,
        })
    }

    fn bad(&self, reason: String) -> Error {
        Error::corrupted(self.id.0, reason)
    }
}

/// A cell's bytes, ready to be copied into another page, and its key.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cell<'a> {
    pub key: &'a [u8],
    pub bytes: &'a [u8],
}

impl<'a> Cell<'a> {
    pub(crate) fn footprint(&self) -> usize {
        SLOT_BYTES + self.bytes.len()
    }

    pub(crate) fn leaf_value(&self, page: PageId) -> Result<LeafValue<'a>> {
        let bad = || Error::corrupted(page.0, "a leaf cell shorter than its head says");
        let head = LeafHead::read(self.bytes.get(..LEAF_CELL_HEADER_BYTES).ok_or_else(bad)?);
        let start = LEAF_CELL_HEADER_BYTES + self.key.len() + head.lead();
        let value = (self.bytes.get(start..start + head.value_len())).ok_or_else(bad)?;
        if !head.is_overflow() {
            return Ok(LeafValue::Inline(value));
        }
        let r = OverflowRef::read_from_bytes(value)
            .map_err(|_| Error::corrupted(page.0, "bad overflow reference"))?;
        Ok(LeafValue::Overflow(r))
    }

    /// Branch cells: the child to the right of this key.
    pub(crate) fn child(&self) -> ChildRef {
        ChildRef::read_from_bytes(&self.bytes[..BRANCH_CELL_HEADER_BYTES]).expect("ref size")
    }
}

/// Encodes a branch cell (child to the right of `key`) into `out` (cleared first).
pub(crate) fn encode_branch_cell(out: &mut Vec<u8>, key: &[u8], child: &ChildRef) {
    out.clear();
    out.extend_from_slice(child.as_bytes());
    out.extend_from_slice(key);
}

pub(crate) fn set_txn(page: &mut [u8], txn: TxnId) {
    header_mut(page).txn = U64::new(txn.0);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_with(keys: &[&[u8]]) -> Vec<u8> {
        let mut page = vec![0; 4096];
        init(&mut page, PageKind::Leaf, TxnId(1));
        let mut buf = Vec::new();
        for k in keys {
            let n = Node::parse(&page, PageId(5)).unwrap();
            let i = n.search(k).unwrap().unwrap_err();
            encode_leaf_cell(&mut buf, k, &LeafValue::Inline(b"v"), ValueAlign::NONE);
            let cell = Cell {
                key: k,
                bytes: &buf,
            };
            assert!(insert_cell(&mut page, PageId(5), PageKind::Leaf, i, cell).unwrap());
        }
        page
    }

    #[test]
    fn verify_accepts_edited_pages_and_rejects_lying_ones() {
        let keys: Vec<Vec<u8>> = (0..60u8).map(|i| vec![b'k', i, i]).collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| &k[..]).collect();
        let mut page = leaf_with(&refs);
        for i in (0..40).step_by(3) {
            remove_cell(&mut page, PageId(5), i).unwrap();
        }
        let good = Node::parse(&page, PageId(5)).unwrap();
        good.verify(None).unwrap();
        let (count, cells_start) = (good.len(), good.cells_start);

        let slot_offset = |i: usize| slots_start(PageKind::Leaf) + i * SLOT_BYTES + 4;
        let mut overlapping = page.clone();
        let second = u16::from_le_bytes(overlapping[slot_offset(1)..][..2].try_into().unwrap());
        overlapping[slot_offset(0)..][..2].copy_from_slice(&(second + 1).to_le_bytes());
        let mut holes_miscounted = page.clone();
        node_header_mut(&mut holes_miscounted).frag_bytes = U16::new(3);
        let mut oversized = page.clone();
        let len = (4096 - cells_start - 8) as u32;
        let at = cells_start;
        let first_slot = (0..count)
            .find(|&i| {
                u16::from_le_bytes(page[slot_offset(i)..][..2].try_into().unwrap()) as usize == at
            })
            .unwrap();
        oversized[at..at + 4].copy_from_slice(&len.to_le_bytes());
        // Slots 0 and 1 swapped whole: each prefix still matches its key.
        let mut out_of_order = page.clone();
        let (first, second) = (slot_offset(0) - 4, slot_offset(1) - 4);
        let slot0: Vec<u8> = page[first..first + SLOT_BYTES].to_vec();
        out_of_order.copy_within(second..second + SLOT_BYTES, first);
        out_of_order[second..second + SLOT_BYTES].copy_from_slice(&slot0);
        let mut wrong_prefix = page.clone();
        wrong_prefix[first] ^= 1;
        for (what, bad) in [
            ("overlapping", &overlapping),
            ("holes miscounted", &holes_miscounted),
            ("oversized", &oversized),
            ("out of order", &out_of_order),
            ("wrong prefix", &wrong_prefix),
        ] {
            let n = Node::parse(bad, PageId(5)).unwrap();
            assert!(
                matches!(n.verify(None), Err(Error::Corrupted { page: 5, .. })),
                "{what} (first slot {first_slot})"
            );
        }
    }

    #[test]
    fn split_point_of_cells_too_large_is_an_error() {
        // No cut leaves both sides within a page.
        let (small, big) = (vec![0u8; 100], vec![0u8; 5000]);
        let cells = [
            Cell {
                key: b"a",
                bytes: &small,
            },
            Cell {
                key: b"b",
                bytes: &big,
            },
        ];
        let r = split_point(PageId(9), PageKind::Leaf, 4096, 2, |j| {
            Ok(cells[j].footprint())
        });
        assert!(matches!(r, Err(Error::Corrupted { page: 9, .. })));
    }

    /// A full leaf and its sibling share when the two (the new cell counted) fit in seven
    /// eighths of two pages, not a byte more.
    #[test]
    fn a_full_leaf_shares_within_seven_eighths_of_two_pages() {
        for page in [4096, 65536] {
            let bound = page / 4 * 7;
            let full = page + 200;
            assert!(shares_with(full, bound - full, page));
            assert!(!shares_with(full, bound - full + 1, page));
        }
    }

    #[test]
    fn search_orders_keys_that_share_a_padded_prefix() {
        let page = leaf_with(&[b"a\0", b"a", b"ab", b"", b"abcdz", b"abcda"]);
        let n = Node::parse(&page, PageId(5)).unwrap();
        let keys: Vec<&[u8]> = (0..n.len()).map(|i| n.key(i).unwrap()).collect();
        assert_eq!(keys, [&b""[..], b"a", b"a\0", b"ab", b"abcda", b"abcdz"]);
        assert_eq!(n.search(b"a\0").unwrap(), Ok(2));
        assert_eq!(n.search(b"abc").unwrap(), Err(4));
        n.verify_prefixes().unwrap();
    }

    #[test]
    fn removed_cells_are_reclaimed_by_compaction() {
        let mut page = leaf_with(&[b"k1", b"k2"]);
        let before = Node::parse(&page, PageId(5)).unwrap().used_bytes();
        remove_cell(&mut page, PageId(5), 0).unwrap();
        let big = vec![7u8; 2000];
        let mut buf = Vec::new();
        for i in 0..2u8 {
            encode_leaf_cell(
                &mut buf,
                &[b'z', i],
                &LeafValue::Inline(&big[..1950]),
                ValueAlign::NONE,
            );
            let cell = Cell {
                key: &[b'z', i],
                bytes: &buf,
            };
            assert!(
                push_cell(&mut page, PageKind::Leaf, cell),
                "cell {i} fits after compaction"
            );
        }
        let n = Node::parse(&page, PageId(5)).unwrap();
        assert_eq!(n.len(), 3);
        assert!(n.used_bytes() > before);
    }

    #[test]
    fn replace_children_rewrites_every_reference() {
        let mut page = vec![0; 4096];
        init(&mut page, PageKind::Branch, TxnId(1));
        set_leftmost(&mut page, &ChildRef::new(PageId(10), 0, TxnId(1)));
        let mut buf = Vec::new();
        for (key, child) in [(b"b", 11), (b"d", 12)] {
            encode_branch_cell(&mut buf, key, &ChildRef::new(PageId(child), 0, TxnId(1)));
            assert!(push_cell(
                &mut page,
                PageKind::Branch,
                Cell { key, bytes: &buf }
            ));
        }
        replace_children(&mut page, PageId(5), |i, r| {
            Ok(ChildRef::new(r.page(), 100 + i as u32, r.txn()))
        })
        .unwrap();
        let n = Node::parse(&page, PageId(5)).unwrap();
        for (i, id) in [10, 11, 12].into_iter().enumerate() {
            let r = n.child(i).unwrap();
            assert_eq!((r.page(), r.checksum.get()), (PageId(id), 100 + i as u32));
        }
    }

    #[test]
    fn separator_is_shortest_between() {
        assert_eq!(separator(b"abc", b"abd"), b"abd");
        assert_eq!(separator(b"ab", b"abzz"), b"abz");
        assert_eq!(separator(b"a", b"b123"), b"b");
    }

    #[test]
    fn corrupt_offsets_are_errors() {
        let mut page = leaf_with(&[b"key"]);
        page[NODE_HEADER_BYTES + 4..NODE_HEADER_BYTES + 6].copy_from_slice(&4095u16.to_le_bytes());
        let n = Node::parse(&page, PageId(9)).unwrap();
        assert!(matches!(n.key(0), Err(Error::Corrupted { page: 9, .. })));
        page[3] = 2; // 513 slots: past the cells
        assert!(Node::parse(&page, PageId(9)).is_err());
    }
}
