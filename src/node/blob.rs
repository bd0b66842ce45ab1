//! Overflow values (FORMAT.md#overflow-values): the header of a blob run's first page,
//! the reference a leaf cell holds instead of a large value, and the padding that puts
//! the value of an aligned tree at a multiple of its alignment.

use std::mem::size_of;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use super::ValueAlign;
use crate::error::{Error, Result};
use crate::page::{ChildRef, PageHeader, PageId, PageKind, TxnId};

/// Header of the first page of a blob run (a large value, or the free list).
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned)]
#[repr(C)]
pub(crate) struct BlobHeader {
    pub page: PageHeader,
    /// Payload length in bytes; the payload follows this header.
    pub len: U64,
}
pub(crate) const BLOB_HEADER_BYTES: usize = size_of::<BlobHeader>();
const _: () = assert!(BLOB_HEADER_BYTES == 24);

/// A leaf value stored outside the leaf, in a blob run. See FORMAT.md#overflow-values.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct OverflowRef {
    pub blob: ChildRef,
    /// The value's length, and in the top byte the padding between the blob's header
    /// and the value (aligned trees; 0 otherwise, as in files from before).
    len_and_pad: U64,
}

impl OverflowRef {
    const PAD_SHIFT: u32 = 56;

    pub(crate) fn new(blob: ChildRef, len: u64, pad: usize) -> OverflowRef {
        debug_assert!(len < 1 << Self::PAD_SHIFT && pad < 64);
        OverflowRef {
            blob,
            len_and_pad: U64::new(len | (pad as u64) << Self::PAD_SHIFT),
        }
    }

    /// The value's length. From a corrupt file it may be anything: readers check it
    /// against `VALUE_LEN_MAX` and the blob's header.
    pub(crate) fn value_len(&self) -> u64 {
        self.len_and_pad.get() & ((1 << Self::PAD_SHIFT) - 1)
    }

    /// Bytes between the blob's header and the value.
    pub(crate) fn pad(&self) -> u64 {
        self.len_and_pad.get() >> Self::PAD_SHIFT
    }

    /// The pages of the blob run (saturating for a corrupt length).
    pub(crate) fn pages(&self, g: &crate::page::Geometry) -> u64 {
        g.blob_pages(self.value_len().saturating_add(self.pad()))
    }
}

/// The padding a blob of a tree with alignment `align` puts between its header and the
/// value, so that the value starts at a multiple of `align` (runs start at pages).
pub(crate) fn blob_pad(align: ValueAlign) -> usize {
    align.pad(BLOB_HEADER_BYTES)
}
pub(super) const OVERFLOW_REF_BYTES: usize = size_of::<OverflowRef>();
const _: () = assert!(OVERFLOW_REF_BYTES == 28);

/// The blob payload in `run` (all pages of a blob), checked against its header.
pub(crate) fn blob_payload(run: &[u8], id: PageId) -> Result<&[u8]> {
    let (len, pad) = blob_header(run, id)?;
    let start = BLOB_HEADER_BYTES + pad as usize;
    if start > run.len() || len > (run.len() - start) as u64 {
        return Err(Error::corrupted(
            id.0,
            format!("blob length {len} exceeds its {} bytes", run.len()),
        ));
    }
    Ok(&run[start..start + len as usize])
}

/// The payload length and the padding before the payload that the blob header at the
/// start of `first_page` (the first page of the run at `id`, or more of it) records,
/// after checking that it is a blob's header. The caller checks the length against the
/// run and the reference.
pub(crate) fn blob_header(first_page: &[u8], id: PageId) -> Result<(u64, u64)> {
    let h = BlobHeader::ref_from_prefix(first_page)
        .map_err(|_| Error::corrupted(id.0, "blob shorter than its header"))?
        .0;
    if h.page.kind != PageKind::Blob as u8 {
        return Err(Error::corrupted(
            id.0,
            format!("expected a blob page, found kind {}", h.page.kind),
        ));
    }
    if h.page.flags >= 64 {
        return Err(Error::corrupted(
            id.0,
            format!("blob padding of {} bytes", h.page.flags),
        ));
    }
    Ok((h.len.get(), h.page.flags as u64))
}

/// Writes a blob header for `len` payload bytes after `pad` bytes of padding at the
/// start of `first_page`.
pub(crate) fn init_blob(first_page: &mut [u8], txn: TxnId, len: u64, pad: usize) {
    let h = BlobHeader::mut_from_prefix(first_page)
        .expect("page size")
        .0;
    h.page = PageHeader {
        kind: PageKind::Blob as u8,
        flags: pad as u8,
        count: U16::ZERO,
        checksum: U32::ZERO,
        txn: U64::new(txn.0),
    };
    h.len = U64::new(len);
}
