//! The runs one [`PageReader`](crate::storage::PageReader) has read with pread (or taken
//! from the page cache), by first page: they keep the slices the reader handed out alive
//! until it is dropped, and they answer its repeated reads of the same pages (the root and
//! branch pages above every lookup).
//!
//! Lookups take no lock, so that threads sharing one read transaction do not queue behind
//! each other: the table is open addressing over atomic slots, filled only (a slot, once
//! published, never changes except to become a tombstone), and replaced by a larger copy
//! when half full, with the older tables kept until the reader ends for lookups that are
//! still probing them. Holding a new run takes a mutex; that is the miss path, which
//! reads the file or the shared page cache anyway.

#![allow(unsafe_code)] // slices of the held runs, found through raw pointers in atomic slots

use std::sync::Arc;
use std::sync::atomic::{AtomicPtr, AtomicU64, AtomicUsize, Ordering};

use parking_lot::Mutex;
use zerocopy::FromZeros;

use crate::page::{PageId, slot_of};
use crate::page_buf::PageBuf;

/// The key of a slot that held a run which [`HeldRuns::forget`] removed. Page ids lie far
/// below it (keys are page id + 1, and 0 marks an empty slot).
const TOMBSTONE: u64 = u64::MAX;

/// Slots of the first table: the pages of a few dozen lookups.
const FIRST_SLOTS: usize = 64;

/// How much larger each table is than the one it replaces: large steps, because a new
/// table is zeroed and filled anew.
const GROWTH: usize = 4;

pub(crate) struct HeldRuns {
    /// The newest table (in `Inner::tables`); null until the first run is held.
    table: AtomicPtr<Table>,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// Every table made, the newest last: a lookup may still be probing an older one.
    /// `Arc`s, not `Box`es, so that moving them (the `Vec` growing) does not assert
    /// unique access to tables that lookups are reading.
    tables: Vec<Arc<Table>>,
    /// The runs, each held until the reader ends, including those a tombstone hides.
    runs: Vec<PageBuf>,
    /// Slots of the newest table that hold a key or a tombstone.
    used: usize,
}

struct Table {
    /// A power of two of them.
    slots: Box<[Slot]>,
}

#[derive(FromZeros)]
struct Slot {
    /// 0: empty; `TOMBSTONE`; otherwise the run's first page + 1. Stored last (`Release`)
    /// when a slot is filled, so a lookup that sees the key sees the other two fields.
    key: AtomicU64,
    data: AtomicPtr<u8>,
    len: AtomicUsize,
}

impl HeldRuns {
    pub(crate) fn new() -> HeldRuns {
        HeldRuns {
            table: AtomicPtr::new(std::ptr::null_mut()),
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The bytes of the held run of `len` bytes at `id`, if there is one.
    #[inline]
    pub(crate) fn get(&self, id: PageId, len: usize) -> Option<&[u8]> {
        let table = self.table.load(Ordering::Acquire);
        if table.is_null() {
            return None;
        }
        // SAFETY: `table` points into an `Arc<Table>` of `inner.tables`, which keeps every
        // table until `self` is dropped; the `Acquire` load pairs with the `Release`
        // store that published it after it was filled. `&self` outlives the borrow.
        let table = unsafe { &*table };
        table.find(key_of(id), len).map(|(data, len)| {
            // SAFETY: `data` and `len` describe the bytes of a `PageBuf` that
            // `inner.runs` holds until `self` is dropped (`forget` only hides it). Its
            // bytes were written before it was filed and are never written again: the
            // page cache writes into a buffer only when `Arc::get_mut` proves it
            // unshared, and our clone shares it. Moving a `PageBuf` (an `Arc`) does not
            // move its bytes.
            unsafe { std::slice::from_raw_parts(data, len) }
        })
    }

    /// Holds `run`, the run at `id`, until the reader ends, and returns its bytes; or
    /// the bytes of the same run that another thread held meanwhile (`run` is dropped).
    pub(crate) fn hold(&self, id: PageId, run: PageBuf) -> &[u8] {
        let mut inner = self.inner.lock();
        if let Some(held) = self.get(id, run.len()) {
            return held;
        }
        let capacity = inner.tables.last().map_or(0, |t| t.slots.len());
        if (inner.used + 1) * 2 > capacity {
            self.grow(&mut inner, (capacity * GROWTH).max(FIRST_SLOTS));
        }
        let table = inner.tables.last().expect("grown above");
        let data = run.as_ptr().cast_mut();
        table.fill(key_of(id), data, run.len());
        inner.used += 1;
        inner.runs.push(run);
        // SAFETY: as in `get`: the run now lies in `inner.runs` until `self` is dropped,
        // and its bytes are never written again.
        unsafe { std::slice::from_raw_parts(data, inner.runs.last().expect("pushed").len()) }
    }

    /// Stops answering lookups of the runs at `id` (they stay held: slices of them may be
    /// alive).
    pub(crate) fn forget(&self, id: PageId) {
        let inner = self.inner.lock();
        if let Some(table) = inner.tables.last() {
            table.hide(key_of(id));
        }
    }

    /// Runs held, hidden ones included.
    #[cfg(test)]
    pub(crate) fn count(&self) -> usize {
        self.inner.lock().runs.len()
    }

    /// Replaces the newest table by one of `slots` slots holding its visible entries.
    fn grow(&self, inner: &mut Inner, slots: usize) {
        let table = Table {
            slots: <[Slot]>::new_box_zeroed_with_elems(slots).expect("a table of slots"),
        };
        let mut used = 0;
        if let Some(old) = inner.tables.last() {
            for slot in old.slots.iter() {
                let key = slot.key.load(Ordering::Relaxed);
                if key != 0 && key != TOMBSTONE {
                    let data = slot.data.load(Ordering::Relaxed);
                    table.fill(key, data, slot.len.load(Ordering::Relaxed));
                    used += 1;
                }
            }
        }
        let table = Arc::new(table);
        self.table
            .store(Arc::as_ptr(&table).cast_mut(), Ordering::Release);
        inner.tables.push(table);
        inner.used = used;
    }
}

impl Table {
    /// The data and length of the run `key` of `len` bytes. The table is at most half
    /// full, so the probe meets an empty slot.
    #[inline]
    fn find(&self, key: u64, len: usize) -> Option<(*const u8, usize)> {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(key, mask);
        loop {
            let slot = &self.slots[i];
            match slot.key.load(Ordering::Acquire) {
                0 => return None,
                k if k == key && slot.len.load(Ordering::Relaxed) == len => {
                    return Some((slot.data.load(Ordering::Relaxed), len));
                }
                _ => i = (i + 1) & mask,
            }
        }
    }

    /// Files a run in the first empty slot of its probe (the caller holds the mutex and
    /// keeps the table at most half full).
    fn fill(&self, key: u64, data: *mut u8, len: usize) {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(key, mask);
        while self.slots[i].key.load(Ordering::Relaxed) != 0 {
            i = (i + 1) & mask;
        }
        let slot = &self.slots[i];
        slot.data.store(data, Ordering::Relaxed);
        slot.len.store(len, Ordering::Relaxed);
        slot.key.store(key, Ordering::Release);
    }

    /// Turns every slot of `key` into a tombstone (the caller holds the mutex).
    fn hide(&self, key: u64) {
        let mask = self.slots.len() - 1;
        let mut i = slot_of(key, mask);
        loop {
            let slot = &self.slots[i];
            match slot.key.load(Ordering::Relaxed) {
                0 => return,
                k if k == key => slot.key.store(TOMBSTONE, Ordering::Relaxed),
                _ => {}
            }
            i = (i + 1) & mask;
        }
    }
}

fn key_of(id: PageId) -> u64 {
    debug_assert!(id.0 < TOMBSTONE - 1);
    id.0 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run of `len` bytes (a multiple of 64, as `PageBuf` asks) of `fill`.
    fn run(fill: u8, len: usize) -> PageBuf {
        let mut run = PageBuf::zeroed(len);
        run.get_mut().expect("unshared").fill(fill);
        run
    }

    #[test]
    fn holds_finds_forgets_and_keeps_slices_valid_across_growth() {
        let held = HeldRuns::new();
        assert!(held.get(PageId(5), 64).is_none());
        let first = held.hold(PageId(5), run(5, 64));
        for id in 6..200u64 {
            assert_eq!(held.hold(PageId(id), run(id as u8, 64)), [id as u8; 64]);
        }
        assert_eq!(first, [5; 64], "a slice from before the tables grew");
        for id in 5..200u64 {
            assert_eq!(held.get(PageId(id), 64).unwrap(), [id as u8; 64]);
            assert!(held.get(PageId(id), 128).is_none(), "another length");
        }
        assert_eq!(
            held.hold(PageId(7), run(99, 64)),
            [7; 64],
            "the held copy wins"
        );
        held.forget(PageId(7));
        assert!(held.get(PageId(7), 64).is_none());
        assert_eq!(held.hold(PageId(7), run(77, 64)), [77; 64]);
        assert_eq!(held.count(), 196);
    }

    /// The slices `hold` and `get` return are the held buffers' own bytes, aligned as
    /// `PageBuf` promises, for runs of one page and of several.
    #[test]
    fn held_slices_are_aligned() {
        use crate::page_buf::BUF_ALIGN;
        let held = HeldRuns::new();
        for id in 0..100u64 {
            let len = 4096 * (1 + id as usize % 3);
            let bytes = held.hold(PageId(id), run(id as u8, len));
            assert_eq!(bytes.as_ptr() as usize % BUF_ALIGN, 0);
        }
        for id in 0..100u64 {
            let bytes = held.get(PageId(id), 4096 * (1 + id as usize % 3)).unwrap();
            assert_eq!(bytes.as_ptr() as usize % BUF_ALIGN, 0);
            assert!(bytes.iter().all(|&b| b == id as u8));
        }
    }

    /// Threads sharing one reader: every lookup finds its own run or none, never
    /// another's (run under Miri too, for the memory orderings).
    #[test]
    fn concurrent_holds_and_lookups_agree() {
        let held = HeldRuns::new();
        let ids: u64 = if cfg!(miri) { 40 } else { 2_000 };
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let held = &held;
                s.spawn(move || {
                    for i in 0..ids {
                        let id = PageId((i * 7 + t) % ids);
                        let bytes = match held.get(id, 64) {
                            Some(b) => b,
                            None => held.hold(id, run(id.0 as u8, 64)),
                        };
                        assert_eq!(bytes, [id.0 as u8; 64]);
                    }
                });
            }
        });
        assert_eq!(held.count(), ids as usize, "each run held once");
    }
}
