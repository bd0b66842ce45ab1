//! Typed handles over the raw trees: keys encoded on the way in and decoded on the way
//! out, values checked and seen as `&V` where they lie (no copy). Everything else (the
//! B-tree, isolation, overflow values) is the raw tree's.

use std::marker::PhantomData;

use crate::cursor::Range;
use crate::error::{Error, Result};
use crate::typed::bounds::encode_key;
use crate::typed::value::empty_aligned;
use crate::typed::{Key, KeyBounds, Types, ValueCodec};
use crate::{ReadTree, WriteTree};

/// A typed table as seen by a [`ReadTxn`](crate::ReadTxn), from
/// [`ReadTxn::open_table`](crate::ReadTxn::open_table). Values are borrowed from the
/// transaction, not the handle.
pub struct ReadTable<'t, K: ?Sized, V: ?Sized, C = crate::Zerocopy> {
    tree: ReadTree<'t>,
    name: &'static str,
    types: Types<K, V, C>,
}

/// A typed table in a [`WriteTxn`](crate::WriteTxn), from
/// [`WriteTxn::open_table`](crate::WriteTxn::open_table): reads see the transaction's
/// own writes, and what they return borrows the handle (a change needs `&mut`).
pub struct WriteTable<'t, K: ?Sized, V: ?Sized, C = crate::Zerocopy> {
    tree: WriteTree<'t>,
    /// `tree`'s identity when the table was opened (`raw` could put another in place).
    identity: (usize, u64),
    name: &'static str,
    types: Types<K, V, C>,
}

/// Entries of a typed table in key order (or reversed with `.rev()`), each as the
/// decoded key and the value in place. After an error it yields nothing more.
pub struct TableRange<'a, K: ?Sized, V: ?Sized, C> {
    raw: Range<'a>,
    name: &'static str,
    done: bool,
    types: Types<K, V, C>,
}

impl<'t, K, V, C> ReadTable<'t, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized,
    C: ValueCodec<V>,
{
    pub(crate) fn new(tree: ReadTree<'t>, name: &'static str) -> Self {
        ReadTable {
            tree,
            name,
            types: PhantomData,
        }
    }

    /// The value stored under `key`, borrowed for the whole transaction: it points into
    /// the map or a page buffer. A stored value whose length or address does not fit
    /// `V` is [`Error::Corrupted`].
    pub fn get(&self, key: &K) -> Result<Option<&'t V>> {
        let found = self.tree.get(&encode_key(key))?;
        found
            .map(|bytes| value::<V, C>(self.name, bytes))
            .transpose()
    }

    /// Entries with keys in `range` (see [`KeyBounds`]), ascending (`.rev()` for
    /// descending), as `(K::Owned, &V)`: the key decoded, the value in place.
    pub fn range<R: KeyBounds<K>>(&self, range: R) -> Result<TableRange<'t, K, V, C>> {
        Ok(TableRange::new(self.tree.range(range.encode())?, self.name))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<TableRange<'t, K, V, C>> {
        Ok(TableRange::new(self.tree.iter()?, self.name))
    }

    /// The entry with the smallest key, or `None` if the table is empty.
    pub fn first(&self) -> Result<Option<(K::Owned, &'t V)>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key, or `None` if the table is empty.
    pub fn last(&self) -> Result<Option<(K::Owned, &'t V)>> {
        self.iter()?.next_back().transpose()
    }

    /// The number of entries (kept in the tree's record: no scan).
    pub fn len(&self) -> Result<u64> {
        self.tree.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        self.tree.is_empty()
    }

    /// The table's tree with raw byte keys and values.
    pub fn raw(&self) -> &ReadTree<'t> {
        &self.tree
    }
}

impl<'t, K, V, C> WriteTable<'t, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized,
    C: ValueCodec<V>,
{
    pub(crate) fn new(tree: WriteTree<'t>, name: &'static str) -> Self {
        WriteTable {
            identity: tree.identity(),
            tree,
            name,
            types: PhantomData,
        }
    }

    /// The table's tree, unless another tree's handle was put in its place through
    /// `raw()`: typed values written there would lack the table's alignment, and the
    /// other tree's record would not describe them.
    fn tree(&self) -> Result<&WriteTree<'t>> {
        match self.tree.identity() == self.identity {
            true => Ok(&self.tree),
            false => Err(Error::InvalidOptions(format!(
                "table {}: its tree handle was replaced through raw()",
                self.name
            ))),
        }
    }

    fn tree_mut(&mut self) -> Result<&mut WriteTree<'t>> {
        self.tree()?;
        Ok(&mut self.tree)
    }

    /// Inserts `key` → `value`, replacing any previous value. The value is stored as
    /// its bytes, at the table's alignment.
    pub fn insert(&mut self, key: &K, value: &V) -> Result<()> {
        self.tree_mut()?
            .insert(&encode_key(key), C::to_bytes(value))
    }

    /// Removes `key`; true if it was present.
    pub fn remove(&mut self, key: &K) -> Result<bool> {
        self.tree_mut()?.remove(&encode_key(key))
    }

    /// The value stored under `key`, as this transaction sees it; see
    /// [`ReadTable::get`].
    pub fn get(&self, key: &K) -> Result<Option<&V>> {
        let found = self.tree()?.get(&encode_key(key))?;
        found
            .map(|bytes| value::<V, C>(self.name, bytes))
            .transpose()
    }

    /// Entries with keys in `range`, ascending; see [`ReadTable::range`].
    pub fn range<R: KeyBounds<K>>(&self, range: R) -> Result<TableRange<'_, K, V, C>> {
        Ok(TableRange::new(
            self.tree()?.range(range.encode())?,
            self.name,
        ))
    }

    /// All entries, ascending.
    pub fn iter(&self) -> Result<TableRange<'_, K, V, C>> {
        Ok(TableRange::new(self.tree()?.iter()?, self.name))
    }

    /// The entry with the smallest key, or `None` if the table is empty.
    pub fn first(&self) -> Result<Option<(K::Owned, &V)>> {
        self.iter()?.next().transpose()
    }

    /// The entry with the largest key, or `None` if the table is empty.
    pub fn last(&self) -> Result<Option<(K::Owned, &V)>> {
        self.iter()?.next_back().transpose()
    }

    /// The number of entries.
    pub fn len(&self) -> Result<u64> {
        self.tree()?.len()
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> Result<bool> {
        self.tree()?.is_empty()
    }

    /// The table's tree with raw byte keys and values (for what the typed handle does
    /// not offer: `remove_range`, `retain`, `insert_from`, ...). Writing bytes that do
    /// not fit `V` makes later typed reads of them `Error::Corrupted`. Putting another
    /// tree's handle in its place makes the typed methods `Error::InvalidOptions`.
    pub fn raw(&mut self) -> &mut WriteTree<'t> {
        &mut self.tree
    }
}

impl<'a, K: ?Sized, V: ?Sized, C> TableRange<'a, K, V, C> {
    fn new(raw: Range<'a>, name: &'static str) -> Self {
        TableRange {
            raw,
            name,
            done: false,
            types: PhantomData,
        }
    }
}

impl<'a, K, V, C> TableRange<'a, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized + 'a,
    C: ValueCodec<V>,
{
    /// One raw entry decoded; an error ends the range (as the raw range does).
    fn decode(
        &mut self,
        raw: Option<Result<(&'a [u8], &'a [u8])>>,
    ) -> Option<Result<(K::Owned, &'a V)>> {
        let entry =
            raw?.and_then(|(key, bytes)| Ok((K::decode(key)?, value::<V, C>(self.name, bytes)?)));
        self.done = entry.is_err();
        Some(entry)
    }
}

impl<'a, K, V, C> Iterator for TableRange<'a, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized + 'a,
    C: ValueCodec<V>,
{
    type Item = Result<(K::Owned, &'a V)>;

    fn next(&mut self) -> Option<Self::Item> {
        let raw = if self.done { None } else { self.raw.next() };
        self.decode(raw)
    }
}

impl<'a, K, V, C> DoubleEndedIterator for TableRange<'a, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized + 'a,
    C: ValueCodec<V>,
{
    fn next_back(&mut self) -> Option<Self::Item> {
        let raw = if self.done {
            None
        } else {
            self.raw.next_back()
        };
        self.decode(raw)
    }
}

impl<'a, K, V, C> std::iter::FusedIterator for TableRange<'a, K, V, C>
where
    K: Key + ?Sized,
    V: ?Sized + 'a,
    C: ValueCodec<V>,
{
}

/// `bytes` seen as a `V`. Stored bytes that do not fit are the file's fault, or of a
/// raw write to the table's tree: an error, never a panic.
fn value<'a, V: ?Sized, C: ValueCodec<V>>(table: &str, bytes: &'a [u8]) -> Result<&'a V> {
    let bytes = if bytes.is_empty() {
        empty_aligned()
    } else {
        bytes
    };
    C::from_bytes(bytes).ok_or_else(|| {
        Error::corrupted(
            0,
            format!(
                "a value of table {table:?} ({} bytes at address {:#x}) does not fit type {}",
                bytes.len(),
                bytes.as_ptr() as usize,
                std::any::type_name::<V>()
            ),
        )
    })
}
