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
//! the old copy. Transactions hold their own clone of every buffer they read, so eviction
//! never frees memory a live slice points into.
//!
//! **Lookups take no lock**, so readers on many cores do not queue behind one another (a
//! mutex here made sixteen threads slower than one). The cache is set-associative: a run
//! lives in one of the `WAYS` slots of the bucket its first page hashes to. A lookup scans
//! the bucket's keys (one cache line), pins the slot, takes a clone of its `Arc` and
//! unpins; whoever empties a slot clears its key first and then waits for the slot's pins
//! to drain before it drops the cache's `Arc`, so a lookup never clones a freed buffer.
//! Changes to a bucket (filing a run, eviction, forgetting) take the bucket's own flag,
//! never a lock for the whole cache; filing and eviction skip a bucket that is busy
//! rather than wait (the run is simply not kept), and only `forget_range`, which must not
//! miss a page, waits for one.
//!
//! Eviction is CLOCK: a run found in the cache is marked; a hand passes over the buckets,
//! clearing marks, and evicts unmarked runs until the cache is within its budget; a
//! bucket with no free slot evicts its first unmarked run the same way. Evicted buffers
//! that no transaction still holds are kept for the next read of the same length, so a
//! busy cache reads into recycled memory instead of allocating and faulting in fresh pages.

#![allow(unsafe_code)] // the lock-free lookup: `Arc`s kept as raw pointers in atomic slots

use std::mem::ManuallyDrop;
use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Relaxed, Release, SeqCst},
};

use parking_lot::Mutex;
use zerocopy::FromZeros;

use crate::page::{PageId, slot_of};
use crate::page_buf::PageBuf;

/// Runs longer than this share of the budget are not cached: one large overflow value
/// would otherwise push out every page of the tree above it.
const RUN_SHARE_MAX: u64 = 16;

const SPARES_MAX: usize = 64;

/// Slots per bucket: their keys fill one cache line.
const WAYS: usize = 8;

/// Slots per page of the budget: twice as many as single pages fit, so that buckets that
/// hash more runs than others seldom evict before the budget is reached.
const SLOTS_PER_PAGE: u64 = 2;

pub(crate) struct PageCache {
    budget: u64,
    /// A power of two of them; none when the budget is 0.
    buckets: Box<[Bucket]>,
    /// Bytes of the cached runs.
    bytes: AtomicU64,
    /// The clock hand: the next bucket to look at for eviction.
    hand: AtomicUsize,
    /// Counts `forget_range` calls: a run read while a write was under way is not kept.
    epoch: AtomicU64,
    /// Evicted buffers no transaction holds (unshared `Arc`s), ready to be read into
    /// again. Only ever `try_lock`ed: a busy list means allocate, or drop the buffer.
    spare: Mutex<Spares>,
}

#[derive(Default)]
struct Spares {
    /// At most `SPARES_MAX` of them (a busy cache evicts about one per read, so a few are
    /// enough) and `budget / RUN_SHARE_MAX` bytes.
    bufs: Vec<PageBuf>,
    bytes: u64,
}

/// `WAYS` slots, as arrays of fields so that a lookup's scan of the keys reads one line.
#[derive(FromZeros)]
#[repr(C, align(64))]
struct Bucket {
    /// 0: empty; otherwise the run's first page + 1. Written only by the holder of `busy`,
    /// and last (after `data` and `lens`) when a slot is filled.
    keys: [AtomicU64; WAYS],
    /// Lookups inside the window between reading a slot's pointer and counting their
    /// clone of it.
    pins: [AtomicU32; WAYS],
    /// Found by a lookup since the hand last passed.
    referenced: [AtomicBool; WAYS],
    /// Taken (false → true) by whoever changes the slots.
    busy: AtomicBool,
    /// Where the next search for a victim in this bucket starts.
    hand: AtomicU8,
    /// The bytes of each cached run (from `PageBuf::into_raw`: the slot owns one count).
    data: [AtomicPtr<u8>; WAYS],
    lens: [AtomicUsize; WAYS],
}

impl PageCache {
    /// A cache of at most `budget` bytes of pages of `page_bytes` bytes (0: nothing is
    /// kept between transactions).
    pub(crate) fn new(budget: u64, page_bytes: u64) -> PageCache {
        let slots = (budget / page_bytes.max(1)).saturating_mul(SLOTS_PER_PAGE);
        let buckets = match budget {
            0 => 0,
            _ => (slots.div_ceil(WAYS as u64).max(1) as usize).next_power_of_two(),
        };
        PageCache {
            budget,
            // Zeroed memory is an empty bucket, and the allocator maps a large zeroed
            // allocation lazily: a cache that is never filled costs no memory.
            buckets: <[Bucket]>::new_box_zeroed_with_elems(buckets).expect("cache buckets"),
            bytes: AtomicU64::new(0),
            hand: AtomicUsize::new(0),
            epoch: AtomicU64::new(0),
            spare: Mutex::new(Spares::default()),
        }
    }

    /// The cached run of `len` bytes starting at `id`, if there is one. Takes no lock.
    #[inline]
    pub(crate) fn get(&self, id: PageId, len: usize) -> Option<PageBuf> {
        let bucket = self.bucket(id)?;
        let key = key_of(id);
        let way = bucket.position(key)?;
        let buf = bucket.acquire(way, key)?;
        if buf.len() != len {
            return None; // Only a corrupt file asks for one run at two lengths.
        }
        if !bucket.referenced[way].load(Relaxed) {
            bucket.referenced[way].store(true, Relaxed);
        }
        Some(buf)
    }

    /// An unshared buffer of `len` bytes to read into (its contents are to be
    /// overwritten): a recycled one when the cache has one.
    pub(crate) fn buffer(&self, len: usize) -> PageBuf {
        if self.budget > 0
            && let Some(mut spare) = self.spare.try_lock()
            && let Some(pos) = spare.bufs.iter().rposition(|b| b.len() == len)
        {
            spare.bytes -= len as u64;
            return spare.bufs.swap_remove(pos);
        }
        PageBuf::zeroed(len)
    }

    /// To be taken before reading a run from the file and handed to `insert`.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(SeqCst)
    }

    /// Keeps `buf`, the run starting at `id`, evicting others to stay within the budget;
    /// unless a write began or ended since `epoch` was taken (only a corrupt file makes a
    /// transaction read a page that is being written, but a copy read then must not
    /// outlive that transaction), or its bucket is busy.
    pub(crate) fn insert(&self, id: PageId, buf: &PageBuf, epoch: u64) {
        let len = buf.len() as u64;
        if len > self.budget / RUN_SHARE_MAX {
            return;
        }
        let Some(bucket) = self.bucket(id) else {
            return;
        };
        let Some(guard) = bucket.try_lock() else {
            return;
        };
        // Counted before the epoch is checked: a `forget_range` that bumps the epoch
        // after this check then finds the bytes non-zero, and looks.
        self.bytes.fetch_add(len, SeqCst);
        if self.epoch.load(SeqCst) != epoch {
            self.bytes.fetch_sub(len, SeqCst);
            return;
        }
        let key = key_of(id);
        let way = bucket.position(key).unwrap_or_else(|| bucket.victim());
        let evicted = bucket.take(way);
        bucket.fill(way, key, buf.clone());
        drop(guard);
        if let Some(evicted) = evicted {
            self.bytes.fetch_sub(evicted.len() as u64, SeqCst);
            self.recycle(evicted);
        }
        self.shrink_to_budget(key);
    }

    /// Forgets the runs that start at the `pages` pages from `first`: called before they
    /// are written and again after.
    pub(crate) fn forget_range(&self, first: PageId, pages: u64) {
        self.epoch.fetch_add(1, SeqCst);
        if self.bytes.load(SeqCst) == 0 {
            return;
        }
        let end = first.0.saturating_add(pages);
        if pages > self.buckets.len() as u64 {
            for bucket in self.buckets.iter() {
                let _guard = bucket.lock();
                for way in 0..WAYS {
                    let key = bucket.keys[way].load(Relaxed);
                    if key != 0 && (first.0..end).contains(&(key - 1)) {
                        self.drop_taken(bucket.take(way));
                    }
                }
            }
        } else {
            for id in first.0..end {
                let Some(bucket) = self.bucket(PageId(id)) else {
                    return;
                };
                let _guard = bucket.lock();
                if let Some(way) = bucket.position(key_of(PageId(id))) {
                    self.drop_taken(bucket.take(way));
                }
            }
        }
    }

    fn bucket(&self, id: PageId) -> Option<&Bucket> {
        let mask = self.buckets.len().checked_sub(1)?;
        Some(&self.buckets[slot_of(id.0, mask)])
    }

    /// Evicts unmarked runs, clearing marks as the hand passes, until the cache is
    /// within its budget (or the hand went twice round: every bucket was busy or every
    /// run in use); never the run `keep`, which was filed just now.
    fn shrink_to_budget(&self, keep: u64) {
        let mask = self.buckets.len() - 1;
        let mut steps = 2 * self.buckets.len();
        while self.bytes.load(SeqCst) > self.budget && steps > 0 {
            steps -= 1;
            let bucket = &self.buckets[self.hand.fetch_add(1, Relaxed) & mask];
            let Some(_guard) = bucket.try_lock() else {
                continue;
            };
            for way in 0..WAYS {
                if self.bytes.load(SeqCst) <= self.budget {
                    break;
                }
                let key = bucket.keys[way].load(Relaxed);
                if key != 0 && key != keep && !bucket.referenced[way].swap(false, Relaxed) {
                    self.drop_taken(bucket.take(way));
                }
            }
        }
    }

    /// Accounts for a run taken out of the cache, and recycles its buffer.
    fn drop_taken(&self, taken: Option<PageBuf>) {
        if let Some(buf) = taken {
            self.bytes.fetch_sub(buf.len() as u64, SeqCst);
            self.recycle(buf);
        }
    }

    /// Keeps an evicted buffer as a spare if no transaction holds it (only the cache hands
    /// out clones, and no lookup can clone one once it is out of the cache, so an
    /// unshared one stays unshared) and there is room.
    fn recycle(&self, mut buf: PageBuf) {
        let len = buf.len() as u64;
        if buf.get_mut().is_none() {
            return;
        }
        if let Some(mut spare) = self.spare.try_lock()
            && spare.bufs.len() < SPARES_MAX
            && spare.bytes + len <= self.budget / RUN_SHARE_MAX
        {
            spare.bytes += len;
            spare.bufs.push(buf);
        }
    }
}

impl Drop for PageCache {
    fn drop(&mut self) {
        for bucket in self.buckets.iter() {
            for way in 0..WAYS {
                drop(bucket.take(way));
            }
        }
    }
}

impl Bucket {
    /// The slot holding the run `key`. Filing checks for one first, so there is at most
    /// one.
    #[inline]
    fn position(&self, key: u64) -> Option<usize> {
        self.keys.iter().position(|k| k.load(Relaxed) == key)
    }

    /// A clone of the buffer in `way`, if the slot still holds the run `key`.
    ///
    /// Why the clone is of a live buffer: the pin is counted before the key is read, and
    /// `take` clears the key before it reads the pins, all `SeqCst`. If we read `key`,
    /// our read precedes `take`'s clearing in the single order of `SeqCst` operations, so
    /// our pin precedes `take`'s reading of the pins, and `take` waits until we unpin:
    /// after our clone is counted. If `take` read the pins first, its clearing came
    /// first too, and we read 0 or the key of a later fill, whose `data` and `lens` our
    /// `SeqCst` read of that key makes visible.
    #[inline]
    fn acquire(&self, way: usize, key: u64) -> Option<PageBuf> {
        self.pins[way].fetch_add(1, SeqCst);
        let found = (self.keys[way].load(SeqCst) == key).then(|| {
            let (data, len) = (self.data[way].load(Relaxed), self.lens[way].load(Relaxed));
            // SAFETY: the slot holds `key`, so `data` and `len` are what `fill` stored:
            // the result of `PageBuf::into_raw` on a buffer of `len` bytes whose count the
            // slot owns, and which `take` cannot drop before we unpin (above).
            // `ManuallyDrop` leaves the slot's count alone; the clone adds ours.
            let slot_own = ManuallyDrop::new(unsafe { PageBuf::from_raw(data, len) });
            PageBuf::clone(&slot_own)
        });
        self.pins[way].fetch_sub(1, Release);
        found
    }

    /// The way to fill: an empty one, else the first unmarked one from the bucket's hand
    /// (clearing marks on the way). The caller holds `busy`.
    fn victim(&self) -> usize {
        if let Some(way) = self.position(0) {
            return way;
        }
        let start = self.hand.load(Relaxed) as usize;
        let way = (0..2 * WAYS)
            .map(|step| (start + step) % WAYS)
            .find(|&way| !self.referenced[way].swap(false, Relaxed))
            .unwrap_or(start);
        self.hand.store(((way + 1) % WAYS) as u8, Relaxed);
        way
    }

    /// Files `buf` as the run `key` in `way`, which must be empty. The caller holds `busy`.
    fn fill(&self, way: usize, key: u64, buf: PageBuf) {
        debug_assert_eq!(self.keys[way].load(Relaxed), 0);
        let len = buf.len();
        self.data[way].store(buf.into_raw().cast_mut(), Relaxed);
        self.lens[way].store(len, Relaxed);
        self.referenced[way].store(false, Relaxed);
        self.keys[way].store(key, SeqCst);
    }

    /// Empties `way`, returning the cache's `Arc` of its run once no lookup can be
    /// cloning it (see `acquire`). The caller holds `busy`.
    fn take(&self, way: usize) -> Option<PageBuf> {
        if self.keys[way].load(Relaxed) == 0 {
            return None;
        }
        self.keys[way].store(0, SeqCst);
        let mut spins = 0u32;
        while self.pins[way].load(SeqCst) != 0 {
            backoff(&mut spins);
        }
        let (data, len) = (self.data[way].load(Relaxed), self.lens[way].load(Relaxed));
        // SAFETY: the slot held a key, so `data` came from `PageBuf::into_raw` in `fill`
        // on a buffer of `len` bytes, and the slot owns that count; with the key cleared
        // and the pins drained no lookup will use it again, so the count passes to the
        // returned buffer.
        Some(unsafe { PageBuf::from_raw(data, len) })
    }

    fn try_lock(&self) -> Option<BucketGuard<'_>> {
        // The guard is made only on success: made and dropped on failure, it would
        // clear the flag that another thread holds.
        match self.busy.compare_exchange(false, true, SeqCst, Relaxed) {
            Ok(_) => Some(BucketGuard(self)),
            Err(_) => None,
        }
    }

    /// Waits for the bucket: held only for a few slot changes, never across I/O.
    fn lock(&self) -> BucketGuard<'_> {
        let mut spins = 0u32;
        loop {
            if let Some(guard) = self.try_lock() {
                return guard;
            }
            backoff(&mut spins);
        }
    }
}

/// Holds a bucket's `busy` flag.
struct BucketGuard<'a>(&'a Bucket);

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        self.0.busy.store(false, Release);
    }
}

/// Spins a little, then yields: the other side is a few instructions from done unless
/// the scheduler took its core away.
fn backoff(spins: &mut u32) {
    *spins += 1;
    if *spins < 64 {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

fn key_of(id: PageId) -> u64 {
    id.0 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn cache(pages: u64) -> PageCache {
        PageCache::new(pages * PAGE as u64, PAGE as u64)
    }

    fn page(cache: &PageCache, fill: u8) -> PageBuf {
        let mut buf = cache.buffer(PAGE);
        buf.get_mut().unwrap().fill(fill);
        buf
    }

    fn cached_ids(cache: &PageCache) -> Vec<u64> {
        let mut ids: Vec<u64> = (cache.buckets.iter())
            .flat_map(|b| b.keys.iter().map(|k| k.load(Relaxed)))
            .filter(|&k| k != 0)
            .map(|k| k - 1)
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn keeps_what_fits_and_evicts_unreferenced_pages_first() {
        let cache = cache(RUN_SHARE_MAX);
        let budget_pages = RUN_SHARE_MAX;
        for id in 0..budget_pages {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.epoch());
        }
        assert_eq!(cached_ids(&cache), (0..budget_pages).collect::<Vec<_>>());
        // Page 0 was used since: the clock passes over it once.
        assert_eq!(cache.get(PageId(0), PAGE).unwrap()[0], 0);
        cache.insert(PageId(100), &page(&cache, 100), cache.epoch());
        let ids = cached_ids(&cache);
        assert_eq!(ids.len() as u64, budget_pages);
        assert!(ids.contains(&0), "the referenced page stays");
        assert!(cache.bytes.load(SeqCst) <= cache.budget);
        assert!(cache.get(PageId(0), 2 * PAGE).is_none(), "another length");
    }

    #[test]
    fn forgets_written_ranges_and_refuses_copies_read_during_a_write() {
        let cache = PageCache::new(1 << 20, PAGE as u64);
        for id in 10..20 {
            cache.insert(PageId(id), &page(&cache, 1), cache.epoch());
        }
        cache.forget_range(PageId(12), 3);
        assert_eq!(cached_ids(&cache), [10, 11, 15, 16, 17, 18, 19]);
        // A range longer than the cache has buckets takes the other path.
        cache.forget_range(PageId(0), 1 << 40);
        assert!(cached_ids(&cache).is_empty());
        assert_eq!(cache.bytes.load(SeqCst), 0);
        let epoch = cache.epoch();
        cache.forget_range(PageId(500), 1); // a write of another page began meanwhile
        cache.insert(PageId(7), &page(&cache, 7), epoch);
        assert!(cache.get(PageId(7), PAGE).is_none());
    }

    #[test]
    fn recycles_evicted_buffers_only_when_no_transaction_holds_them() {
        let cache = cache(RUN_SHARE_MAX);
        let held = page(&cache, 1);
        cache.insert(PageId(1), &held, cache.epoch());
        for id in 2..40 {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.epoch());
        }
        assert!(cache.get(PageId(1), PAGE).is_none(), "evicted");
        assert_eq!(held[..], [1; PAGE][..], "a held buffer is never reused");
        let spare = cache.spare.lock().bufs.len();
        assert!(spare > 0);
        assert!(cache.spare.lock().bytes <= cache.budget / RUN_SHARE_MAX);
        let mut reused = cache.buffer(PAGE);
        assert!(reused.get_mut().is_some());
        assert_eq!(cache.spare.lock().bufs.len(), spare - 1);
    }

    /// Fresh, cached and recycled buffers all start on a `BUF_ALIGN` boundary.
    #[test]
    fn every_buffer_handed_out_is_aligned() {
        use crate::page_buf::BUF_ALIGN;
        let aligned = |b: &PageBuf| b.as_ptr() as usize % BUF_ALIGN == 0;
        let cache = cache(RUN_SHARE_MAX);
        for id in 0..4 * RUN_SHARE_MAX {
            let buf = page(&cache, id as u8);
            assert!(aligned(&buf));
            cache.insert(PageId(id), &buf, cache.epoch());
            let found = cache.get(PageId(id), PAGE).expect("just filed");
            assert!(aligned(&found) && found.as_ptr() == buf.as_ptr());
        }
        assert!(
            !cache.spare.lock().bufs.is_empty(),
            "evicted buffers were kept"
        );
        for _ in 0..SPARES_MAX + 1 {
            assert!(aligned(&cache.buffer(PAGE)));
        }
        assert!(aligned(&cache.buffer(3 * PAGE)));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = PageCache::new(0, PAGE as u64);
        cache.insert(PageId(3), &page(&cache, 3), cache.epoch());
        assert!(cache.get(PageId(3), PAGE).is_none());
    }

    /// Readers, fillers and a forgetter at once: every run found is whole and is the one
    /// asked for, and the byte count ends true. Run under Miri too, which checks the
    /// pin protocol for use-after-free and data races.
    #[test]
    fn concurrent_lookups_fills_and_forgets_never_see_a_wrong_or_freed_run() {
        const LEN: usize = 64;
        let (ids, rounds) = if cfg!(miri) {
            (24u64, 30u64)
        } else {
            (400, 5_000)
        };
        let cache = PageCache::new(ids / 2 * LEN as u64, LEN as u64);
        let cache = &cache;
        std::thread::scope(|s| {
            for t in 0..3u64 {
                s.spawn(move || {
                    for r in 0..rounds {
                        let id = PageId((r * 13 + t * 5) % ids);
                        match cache.get(id, LEN) {
                            Some(buf) => assert!(buf.iter().all(|&b| b == id.0 as u8)),
                            None => {
                                let epoch = cache.epoch();
                                let mut buf = cache.buffer(LEN);
                                buf.get_mut().unwrap().fill(id.0 as u8);
                                cache.insert(id, &buf, epoch);
                            }
                        }
                    }
                });
            }
            s.spawn(move || {
                for r in 0..rounds / 10 {
                    cache.forget_range(PageId(r % ids), 3);
                }
            });
        });
        let held: u64 = (cache.buckets.iter())
            .flat_map(|b| {
                (0..WAYS)
                    .filter(|&w| b.keys[w].load(Relaxed) != 0)
                    .map(|w| b.lens[w].load(Relaxed) as u64)
            })
            .sum();
        assert_eq!(cache.bytes.load(SeqCst), held);
    }
}
