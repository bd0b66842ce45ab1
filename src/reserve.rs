//! Reserved writes (`WriteTree::insert_reserve`, LMDB's `MDB_RESERVE`): a value's final
//! bytes handed out, zeroed, for the caller to fill in place.
//!
//! The bytes are either the value's place inside its dirty leaf, or, for a value too
//! large to live there, an in-memory image of its blob, which is written (and its
//! checksum put into the leaf) when the reservation ends. A reservation ends when its
//! handle is next called, when the tree is opened again or deleted after the handle was
//! dropped, or at the commit. Until then nothing may read or copy those bytes, since the
//! caller may be writing them: `TouchedTrees` refuses to supersede a live reserving
//! handle (`Error::Reserved`), and `TxnPages::freeze` leaves reserved leaves alone.

use crate::dirty_page::DirtyPage;
use crate::error::{Error, Result};
use crate::node::{self, ValueAlign};
use crate::page::{Geometry, PageId};
use crate::page_buf::{BUF_ALIGN, PageBox};
use crate::tree::{self, TreeRecord, ValueAt};
use crate::txn_pages::{BlobRun, TxnPages};

/// Bytes handed out by `insert_reserve` that the caller may still be filling.
pub(crate) enum Reservation {
    /// Inside dirty leaf `page`: nothing to do at the end.
    InLeaf { page: PageId },
    /// An overflow value: `image` holds its payload until it is written into `run`, and
    /// the leaf cell of `key` names `run` with a checksum still to be filled in.
    Blob {
        key: Vec<u8>,
        run: BlobRun,
        /// Owned through a raw pointer (`DirtyPage`) so that moving the reservation does
        /// not assert unique access to bytes the caller holds.
        image: DirtyPage,
    },
}

impl Reservation {
    /// The dirty leaf whose bytes the caller may be writing, if any.
    pub(crate) fn leaf(&self) -> Option<PageId> {
        match self {
            Reservation::InLeaf { page } => Some(*page),
            Reservation::Blob { .. } => None,
        }
    }

    /// Ends the reservation of a value in `tree`: an overflow value is written to its
    /// run, and its leaf gets the blob's checksum. The caller guarantees that the bytes
    /// handed out are no longer borrowed.
    pub(crate) fn finish(self, pages: &mut TxnPages, tree: &TreeRecord) -> Result<()> {
        let Reservation::Blob { key, run, image } = self else {
            return Ok(());
        };
        pages.change(|pages| {
            let payload = &image.bytes()[..run.len as usize];
            let blob = pages.write_blob_at(run.id, run.pages, payload, run.pad)?;
            tree::set_blob_checksum(pages, tree, &key, run.id, blob.checksum.get())
        })
    }
}

/// Where a reserved value of `len` bytes next to `key` goes in a tree aligned to `align`:
/// inside its leaf (`None`), or into a blob whose payload is filled in the returned
/// zeroed image. Sizes are checked first; a value too large for memory is an error,
/// before anything changes (the transaction stays usable).
pub(crate) fn place(
    g: &Geometry,
    align: ValueAlign,
    key: &[u8],
    len: usize,
) -> Result<Option<PageBox>> {
    tree::check_sizes(g, align, key, len as u64)?;
    if node::value_fits_inline(key.len(), len as u64, g.page_size, align) {
        return Ok(None);
    }
    let image = len
        .checked_next_multiple_of(BUF_ALIGN)
        .and_then(PageBox::try_zeroed)
        .ok_or_else(|| {
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::OutOfMemory,
                format!("no memory for a reserved value of {len} bytes (insert_from streams one)"),
            ))
        })?;
    Ok(Some(image))
}

/// Inserts `key` → `len` zero bytes into `tree`, inside its leaf or (with the `image`
/// from `place`) in a blob, and returns the reservation with the value's bytes, which
/// the caller may write until the reservation ends.
pub(crate) fn reserve(
    pages: &mut TxnPages,
    tree: &mut TreeRecord,
    key: &[u8],
    len: usize,
    image: Option<PageBox>,
) -> Result<(Reservation, *mut [u8])> {
    let Some(image) = image else {
        tree::insert(pages, tree, key, &vec![0; len])?;
        let Some(ValueAt::Inline { page, offset, .. }) = tree::find_value(&*pages, tree, key)?
        else {
            return Err(Error::corrupted(
                tree.root.page.get(),
                "a value just inserted inline is not found inline",
            ));
        };
        if !pages.is_dirty(page) {
            return Err(Error::corrupted(page.0, "a leaf just changed is not dirty"));
        }
        let bytes: *mut [u8] = &mut pages.dirty_mut(page)[offset..offset + len];
        return Ok((Reservation::InLeaf { page }, bytes));
    };
    let mut image = DirtyPage::new(image);
    let run = pages.take_blob_run(len as u64, node::blob_pad(tree.value_align()))??;
    // The checksum is unknown until the caller has filled the value: 0 stands in for
    // it, and `Reservation::finish` puts the real one in before anything reads the blob.
    let o = pages.adopt_blob(&run, 0);
    tree::insert_overflow(pages, tree, key, o)?;
    let bytes: *mut [u8] = &mut image.bytes_mut()[..len];
    let reservation = Reservation::Blob {
        key: key.to_vec(),
        run,
        image,
    };
    Ok((reservation, bytes))
}
