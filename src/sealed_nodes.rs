//! The node pages this handle sealed itself, by page id and checksum, so that a write
//! transaction that copies one of them (`TxnPages::shadow`) can skip checking its cells
//! one by one.
//!
//! Why that is sound: `shadow` first checks the page's bytes against its parent's
//! reference (`verify_ref`: same writer, same CRC-32 of the whole page), and the
//! reference chain from the meta down was checked the same way. When this table also
//! says that this handle sealed that page id with that very checksum, the bytes are the
//! ones a commit of this handle built and sealed (up to a CRC-32 collision, the bound
//! every checksum in the file already accepts), and those passed through the code that
//! builds nodes, which keeps the invariants `Node::verify` checks. Any other page (one
//! written before the open, by the bulk loader, by another handle before it, or
//! changed on disk since) is checked in full, as before.
//!
//! Copying the path of a one-key commit checked four or five nodes, most of them
//! branches with a hundred cells or more: 28 % of the commit's instructions. With the
//! table a one-key commit into a million-entry tree costs 174k instructions instead of
//! 217k, and 1,000 random inserts into it 40k per insert instead of 50k (callgrind).
//!
//! Bounded: a direct-mapped table of `SLOTS` entries (1 MiB, mapped lazily as it fills),
//! where a newer page evicts an older one that hashes to its slot. An entry stays right
//! or becomes useless, never wrong: a page id sealed again gets its new checksum, and an
//! entry whose page was rewritten another way no longer matches that page's checksum.

use parking_lot::Mutex;
use zerocopy::FromZeros;

use crate::page::{PageId, slot_of};

/// Entries in the table: a power of two.
const SLOTS: usize = 1 << 16;

#[derive(Clone, Copy, FromZeros)]
struct Entry {
    /// The page id + 1; 0 for an empty entry.
    key: u64,
    checksum: u32,
}

/// Shared by the writer's successive transactions (one at a time: the mutex is never
/// contended).
pub(crate) struct SealedNodes {
    entries: Mutex<Box<[Entry]>>,
}

impl SealedNodes {
    pub(crate) fn new() -> SealedNodes {
        SealedNodes {
            // Zeroed memory is an empty table, which the allocator maps lazily.
            entries: Mutex::new(<[Entry]>::new_box_zeroed_with_elems(SLOTS).expect("table")),
        }
    }

    /// Notes that this handle sealed the node page `id` with `checksum`.
    pub(crate) fn record(&self, id: PageId, checksum: u32) {
        self.entries.lock()[slot_of(id.0, SLOTS - 1)] = Entry {
            key: id.0 + 1,
            checksum,
        };
    }

    /// Whether this handle sealed the node page `id` with `checksum`.
    pub(crate) fn holds(&self, id: PageId, checksum: u32) -> bool {
        let entry = self.entries.lock()[slot_of(id.0, SLOTS - 1)];
        entry.key == id.0 + 1 && entry.checksum == checksum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_the_newest_checksum_of_each_page_and_forgets_evicted_ones() {
        let sealed = SealedNodes::new();
        assert!(
            !sealed.holds(PageId(7), 0),
            "an empty entry matches nothing"
        );
        sealed.record(PageId(7), 0xabcd);
        assert!(sealed.holds(PageId(7), 0xabcd));
        assert!(!sealed.holds(PageId(7), 0xabce), "another checksum");
        sealed.record(PageId(7), 0x1234);
        assert!(sealed.holds(PageId(7), 0x1234) && !sealed.holds(PageId(7), 0xabcd));
        let rival = (8..)
            .map(PageId)
            .find(|p| slot_of(p.0, SLOTS - 1) == slot_of(7, SLOTS - 1));
        let rival = rival.expect("some page shares the slot");
        sealed.record(rival, 0x1234);
        assert!(
            !sealed.holds(PageId(7), 0x1234),
            "evicted by a page of the same slot"
        );
        assert!(sealed.holds(rival, 0x1234));
    }
}
