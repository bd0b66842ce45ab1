//! Runs of inserts, and where a full node is cut when one reaches it. A leaf's header
//! keeps an insert hint: a fingerprint of its last new key, and whether that key went
//! right after (or right before) the new key before it. An insert that continues such a
//! run into a full leaf cuts the leaf at the insertion point, so the run goes on filling
//! one page while the page behind it stays full, instead of leaving a half-empty page
//! behind at every split. See FORMAT.md#insert-hints.
//!
//! Why a hint in the page rather than SQLite's rule (split at the point only in the
//! tree's rightmost leaf) or state kept by the transaction: several series appended in
//! turn (`series | timestamp` keys) append to interior leaves, and one commit per append
//! loses whatever a transaction remembers; the page itself travels with the tree. Why
//! a run of two adjacent inserts and not "the insert is at the end": under random
//! inserts the last slot of a full leaf is taken one time in a hundred, and a cut there
//! leaves a page covering a tiny gap of keys that random inserts take long to fill;
//! two inserts in a row each next to the one before (or seeming so: the fingerprint has
//! six bits) happen to random keys about once in a thousand splits.

use super::{Cell, Node, slots_start};
use crate::error::Result;
use crate::page::{PageKind, header, header_mut};

/// The bits of the hint that hold the fingerprint of the last new key.
const KEY_BITS: u8 = 0x3f;
/// The last new key went right after the new key before it.
const UP: u8 = 1 << 6;
/// The last new key went right before the new key before it.
const DOWN: u8 = 1 << 7;

/// Which way a run of inserts goes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Run {
    /// Each key right after the one before (appends).
    Up,
    /// Each key right before the one before.
    Down,
}

/// A leaf's insert hint (the page header's flags byte; 0 in leaves no insert has
/// touched since they were built). See FORMAT.md#insert-hints.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Hint(u8);

/// Six bits of a hash of `key`: FNV-1a over its 8-byte little-endian words (the last
/// one zero-padded; 64-bit prime, offset basis XOR the key's length), its high half
/// folded into the low, times the golden ratio, top six bits. A hash, not the key's
/// slot: keys of series appended in lockstep sit at slot distances that repeat, and
/// slots modulo 64 matched for whole stretches of them. Not crc32 either: it is linear,
/// so two series whose ids differ by a fixed pattern would collide (or not) at every
/// timestamp alike. Word by word, not byte by byte: an insert hashes up to three keys,
/// and bytewise FNV made that a tenth of an insert's instructions.
fn fingerprint(key: &[u8]) -> u8 {
    let words = key.chunks(8).map(|c| {
        let mut w = [0u8; 8];
        w[..c.len()].copy_from_slice(c);
        u64::from_le_bytes(w)
    });
    let fnv = words.fold(0xcbf2_9ce4_8422_2325u64 ^ key.len() as u64, |h, w| {
        (h ^ w).wrapping_mul(0x0000_0100_0000_01b3)
    });
    // Word-wise FNV leaves the high bits poorly mixed (for two-byte keys, 12 distinct
    // fingerprints in 100): fold the high half in first.
    ((fnv ^ fnv >> 32).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as u8
}

impl Hint {
    pub(crate) fn of(page: &[u8]) -> Hint {
        Hint(header(page).flags)
    }

    /// After the new key `key` went in, adjacent to the last new key in the direction
    /// `run` (if it was).
    pub(crate) fn after(key: &[u8], run: Option<Run>) -> Hint {
        let dir = match run {
            Some(Run::Up) => UP,
            Some(Run::Down) => DOWN,
            None => 0,
        };
        Hint(dir | fingerprint(key))
    }

    pub(crate) fn write(self, page: &mut [u8]) {
        header_mut(page).flags = self.0;
    }

    /// Whether a new key at slot `pos` of `leaf` (whose hint this is) goes right after
    /// (`Up`: the key before it is the last new key) or right before (`Down`: the key
    /// it goes before is) the last new key, as far as six bits of a hash tell; the run
    /// the hint shows first if both do.
    pub(crate) fn adjacent(self, leaf: &Node, pos: usize) -> Result<Option<Run>> {
        let last = self.0 & KEY_BITS;
        let up = pos > 0 && fingerprint(leaf.key(pos - 1)?) == last;
        let down = pos < leaf.len() && fingerprint(leaf.key(pos)?) == last;
        Ok(match (up, down) {
            (true, true) if self.0 & DOWN != 0 => Some(Run::Down),
            (true, _) => Some(Run::Up),
            (false, true) => Some(Run::Down),
            (false, false) => None,
        })
    }

    /// Whether the last new key went in the direction `run` from the one before.
    pub(crate) fn continues(self, run: Run) -> bool {
        let bit = match run {
            Run::Up => UP,
            Run::Down => DOWN,
        };
        self.0 & bit != 0
    }
}

/// Where to cut `cells` (too many for one page; the new cell at `pos`) so that `run`
/// keeps filling one page: `Some(at)`, the first cell of the right page (leaves) or the
/// cell that moves up (branches), or `None` if no such cut fits (fall back to an even
/// split).
///
/// Leaves: a run up cuts just after the new cell, so the left page ends with it and the
/// next keys of the run go there; at the end of the page (an append) the old cells stay
/// left and the new one starts the right page alone. A run down mirrors it. Branches
/// (only at their edge, where a child that was cut at its edge adds its new page): up,
/// the last old cell moves up and the right page keeps its child and the new one;
/// down, the left page keeps the new cell and the old first cell moves up. A branch
/// page keeps at least one key either way.
pub(crate) fn run_cut(
    kind: PageKind,
    page_size: usize,
    cells: &[Cell],
    pos: usize,
    run: Run,
) -> Option<usize> {
    let len = cells.len();
    let at = match (kind, run) {
        (PageKind::Leaf, Run::Up) if pos + 1 == len => pos,
        (PageKind::Leaf, Run::Up) => pos + 1,
        (PageKind::Leaf, Run::Down) if pos == 0 => 1,
        (PageKind::Leaf, Run::Down) => pos,
        (_, Run::Up) if pos + 1 == len => len.checked_sub(2)?,
        (_, Run::Down) if pos == 0 => 1,
        _ => return None,
    };
    let (left, right) = match kind {
        PageKind::Leaf => (&cells[..at], cells.get(at..)?),
        _ => (&cells[..at], cells.get(at + 1..)?),
    };
    let room = page_size - slots_start(kind);
    let bytes = |cells: &[Cell]| cells.iter().map(Cell::footprint).sum::<usize>();
    let fits = !left.is_empty() && !right.is_empty() && bytes(left) <= room && bytes(right) <= room;
    fits.then_some(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adjacency_follows_the_last_new_key() {
        use crate::node::{LeafValue, ValueAlign, encode_leaf_cell, init, push_cell};
        use crate::page::{PageId, TxnId};
        let mut page = vec![0; 4096];
        init(&mut page, PageKind::Leaf, TxnId(1));
        let mut buf = Vec::new();
        let keys: Vec<[u8; 2]> = (0..100u8).map(|i| [b'k', i * 2]).collect();
        for k in &keys {
            encode_leaf_cell(&mut buf, k, &LeafValue::Inline(b"v"), ValueAlign::NONE);
            assert!(push_cell(
                &mut page,
                PageKind::Leaf,
                Cell {
                    key: k,
                    bytes: &buf
                }
            ));
        }
        let leaf = Node::parse(&page, PageId(3)).unwrap();
        let hint = Hint::after(&keys[40], Some(Run::Up));
        assert_eq!(hint.adjacent(&leaf, 41).unwrap(), Some(Run::Up));
        assert_eq!(hint.adjacent(&leaf, 40).unwrap(), Some(Run::Down));
        assert!(hint.continues(Run::Up) && !hint.continues(Run::Down));
        // Six bits of a hash: of the other slots, about one in 32 seems adjacent.
        let seeming = (0..=100).filter(|&pos| pos != 40 && pos != 41);
        let seeming = seeming.filter(|&pos| hint.adjacent(&leaf, pos).unwrap().is_some());
        assert!(seeming.count() <= 10);
        let end = Hint::after(&keys[99], None);
        assert_eq!(end.adjacent(&leaf, 100).unwrap(), Some(Run::Up));
        assert!(!end.continues(Run::Up));
    }

    #[test]
    fn run_cuts_keep_the_old_cells_together() {
        let bytes = vec![0; 100];
        let cells: Vec<Cell> = (0..6)
            .map(|_| Cell {
                key: b"k",
                bytes: &bytes,
            })
            .collect();
        let cut = |kind, pos, run| run_cut(kind, 4096, &cells, pos, run);
        assert_eq!(cut(PageKind::Leaf, 5, Run::Up), Some(5));
        assert_eq!(cut(PageKind::Leaf, 2, Run::Up), Some(3));
        assert_eq!(cut(PageKind::Leaf, 0, Run::Down), Some(1));
        assert_eq!(cut(PageKind::Leaf, 2, Run::Down), Some(2));
        assert_eq!(cut(PageKind::Branch, 5, Run::Up), Some(4));
        assert_eq!(cut(PageKind::Branch, 0, Run::Down), Some(1));
        assert_eq!(cut(PageKind::Branch, 2, Run::Up), None);
        // Too much for the side that keeps the old cells: an even split instead.
        assert_eq!(run_cut(PageKind::Leaf, 400, &cells, 5, Run::Up), None);
    }
}
