//! The leaf cell's encoding: a four-byte head, the key, and the value (inline, or a
//! reference to an overflow blob), with padding around the value in trees whose values
//! are aligned (`TreeOptions::value_align`). See FORMAT.md#node-pages and
//! FORMAT.md#aligned-values.
//!
//! Alignment without telling the page code: the padding before the value is chosen so
//! that the value starts at a multiple of n when the cell starts at one, and the padding
//! after it makes the cell's length a multiple of n. Cells are laid from the page's end
//! (a multiple of any n) downwards, moved whole and compacted whole, so in a tree whose
//! cells all have such lengths every cell starts, and every value lies, at a multiple of
//! n, wherever splits, merges and compaction put them.

use zerocopy::IntoBytes;

use super::{LeafValue, OVERFLOW_REF_BYTES, SLOT_BYTES, cell_bytes_max};
use crate::page::PageKind;

pub(super) const LEAF_CELL_HEADER_BYTES: usize = 4;

/// The alignment of a tree's values, in bytes: 1 (none) to 64, a power of two.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ValueAlign(usize);

impl ValueAlign {
    pub(crate) const NONE: ValueAlign = ValueAlign(1);

    /// `bytes` is a checked tree option (`TreeOptions::encode`).
    pub(crate) fn of(bytes: usize) -> ValueAlign {
        assert!(
            bytes.is_power_of_two() && bytes <= 64,
            "value_align {bytes}"
        );
        ValueAlign(bytes)
    }

    pub(crate) fn bytes(self) -> usize {
        self.0
    }

    /// The padding that takes `at` to the next multiple.
    pub(crate) fn pad(self, at: usize) -> usize {
        at.wrapping_neg() & (self.0 - 1)
    }
}

// The head's bits: the overflow flag, the inline value's length, and the padding before
// and after the value. Bits 28..31 are zero.
const OVERFLOW_FLAG: u32 = 1 << 31;
const LEN_MASK: u32 = 0xFFFF;
const LEAD_SHIFT: u32 = 16;
const TAIL_SHIFT: u32 = 22;
const PAD_MASK: u32 = 0x3F;
const RESERVED_BITS: u32 = 0x7000_0000;

/// A leaf cell's first four bytes, decoded. Cells written before alignment existed have
/// no padding bits set, so they decode as they always did.
#[derive(Clone, Copy)]
pub(super) struct LeafHead(u32);

impl LeafHead {
    pub(super) fn read(cell: &[u8]) -> LeafHead {
        LeafHead(u32::from_le_bytes(cell[..4].try_into().expect("head size")))
    }

    pub(super) fn is_overflow(self) -> bool {
        self.0 & OVERFLOW_FLAG != 0
    }

    /// Bytes between the key and the value.
    pub(super) fn lead(self) -> usize {
        (self.0 >> LEAD_SHIFT & PAD_MASK) as usize
    }

    /// The bytes the value takes: the inline value, or the overflow reference.
    pub(super) fn value_len(self) -> usize {
        match self.is_overflow() {
            true => OVERFLOW_REF_BYTES,
            false => (self.0 & LEN_MASK) as usize,
        }
    }

    /// Bytes after the key: padding, value, padding.
    pub(super) fn after_key(self) -> usize {
        self.lead() + self.value_len() + (self.0 >> TAIL_SHIFT & PAD_MASK) as usize
    }

    /// Whether the head's unused bits are clear (an overflow cell keeps no length).
    pub(super) fn is_well_formed(self) -> bool {
        self.0 & RESERVED_BITS == 0 && !(self.is_overflow() && self.0 & LEN_MASK != 0)
    }
}

/// The length of a cell holding `key` and a value taking `value_len` bytes, and the
/// padding before and after the value.
fn layout(key_len: usize, value_len: usize, align: ValueAlign) -> (usize, usize, usize) {
    let before = LEAF_CELL_HEADER_BYTES + key_len;
    let lead = align.pad(before);
    let tail = align.pad(before + lead + value_len);
    (before + lead + value_len + tail, lead, tail)
}

/// Whether a value of this size is stored inline next to its key.
#[inline]
pub(crate) fn value_fits_inline(
    key_len: usize,
    value_len: u64,
    page_size: usize,
    align: ValueAlign,
) -> bool {
    let max = cell_bytes_max(PageKind::Leaf, page_size);
    value_len <= max as u64 && SLOT_BYTES + layout(key_len, value_len as usize, align).0 <= max
}

/// Encodes a leaf cell into `out` (cleared first).
pub(crate) fn encode_leaf_cell(
    out: &mut Vec<u8>,
    key: &[u8],
    value: &LeafValue,
    align: ValueAlign,
) {
    let (value_bytes, flag, len) = match value {
        LeafValue::Inline(v) => (*v, 0, v.len() as u32),
        LeafValue::Overflow(r) => (r.as_bytes(), OVERFLOW_FLAG, 0),
    };
    let (cell_len, lead, tail) = layout(key.len(), value_bytes.len(), align);
    let head = flag | len | (lead as u32) << LEAD_SHIFT | (tail as u32) << TAIL_SHIFT;
    out.clear();
    out.reserve(cell_len);
    out.extend_from_slice(&head.to_le_bytes());
    out.extend_from_slice(key);
    out.resize(out.len() + lead, 0);
    out.extend_from_slice(value_bytes);
    out.resize(cell_len, 0);
}

/// Writes an inline cell into `cell` (exactly `inline_cell_len` bytes, zeroed or not):
/// the bulk loader's encoding in place.
pub(super) fn write_inline_cell(cell: &mut [u8], key: &[u8], value: &[u8], align: ValueAlign) {
    let (cell_len, lead, tail) = layout(key.len(), value.len(), align);
    debug_assert_eq!(cell.len(), cell_len);
    let head = value.len() as u32 | (lead as u32) << LEAD_SHIFT | (tail as u32) << TAIL_SHIFT;
    let (head_bytes, rest) = cell.split_at_mut(LEAF_CELL_HEADER_BYTES);
    head_bytes.copy_from_slice(&head.to_le_bytes());
    let (key_bytes, rest) = rest.split_at_mut(key.len());
    key_bytes.copy_from_slice(key);
    let (pad, rest) = rest.split_at_mut(lead);
    pad.fill(0);
    let (value_bytes, pad) = rest.split_at_mut(value.len());
    value_bytes.copy_from_slice(value);
    pad.fill(0);
    debug_assert_eq!(pad.len(), tail);
}

/// The length of the inline cell `write_inline_cell` writes.
pub(super) fn inline_cell_len(key_len: usize, value_len: usize, align: ValueAlign) -> usize {
    layout(key_len, value_len, align).0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_start_and_cells_end_at_multiples_of_the_alignment() {
        for n in [1, 2, 4, 8, 16, 32, 64] {
            let align = ValueAlign::of(n);
            for key_len in [0, 1, 3, 7, 24, 63] {
                for value_len in [0, 1, 5, 150, 1536] {
                    let key = vec![7u8; key_len];
                    let value = vec![9u8; value_len];
                    let mut cell = Vec::new();
                    encode_leaf_cell(&mut cell, &key, &LeafValue::Inline(&value), align);
                    assert_eq!(cell.len() % n, 0);
                    let head = LeafHead::read(&cell);
                    assert!(head.is_well_formed());
                    let at = LEAF_CELL_HEADER_BYTES + key_len + head.lead();
                    assert_eq!(at % n, 0, "value at {at}, align {n}");
                    assert_eq!(&cell[at..at + value_len], &value[..]);
                    assert_eq!(
                        LEAF_CELL_HEADER_BYTES + key_len + head.after_key(),
                        cell.len()
                    );
                    let mut in_place = vec![0xAA; cell.len()];
                    write_inline_cell(&mut in_place, &key, &value, align);
                    assert_eq!(in_place, cell);
                }
            }
        }
    }

    #[test]
    fn unaligned_cells_are_encoded_as_before_alignment_existed() {
        let mut cell = Vec::new();
        encode_leaf_cell(
            &mut cell,
            b"key",
            &LeafValue::Inline(b"value"),
            ValueAlign::NONE,
        );
        assert_eq!(cell, b"\x05\0\0\0keyvalue");
    }
}
