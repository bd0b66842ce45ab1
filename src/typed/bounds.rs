//! The key ranges a typed table's `range` takes, encoded into byte bounds.

use std::ops::{Bound, RangeFrom, RangeFull, RangeInclusive, RangeTo, RangeToInclusive};

use crate::typed::Key;

/// A key of a table with keys `K`, by value or by reference: `u64` or `&u64` for `K =
/// u64`, `&str` for `K = str`. What a range's ends may be.
pub trait KeyRef<K: ?Sized> {
    /// The key.
    fn key(&self) -> &K;
}

impl<K: ?Sized> KeyRef<K> for K {
    fn key(&self) -> &K {
        self
    }
}

impl<K: ?Sized> KeyRef<K> for &K {
    fn key(&self) -> &K {
        self
    }
}

/// A range of keys of a table with keys `K`, as [`ReadTable::range`] takes it: `..`,
/// `a..b`, `a..=b`, `a..`, `..b`, `..=b` or a pair of [`Bound`]s, whose ends are `K`s
/// or references to them ([`KeyRef`]).
///
/// Not `RangeBounds<K>`: that would refuse `"a".."c"` for `K = str` (std implements
/// `RangeBounds<T>` for `Range<&T>` only for sized `T`), and a trait of its own lets
/// `..` need no annotation.
///
/// ```
/// # fn main() -> mapkv::Result<()> {
/// # let dir = tempfile::tempdir()?;
/// # let db = mapkv::Database::open(dir.path().join("db"))?;
/// const WORDS: mapkv::Table<str, u8> = mapkv::Table::new("words");
/// let wtx = db.begin_write()?;
/// let mut t = wtx.open_table(WORDS)?;
/// for (i, w) in ["apple", "banana", "cherry", "date"].into_iter().enumerate() {
///     t.insert(w, &(i as u8))?;
/// }
/// assert_eq!(t.range(..)?.count(), 4);
/// assert_eq!(t.range("b".."d")?.count(), 2);
/// let from = String::from("c");
/// assert_eq!(t.range(from.as_str()..)?.count(), 2);
/// # Ok(()) }
/// ```
///
/// [`ReadTable::range`]: crate::ReadTable::range
pub trait KeyBounds<K: ?Sized> {
    /// The two ends, encoded ([`Key::encode`]).
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>);
}

/// `key`'s whole-key encoding, as the tree stores it.
pub(crate) fn encode_key<K: Key + ?Sized>(key: &K) -> Vec<u8> {
    let mut out = Vec::new();
    key.encode(&mut out);
    out
}

fn encode_bound<K: Key + ?Sized, Q: KeyRef<K>>(bound: Bound<&Q>) -> Bound<Vec<u8>> {
    bound.map(|q| encode_key(q.key()))
}

impl<K: Key + ?Sized> KeyBounds<K> for RangeFull {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (Bound::Unbounded, Bound::Unbounded)
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for std::ops::Range<Q> {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(encode_key(self.start.key())),
            Bound::Excluded(encode_key(self.end.key())),
        )
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for RangeInclusive<Q> {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(encode_key(self.start().key())),
            Bound::Included(encode_key(self.end().key())),
        )
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for RangeFrom<Q> {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Included(encode_key(self.start.key())),
            Bound::Unbounded,
        )
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for RangeTo<Q> {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Unbounded,
            Bound::Excluded(encode_key(self.end.key())),
        )
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for RangeToInclusive<Q> {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (
            Bound::Unbounded,
            Bound::Included(encode_key(self.end.key())),
        )
    }
}

impl<K: Key + ?Sized, Q: KeyRef<K>> KeyBounds<K> for (Bound<Q>, Bound<Q>) {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (encode_bound(self.0.as_ref()), encode_bound(self.1.as_ref()))
    }
}

impl<K: ?Sized, R: KeyBounds<K> + ?Sized> KeyBounds<K> for &R {
    fn encode(&self) -> (Bound<Vec<u8>>, Bound<Vec<u8>>) {
        (**self).encode()
    }
}
