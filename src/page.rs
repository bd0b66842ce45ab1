//! Page identifiers, the on-disk headers shared by every page kind, checksums, and the
//! size limits that follow from the page size. See FORMAT.md#page-header,
//! FORMAT.md#child-reference and FORMAT.md#node-pages (the limits).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::mem::size_of;

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};

/// Index of a page in the file: byte offset = id × page size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct PageId(pub u64);

/// Id of a committed (or committing) write transaction. Grows by one per commit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct TxnId(pub u64);

/// Page id 0 never holds a tree page (it holds the meta slots), so it stands for
/// "no page" in references: an empty tree has a null root.
pub(crate) const NULL_PAGE: PageId = PageId(0);

/// Each meta slot is 4096 bytes at byte offset `slot × 4096`, whatever the page size.
pub(crate) const META_SLOT_BYTES: u64 = 4096;
pub(crate) const PAGE_SIZE_MIN: usize = 4096;
pub(crate) const PAGE_SIZE_MAX: usize = 65536;

/// The kind byte of a page header. See FORMAT.md#page-header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PageKind {
    Branch = 1,
    Leaf = 2,
    /// A run of contiguous pages holding one byte string: a large value or the free list.
    Blob = 3,
}

impl PageKind {
    pub(crate) fn from_byte(b: u8) -> Option<PageKind> {
        match b {
            1 => Some(PageKind::Branch),
            2 => Some(PageKind::Leaf),
            3 => Some(PageKind::Blob),
            _ => None,
        }
    }
}

/// The first 16 bytes of every page. See FORMAT.md#page-header.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy)]
#[repr(C)]
pub(crate) struct PageHeader {
    /// A [`PageKind`].
    pub kind: u8,
    /// Leaves: the insert hint (`node::Hint`, FORMAT.md#insert-hints), which readers
    /// ignore. Blobs: the padding before the payload (`node::blob_header`). 0 in branches.
    pub flags: u8,
    /// Number of slots (node pages); 0 for blobs.
    pub count: U16,
    /// crc32 of the page (of the whole run for a blob) with these four bytes read as zero.
    pub checksum: U32,
    /// The transaction that wrote the page.
    pub txn: U64,
}
const _: () = assert!(size_of::<PageHeader>() == 16);

/// A reference to a page from its parent: branch entries, tree records, the meta page.
/// The parent keeps the child's checksum, which makes the whole file a Merkle tree, and
/// the id of the transaction that wrote the child, which tells recovery which pages the
/// newest commit wrote without trusting the child's own (possibly torn) header.
/// See FORMAT.md#child-reference.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct ChildRef {
    pub page: U64,
    pub checksum: U32,
    pub txn: U64,
}
const _: () = assert!(size_of::<ChildRef>() == 20);

impl ChildRef {
    pub(crate) fn new(page: PageId, checksum: u32, txn: TxnId) -> ChildRef {
        ChildRef {
            page: U64::new(page.0),
            checksum: U32::new(checksum),
            txn: U64::new(txn.0),
        }
    }

    pub(crate) const NULL: ChildRef = ChildRef {
        page: U64::ZERO,
        checksum: U32::ZERO,
        txn: U64::ZERO,
    };

    pub(crate) fn page(&self) -> PageId {
        PageId(self.page.get())
    }

    pub(crate) fn txn(&self) -> TxnId {
        TxnId(self.txn.get())
    }

    pub(crate) fn is_null(&self) -> bool {
        self.page() == NULL_PAGE
    }
}

/// crc32 of `bytes` with bytes 4..8 (the checksum field) read as zero.
pub(crate) fn page_checksum(bytes: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&bytes[..4]);
    h.update(&[0; 4]);
    h.update(&bytes[8..]);
    h.finalize()
}

/// Stores the checksum of `bytes` in its header and returns it.
pub(crate) fn seal(bytes: &mut [u8]) -> u32 {
    let sum = page_checksum(bytes);
    bytes[4..8].copy_from_slice(&sum.to_le_bytes());
    sum
}

pub(crate) fn header(bytes: &[u8]) -> &PageHeader {
    PageHeader::ref_from_prefix(bytes)
        .expect("a page is longer than its header")
        .0
}

pub(crate) fn header_mut(bytes: &mut [u8]) -> &mut PageHeader {
    PageHeader::mut_from_prefix(bytes)
        .expect("a page is longer than its header")
        .0
}

/// Checks that `bytes` (a page, or a blob run) is what `r` says: same writer and same
/// checksum. Used by recovery and `check`.
pub(crate) fn verify_ref(bytes: &[u8], r: &ChildRef) -> Result<()> {
    verify_header_and_sum(header(bytes), page_checksum(bytes), r)
}

/// `verify_ref` for a run read piece by piece, in order: `page_checksum` of the run
/// computed as the pieces come (the first holds the header).
pub(crate) struct RunVerifier {
    hasher: crc32fast::Hasher,
    header: Option<PageHeader>,
}

impl RunVerifier {
    pub(crate) fn new() -> RunVerifier {
        RunVerifier {
            hasher: crc32fast::Hasher::new(),
            header: None,
        }
    }

    /// The next piece of the run; the first must hold the whole header.
    pub(crate) fn update(&mut self, piece: &[u8]) {
        if self.header.is_some() {
            self.hasher.update(piece);
            return;
        }
        self.header = Some(*header(piece));
        self.hasher.update(&piece[..4]);
        self.hasher.update(&[0; 4]);
        self.hasher.update(&piece[8..]);
    }

    /// Checks the run against `r`, as `verify_ref` does.
    pub(crate) fn verify(self, r: &ChildRef) -> Result<()> {
        let h = self.header.expect("a run holds at least one page");
        verify_header_and_sum(&h, self.hasher.finalize(), r)
    }
}

fn verify_header_and_sum(h: &PageHeader, sum: u32, r: &ChildRef) -> Result<()> {
    if h.txn.get() != r.txn.get() {
        return Err(Error::corrupted(
            r.page.get(),
            format!(
                "page says it was written by transaction {}, its parent says {}",
                h.txn.get(),
                r.txn.get()
            ),
        ));
    }
    if sum != r.checksum.get() || sum != h.checksum.get() {
        return Err(Error::corrupted(
            r.page.get(),
            format!(
                "checksum mismatch: computed {sum:#010x}, header {:#010x}, parent {:#010x}",
                h.checksum.get(),
                r.checksum.get()
            ),
        ));
    }
    Ok(())
}

/// Sizes derived from the page size: where pages start, what fits in a node, the limits
/// on keys and values. One value per database, computed once at open.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Geometry {
    pub page_size: usize,
}

/// Largest value accepted, 1 TiB: overflow runs are addressed by a u64 length (in the
/// leaf's reference and the blob's header), but we bound it so that page arithmetic can
/// never overflow (2^40 bytes are 2^28 pages of the smallest size) and a corrupt length
/// is caught before it is used. See FORMAT.md#overflow-values.
pub const VALUE_LEN_MAX: u64 = 1 << 40;

/// Longest key accepted at `page_size` in a tree with default [`TreeOptions`]
/// (`value_align(n)` takes `2 × (n − 1)` more off it): two of the largest branch or leaf
/// cells always fit in one page, which keeps splits to two pages. For callers that must
/// refuse a key before it reaches a write transaction, e.g. a replicated log that must
/// not accept what it cannot apply. See FORMAT.md and README.md#limits.
///
/// [`TreeOptions`]: crate::TreeOptions
pub const fn key_len_max(page_size: usize) -> usize {
    (page_size / 2).saturating_sub(128)
}

impl Geometry {
    pub(crate) fn new(page_size: usize) -> Result<Geometry> {
        if !page_size.is_power_of_two() || !(PAGE_SIZE_MIN..=PAGE_SIZE_MAX).contains(&page_size) {
            return Err(Error::InvalidOptions(format!(
                "page size {page_size} is not a power of two between {PAGE_SIZE_MIN} and {PAGE_SIZE_MAX}"
            )));
        }
        Ok(Geometry { page_size })
    }

    pub(crate) fn page_bytes(&self) -> u64 {
        self.page_size as u64
    }

    /// The first page that can hold data; the pages before it hold the two meta slots.
    pub(crate) fn first_data_page(&self) -> PageId {
        PageId((2 * META_SLOT_BYTES).div_ceil(self.page_bytes()))
    }

    pub(crate) fn offset(&self, id: PageId) -> u64 {
        id.0 * self.page_bytes()
    }

    /// Keys up to this length are accepted (see [`key_len_max`]).
    pub(crate) fn key_len_max(&self) -> usize {
        key_len_max(self.page_size)
    }

    /// Number of pages of a blob run holding `len` payload bytes. `len` may come from a
    /// corrupt file: it saturates instead of overflowing, giving a run longer than any
    /// file, which the caller's range check reports as `Corrupted`.
    pub(crate) fn blob_pages(&self, len: u64) -> u64 {
        (crate::node::BLOB_HEADER_BYTES as u64)
            .saturating_add(len)
            .div_ceil(self.page_bytes())
    }
}

/// Hashes page ids with one multiply: they are small distinct integers, and SipHash was
/// a visible cost in write profiles.
#[derive(Default)]
pub(crate) struct PageIdHasher(u64);

/// Fibonacci hashing's multiplier (2^64 / φ): page ids are often consecutive, and the
/// product's high bits spread them.
const FIBONACCI: u64 = 0x9E37_79B9_7F4A_7C15;

/// The slot of `key` (a page id, or one plus it) in a table of `mask + 1` slots, a power
/// of two, for the hand-built tables of the pread path (`cache`, `held_runs`).
#[inline]
pub(crate) fn slot_of(key: u64, mask: usize) -> usize {
    (key.wrapping_mul(FIBONACCI) >> 32) as usize & mask
}

/// A map keyed by page id, hashed with [`PageIdHasher`].
pub(crate) type PageMap<V> = HashMap<PageId, V, BuildHasherDefault<PageIdHasher>>;

impl Hasher for PageIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(FIBONACCI);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0 ^ n).wrapping_mul(FIBONACCI);
    }
}
