//! Values of typed tables: how a value type is seen as bytes and back without a copy,
//! and what a table records about it (size, trailing slice, alignment).

use std::any::Any;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use crate::error::{Error, Result};
use crate::tree_options::LAYOUT_SIZE_MAX;

/// The shape of a value type: what a table's tree is created with and checked against
/// when it is opened again. Public in name only: the module is private, so users
/// cannot name it, and `ValueCodec::shape`, which returns it, is hidden and sealed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// A sized type's size; a slice-like type's element size.
    pub size: u32,
    /// Whether the type ends in a slice (`[T]`, or a struct whose last field is one).
    pub slice: bool,
    /// The type's alignment, a power of two `1..=64`.
    pub align: usize,
}

/// How a typed table turns its values into bytes and its stored bytes back into
/// references, without copying. [`Zerocopy`] (the default) and, with the `bytemuck`
/// feature, [`Bytemuck`] implement it; the trait is sealed.
///
/// Two implementations rather than one trait that both kinds of types implement,
/// because a type may implement both crates' traits, and a blanket implementation for
/// each would overlap. A table names its codec as a third type parameter that
/// defaults to `Zerocopy`: `Table<u64, [f32]>` is `Table<u64, [f32], Zerocopy>`.
pub trait ValueCodec<V: ?Sized>: sealed::Sealed {
    /// `value`'s bytes, as they are stored.
    fn to_bytes(value: &V) -> &[u8];

    /// `bytes` seen as a `V`, or `None` if their length or address does not fit `V`.
    fn from_bytes(bytes: &[u8]) -> Option<&V>;

    /// `V`'s shape; `Error::InvalidOptions` for a type a table cannot hold (an
    /// alignment above 64, a size above `u32::MAX`).
    #[doc(hidden)]
    fn shape() -> Result<Shape>;
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Zerocopy {}
    #[cfg(feature = "bytemuck")]
    impl Sealed for super::Bytemuck {}
}

/// The default [`ValueCodec`]: values are any
/// `V: zerocopy::FromBytes + IntoBytes + Immutable + KnownLayout`, sized (`u64`,
/// `[f32; 384]`, a `#[repr(C)]` struct) or slice-like (`[f32]`, a struct whose last
/// field is a slice). A stored value is read with `FromBytes::ref_from_bytes`, which
/// checks its length and alignment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Zerocopy;

/// The [`ValueCodec`] for `bytemuck::Pod` types and slices of them (feature
/// `bytemuck`): `Table<u64, MyPod, Bytemuck>`, `Table<u64, [MyPod], Bytemuck>`. A stored
/// value is read with `bytemuck::try_from_bytes` or `try_cast_slice`.
#[cfg(feature = "bytemuck")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytemuck;

/// Sized types and slice DSTs alike: zerocopy says which through
/// `KnownLayout::PointerMetadata` (`()` or `usize`, as its documentation promises), and
/// gives sizes for a metadata value through `KnownLayout::size_for_metadata`. The
/// `'static` bound holds for both metadata types; it lets `shape` build one by
/// downcasting, using nothing of zerocopy that is hidden from its documentation.
impl<V> ValueCodec<V> for Zerocopy
where
    V: FromBytes + IntoBytes + Immutable + KnownLayout + ?Sized,
    V::PointerMetadata: 'static,
{
    fn to_bytes(value: &V) -> &[u8] {
        value.as_bytes()
    }

    fn from_bytes(bytes: &[u8]) -> Option<&V> {
        V::ref_from_bytes(bytes).ok()
    }

    fn shape() -> Result<Shape> {
        let unsupported = |why: &str| {
            Error::InvalidOptions(format!("value type {}: {why}", std::any::type_name::<V>()))
        };
        let (size_min, slice, size_64) = if let Some(meta) = metadata::<V::PointerMetadata>(0usize)
        {
            // A slice DST: its size for 0 and for 64 elements. 64 is a multiple of
            // every alignment a table accepts, so no rounding hides in the difference.
            let size_64 = metadata::<V::PointerMetadata>(64usize).and_then(V::size_for_metadata);
            (V::size_for_metadata(meta), true, size_64)
        } else if let Some(meta) = metadata::<V::PointerMetadata>(()) {
            (V::size_for_metadata(meta), false, None)
        } else {
            return Err(unsupported("neither sized nor a slice"));
        };
        let size_min = size_min.ok_or_else(|| unsupported("too large"))?;
        let size = if slice {
            let size_64 = size_64.ok_or_else(|| unsupported("too large"))?;
            (size_64 - size_min) / 64
        } else {
            size_min
        };
        // Before `align_of_shape`, which makes a zeroed value of `size_min` bytes: a
        // type of terabytes must be refused, not allocated.
        if size_min.max(size) > LAYOUT_SIZE_MAX as usize {
            return Err(unsupported("too large for a typed table (16 MiB at most)"));
        }
        let align = align_of_shape::<V>(size_min).ok_or_else(|| unsupported("aligned above 64"))?;
        Ok(Shape {
            size: u32::try_from(size).map_err(|_| unsupported("too large"))?,
            slice,
            align,
        })
    }
}

/// `M` made from `value` if `M` is `value`'s type (a `KnownLayout::PointerMetadata`:
/// `()` for sized types, `usize` element counts for slice DSTs).
fn metadata<M: Copy + 'static>(value: impl Any) -> Option<M> {
    (&value as &dyn Any).downcast_ref::<M>().copied()
}

/// A zeroed buffer aligned to 64, the largest alignment a table accepts: a `V` of
/// `size_min` bytes read from its start succeeds unless `V` needs more alignment.
#[derive(zerocopy::FromZeros, IntoBytes, Immutable, Clone, Copy)]
#[repr(C, align(64))]
struct Aligned64([u8; 64]);

/// An empty slice at an address aligned to 64: where an empty stored value is read
/// from. An empty value takes no bytes, so the tree may hand it back at any address;
/// its `&V` (an empty slice, or a zero-sized type) needs only an aligned one.
pub(crate) fn empty_aligned() -> &'static [u8] {
    static EMPTY: Aligned64 = Aligned64([0; 64]);
    &EMPTY.as_bytes()[..0]
}

/// `V`'s alignment, read off a reference to a zeroed `V` of `size_min` bytes; `None`
/// above 64.
fn align_of_shape<V>(size_min: usize) -> Option<usize>
where
    V: FromBytes + Immutable + KnownLayout + ?Sized,
{
    // Most types fit the static buffer; larger sized ones get a buffer of their own
    // (once per `open_table`).
    static SMALL: [Aligned64; 64] = [Aligned64([0; 64]); 64];
    let large;
    let buffer: &[u8] = if size_min <= size_of_val(&SMALL) {
        SMALL.as_bytes()
    } else {
        large = vec![Aligned64([0; 64]); size_min.div_ceil(64)];
        large.as_bytes()
    };
    // Fails only for alignments above 64; but the buffer may happen to be aligned
    // more than it asks for, so that such a type is read all the same: check both.
    let value = V::ref_from_bytes(&buffer[..size_min]).ok()?;
    Some(align_of_val(value)).filter(|&align| align <= 64)
}

#[cfg(feature = "bytemuck")]
impl<V: bytemuck::Pod> ValueCodec<V> for Bytemuck {
    fn to_bytes(value: &V) -> &[u8] {
        bytemuck::bytes_of(value)
    }

    fn from_bytes(bytes: &[u8]) -> Option<&V> {
        bytemuck::try_from_bytes(bytes).ok()
    }

    fn shape() -> Result<Shape> {
        pod_shape::<V>(false)
    }
}

#[cfg(feature = "bytemuck")]
impl<V: bytemuck::Pod> ValueCodec<[V]> for Bytemuck {
    fn to_bytes(value: &[V]) -> &[u8] {
        bytemuck::cast_slice(value)
    }

    fn from_bytes(bytes: &[u8]) -> Option<&[V]> {
        bytemuck::try_cast_slice(bytes).ok()
    }

    fn shape() -> Result<Shape> {
        pod_shape::<V>(true)
    }
}

#[cfg(feature = "bytemuck")]
fn pod_shape<V>(slice: bool) -> Result<Shape> {
    let unsupported = |why: &str| {
        Error::InvalidOptions(format!("value type {}: {why}", std::any::type_name::<V>()))
    };
    if align_of::<V>() > 64 {
        return Err(unsupported("aligned above 64"));
    }
    if slice && size_of::<V>() == 0 {
        return Err(unsupported("a slice of zero-sized elements"));
    }
    Ok(Shape {
        size: u32::try_from(size_of::<V>()).map_err(|_| unsupported("too large"))?,
        slice,
        align: align_of::<V>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C)]
    struct Header {
        id: u32,
        flags: u32,
        items: [[u32; 3]],
    }

    #[derive(FromBytes, IntoBytes, Immutable, KnownLayout)]
    #[repr(C, align(128))]
    struct TooAligned([u8; 128]);

    #[test]
    fn shapes_of_zerocopy_types() {
        let shape = |s: Result<Shape>| s.unwrap();
        assert_eq!(
            shape(<Zerocopy as ValueCodec<u64>>::shape()),
            Shape {
                size: 8,
                slice: false,
                align: 8
            }
        );
        assert_eq!(
            shape(<Zerocopy as ValueCodec<[f32; 384]>>::shape()),
            Shape {
                size: 1536,
                slice: false,
                align: 4
            }
        );
        assert_eq!(
            shape(<Zerocopy as ValueCodec<[f32]>>::shape()),
            Shape {
                size: 4,
                slice: true,
                align: 4
            }
        );
        assert_eq!(
            shape(<Zerocopy as ValueCodec<[u8]>>::shape()),
            Shape {
                size: 1,
                slice: true,
                align: 1
            }
        );
        assert_eq!(
            shape(<Zerocopy as ValueCodec<Header>>::shape()),
            Shape {
                size: 12,
                slice: true,
                align: 4
            }
        );
        assert_eq!(
            shape(<Zerocopy as ValueCodec<[u64; 1000]>>::shape()),
            Shape {
                size: 8000,
                slice: false,
                align: 8
            }
        );
        assert!(matches!(
            <Zerocopy as ValueCodec<TooAligned>>::shape(),
            Err(Error::InvalidOptions(_))
        ));
    }

    #[test]
    fn bytes_that_do_not_fit_are_refused() {
        let words = [0u32; 4];
        let bytes = words.as_bytes();
        assert!(<Zerocopy as ValueCodec<u32>>::from_bytes(&bytes[..3]).is_none());
        assert!(<Zerocopy as ValueCodec<u32>>::from_bytes(&bytes[1..5]).is_none());
        assert!(<Zerocopy as ValueCodec<[u32]>>::from_bytes(&bytes[..6]).is_none());
        assert_eq!(
            <Zerocopy as ValueCodec<[u32]>>::from_bytes(&bytes[4..]).map(<[u32]>::len),
            Some(3)
        );
    }
}
