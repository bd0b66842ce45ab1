//! The two meta slots: which commit is current, where its trees and free list are.
//! `encode` refuses to write a meta that `decode` would reject. See FORMAT.md#meta-page.

use std::mem::size_of;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::error::{Error, Result};
use crate::page::{ChildRef, Geometry, PageId, TxnId};
use crate::tree::TreeRecord;

pub(crate) const MAGIC: [u8; 8] = *b"mapkv\0db";
/// The version this crate writes (4: slot prefixes skip what a node's keys share).
/// Versions 1 (a single free-list blob), 2 (before aligned values) and 3 (before the
/// prefix skip) still open; their first commit writes version 4 (FORMAT.md#versions).
pub(crate) const FORMAT_VERSION: u32 = 4;

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
        if !(1..=FORMAT_VERSION).contains(&meta.version.get()) {
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
        // The catalog's record is not decoded like a tree's: check it here as
        // `TreeRecord::decode` checks a tree's (its depth sizes a cursor's path, and a
        // descent trusts it to say where the leaves are).
        let c = &self.catalog;
        let depth = c.depth.get();
        if depth > crate::tree::DEPTH_MAX {
            return Err(format!("catalog depth {depth}"));
        }
        if (depth == 0) != c.root.is_null() || (c.entries.get() != 0 && c.root.is_null()) {
            return Err(format!(
                "catalog of depth {depth} with {} entries and root {:?}",
                c.entries.get(),
                c.root
            ));
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

#[cfg(test)]
mod tests {
    use std::panic::catch_unwind;

    use super::*;

    /// A valid meta at 4 KiB pages: transaction 5, ten pages, an empty catalog.
    fn meta() -> Meta {
        Meta {
            magic: MAGIC,
            version: U32::new(FORMAT_VERSION),
            page_size: U32::new(4096),
            txn: U64::new(5),
            durable_before: U64::new(4),
            page_count: U64::new(10),
            catalog: TreeRecord::EMPTY,
            free_list: ChildRef::NULL,
            checksum: U32::ZERO,
        }
    }

    /// The slot bytes of `m` with a correct checksum, whether `m` is valid or not.
    fn slot_bytes(mut m: Meta) -> Vec<u8> {
        m.checksum = U32::new(m.computed_checksum());
        let mut slot = vec![0; 4096];
        slot[..META_BYTES].copy_from_slice(m.as_bytes());
        slot
    }

    #[test]
    fn a_valid_meta_round_trips() {
        let m = meta();
        let mut slot = vec![0; 4096];
        slot[..META_BYTES].copy_from_slice(&m.encode());
        let back = Meta::decode(&slot, 0).expect("decode");
        assert_eq!(
            back.as_bytes()[..META_BYTES - 4],
            m.as_bytes()[..META_BYTES - 4]
        );
    }

    /// The catalog's record is checked as a tree's is: depth 0 exactly when the root is
    /// null, and no entries without a root. Decoding refuses it; encoding panics.
    #[test]
    fn catalog_depth_is_zero_exactly_when_its_root_is_null() {
        let root = ChildRef::new(PageId(3), 0x1234, TxnId(5));
        let mut consistent = meta();
        consistent.catalog.root = root;
        consistent.catalog.entries = U64::new(2);
        consistent.catalog.depth = U32::new(1);
        Meta::decode(&slot_bytes(consistent), 0).expect("a catalog of one leaf");
        let mut inconsistent = Vec::new();
        let mut m = meta();
        m.catalog.depth = U32::new(1); // depth without a root
        inconsistent.push(m);
        let mut m = consistent;
        m.catalog.depth = U32::ZERO; // a root at depth 0
        inconsistent.push(m);
        let mut m = meta();
        m.catalog.entries = U64::new(1); // entries without a root
        inconsistent.push(m);
        for m in inconsistent {
            let catalog = m.catalog;
            match Meta::decode(&slot_bytes(m), 1) {
                Err(Error::Corrupted { reason, .. }) => {
                    assert!(reason.contains("catalog"), "{catalog:?}: {reason}")
                }
                other => panic!("{catalog:?} decoded: {other:?}"),
            }
            assert!(catch_unwind(|| m.encode()).is_err(), "{catalog:?} encoded");
        }
    }
}
