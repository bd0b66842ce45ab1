//! What a tree fixes when it is created: the alignment of its values in the file, and,
//! for typed tables, the layout of the value type. Both live in the tree record's
//! `values` field (FORMAT.md#tree-record), so that opening the tree with other options
//! is refused instead of misreading it.

use crate::error::{Error, Result};

/// Options a tree is created with, fixed for its life.
///
/// ```
/// # fn main() -> mapkv::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let db = mapkv::Database::open(dir.path().join("db"))?;
/// use mapkv::TreeOptions;
///
/// let wtx = db.begin_write()?;
/// // Every value's first byte lies at a file offset that is a multiple of 8, so a value
/// // read from the map (or a page buffer) can be viewed as `&[u64]` without a copy.
/// let mut t = wtx.open_tree_with("counters", TreeOptions::new().value_align(8))?;
/// t.insert(b"a", &42u64.to_le_bytes())?;
/// assert_eq!(t.get(b"a")?.unwrap().as_ptr() as usize % 8, 0);
/// wtx.commit()?;
///
/// // The alignment is part of the tree: another one is refused.
/// let wtx = db.begin_write()?;
/// assert!(matches!(
///     wtx.open_tree_with("counters", TreeOptions::new().value_align(16)),
///     Err(mapkv::Error::InvalidOptions(_))
/// ));
/// # Ok(()) }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TreeOptions {
    /// As given; checked when the tree is opened.
    align: usize,
    layout: ValueLayout,
}

/// What a typed table records about its value type, so that opening it with another
/// type fails: the size of a sized value, or of each element of a slice-like one.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct ValueLayout {
    /// 0 for raw bytes (no type recorded); at most `LAYOUT_SIZE_MAX`.
    pub size: u32,
    /// Whether values are slices of `size`-byte elements (else exactly `size` bytes).
    pub slice: bool,
}

/// The largest alignment a tree may ask for: a cache line, and what SIMD loads want.
pub(crate) const VALUE_ALIGN_MAX: usize = 64;

/// Sizes a typed table can record (24 bits of the record's field).
pub(crate) const LAYOUT_SIZE_MAX: u32 = (1 << 24) - 1;

// The record's `values` field: bits 0..3 log2 of the alignment, bit 4 the slice flag,
// bits 8..32 the layout's size; bits 5..8 are zero.
const ALIGN_BITS: u32 = 0xF;
const SLICE_BIT: u32 = 1 << 4;
const SIZE_SHIFT: u32 = 8;
const RESERVED_BITS: u32 = 0xE0;

impl Default for TreeOptions {
    /// As [`TreeOptions::new`].
    fn default() -> TreeOptions {
        TreeOptions::new()
    }
}

impl TreeOptions {
    /// Values aligned to 1 byte (stored as in trees made before alignment existed), no
    /// typed layout.
    pub const fn new() -> TreeOptions {
        TreeOptions {
            align: 1,
            layout: ValueLayout {
                size: 0,
                slice: false,
            },
        }
    }

    /// Stores every value, inline or large, so that its first byte lies at a file offset
    /// that is a multiple of `bytes` (a power of two from 1 to 64; another is
    /// `Error::InvalidOptions` when the tree is opened). Page buffers are aligned too, so
    /// the `&[u8]` that reads return is aligned in memory at every `mmap_size`. Each
    /// value then costs up to `2 * (bytes - 1)` bytes of padding in its leaf.
    pub const fn value_align(mut self, bytes: usize) -> TreeOptions {
        self.align = bytes;
        self
    }

    /// Records a typed table's value layout (`crate::typed`).
    pub(crate) const fn value_layout(mut self, layout: ValueLayout) -> TreeOptions {
        self.layout = layout;
        self
    }

    /// The alignment of values, in bytes (`value_align`; 1 unless asked for).
    pub const fn alignment(&self) -> usize {
        self.align
    }

    /// Whether these are a typed table's options: they record its value type's layout,
    /// which only `open_table` (with the same type) can ask for. (A table of a
    /// zero-sized type records no layout, and reads as untyped.)
    pub const fn is_typed(&self) -> bool {
        self.layout.size != 0 || self.layout.slice
    }

    /// The record field for these options, or why they are invalid.
    pub(crate) fn encode(&self) -> Result<u32> {
        if !self.align.is_power_of_two() || self.align > VALUE_ALIGN_MAX {
            return Err(Error::InvalidOptions(format!(
                "value_align {} is not a power of two from 1 to {VALUE_ALIGN_MAX}",
                self.align
            )));
        }
        if self.layout.size > LAYOUT_SIZE_MAX {
            return Err(Error::InvalidOptions(format!(
                "values of {} bytes are too large for a typed table",
                self.layout.size
            )));
        }
        let slice = if self.layout.slice { SLICE_BIT } else { 0 };
        Ok(self.align.trailing_zeros() | slice | self.layout.size << SIZE_SHIFT)
    }

    /// The options a tree record's field holds; None if the field is malformed.
    pub(crate) fn decode(values: u32) -> Option<TreeOptions> {
        let log2 = values & ALIGN_BITS;
        if values & RESERVED_BITS != 0 || (1usize << log2) > VALUE_ALIGN_MAX {
            return None;
        }
        Some(TreeOptions {
            align: 1 << log2,
            layout: ValueLayout {
                size: values >> SIZE_SHIFT,
                slice: values & SLICE_BIT != 0,
            },
        })
    }

    /// Checks that a tree created with `self` may be opened with `asked`.
    pub(crate) fn check_opened_with(&self, asked: &TreeOptions, name: &str) -> Result<()> {
        match self == asked {
            true => Ok(()),
            false => Err(Error::InvalidOptions(format!(
                "tree {name:?} was created with {self:?}, not {asked:?}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_round_trip_through_the_record_field() {
        for align in [1, 2, 4, 8, 16, 32, 64] {
            for layout in [
                ValueLayout::default(),
                ValueLayout {
                    size: 1536,
                    slice: false,
                },
                ValueLayout {
                    size: 4,
                    slice: true,
                },
            ] {
                let o = TreeOptions::new().value_align(align).value_layout(layout);
                assert_eq!(TreeOptions::decode(o.encode().unwrap()), Some(o));
            }
        }
        assert_eq!(
            TreeOptions::new().encode().unwrap(),
            0,
            "old records read as new()"
        );
    }

    #[test]
    fn the_default_is_new() {
        assert_eq!(TreeOptions::default(), TreeOptions::new());
        assert_eq!(TreeOptions::default().encode().unwrap(), 0);
    }

    #[test]
    fn bad_alignments_and_fields_are_refused() {
        for align in [0, 3, 128, 4096] {
            assert!(TreeOptions::new().value_align(align).encode().is_err());
        }
        assert!(TreeOptions::decode(7).is_none(), "2^7 > 64");
        assert!(TreeOptions::decode(0x20).is_none(), "reserved bit");
    }
}
