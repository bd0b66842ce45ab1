//! The memory that pages live in when they are not borrowed from the map: dirty pages of a
//! write transaction ([`PageBox`]) and runs read with pread, held by a transaction and
//! shared with the page cache ([`PageBuf`]).
//!
//! **Alignment guarantee**: both kinds start at an address that is a multiple of
//! [`BUF_ALIGN`] (64) bytes, and their lengths are multiples of it. Each holds whole
//! pages, which start at multiples of the page size in the file (a dirty page's bytes lie
//! where its commit will write them), so a value stored at a file offset that is a
//! multiple of `n <= 64` lies at an address that is a multiple of `n` in every buffer, as
//! it does in the map (which is page-aligned): a `&[u8]` that a lookup returns is aligned
//! alike at every `mmap_size` and inside write transactions (`tests/aligned_buffers.rs`).
//!
//! Why 64 and not the page size: with the system allocator (glibc's malloc measured), a
//! 4 KiB allocation aligned to 4096 bytes takes 8 KiB of memory, the bytes before the
//! aligned start being too few for another aligned block; and an `Arc`'s counts, which
//! precede its bytes, are padded to the alignment, which would double a 4 KiB run again.
//! Aligned to 64, a 4 KiB `PageBox` costs 48 bytes more than an unaligned one (4,168
//! against 4,120 bytes of memory per allocation, measured) and a 4 KiB `PageBuf` 96
//! (4,232 against 4,136: its counts padded to 64). 64 is the largest alignment a tree's
//! values can ask for.

use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// The alignment of every page buffer, in bytes (see the module documentation).
pub(crate) const BUF_ALIGN: usize = 64;

/// The unit page buffers are made of: its alignment is theirs.
#[derive(Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
#[repr(C, align(64))]
pub(crate) struct Chunk([u8; BUF_ALIGN]);

const _: () = assert!(align_of::<Chunk>() == BUF_ALIGN && size_of::<Chunk>() == BUF_ALIGN);

/// Chunks holding `len` bytes, which must be a multiple of [`BUF_ALIGN`] (pages and runs
/// of pages are: page sizes are powers of two from 4096).
fn chunks(len: usize) -> usize {
    assert!(
        len.is_multiple_of(BUF_ALIGN),
        "page buffer of {len} bytes: not a multiple of {BUF_ALIGN}"
    );
    len / BUF_ALIGN
}

/// An owned page buffer (a dirty page, or one being built), aligned to [`BUF_ALIGN`];
/// reads and writes as a `[u8]`.
#[derive(Clone)]
pub(crate) struct PageBox(Box<[Chunk]>);

impl PageBox {
    /// `len` zero bytes (a multiple of [`BUF_ALIGN`]).
    pub(crate) fn zeroed(len: usize) -> PageBox {
        PageBox::try_zeroed(len).expect("page buffer")
    }

    /// `zeroed`, or `None` if the memory cannot be had (buffers whose size a caller
    /// chose: a reserved value's image).
    pub(crate) fn try_zeroed(len: usize) -> Option<PageBox> {
        <[Chunk]>::new_box_zeroed_with_elems(chunks(len))
            .ok()
            .map(PageBox)
    }

    /// A copy of `bytes` (whose length is a multiple of [`BUF_ALIGN`]).
    pub(crate) fn copy_of(bytes: &[u8]) -> PageBox {
        // Pages come from the map or from 64-byte aligned buffers, so they are viewed as
        // chunks and copied in one go: zeroing a fresh page first cost as much as the
        // copy (every page a transaction shadows goes through here).
        match <[Chunk]>::ref_from_bytes(bytes) {
            Ok(chunks) => PageBox(Box::from(chunks)),
            Err(_) => {
                let mut page = PageBox::zeroed(bytes.len());
                page.copy_from_slice(bytes);
                page
            }
        }
    }

    /// The chunks, for [`DirtyPage`](crate::dirty_page::DirtyPage), which owns them
    /// through a raw pointer.
    pub(crate) fn into_chunks(self) -> Box<[Chunk]> {
        self.0
    }

    pub(crate) fn from_chunks(chunks: Box<[Chunk]>) -> PageBox {
        PageBox(chunks)
    }
}

impl Deref for PageBox {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

impl DerefMut for PageBox {
    #[inline]
    fn deref_mut(&mut self) -> &mut [u8] {
        self.0.as_mut_bytes()
    }
}

impl std::fmt::Debug for PageBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PageBox({} bytes)", self.len())
    }
}

/// One page, or one run of pages, as read from the file: shared between the page cache
/// and the transactions that read it, aligned to [`BUF_ALIGN`]. Its bytes are written
/// only while it is unshared ([`PageBuf::get_mut`]). One `Arc`, so that a transaction's
/// table follows one pointer to the bytes.
#[derive(Clone)]
pub(crate) struct PageBuf(Arc<[Chunk]>);

impl PageBuf {
    /// `len` zero bytes (a multiple of [`BUF_ALIGN`]).
    pub(crate) fn zeroed(len: usize) -> PageBuf {
        // Collected straight into the `Arc`'s allocation (`Arc::from` a box would copy).
        PageBuf(std::iter::repeat_n(Chunk([0; BUF_ALIGN]), chunks(len)).collect())
    }

    /// The bytes, if no other `PageBuf` shares them.
    #[inline]
    pub(crate) fn get_mut(&mut self) -> Option<&mut [u8]> {
        Arc::get_mut(&mut self.0).map(|c| c.as_mut_bytes())
    }

    /// The address of the first byte: it stays put while any clone lives.
    #[inline]
    pub(crate) fn as_ptr(&self) -> *const u8 {
        Arc::as_ptr(&self.0).cast::<u8>()
    }

    /// Gives up this handle's count, returning the address of the bytes; the length is
    /// for the caller to keep. [`PageBuf::from_raw`] takes it back.
    #[inline]
    pub(crate) fn into_raw(self) -> *const u8 {
        Arc::into_raw(self.0).cast::<u8>()
    }

    /// Takes back a count given up by [`PageBuf::into_raw`].
    ///
    /// # Safety
    ///
    /// `data` must come from `into_raw` on a `PageBuf` of `len` bytes, and each count
    /// given up must be taken back at most once.
    #[allow(unsafe_code)]
    #[inline]
    pub(crate) unsafe fn from_raw(data: *const u8, len: usize) -> PageBuf {
        let raw = std::ptr::slice_from_raw_parts(data.cast::<Chunk>(), len / BUF_ALIGN);
        // SAFETY: by the caller's promise `raw` is what `Arc::into_raw` returned for an
        // `Arc<[Chunk]>` of `len / BUF_ALIGN` chunks (its length is a multiple of
        // `BUF_ALIGN`, `chunks`), whose count we now own.
        PageBuf(unsafe { Arc::from_raw(raw) })
    }
}

impl Deref for PageBuf {
    type Target = [u8];

    #[inline]
    fn deref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn aligned(bytes: &[u8]) -> bool {
        (bytes.as_ptr() as usize).is_multiple_of(BUF_ALIGN)
    }

    #[test]
    fn every_buffer_is_aligned_and_as_long_as_asked() {
        for len in [64, 4096, 8192, 3 * 4096, 65536] {
            let zeroed = PageBox::zeroed(len);
            assert!(aligned(&zeroed) && zeroed.len() == len && zeroed.iter().all(|&b| b == 0));
            let copy = PageBox::copy_of(&vec![7; len]);
            assert!(aligned(&copy) && copy[..] == vec![7; len][..]);
            assert!(aligned(&copy.clone()));
            let mut shared = PageBuf::zeroed(len);
            assert!(aligned(&shared) && shared.len() == len);
            shared.get_mut().expect("unshared").fill(3);
            let other = shared.clone();
            assert!(shared.clone().get_mut().is_none(), "shared");
            let (ptr, n) = (other.into_raw(), shared.len());
            // SAFETY: `ptr` came from `into_raw` on a buffer of `n` bytes, taken back once.
            #[allow(unsafe_code)]
            let back = unsafe { PageBuf::from_raw(ptr, n) };
            assert_eq!(back.as_ptr(), shared.as_ptr());
            assert!(back.iter().all(|&b| b == 3));
        }
    }

    #[test]
    #[should_panic(expected = "not a multiple of 64")]
    fn refuses_lengths_that_are_not_whole_chunks() {
        PageBox::zeroed(100);
    }
}
