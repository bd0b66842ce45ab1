//! Typed tables: trees whose keys are encoded by [`Key`] and whose values are read back
//! as `&V` pointing into the map or a page buffer (no copy), at the alignment `V`
//! needs. A table is a tree like any other (`tree_names`, `check`, the CLI see it);
//! its tree records the value type's alignment and layout when it is created, so that
//! opening it with a value type of another alignment, size or element size is an error
//! rather than a misreading. The record holds no more than that (README, "Typed
//! tables", lists what it cannot tell apart: a slice-ended struct's fixed fields,
//! zero-sized values, key types).

mod bounds;
mod key;
mod table;
mod value;

pub use bounds::{KeyBounds, KeyRef};
pub use key::Key;
pub use table::{ReadTable, TableRange, WriteTable};
#[cfg(feature = "bytemuck")]
pub use value::Bytemuck;
pub use value::{ValueCodec, Zerocopy};

use std::fmt;
use std::marker::PhantomData;

use crate::error::Result;
use crate::tree_options::ValueLayout;
use crate::{ReadTxn, TreeOptions, WriteTxn};

/// A typed table's definition: its tree's name and its key and value types, used for
/// both reading and writing.
///
/// `K` is any [`Key`]. `V` is, with the default codec [`Zerocopy`], any
/// `zerocopy::FromBytes + IntoBytes + Immutable + KnownLayout` type, sized or ending
/// in a slice (`[f32]`); with the `bytemuck` feature and the codec `Bytemuck`
/// (`Table<K, V, Bytemuck>`), a `bytemuck::Pod` type or a slice of one.
///
/// ```
/// use mapkv::{Database, Result, Table};
///
/// const EMBEDDINGS: Table<u64, [f32]> = Table::new("embeddings");
///
/// fn main() -> Result<()> {
///     let dir = tempfile::tempdir()?;
///     let db = Database::open(dir.path().join("db"))?;
///
///     let wtx = db.begin_write()?;
///     let mut t = wtx.open_table(EMBEDDINGS)?; // created with value_align = 4
///     t.insert(&42, &[0.5, 1.0, 2.0][..])?;
///     t.insert(&7, &[1.0; 3][..])?;
///     drop(t);
///     wtx.commit()?;
///
///     let rtx = db.begin_read()?;
///     let t = rtx.open_table(EMBEDDINGS)?;
///     let v: Option<&[f32]> = t.get(&42)?; // points into the map: no copy
///     assert_eq!(v, Some(&[0.5, 1.0, 2.0][..]));
///     for row in t.range(0..10)? {
///         let (id, v): (u64, &[f32]) = row?;
///         assert_eq!((id, v), (7, &[1.0; 3][..]));
///     }
///     Ok(())
/// }
/// ```
pub struct Table<K: Key + ?Sized, V: ?Sized, C = Zerocopy> {
    name: &'static str,
    types: Types<K, V, C>,
}

/// The types a table or handle carries and never holds: keys and values it encodes and
/// decodes, and the codec. `fn` pointers keep them `Send + Sync` whatever `K` and `V`
/// are.
type Types<K, V, C> = PhantomData<(fn(&K), fn(&V), fn() -> C)>;

impl<K: Key + ?Sized, V: ?Sized, C> Table<K, V, C> {
    /// The definition of the table stored in the tree `name`.
    pub const fn new(name: &'static str) -> Table<K, V, C> {
        Table {
            name,
            types: PhantomData,
        }
    }

    /// The name of the table's tree.
    pub const fn name(&self) -> &'static str {
        self.name
    }
}

// By hand: derives would require `K: Clone` and so on, which a definition does not need.
impl<K: Key + ?Sized, V: ?Sized, C> Clone for Table<K, V, C> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<K: Key + ?Sized, V: ?Sized, C> Copy for Table<K, V, C> {}

impl<K: Key + ?Sized, V: ?Sized, C> fmt::Debug for Table<K, V, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("name", &self.name)
            .field("key", &std::any::type_name::<K>())
            .field("value", &std::any::type_name::<V>())
            .finish()
    }
}

impl<K: Key + ?Sized, V: ?Sized, C: ValueCodec<V>> Table<K, V, C> {
    /// What the table's tree is created with and checked against: `V`'s alignment and
    /// layout.
    fn options(&self) -> Result<TreeOptions> {
        let shape = C::shape()?;
        Ok(TreeOptions::new()
            .value_align(shape.align)
            .value_layout(ValueLayout {
                size: shape.size,
                slice: shape.slice,
            }))
    }
}

impl WriteTxn {
    /// Opens a typed table for reading and writing, creating its tree if absent with
    /// the value type's alignment (`value_align`) and layout. A tree that exists with
    /// another alignment or value layout (another value type, or a raw tree) is
    /// `Error::InvalidOptions`. Like [`open_tree`](Self::open_tree), opening it again
    /// makes the older handle stale.
    pub fn open_table<K, V, C>(&self, table: Table<K, V, C>) -> Result<WriteTable<'_, K, V, C>>
    where
        K: Key + ?Sized,
        V: ?Sized,
        C: ValueCodec<V>,
    {
        let tree = self.open_tree_with(table.name, table.options()?)?;
        Ok(WriteTable::new(tree, table.name))
    }
}

impl ReadTxn {
    /// Opens an existing typed table; `Error::TreeNotFound` if there is none by that
    /// name, `Error::InvalidOptions` if its tree was created with another value
    /// alignment or layout.
    pub fn open_table<K, V, C>(&self, table: Table<K, V, C>) -> Result<ReadTable<'_, K, V, C>>
    where
        K: Key + ?Sized,
        V: ?Sized,
        C: ValueCodec<V>,
    {
        let tree = self.open_tree_with(table.name, table.options()?)?;
        Ok(ReadTable::new(tree, table.name))
    }

    /// Opens a typed table, or `None` if its tree does not exist (a table that was
    /// never written reads as absent, which is often the same as empty).
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// const SCORES: mapkv::Table<str, u32> = mapkv::Table::new("scores");
    /// let rtx = db.begin_read()?;
    /// let best = match rtx.try_open_table(SCORES)? {
    ///     Some(scores) => scores.get("ada")?.copied(),
    ///     None => None,
    /// };
    /// assert_eq!(best, None);
    /// # Ok(()) }
    /// ```
    pub fn try_open_table<K, V, C>(
        &self,
        table: Table<K, V, C>,
    ) -> Result<Option<ReadTable<'_, K, V, C>>>
    where
        K: Key + ?Sized,
        V: ?Sized,
        C: ValueCodec<V>,
    {
        match self.open_table(table) {
            Ok(t) => Ok(Some(t)),
            Err(crate::Error::TreeNotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
