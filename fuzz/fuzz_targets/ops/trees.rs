//! The trees the target works on, and what the model needs to know of them: their
//! names, the options each is opened with, the longest key each takes, and which keys a
//! range holds.

use std::collections::BTreeMap;
use std::ops::Bound;

use mapkv::TreeOptions;

pub type Tree = BTreeMap<Vec<u8>, Vec<u8>>;
pub type Trees = BTreeMap<String, Tree>;

const TREE_NAMES: [&str; 4] = ["a", "b", "", "a tree with a longer name"];

/// Tree "b" stores its values aligned to 16 bytes (FORMAT.md#aligned-values); the
/// others are plain. Every write transaction opens trees with these options, and
/// `Database::check` verifies the alignment.
const ALIGNED_TREE: (&str, usize) = ("b", 16);

fn tree_options(tree: &str) -> TreeOptions {
    match tree == ALIGNED_TREE.0 {
        true => TreeOptions::new().value_align(ALIGNED_TREE.1),
        false => TreeOptions::new(),
    }
}

/// The longest key `tree` takes: the padding of aligned values comes out of its room.
pub fn key_max(page_size: usize, tree: &str) -> usize {
    let pads = match tree == ALIGNED_TREE.0 {
        true => 2 * (ALIGNED_TREE.1 - 1),
        false => 0,
    };
    page_size / 2 - 128 - pads
}

/// `value`, after checking that a value of the aligned tree lies at an aligned address
/// (page buffers are 64-byte aligned, the map page-aligned).
pub fn aligned<'v>(tree: &str, value: &'v [u8]) -> &'v [u8] {
    if tree == ALIGNED_TREE.0 {
        assert_eq!(
            value.as_ptr() as usize % ALIGNED_TREE.1,
            0,
            "an unaligned value"
        );
    }
    value
}

pub trait OpenModelTree {
    fn open_model_tree(&self, tree: &str) -> mapkv::Result<mapkv::WriteTree<'_>>;
}

impl OpenModelTree for mapkv::WriteTxn {
    fn open_model_tree(&self, tree: &str) -> mapkv::Result<mapkv::WriteTree<'_>> {
        self.open_tree_with(tree, tree_options(tree))
    }
}

pub fn name(t: u8) -> &'static str {
    TREE_NAMES[t as usize % TREE_NAMES.len()]
}

pub fn in_range(k: &[u8], lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    let above = match lo {
        Bound::Unbounded => true,
        Bound::Included(l) => k >= l.as_slice(),
        Bound::Excluded(l) => k > l.as_slice(),
    };
    let below = match hi {
        Bound::Unbounded => true,
        Bound::Included(h) => k <= h.as_slice(),
        Bound::Excluded(h) => k < h.as_slice(),
    };
    above && below
}
