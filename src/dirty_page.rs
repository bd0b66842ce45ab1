//! The buffer of a dirty page: a page a write transaction changed, in memory until the
//! commit writes it.
//!
//! Tree handles hand out slices of these buffers that outlive the lock under which the
//! buffer was found (see `write_txn::TreeView::read`), so the buffer must not move, and
//! moving its owner must not assert unique access to the bytes. A `Box<[u8]>` held in
//! a map does the latter whenever the map moves it (Stacked Borrows retags a moved
//! `Box`; Miri reports it), so the page is owned through a raw pointer instead.

#![allow(unsafe_code)]

use std::ptr::NonNull;

/// An owned, heap-allocated page buffer that never moves while it lives.
pub(crate) struct DirtyPage {
    /// From `Box::into_raw`; owned by this value and freed by its `Drop`.
    bytes: NonNull<[u8]>,
}

// SAFETY: `DirtyPage` owns its buffer exclusively, like the `Box<[u8]>` it was made from
// (which is `Send` and `Sync`); `&DirtyPage` gives only shared access to the bytes and
// `&mut DirtyPage` exclusive access, as for a `Box`.
unsafe impl Send for DirtyPage {}
// SAFETY: as above: shared references allow reads only.
unsafe impl Sync for DirtyPage {}

impl DirtyPage {
    pub(crate) fn new(page: Box<[u8]>) -> DirtyPage {
        DirtyPage {
            bytes: NonNull::from(Box::leak(page)),
        }
    }

    pub(crate) fn into_box(self) -> Box<[u8]> {
        let this = std::mem::ManuallyDrop::new(self);
        // SAFETY: `bytes` came from `Box::leak` and is owned by `this`, whose `Drop` will
        // not run (`ManuallyDrop`), so the box is rebuilt exactly once.
        unsafe { Box::from_raw(this.bytes.as_ptr()) }
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: `bytes` points to a live allocation owned by `self`; the shared borrow
        // of `self` excludes `bytes_mut` for its duration.
        unsafe { self.bytes.as_ref() }
    }

    pub(crate) fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: `bytes` points to a live allocation owned by `self`; the exclusive
        // borrow of `self` excludes every other borrow made through `self`, and
        // `TreeView::read` keeps no slice of a page alive across a change of it.
        unsafe { self.bytes.as_mut() }
    }
}

impl Clone for DirtyPage {
    fn clone(&self) -> DirtyPage {
        DirtyPage::new(self.bytes().into())
    }
}

impl Drop for DirtyPage {
    fn drop(&mut self) {
        // SAFETY: `bytes` came from `Box::leak` and is owned by `self`; `into_box` skips
        // this `Drop`, so the box is rebuilt and freed exactly once.
        drop(unsafe { Box::from_raw(self.bytes.as_ptr()) });
    }
}
