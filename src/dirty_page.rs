//! The buffer of a dirty page: a page a write transaction changed, in memory until the
//! commit writes it.
//!
//! Tree handles hand out slices of these buffers that outlive the lock under which the
//! buffer was found (see `write_txn::TreeView::read`), so the buffer must not move, and
//! moving its owner must not assert unique access to the bytes. A `Box` held in a map
//! does the latter whenever the map moves it (Stacked Borrows retags a moved `Box`; Miri
//! reports it), so the page is owned through a raw pointer instead. The bytes are a
//! [`PageBox`]'s, aligned as it promises (`crate::page_buf`).

#![allow(unsafe_code)]

use std::ptr::NonNull;

use zerocopy::IntoBytes;

use crate::page_buf::{Chunk, PageBox};

/// An owned, heap-allocated page buffer that never moves while it lives.
pub(crate) struct DirtyPage {
    /// From `Box::leak` of a `PageBox`'s chunks; owned by this value and freed by its
    /// `Drop`.
    bytes: NonNull<[Chunk]>,
}

// SAFETY: `DirtyPage` owns its buffer exclusively, like the `Box<[Chunk]>` it was made from
// (which is `Send` and `Sync`); `&DirtyPage` gives only shared access to the bytes and
// `&mut DirtyPage` exclusive access, as for a `Box`.
unsafe impl Send for DirtyPage {}
// SAFETY: as above: shared references allow reads only.
unsafe impl Sync for DirtyPage {}

impl DirtyPage {
    pub(crate) fn new(page: PageBox) -> DirtyPage {
        DirtyPage {
            bytes: NonNull::from(Box::leak(page.into_chunks())),
        }
    }

    pub(crate) fn into_box(self) -> PageBox {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `bytes` came from `Box::leak` and is owned by `this`, whose `Drop` will
        // not run (`ManuallyDrop`), so the box is rebuilt exactly once.
        PageBox::from_chunks(unsafe { Box::from_raw(this.bytes.as_ptr()) })
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `bytes` points to a live allocation owned by `self`; the shared borrow
        // of `self` excludes `bytes_mut` for its duration.
        unsafe { self.bytes.as_ref() }.as_bytes()
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `bytes` points to a live allocation owned by `self`; the exclusive
        // borrow of `self` excludes every other borrow made through `self`, and
        // `TreeView::read` keeps no slice of a page alive across a change of it.
        unsafe { self.bytes.as_mut() }.as_mut_bytes()
    }
}

impl Clone for DirtyPage {
    fn clone(&self) -> DirtyPage {
        DirtyPage::new(PageBox::copy_of(self.bytes()))
    }
}

impl Drop for DirtyPage {
    fn drop(&mut self) {
        // SAFETY: `bytes` came from `Box::leak` and is owned by `self`; `into_box` skips
        // this `Drop`, so the box is rebuilt and freed exactly once.
        drop(unsafe { Box::from_raw(self.bytes.as_ptr()) });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page_buf::BUF_ALIGN;

    /// Pages made, cloned, moved inside a map and taken out again stay aligned and keep
    /// their bytes (under Miri too: moving a `DirtyPage` retags nothing).
    #[test]
    fn dirty_pages_are_aligned_and_survive_moves() {
        let mut pages: std::collections::HashMap<u64, DirtyPage> = Default::default();
        let mut slices = Vec::new();
        for id in 0..16u64 {
            let mut page = PageBox::zeroed(4096);
            page.fill(id as u8);
            pages.insert(id, DirtyPage::new(page));
            let bytes = pages[&id].bytes();
            assert_eq!(bytes.as_ptr() as usize % BUF_ALIGN, 0);
            slices.push((id, bytes.as_ptr(), bytes.len()));
        }
        for (id, ptr, len) in slices {
            let page = &pages[&id];
            assert_eq!(
                (page.bytes().as_ptr(), page.bytes().len()),
                (ptr, len),
                "unmoved"
            );
            let copy = page.clone();
            assert_eq!(copy.bytes().as_ptr() as usize % BUF_ALIGN, 0);
            assert!(copy.bytes().iter().all(|&b| b == id as u8));
        }
        let mut taken = pages.remove(&3).unwrap().into_box();
        assert_eq!(taken.as_ptr() as usize % BUF_ALIGN, 0);
        taken[0] = 9;
        let mut again = DirtyPage::new(taken);
        again.bytes_mut()[1] = 9;
        assert_eq!(&again.bytes()[..3], [9, 9, 3]);
    }
}
