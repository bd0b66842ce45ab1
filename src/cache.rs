//! The page cache of the pread path: pages read with pread (those beyond `mmap_size`)
//! are kept across transactions up to a byte budget (`Options::cache_size`), so a later
//! transaction finds them without a system call — what SQLite's `cache_size` is to its
//! own pread path. Pages read through the map never enter it: the kernel's page cache
//! already holds them.
//!
//! A copy stays right for as long as its page is not written again: copy-on-write never
//! changes a page that a snapshot can reach, and a page is written again only after every
//! snapshot that could reach the old contents has ended. `Storage` forgets a page before
//! writing it ([`PageCache::forget_range`]), so no transaction that begins later can find
//! the old copy. Transactions hold their own `Arc` to every buffer they read, so eviction
//! never frees memory a live slice points into.
//!
//! Eviction is CLOCK: a page found in the cache is marked; the hand passes over marked
//! pages once (clearing the mark) before evicting them. Evicted buffers that no
//! transaction still holds are kept for the next read of the same length, so a busy
//! cache reads into recycled memory instead of allocating and faulting in fresh pages.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::page::{PageId, PageMap};

/// One page, or one run of pages, as read from the file. `Arc<[u8]>` rather than
/// `Arc<Vec<u8>>`: one pointer to follow from a transaction's table to the bytes.
pub(crate) type PageBuf = Arc<[u8]>;

/// Runs longer than this share of the budget are not cached: one large overflow value
/// would otherwise push out every page of the tree above it.
const RUN_SHARE_MAX: u64 = 16;

const SPARES_MAX: usize = 64;

pub(crate) struct PageCache {
    budget: u64,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The clock: cached runs in no particular order.
    entries: Vec<Entry>,
    /// Position in `entries` of each cached run, by its first page.
    index: PageMap<usize>,
    hand: usize,
    /// Bytes of the cached runs.
    bytes: u64,
    /// Counts `forget_range` calls: a run read while a write was under way is not kept.
    epoch: u64,
    /// Evicted buffers no transaction holds (unshared `Arc`s), ready to be read into
    /// again: at most `SPARES_MAX` of them (a busy cache evicts about one per read, so a
    /// few are enough) and `budget / RUN_SHARE_MAX` bytes.
    spare: Vec<PageBuf>,
    spare_bytes: u64,
}

struct Entry {
    id: PageId,
    buf: PageBuf,
    referenced: bool,
}

impl PageCache {
    /// A cache of at most `budget` bytes (0: nothing is kept between transactions).
    pub(crate) fn new(budget: u64) -> PageCache {
        PageCache {
            budget,
            state: Mutex::new(State::default()),
        }
    }

    /// The cached run of `len` bytes starting at `id`, if there is one.
    pub(crate) fn get(&self, id: PageId, len: usize) -> Option<PageBuf> {
        let mut state = self.state.lock();
        let pos = *state.index.get(&id)?;
        let entry = &mut state.entries[pos];
        if entry.buf.len() != len {
            return None; // Only a corrupt file asks for one run at two lengths.
        }
        entry.referenced = true;
        Some(Arc::clone(&entry.buf))
    }

    /// An unshared buffer of `len` bytes to read into (its contents are to be
    /// overwritten): a recycled one when the cache has one.
    pub(crate) fn buffer(&self, len: usize) -> PageBuf {
        if self.budget > 0 {
            let mut state = self.state.lock();
            if let Some(pos) = state.spare.iter().rposition(|b| b.len() == len) {
                state.spare_bytes -= len as u64;
                return state.spare.swap_remove(pos);
            }
        }
        std::iter::repeat_n(0, len).collect()
    }

    /// To be taken before reading a run from the file and handed to `insert`.
    pub(crate) fn epoch(&self) -> u64 {
        self.state.lock().epoch
    }

    /// Keeps `buf`, the run starting at `id`, evicting others to stay within the budget;
    /// unless a write began or ended since `epoch` was taken. Only a corrupt file makes a
    /// transaction read a page that is being written, but a copy read then must not
    /// outlive that transaction.
    pub(crate) fn insert(&self, id: PageId, buf: &PageBuf, epoch: u64) {
        let len = buf.len() as u64;
        if len > self.budget / RUN_SHARE_MAX {
            return;
        }
        let mut state = self.state.lock();
        if state.epoch != epoch {
            return;
        }
        state.remove(id);
        state.make_room(self.budget - len, self.budget / RUN_SHARE_MAX);
        let pos = state.entries.len();
        state.index.insert(id, pos);
        state.entries.push(Entry {
            id,
            buf: Arc::clone(buf),
            referenced: false,
        });
        state.bytes += len;
    }

    /// Forgets the runs that start at the `pages` pages from `first`: called before they
    /// are written and again after.
    pub(crate) fn forget_range(&self, first: PageId, pages: u64) {
        let mut state = self.state.lock();
        state.epoch += 1;
        if state.entries.is_empty() {
            return;
        }
        if pages as usize > state.entries.len() {
            let end = first.0.saturating_add(pages);
            let doomed: Vec<PageId> = (state.entries.iter())
                .map(|e| e.id)
                .filter(|id| (first.0..end).contains(&id.0))
                .collect();
            for id in doomed {
                state.remove(id);
            }
        } else {
            for id in first.0..first.0.saturating_add(pages) {
                state.remove(PageId(id));
            }
        }
    }
}

impl State {
    fn remove(&mut self, id: PageId) -> Option<Entry> {
        let pos = self.index.remove(&id)?;
        let entry = self.entries.swap_remove(pos);
        if let Some(moved) = self.entries.get(pos) {
            self.index.insert(moved.id, pos);
        }
        self.bytes -= entry.buf.len() as u64;
        Some(entry)
    }

    /// Evicts until at most `bytes_max` bytes are cached, keeping evicted buffers as
    /// spares up to `spare_bytes_max` bytes.
    fn make_room(&mut self, bytes_max: u64, spare_bytes_max: u64) {
        while self.bytes > bytes_max {
            if self.hand >= self.entries.len() {
                self.hand = 0;
            }
            let entry = &mut self.entries[self.hand];
            if std::mem::take(&mut entry.referenced) {
                self.hand += 1;
                continue;
            }
            let id = entry.id;
            // Only the cache hands out clones, so one that is unshared once out of the
            // cache stays unshared.
            if let Some(mut evicted) = self.remove(id) {
                let len = evicted.buf.len() as u64;
                if Arc::get_mut(&mut evicted.buf).is_some()
                    && self.spare.len() < SPARES_MAX
                    && self.spare_bytes + len <= spare_bytes_max
                {
                    self.spare_bytes += len;
                    self.spare.push(evicted.buf);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn page(cache: &PageCache, fill: u8) -> PageBuf {
        let mut buf = cache.buffer(PAGE);
        Arc::get_mut(&mut buf).unwrap().fill(fill);
        buf
    }

    fn cached_ids(cache: &PageCache) -> Vec<u64> {
        let mut ids: Vec<u64> = cache.state.lock().index.keys().map(|id| id.0).collect();
        ids.sort();
        ids
    }

    #[test]
    fn keeps_what_fits_and_evicts_unreferenced_pages_first() {
        let cache = PageCache::new(PAGE as u64 * RUN_SHARE_MAX);
        let budget_pages = cache.budget as usize / PAGE;
        for id in 0..budget_pages as u64 {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.epoch());
        }
        assert_eq!(cached_ids(&cache).len(), budget_pages);
        // Page 0 was used since: the clock passes over it once.
        assert_eq!(cache.get(PageId(0), PAGE).unwrap()[0], 0);
        cache.insert(PageId(100), &page(&cache, 100), cache.epoch());
        let ids = cached_ids(&cache);
        assert_eq!(ids.len(), budget_pages);
        assert!(ids.contains(&0) && ids.contains(&100) && !ids.contains(&1));
        assert!(cache.state.lock().bytes <= cache.budget);
        assert_eq!(cache.get(PageId(100), PAGE).unwrap()[..], [100; PAGE][..]);
        assert!(cache.get(PageId(100), 2 * PAGE).is_none(), "another length");
    }

    #[test]
    fn forgets_written_ranges_and_refuses_copies_read_during_a_write() {
        let cache = PageCache::new(1 << 20);
        for id in 10..20 {
            cache.insert(PageId(id), &page(&cache, 1), cache.epoch());
        }
        cache.forget_range(PageId(12), 3);
        assert_eq!(cached_ids(&cache), [10, 11, 15, 16, 17, 18, 19]);
        // A range longer than the cache takes the other path.
        cache.forget_range(PageId(0), 1 << 40);
        assert!(cached_ids(&cache).is_empty());
        let epoch = cache.epoch();
        cache.forget_range(PageId(500), 1); // a write of another page began meanwhile
        cache.insert(PageId(7), &page(&cache, 7), epoch);
        assert!(cache.get(PageId(7), PAGE).is_none());
    }

    #[test]
    fn recycles_evicted_buffers_only_when_no_transaction_holds_them() {
        let cache = PageCache::new(PAGE as u64 * RUN_SHARE_MAX);
        let held = page(&cache, 1);
        cache.insert(PageId(1), &held, cache.epoch());
        for id in 2..40 {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.epoch());
        }
        assert!(cache.get(PageId(1), PAGE).is_none(), "evicted");
        assert_eq!(held[..], [1; PAGE][..], "a held buffer is never reused");
        let spare = cache.state.lock().spare.len();
        assert!(spare > 0);
        assert!(cache.state.lock().spare_bytes <= cache.budget / RUN_SHARE_MAX);
        let mut reused = cache.buffer(PAGE);
        assert!(Arc::get_mut(&mut reused).is_some());
        assert_eq!(cache.state.lock().spare.len(), spare - 1);
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = PageCache::new(0);
        cache.insert(PageId(3), &page(&cache, 3), cache.epoch());
        assert!(cache.get(PageId(3), PAGE).is_none());
    }
}
