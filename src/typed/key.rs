//! Keys of typed tables: byte encodings that sort like the values they encode, so that
//! the B-tree's byte order is the key type's order and `range` over typed bounds works.

use crate::error::{Error, Result};

/// A key type of a typed [`Table`](crate::Table): an encoding into bytes whose byte
/// order (what the tree sorts by) is the order of the values.
///
/// Each type has two forms:
/// - the **delimited** form ([`encode_delimited`](Key::encode_delimited),
///   [`decode_delimited`](Key::decode_delimited)), which a decoder can find the end of
///   without being told: a tuple uses it for every element but its last. It must be
///   *prefix-free* (no encoding is a prefix of another) and sort like the values. These
///   two are the methods an implementation must provide.
/// - the **whole-key** form ([`encode`](Key::encode), [`decode`](Key::decode)), used
///   when the value is the whole key or a tuple's last element: it may run to the end
///   of the bytes. By default it is the delimited form; byte strings override it with
///   their plain bytes, so that a `Table<str, _>` stores the same keys as a raw tree
///   would and other tools (the CLI, [`ReadTree`](crate::ReadTree)) see readable keys.
///
/// | type | whole key | delimited |
/// |---|---|---|
/// | `u8` ..= `u128` | big-endian | same |
/// | `i8` ..= `i128` | big-endian, sign bit flipped (so -1 < 0) | same |
/// | `[u8; N]` | the bytes | same |
/// | `[u8]`, `Vec<u8>` | the bytes | `0x00` → `0x00 0xFF`, then `0x00 0x00` |
/// | `str`, `String` | UTF-8 | as `[u8]` |
/// | `(A, B)` .. `(A, B, C, D, E)` | delimited elements, the last whole | all delimited |
/// | `&T` | as `T` | as `T` |
///
/// The escape for byte strings is FoundationDB's tuple layer's, with a two-byte
/// terminator: a string that is a prefix of another ends in `0x00 0x00`, which sorts
/// before whatever the longer one has next (a byte `≥ 0x01`, or `0x00 0xFF` for a
/// zero byte).
///
/// Iteration hands keys back decoded, as [`Key::Owned`]: `u64` for `u64`, `String` for
/// `str`, `Vec<u8>` for `[u8]`, tuples of the elements' owned types.
///
/// # Implementing `Key` for your own type
///
/// Map the type onto an encoding that already sorts right, usually a tuple of its
/// fields in the order they should sort by; implement the delimited pair (and the
/// whole-key pair too if a cheaper open-ended form exists). A decoding failure is
/// [`Error::Corrupted`]: the bytes came from the file.
///
/// ```
/// use mapkv::{Key, Result};
///
/// /// Sorted by date, then by name.
/// #[derive(Debug, PartialEq)]
/// struct Event { day: u32, name: String }
///
/// impl Key for Event {
///     type Owned = Event;
///     fn encode_delimited(&self, out: &mut Vec<u8>) {
///         (self.day, self.name.as_str()).encode_delimited(out)
///     }
///     fn decode_delimited(input: &mut &[u8]) -> Result<Event> {
///         let (day, name) = <(u32, String)>::decode_delimited(input)?;
///         Ok(Event { day, name })
///     }
///     // The open-ended form of the last field: plain UTF-8, no escapes.
///     fn encode(&self, out: &mut Vec<u8>) {
///         (self.day, self.name.as_str()).encode(out)
///     }
///     fn decode(bytes: &[u8]) -> Result<Event> {
///         let (day, name) = <(u32, String)>::decode(bytes)?;
///         Ok(Event { day, name })
///     }
/// }
///
/// let mut a = Vec::new();
/// Event { day: 3, name: "z".into() }.encode(&mut a);
/// let mut b = Vec::new();
/// Event { day: 4, name: "a".into() }.encode(&mut b);
/// assert!(a < b);
/// assert_eq!(Event::decode(&b)?, Event { day: 4, name: "a".into() });
/// # Ok::<(), mapkv::Error>(())
/// ```
pub trait Key {
    /// What decoding gives back, and what iteration yields as the key.
    type Owned;

    /// Appends the self-delimiting encoding of `self` to `out`.
    fn encode_delimited(&self, out: &mut Vec<u8>);

    /// Decodes one value in the delimited form from the front of `input` and advances
    /// `input` past it. Bytes that no `encode_delimited` gives are
    /// [`Error::Corrupted`].
    fn decode_delimited(input: &mut &[u8]) -> Result<Self::Owned>;

    /// Appends the whole-key encoding of `self` to `out` (by default the delimited
    /// form).
    fn encode(&self, out: &mut Vec<u8>) {
        self.encode_delimited(out)
    }

    /// Decodes a whole key; bytes left over, or bytes no `encode` gives, are
    /// [`Error::Corrupted`].
    fn decode(bytes: &[u8]) -> Result<Self::Owned> {
        let mut input = bytes;
        let value = Self::decode_delimited(&mut input)?;
        if !input.is_empty() {
            return Err(key_error(format!(
                "{} bytes left over after the key",
                input.len()
            )));
        }
        Ok(value)
    }
}

/// A key that does not decode. The table layer does not know the page the key came
/// from, so the error names none (page 0).
pub(crate) fn key_error(reason: impl std::fmt::Display) -> Error {
    Error::corrupted(0, format!("stored key does not decode: {reason}"))
}

/// Takes `N` bytes from the front of `input`.
fn take<const N: usize>(input: &mut &[u8]) -> Result<[u8; N]> {
    let Some((head, rest)) = input.split_first_chunk::<N>() else {
        return Err(key_error(format!(
            "{} bytes where {N} were expected",
            input.len()
        )));
    };
    *input = rest;
    Ok(*head)
}

macro_rules! unsigned_key {
    ($($t:ty),*) => {$(
        impl Key for $t {
            type Owned = $t;
            fn encode_delimited(&self, out: &mut Vec<u8>) {
                out.extend_from_slice(&self.to_be_bytes());
            }
            fn decode_delimited(input: &mut &[u8]) -> Result<$t> {
                Ok(<$t>::from_be_bytes(take(input)?))
            }
        }
    )*};
}
unsigned_key!(u8, u16, u32, u64, u128);

macro_rules! signed_key {
    ($($t:ty => $u:ty),*) => {$(
        // Flipping the sign bit maps MIN..=MAX onto 0..=MAX of the unsigned type in
        // order, so big-endian bytes then sort like the signed values.
        impl Key for $t {
            type Owned = $t;
            fn encode_delimited(&self, out: &mut Vec<u8>) {
                let flipped = (*self as $u) ^ (1 << (<$u>::BITS - 1));
                out.extend_from_slice(&flipped.to_be_bytes());
            }
            fn decode_delimited(input: &mut &[u8]) -> Result<$t> {
                let flipped = <$u>::from_be_bytes(take(input)?);
                Ok((flipped ^ (1 << (<$u>::BITS - 1))) as $t)
            }
        }
    )*};
}
signed_key!(i8 => u8, i16 => u16, i32 => u32, i64 => u64, i128 => u128);

impl<const N: usize> Key for [u8; N] {
    type Owned = [u8; N];
    fn encode_delimited(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self);
    }
    fn decode_delimited(input: &mut &[u8]) -> Result<[u8; N]> {
        take(input)
    }
}

/// Byte `0x00` inside a delimited byte string is written `0x00 0xFF`; the string ends
/// with `0x00 0x00`.
const ESCAPE: u8 = 0xFF;
const END: u8 = 0x00;

fn encode_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    out.reserve(bytes.len() + 2);
    for chunk in bytes.split_inclusive(|&b| b == 0) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&0) {
            out.push(ESCAPE);
        }
    }
    out.extend_from_slice(&[0, END]);
}

fn decode_escaped(input: &mut &[u8]) -> Result<Vec<u8>> {
    let mut bytes = Vec::new();
    let mut rest = *input;
    loop {
        let Some(zero) = rest.iter().position(|&b| b == 0) else {
            return Err(key_error("byte string without its terminator"));
        };
        bytes.extend_from_slice(&rest[..zero]);
        match rest.get(zero + 1) {
            Some(&ESCAPE) => bytes.push(0),
            Some(&END) => {
                *input = &rest[zero + 2..];
                return Ok(bytes);
            }
            Some(b) => return Err(key_error(format!("0x00 followed by {b:#04x}"))),
            None => return Err(key_error("byte string without its terminator")),
        }
        rest = &rest[zero + 2..];
    }
}

fn utf8(bytes: Vec<u8>) -> Result<String> {
    String::from_utf8(bytes).map_err(|e| key_error(e.utf8_error()))
}

impl Key for [u8] {
    type Owned = Vec<u8>;
    fn encode_delimited(&self, out: &mut Vec<u8>) {
        encode_escaped(self, out)
    }
    fn decode_delimited(input: &mut &[u8]) -> Result<Vec<u8>> {
        decode_escaped(input)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self)
    }
    fn decode(bytes: &[u8]) -> Result<Vec<u8>> {
        Ok(bytes.to_vec())
    }
}

impl Key for str {
    type Owned = String;
    fn encode_delimited(&self, out: &mut Vec<u8>) {
        encode_escaped(self.as_bytes(), out)
    }
    fn decode_delimited(input: &mut &[u8]) -> Result<String> {
        utf8(decode_escaped(input)?)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.as_bytes())
    }
    fn decode(bytes: &[u8]) -> Result<String> {
        utf8(bytes.to_vec())
    }
}

/// Forwards every method to `$target`, the borrowed form of an owning type.
macro_rules! forward_key {
    ($t:ty => $target:ty) => {
        impl Key for $t {
            type Owned = <$target as Key>::Owned;
            fn encode_delimited(&self, out: &mut Vec<u8>) {
                <$target as Key>::encode_delimited(self, out)
            }
            fn decode_delimited(input: &mut &[u8]) -> Result<Self::Owned> {
                <$target as Key>::decode_delimited(input)
            }
            fn encode(&self, out: &mut Vec<u8>) {
                <$target as Key>::encode(self, out)
            }
            fn decode(bytes: &[u8]) -> Result<Self::Owned> {
                <$target as Key>::decode(bytes)
            }
        }
    };
}
forward_key!(Vec<u8> => [u8]);
forward_key!(String => str);

impl<T: Key + ?Sized> Key for &T {
    type Owned = T::Owned;
    fn encode_delimited(&self, out: &mut Vec<u8>) {
        (**self).encode_delimited(out)
    }
    fn decode_delimited(input: &mut &[u8]) -> Result<T::Owned> {
        T::decode_delimited(input)
    }
    fn encode(&self, out: &mut Vec<u8>) {
        (**self).encode(out)
    }
    fn decode(bytes: &[u8]) -> Result<T::Owned> {
        T::decode(bytes)
    }
}

/// Tuples: the elements' encodings one after the other. All but the last are
/// delimited, so the concatenation sorts like the tuple (element by element); the last
/// is delimited only when the tuple itself must be (inside another tuple).
macro_rules! tuple_key {
    ($($name:ident)+ ; $last:ident) => {
        #[allow(non_snake_case, reason = "the type parameters name the elements")]
        impl<$($name: Key,)+ $last: Key + ?Sized> Key for ($($name,)+ $last) {
            type Owned = ($($name::Owned,)+ $last::Owned);
            fn encode_delimited(&self, out: &mut Vec<u8>) {
                let ($($name,)+ $last) = self;
                $($name.encode_delimited(out);)+
                $last.encode_delimited(out);
            }
            fn decode_delimited(input: &mut &[u8]) -> Result<Self::Owned> {
                Ok(($($name::decode_delimited(input)?,)+ $last::decode_delimited(input)?))
            }
            fn encode(&self, out: &mut Vec<u8>) {
                let ($($name,)+ $last) = self;
                $($name.encode_delimited(out);)+
                $last.encode(out);
            }
            fn decode(bytes: &[u8]) -> Result<Self::Owned> {
                let mut input = bytes;
                Ok(($($name::decode_delimited(&mut input)?,)+ $last::decode(input)?))
            }
        }
    };
}
tuple_key!(A; B);
tuple_key!(A B; C);
tuple_key!(A B C; D);
tuple_key!(A B C D; E);

#[cfg(test)]
mod tests {
    use super::*;

    fn whole<K: Key + ?Sized>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode(&mut out);
        out
    }

    fn delimited<K: Key + ?Sized>(k: &K) -> Vec<u8> {
        let mut out = Vec::new();
        k.encode_delimited(&mut out);
        out
    }

    #[test]
    fn escapes_zero_bytes_and_terminates() {
        assert_eq!(delimited(&b"a\0b"[..]), b"a\0\xFFb\0\0");
        assert_eq!(delimited(&b""[..]), b"\0\0");
        assert_eq!(delimited(&b"\0"[..]), b"\0\xFF\0\0");
        let mut input = &b"a\0\xFFb\0\0rest"[..];
        assert_eq!(<[u8]>::decode_delimited(&mut input).unwrap(), b"a\0b");
        assert_eq!(input, b"rest");
    }

    #[test]
    fn a_string_sorts_before_its_extensions() {
        // "ab" < "ab\0" < "ab\x01" as byte strings; so must their delimited forms be,
        // also when something follows them in a tuple.
        let a = whole(&(&b"ab"[..], 0xFFu8));
        let b = whole(&(&b"ab\0"[..], 0u8));
        let c = whole(&(&b"ab\x01"[..], 0u8));
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
    }

    #[test]
    fn bad_bytes_are_corrupted() {
        for bad in [&b"ab"[..], b"a\0", b"a\0\x01", b"\0"] {
            let mut input = bad;
            assert!(matches!(
                <[u8]>::decode_delimited(&mut input),
                Err(Error::Corrupted { .. })
            ));
        }
        assert!(matches!(
            u32::decode(&[1, 2, 3]),
            Err(Error::Corrupted { .. })
        ));
        assert!(matches!(
            u16::decode(&[1, 2, 3]),
            Err(Error::Corrupted { .. })
        ));
        assert!(matches!(str::decode(&[0xFF]), Err(Error::Corrupted { .. })));
    }

    #[test]
    fn signed_integers_sort_with_negatives_first() {
        let keys = [i64::MIN, -2, -1, 0, 1, i64::MAX].map(|k| whole(&k));
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(whole(&0i8), [0x80]);
        assert_eq!(i8::decode(&[0x7F]).unwrap(), -1);
    }
}
