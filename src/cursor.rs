//! Ordered iteration: a cursor is a root-to-leaf path; `Range` runs one cursor from each
//! end and stops where they meet.

use std::ops::Bound;

use crate::error::{Error, Result};
use crate::node::{LeafValue, Node};
use crate::tree::{Pages, TreeRecord, load, parse_at_depth, resolve};

/// A position: the path from the root, each node with the index taken in it (child index
/// in branches, entry index in the leaf). Empty when exhausted.
struct Cursor<'a> {
    path: Vec<(Node<'a>, usize)>,
    depth: u32,
    /// Nodes it may still load. A walk of a sound tree loads each node once, so at most
    /// as many as the file has pages; a corrupt file whose references share pages (a
    /// DAG) would otherwise take exponential time.
    loads_left: u64,
}

/// Which end a cursor starts from when a branch is entered without a key.
#[derive(Clone, Copy, PartialEq)]
enum End {
    First,
    Last,
}

impl<'a> Cursor<'a> {
    /// Descends from `tree`'s root towards `key` (or the `end` side when `key` is None),
    /// leaving the leaf index at the search position (or at that end).
    fn descend(
        pages: &'a dyn Pages,
        tree: &TreeRecord,
        key: Option<&[u8]>,
        end: End,
    ) -> Result<(Cursor<'a>, std::result::Result<usize, usize>)> {
        let mut cursor = Cursor {
            path: Vec::with_capacity(tree.depth.get() as usize),
            depth: tree.depth.get(),
            loads_left: pages.pages_readable(),
        };
        if tree.root.is_null() {
            return Ok((cursor, Err(0)));
        }
        let mut r = tree.root;
        let mut levels = tree.depth.get();
        loop {
            let node = load(pages, &r, levels)?;
            let at = match (key, node.is_leaf()) {
                (Some(k), true) => node.search(k)?,
                (Some(k), false) => Ok(node.child_index(k)?),
                (None, true) if end == End::Last => Err(node.len()),
                (None, false) if end == End::Last => Ok(node.len()),
                (None, _) => Err(0),
            };
            let index = at.unwrap_or_else(|i| i);
            cursor.path.push((node, index));
            if node.is_leaf() {
                return Ok((cursor, at));
            }
            r = node.child(index)?;
            levels -= 1;
        }
    }

    /// The first entry `>= key` (or `> key`), or the first of the tree.
    fn seek_first(pages: &'a dyn Pages, tree: &TreeRecord, from: Bound<&[u8]>) -> Result<Self> {
        let key = match from {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        };
        let (mut c, at) = Cursor::descend(pages, tree, key, End::First)?;
        if let (Bound::Excluded(_), Ok(_)) = (from, at) {
            c.index_add(1);
        }
        c.settle_forward(pages)?;
        Ok(c)
    }

    /// The last entry `<= key` (or `< key`), or the last of the tree.
    fn seek_last(pages: &'a dyn Pages, tree: &TreeRecord, to: Bound<&[u8]>) -> Result<Self> {
        let key = match to {
            Bound::Included(k) | Bound::Excluded(k) => Some(k),
            Bound::Unbounded => None,
        };
        let (mut c, at) = Cursor::descend(pages, tree, key, End::Last)?;
        // The leaf index is one past the wanted entry; step back onto it.
        if let (Bound::Included(_), Ok(_)) = (to, at) {
            c.index_add(1);
        }
        c.step_back(pages)?;
        Ok(c)
    }

    fn index_add(&mut self, n: usize) {
        if let Some(last) = self.path.last_mut() {
            last.1 += n;
        }
    }

    fn current(&self) -> Option<(Node<'a>, usize)> {
        self.path.last().copied()
    }

    /// Moves to the next entry: within the leaf at once (the common case, inlined into
    /// the iterator's step), else through `settle_forward`.
    #[inline(always)]
    fn step_forward(&mut self, pages: &'a dyn Pages) -> Result<()> {
        if let Some((node, i)) = self.path.last_mut()
            && node.is_leaf()
            && *i + 1 < node.len()
        {
            *i += 1;
            return Ok(());
        }
        self.index_add(1);
        self.settle_forward(pages)
    }

    /// If the leaf index is past the leaf's end, moves to the first entry of the next
    /// non-empty leaf, or exhausts the cursor.
    fn settle_forward(&mut self, pages: &'a dyn Pages) -> Result<()> {
        loop {
            let Some(&(node, i)) = self.path.last() else {
                return Ok(());
            };
            let width = if node.is_leaf() {
                node.len()
            } else {
                node.len() + 1
            };
            if i < width {
                if node.is_leaf() {
                    return Ok(());
                }
                self.push_child(pages, End::First)?;
                continue;
            }
            // Past the end of this node: move its parent on to the next child.
            self.path.pop();
            self.index_add(1);
        }
    }

    /// Moves to the previous entry, or exhausts the cursor. The leaf index may be one
    /// past the leaf's end (as `seek_last` leaves it).
    fn step_back(&mut self, pages: &'a dyn Pages) -> Result<()> {
        loop {
            let Some(top) = self.path.last_mut() else {
                return Ok(());
            };
            if top.1 == 0 {
                self.path.pop();
                continue;
            }
            top.1 -= 1;
            if top.0.is_leaf() {
                return Ok(());
            }
            // A branch whose child was exhausted backwards: enter the previous child at
            // its right end, one past its last entry, and step back from there.
            loop {
                self.push_child(pages, End::Last)?;
                if self.path.last().expect("just pushed").0.is_leaf() {
                    break;
                }
            }
        }
    }

    /// Descends one level into the child the top branch points at.
    fn push_child(&mut self, pages: &'a dyn Pages, end: End) -> Result<()> {
        let (node, i) = *self.path.last().expect("a branch to descend from");
        let levels = self.levels_below();
        let r = node.child(i)?;
        self.loads_left = self.loads_left.checked_sub(1).ok_or_else(|| {
            Error::corrupted(
                r.page.get(),
                "a walk reached more nodes than the file has pages: references share pages",
            )
        })?;
        // Not `load`: its prefetch of the node's head is for a search, which reads a few
        // lines of the page; a cursor stepping on reads the whole leaf, and asking for its
        // first lines ahead made full scans that read every value 22 % slower
        // (BENCHMARKS.md, "Prefetching a node's head").
        let child = parse_at_depth(pages.page(r.page())?, r.page(), levels)?;
        // Last: the last child of a branch, one past the last entry of a leaf.
        let index = match end {
            End::First => 0,
            End::Last => child.len(),
        };
        self.path.push((child, index));
        Ok(())
    }

    /// Levels left below the top of the path (the path starts at the root).
    fn levels_below(&self) -> u32 {
        self.depth - self.path.len() as u32
    }
}

/// Entries of a tree in key order, from either end: `Iterator` + `DoubleEndedIterator`
/// of `Result<(key, value)>`, borrowed for the transaction (or, in a write transaction,
/// for as long as the tree is not modified).
///
/// After an error the iterator yields nothing more. `Send`: an iteration may move to
/// another thread.
pub struct Range<'a> {
    pages: &'a dyn Pages,
    tree: TreeRecord,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    front: Side<'a>,
    back: Side<'a>,
    done: bool,
    /// False for [`Range::keys`]: overflow values are not read (values come back empty).
    values: bool,
}

/// One end of a range: its cursor once positioned, and the last key it returned, which
/// the other end must not reach.
struct Side<'a> {
    cursor: Option<Cursor<'a>>,
    last_key: Option<&'a [u8]>,
}

impl<'a> Range<'a> {
    pub(crate) fn new(
        pages: &'a dyn Pages,
        tree: TreeRecord,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
    ) -> Range<'a> {
        let empty = match (&lower, &upper) {
            (Bound::Included(a), Bound::Included(b)) => a > b,
            (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b))
            | (Bound::Excluded(a), Bound::Included(b)) => a >= b,
            _ => false,
        };
        Range {
            pages,
            tree,
            lower,
            upper,
            front: Side {
                cursor: None,
                last_key: None,
            },
            back: Side {
                cursor: None,
                last_key: None,
            },
            done: empty || tree.root.is_null(),
            values: true,
        }
    }

    /// The keys alone, in the same order; overflow values are not read.
    pub fn keys(mut self) -> Keys<'a> {
        self.values = false;
        Keys(self)
    }

    /// The values alone, in key order.
    pub fn values(self) -> Values<'a> {
        Values(self)
    }

    /// The bytes of a leaf's `value`, unless only keys are wanted. Inlined into the
    /// steps, whose hot path it is (called, it cost a 10-entry range 7 % more
    /// instructions).
    #[inline(always)]
    fn value_of(&self, value: LeafValue<'a>) -> Result<&'a [u8]> {
        match self.values {
            true => resolve(self.pages, value),
            false => Ok(&[]),
        }
    }

    fn next_front(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        let pages = self.pages;
        match &mut self.front.cursor {
            Some(c) => c.step_forward(pages)?,
            None => {
                let from = as_ref(&self.lower);
                self.front.cursor = Some(Cursor::seek_first(pages, &self.tree, from)?);
            }
        }
        let Some((node, i)) = self.front.cursor.as_ref().and_then(Cursor::current) else {
            return Ok(None);
        };
        let (key, value) = node.leaf_entry(i)?;
        let beyond_upper = match &self.upper {
            Bound::Included(u) => key > u.as_slice(),
            Bound::Excluded(u) => key >= u.as_slice(),
            Bound::Unbounded => false,
        };
        if beyond_upper || self.back.last_key.is_some_and(|b| key >= b) {
            return Ok(None);
        }
        self.front.last_key = Some(key);
        Ok(Some((key, self.value_of(value)?)))
    }

    fn next_back_inner(&mut self) -> Result<Option<(&'a [u8], &'a [u8])>> {
        let pages = self.pages;
        match &mut self.back.cursor {
            Some(c) => c.step_back(pages)?,
            None => {
                let to = as_ref(&self.upper);
                self.back.cursor = Some(Cursor::seek_last(pages, &self.tree, to)?);
            }
        }
        let Some((node, i)) = self.back.cursor.as_ref().and_then(Cursor::current) else {
            return Ok(None);
        };
        let (key, value) = node.leaf_entry(i)?;
        let below_lower = match &self.lower {
            Bound::Included(l) => key < l.as_slice(),
            Bound::Excluded(l) => key <= l.as_slice(),
            Bound::Unbounded => false,
        };
        if below_lower || self.front.last_key.is_some_and(|f| key <= f) {
            return Ok(None);
        }
        self.back.last_key = Some(key);
        Ok(Some((key, self.value_of(value)?)))
    }

    /// Ends the iteration on `None` or an error, so nothing follows either.
    fn finish(
        &mut self,
        r: Result<Option<(&'a [u8], &'a [u8])>>,
    ) -> Option<Result<(&'a [u8], &'a [u8])>> {
        match r {
            Ok(Some(kv)) => Some(Ok(kv)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

fn as_ref(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<'a> Iterator for Range<'a> {
    type Item = Result<(&'a [u8], &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_front();
        self.finish(r)
    }
}

impl DoubleEndedIterator for Range<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let r = self.next_back_inner();
        self.finish(r)
    }
}

impl std::iter::FusedIterator for Range<'_> {}

/// A range of keys, as `range` and `remove_range` take it: `..`, `a..b`, `a..=b`,
/// `a..`, `..b`, `..=b` or a pair of [`Bound`]s, over any byte string type (`&[u8]`,
/// `Vec<u8>`, `[u8; N]`, `&[u8; N]`, `&str`, `String`).
///
/// `K` is the key type, as in `RangeBounds<K>`, so that calls that name it
/// (`tree.range::<&[u8], _>(..)`) keep working; but each range type implements the
/// trait for one `K` only (`..` for `&[u8]`), so `tree.range(..)` needs no annotation.
///
/// ```
/// # fn main() -> mapkv::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let db = mapkv::Database::open(dir.path().join("db"))?;
/// # let wtx = db.begin_write()?;
/// let mut t = wtx.open_tree("t")?;
/// for k in ["a", "b", "c", "d"] {
///     t.insert(k.as_bytes(), b"")?;
/// }
/// assert_eq!(t.range(..)?.count(), 4);
/// assert_eq!(t.range("b".."d")?.count(), 2);
/// assert_eq!(t.range(b"b"..=b"d")?.count(), 3);
/// assert_eq!(t.range(vec![b'c']..)?.count(), 2);
/// # Ok(()) }
/// ```
pub trait KeyRange<K: ?Sized> {
    /// The range's two ends, as byte strings.
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>);
}

impl KeyRange<&'static [u8]> for std::ops::RangeFull {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for std::ops::Range<K> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            Bound::Included(self.start.as_ref()),
            Bound::Excluded(self.end.as_ref()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for std::ops::RangeInclusive<K> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            Bound::Included(self.start().as_ref()),
            Bound::Included(self.end().as_ref()),
        )
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for std::ops::RangeFrom<K> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Included(self.start.as_ref()), Bound::Unbounded)
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for std::ops::RangeTo<K> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Unbounded, Bound::Excluded(self.end.as_ref()))
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for std::ops::RangeToInclusive<K> {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (Bound::Unbounded, Bound::Included(self.end.as_ref()))
    }
}

impl<K: AsRef<[u8]>> KeyRange<K> for (Bound<K>, Bound<K>) {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (bound_bytes(&self.0), bound_bytes(&self.1))
    }
}

impl<K: ?Sized, R: KeyRange<K> + ?Sized> KeyRange<K> for &R {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (**self).bounds()
    }
}

fn bound_bytes<K: AsRef<[u8]>>(b: &Bound<K>) -> Bound<&[u8]> {
    match b {
        Bound::Included(k) => Bound::Included(k.as_ref()),
        Bound::Excluded(k) => Bound::Excluded(k.as_ref()),
        Bound::Unbounded => Bound::Unbounded,
    }
}

/// Converts a key range into owned byte bounds.
pub(crate) fn owned_bounds<K: ?Sized>(
    range: &impl KeyRange<K>,
) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let (lower, upper) = range.bounds();
    (lower.map(<[u8]>::to_vec), upper.map(<[u8]>::to_vec))
}

/// The bounds of the keys that start with `prefix`: from `prefix` itself up to (not
/// including) the first key past all of them, which is `prefix` with its last byte
/// below 0xFF incremented and the 0xFF bytes after it dropped; unbounded above when
/// there is no such byte (the empty prefix, or one of only 0xFF bytes).
pub(crate) fn prefix_bounds(prefix: &[u8]) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
    let upper = match prefix.iter().rposition(|&b| b != 0xFF) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            Bound::Excluded(end)
        }
        None => Bound::Unbounded,
    };
    (Bound::Included(prefix.to_vec()), upper)
}

/// The keys of a [`Range`], in the same order (from [`Range::keys`]). Overflow values
/// are not read.
pub struct Keys<'a>(Range<'a>);

impl<'a> Iterator for Keys<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|e| e.map(|(k, _)| k))
    }
}

impl DoubleEndedIterator for Keys<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|e| e.map(|(k, _)| k))
    }
}

impl std::iter::FusedIterator for Keys<'_> {}

/// The values of a [`Range`], in key order (from [`Range::values`]).
pub struct Values<'a>(Range<'a>);

impl<'a> Iterator for Values<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        self.0.next().map(|e| e.map(|(_, v)| v))
    }
}

impl DoubleEndedIterator for Values<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.0.next_back().map(|e| e.map(|(_, v)| v))
    }
}

impl std::iter::FusedIterator for Values<'_> {}
