//! The two meta slots: which commit is current, where its trees and free list are.
//! `encode` refuses to write a meta that `decode` would reject. See FORMAT.md#meta-page.

use std::mem::size_of;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::page::{ChildRef, Geometry, PageId, TxnId};
use crate::tree::TreeRecord;

pub(crate) const MAGIC: [u8; 8] = *b"mapkv\0db";
pub(crate) const FORMAT_VERSION: u32 = 1;

/// See FORMAT.md#meta-page.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Meta {
    pub magic: [u8; 8],
    pub version: U32,
    pub page_size: U32,
    /// The commit this meta describes.
    pub txn: U64,
    /// Every page written by a transaction `<= durable_before` was on stable storage
    /// before this meta was written; recovery verifies only the pages written after it.
    /// Equal to `txn` when nothing needs verifying (a clean close, a new file).
    pub durable_before: U64,
    /// Pages in use or free: the file holds at least `page_count × page_size` bytes.
    pub page_count: U64,
    /// The catalog: a tree from tree name to `TreeRecord`.
    pub catalog: TreeRecord,
    /// The blob holding the free list, or null when no page is free.
    pub free_list: ChildRef,
    pub checksum: U32,
}
pub(crate) const META_BYTES: usize = size_of::<Meta>();
const _: () = assert!(META_BYTES == 100);

impl Meta {
    pub(crate) fn txn(&self) -> TxnId {
        TxnId(self.txn.get())
    }

    pub(crate) fn page_count(&self) -> PageId {
        PageId(self.page_count.get())
    }

    fn computed_checksum(&self) -> u32 {
        crc32fast::hash(&self.as_bytes()[..META_BYTES - 4])
    }

    /// The bytes of a meta slot, checksummed. Panics if the meta is invalid: writing a
    /// meta that recovery would reject is a bug.
    pub(crate) fn encode(mut self) -> [u8; META_BYTES] {
        self.checksum = U32::new(self.computed_checksum());
        let geometry = Geometry::new(self.page_size.get() as usize).expect("valid page size");
        if let Err(e) = self.validate(&geometry) {
            panic!("refusing to write an invalid meta: {e}");
        }
        let mut out = [0; META_BYTES];
        out.copy_from_slice(self.as_bytes());
        out
    }

    /// Parses and checks a meta slot. `slot` names it in errors.
    pub(crate) fn decode(bytes: &[u8], slot: u64) -> Result<Meta> {
        let meta = Meta::read_from_prefix(bytes)
            .map_err(|_| Error::corrupted(0, format!("meta slot {slot} is too short")))?
            .0;
        if meta.magic != MAGIC {
            return Err(Error::corrupted(
                0,
                format!("meta slot {slot}: not a mapkv file"),
            ));
        }
        if meta.version.get() != FORMAT_VERSION {
            return Err(Error::corrupted(
                0,
                format!(
                    "meta slot {slot}: format version {} unsupported",
                    meta.version.get()
                ),
            ));
        }
        if meta.checksum.get() != meta.computed_checksum() {
            return Err(Error::corrupted(
                0,
                format!("meta slot {slot}: checksum mismatch"),
            ));
        }
        let geometry = Geometry::new(meta.page_size.get() as usize)
            .map_err(|_| Error::corrupted(0, format!("meta slot {slot}: bad page size")))?;
        meta.validate(&geometry)
            .map_err(|why| Error::corrupted(0, format!("meta slot {slot}: {why}")))?;
        Ok(meta)
    }

    fn validate(&self, geometry: &Geometry) -> std::result::Result<(), String> {
        let txn = self.txn.get();
        let pages = self.page_count.get();
        if txn == 0 || self.durable_before.get() > txn {
            return Err(format!(
                "transaction {txn} with durable_before {}",
                self.durable_before.get()
            ));
        }
        let max_pages = u64::MAX / geometry.page_bytes();
        if pages < geometry.first_data_page().0 || pages > max_pages {
            return Err(format!("page count {pages} out of range"));
        }
        // The catalog's record is not decoded like a tree's: bound its depth here (it
        // sizes a cursor's path).
        let depth = self.catalog.depth.get();
        if depth > crate::tree::DEPTH_MAX {
            return Err(format!("catalog depth {depth}"));
        }
        for (what, r) in [
            ("catalog", &self.catalog.root),
            ("free list", &self.free_list),
        ] {
            if !r.is_null() && (r.page.get() >= pages || r.txn.get() > txn) {
                return Err(format!(
                    "{what} reference {r:?} outside the file or the future"
                ));
            }
        }
        Ok(())
    }
}
