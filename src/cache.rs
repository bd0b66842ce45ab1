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
//! the old copy.
//!
//! **A hit writes nothing that other threads read**, so readers on many cores do not
//! slow one another down (a mutex here made sixteen threads slower than one; counting
//! references per hit, its successor, kept two threads at 1.5× one). The cache is
//! set-associative: a run lives in one of the `WAYS` slots of the bucket its first page
//! hashes to, and a lookup scans the bucket's keys (one cache line) and loads the slot's
//! pointer. What it finds stays valid until its reader ends, by the rule that keeps a
//! page from reuse while a snapshot may read it, applied to memory: a run taken out of
//! the cache (evicted or forgotten) is *retired*, tagged with the cache's generation,
//! which every retirement advances; every reader registers the generation it began in
//! ([`PageCache::register`], in a [`Registry`]), and a retired run is freed only once no
//! reader that began at or before its retirement is left. A reader that began later
//! cannot find it: its slot was emptied before the generation moved on.
//!
//! **Memory stays bounded** when a reader lives long: retired runs may take at most an
//! eighth of the budget; beyond that, runs read from the file are no longer filed (so
//! nothing more is evicted) until the old readers end, and lookups of what is cached go
//! on as before.
//!
//! Changes to a bucket (filing a run, eviction, forgetting) take the bucket's own flag,
//! never a lock for the whole cache; filing and eviction skip a bucket that is busy
//! rather than wait (the run is simply not kept), and only `forget_range`, which must not
//! miss a page, waits for one.
//!
//! Eviction is CLOCK: a run found in the cache is marked; a hand passes over the buckets,
//! clearing marks, and evicts unmarked runs until the cache is within its budget; a
//! bucket with no free slot evicts its first unmarked run the same way. Freed buffers
//! that no transaction still holds are kept for the next read of the same length, so a
//! busy cache reads into recycled memory instead of allocating and faulting in fresh pages.

#![allow(unsafe_code)] // the lookup: runs kept as raw pointers in atomic slots

use std::sync::atomic::{
    AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize,
    Ordering::{Acquire, Relaxed, Release, SeqCst},
    fence,
};

use parking_lot::Mutex;
use zerocopy::FromZeros;

use crate::error::{Error, Result};
use crate::page::{PageId, slot_of};
use crate::page_buf::PageBuf;
use crate::registry::{Registration, Registry};

/// Runs longer than this share of the budget are not cached: one large overflow value
/// would otherwise push out every page of the tree above it.
const RUN_SHARE_MAX: u64 = 16;

/// Retired runs may take this share of the budget before the cache stops filing runs.
const RETIRED_SHARE_MAX: u64 = 8;

/// Retired runs collected before an attempt to free them: an attempt reads every
/// reader's slot.
const RECLAIM_BATCH: usize = 32;

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
    /// Bytes of the cached runs (retired ones not included).
    bytes: AtomicU64,
    /// The clock hand: the next bucket to look at for eviction.
    hand: AtomicUsize,
    /// Counts `forget_range` calls: a run read while a write was under way is not kept.
    write_epoch: AtomicU64,
    /// Advanced by every retirement; readers register the value they began in. From 1:
    /// the registry takes 0 for a free slot.
    generation: AtomicU64,
    /// Readers that may hold slices of cached runs, by the generation they began in.
    readers: Registry,
    /// Runs taken out of the cache that a registered reader may still be reading.
    retired: Mutex<Vec<Retired>>,
    /// Bytes of the retired runs.
    retired_bytes: AtomicU64,
    /// Freed buffers no transaction holds (unshared `Arc`s), ready to be read into
    /// again. Only ever `try_lock`ed: a busy list means allocate, or drop the buffer.
    spare: Mutex<Spares>,
}

/// A run out of the cache, and the generation it was retired in.
struct Retired {
    generation: u64,
    buf: PageBuf,
}

/// A registered reader of the cache: slices [`PageCache::get`] returns borrow it, and
/// it is handed back to [`PageCache::unregister`] once none is left.
#[must_use]
#[derive(Debug)]
pub(crate) struct CacheReader(Registration);

#[derive(Default)]
struct Spares {
    /// At most `SPARES_MAX` of them (a busy cache evicts about one per read, so a few are
    /// enough) and `budget / RUN_SHARE_MAX` bytes.
    bufs: Vec<PageBuf>,
    bytes: u64,
}

/// `WAYS` slots, as arrays of fields so that a lookup's scan of the keys reads one line.
///
/// A slot's `keys`, `data` and `lens` change together, under the holder of `busy`, and
/// lookups read them as of one moment by the slot's sequence number, as a seqlock: the
/// writer makes it odd before it changes them and even again after; a lookup reads an
/// even number, the fields, and the same number again, or it ignores what it read.
#[derive(FromZeros)]
#[repr(C, align(64))]
struct Bucket {
    /// 0: empty; otherwise the run's first page + 1.
    keys: [AtomicU64; WAYS],
    /// The bytes of each cached run (from `PageBuf::into_raw`: the slot owns one count).
    data: [AtomicPtr<u8>; WAYS],
    /// Odd while the slot is being changed.
    seqs: [AtomicU64; WAYS],
    /// The length of each run (cached runs are shorter than 4 GiB).
    lens: [AtomicU32; WAYS],
    /// Found by a lookup since the hand last passed.
    referenced: [AtomicBool; WAYS],
    /// Taken (false → true) by whoever changes the slots.
    busy: AtomicBool,
    /// Where the next search for a victim in this bucket starts.
    hand: AtomicU8,
}

impl PageCache {
    /// A cache of at most `budget` bytes of pages of `page_bytes` bytes (0: nothing is
    /// kept between transactions). `Error::InvalidOptions` if its table of buckets
    /// cannot be allocated (a budget far beyond the machine's memory).
    pub(crate) fn new(budget: u64, page_bytes: u64) -> Result<PageCache> {
        let slots = (budget / page_bytes.max(1)).saturating_mul(SLOTS_PER_PAGE);
        let buckets = match budget {
            0 => Some(0),
            _ => usize::try_from(slots.div_ceil(WAYS as u64).max(1))
                .ok()
                .and_then(usize::checked_next_power_of_two),
        };
        let too_large = || {
            Error::InvalidOptions(format!(
                "cache_size of {budget} bytes: its table cannot be allocated"
            ))
        };
        let buckets = buckets.ok_or_else(too_large)?;
        Ok(PageCache {
            budget,
            // Zeroed memory is an empty bucket, and the allocator maps a large zeroed
            // allocation lazily: a cache that is never filled costs no memory.
            buckets: <[Bucket]>::new_box_zeroed_with_elems(buckets).map_err(|_| too_large())?,
            bytes: AtomicU64::new(0),
            hand: AtomicUsize::new(0),
            write_epoch: AtomicU64::new(0),
            generation: AtomicU64::new(1),
            readers: Registry::new(),
            retired: Mutex::new(Vec::new()),
            retired_bytes: AtomicU64::new(0),
            spare: Mutex::new(Spares::default()),
        })
    }

    /// Whether the cache keeps anything (a budget of 0 keeps nothing).
    pub(crate) fn is_enabled(&self) -> bool {
        !self.buckets.is_empty()
    }

    /// Registers a reader: what it finds stays allocated until it is unregistered.
    pub(crate) fn register(&self) -> CacheReader {
        CacheReader(self.readers.register(self.generation.load(SeqCst)))
    }

    /// Ends a reader's registration; it holds no slice of the cache any more (they
    /// borrowed the `CacheReader` that this consumes).
    pub(crate) fn unregister(&self, reader: CacheReader) {
        self.readers.release(reader.0);
    }

    /// The cached run of `len` bytes starting at `id`, if there is one, valid for as long
    /// as `reader` is registered. Writes nothing unless the run's mark was clear.
    #[inline]
    pub(crate) fn get<'r>(
        &self,
        id: PageId,
        len: usize,
        _reader: &'r CacheReader,
    ) -> Option<&'r [u8]> {
        let bucket = self.bucket(id)?;
        let key = key_of(id);
        let way = bucket.position(key)?;
        let seq = bucket.seqs[way].load(SeqCst);
        let (found, data) = (
            bucket.keys[way].load(Relaxed),
            bucket.data[way].load(Relaxed),
        );
        let found_len = bucket.lens[way].load(Relaxed) as usize;
        // The loads above come before the second load of the sequence number: one of a
        // change that they saw makes it differ (the change's `Release` fence).
        fence(Acquire);
        if seq & 1 == 1 || bucket.seqs[way].load(SeqCst) != seq || found != key {
            return None; // Being changed, changed meanwhile, or refilled with another run.
        }
        if found_len != len {
            return None; // Only a corrupt file asks for one run at two lengths.
        }
        if !bucket.referenced[way].load(Relaxed) {
            bucket.referenced[way].store(true, Relaxed);
        }
        // SAFETY: the sequence number was even and unchanged around the reads, so `data`
        // and `len` are what one `fill` stored: a `PageBuf` of `len` bytes given up with
        // `into_raw`, filed before our first load of the number (`Release` store in
        // `change`, `SeqCst` load here). Its memory is freed only by `reclaim`, after
        // `take` made the number odd (a `SeqCst` store), `retire` took the generation
        // `g` (a `SeqCst` `fetch_add`, later in the same thread) and a `SeqCst` scan of
        // the registry found no reader of a generation `<= g`. That `take` is not
        // visible to our second load, so it comes after it in the single order of
        // `SeqCst` operations; so do `fetch_add` and the scan, while our load of the
        // generation and our registration (`register`, a `SeqCst` store, before this
        // lookup) come before it: we read a generation `<= g`, and the scan sees our
        // registration, which lasts as long as the `&'r` borrow of `reader`. The bytes
        // are never written while the buffer is cached or retired: only an unshared
        // buffer is written, and the cache's count shares it.
        Some(unsafe { std::slice::from_raw_parts(data, len) })
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
    pub(crate) fn write_epoch(&self) -> u64 {
        self.write_epoch.load(SeqCst)
    }

    /// Keeps `buf`, the run starting at `id`, evicting others to stay within the budget;
    /// unless a write began or ended since `write_epoch` was taken (only a corrupt file
    /// makes a transaction read a page that is being written, but a copy read then must
    /// not outlive that transaction), its bucket is busy, or retired runs already take
    /// their whole share (see the module documentation).
    pub(crate) fn insert(&self, id: PageId, buf: &PageBuf, write_epoch: u64) {
        let len = buf.len() as u64;
        if len > self.budget / RUN_SHARE_MAX
            || len > u64::from(u32::MAX)
            || !self.retired_within_share()
        {
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
        if self.write_epoch.load(SeqCst) != write_epoch {
            self.bytes.fetch_sub(len, SeqCst);
            return;
        }
        let key = key_of(id);
        let way = bucket.position(key).unwrap_or_else(|| bucket.victim());
        let evicted = bucket.take(way);
        bucket.fill(way, key, buf.clone());
        drop(guard);
        self.retire(evicted);
        self.shrink_to_budget(key);
    }

    /// Forgets the runs that start at the `pages` pages from `first`: called before they
    /// are written and again after.
    pub(crate) fn forget_range(&self, first: PageId, pages: u64) {
        self.write_epoch.fetch_add(1, SeqCst);
        if self.bytes.load(SeqCst) == 0 {
            return;
        }
        let end = first.0.saturating_add(pages);
        if pages > self.buckets.len() as u64 {
            for bucket in self.buckets.iter() {
                let _guard = bucket.lock();
                for way in 0..WAYS {
                    let key = bucket.keys[way].load(SeqCst);
                    if key != 0 && (first.0..end).contains(&(key - 1)) {
                        self.retire(bucket.take(way));
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
                    self.retire(bucket.take(way));
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
    /// run marked); never the run `keep`, which was filed just now.
    fn shrink_to_budget(&self, keep: u64) {
        let mask = self.buckets.len() - 1;
        let mut steps = 2 * self.buckets.len();
        while self.bytes.load(SeqCst) > self.budget && steps > 0 {
            steps -= 1;
            let bucket = &self.buckets[self.hand.fetch_add(1, SeqCst) & mask];
            let Some(_guard) = bucket.try_lock() else {
                continue;
            };
            for way in 0..WAYS {
                if self.bytes.load(SeqCst) <= self.budget {
                    break;
                }
                let key = bucket.keys[way].load(SeqCst);
                if key != 0 && key != keep && !bucket.referenced[way].swap(false, SeqCst) {
                    self.retire(bucket.take(way));
                }
            }
        }
    }

    /// Moves a run taken out of its slot to the retired list, where it waits for the
    /// readers that may have found it; frees what no reader can still hold once a batch
    /// has gathered.
    fn retire(&self, taken: Option<PageBuf>) {
        let Some(buf) = taken else {
            return;
        };
        let len = buf.len() as u64;
        self.bytes.fetch_sub(len, SeqCst);
        self.retired_bytes.fetch_add(len, SeqCst);
        // After the slot was emptied (`take`): see `get`.
        let generation = self.generation.fetch_add(1, SeqCst);
        let mut retired = self.retired.lock();
        retired.push(Retired { generation, buf });
        if retired.len() >= RECLAIM_BATCH || !self.retired_within_share() {
            self.reclaim(&mut retired);
        }
    }

    /// Whether the retired runs are within their share of the budget, after freeing
    /// what can be freed if they were not.
    fn retired_within_share(&self) -> bool {
        let within = || self.retired_bytes.load(SeqCst) <= self.budget / RETIRED_SHARE_MAX;
        if within() {
            return true;
        }
        if let Some(mut retired) = self.retired.try_lock() {
            self.reclaim(&mut retired);
        }
        within()
    }

    /// Frees the retired runs that no registered reader can be reading: those retired
    /// before every live reader began.
    fn reclaim(&self, retired: &mut Vec<Retired>) {
        let oldest = self.readers.oldest().unwrap_or(u64::MAX);
        let mut i = 0;
        while i < retired.len() {
            if retired[i].generation < oldest {
                let buf = retired.swap_remove(i).buf;
                self.retired_bytes.fetch_sub(buf.len() as u64, SeqCst);
                self.recycle(buf);
            } else {
                i += 1;
            }
        }
    }

    /// Keeps a freed buffer as a spare if no transaction holds it (transactions hold
    /// clones of the runs they read from the file) and there is room.
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
        // No reader is left: each holds the `Storage` that owns the cache.
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

    /// The way to fill: an empty one, else the first unmarked one from the bucket's hand
    /// (clearing marks on the way). The caller holds `busy`.
    fn victim(&self) -> usize {
        if let Some(way) = self.position(0) {
            return way;
        }
        let start = self.hand.load(SeqCst) as usize;
        let way = (0..2 * WAYS)
            .map(|step| (start + step) % WAYS)
            .find(|&way| !self.referenced[way].swap(false, SeqCst))
            .unwrap_or(start);
        self.hand.store(((way + 1) % WAYS) as u8, SeqCst);
        way
    }

    /// Files `buf` as the run `key` in `way`, which must be empty. The caller holds `busy`.
    fn fill(&self, way: usize, key: u64, buf: PageBuf) {
        debug_assert_eq!(self.keys[way].load(Relaxed), 0);
        let len = buf.len() as u32; // `insert` files nothing longer
        self.change(way, key, buf.into_raw().cast_mut(), len);
        self.referenced[way].store(false, Relaxed);
    }

    /// Empties `way`, returning the slot's count of its run, which lookups that began
    /// before may still be reading (see `get`). The caller holds `busy`.
    fn take(&self, way: usize) -> Option<PageBuf> {
        if self.keys[way].load(Relaxed) == 0 {
            return None;
        }
        let (data, len) = (self.data[way].load(Relaxed), self.lens[way].load(Relaxed));
        self.change(way, 0, std::ptr::null_mut(), 0);
        // SAFETY: the slot held a key, so `data` came from `PageBuf::into_raw` in `fill`
        // on a buffer of `len` bytes, and the slot owned that count; emptied, it no
        // longer does, so the count is taken back once.
        Some(unsafe { PageBuf::from_raw(data, len as usize) })
    }

    /// Sets the slot's fields inside an odd sequence number (see `Bucket`). The caller
    /// holds `busy`, so nobody else changes the number.
    fn change(&self, way: usize, key: u64, data: *mut u8, len: u32) {
        let seq = self.seqs[way].load(Relaxed);
        self.seqs[way].store(seq + 1, SeqCst);
        // The odd number is seen before any field it guards (see `get`).
        fence(Release);
        self.data[way].store(data, Relaxed);
        self.lens[way].store(len, Relaxed);
        self.keys[way].store(key, Relaxed);
        self.seqs[way].store(seq + 2, Release);
    }

    fn try_lock(&self) -> Option<BucketGuard<'_>> {
        // The guard is made only on success: made and dropped on failure, it would
        // clear the flag that another thread holds.
        match self.busy.compare_exchange(false, true, SeqCst, SeqCst) {
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
            spins += 1;
            if spins < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
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

fn key_of(id: PageId) -> u64 {
    id.0 + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    fn cache(pages: u64) -> PageCache {
        PageCache::new(pages * PAGE as u64, PAGE as u64).expect("a small cache")
    }

    fn page(cache: &PageCache, fill: u8) -> PageBuf {
        let mut buf = cache.buffer(PAGE);
        buf.get_mut().unwrap().fill(fill);
        buf
    }

    fn cached_ids(cache: &PageCache) -> Vec<u64> {
        let mut ids: Vec<u64> = (cache.buckets.iter())
            .flat_map(|b| b.keys.iter().map(|k| k.load(SeqCst)))
            .filter(|&k| k != 0)
            .map(|k| k - 1)
            .collect();
        ids.sort();
        ids
    }

    fn retired(cache: &PageCache) -> usize {
        cache.retired.lock().len()
    }

    #[test]
    fn keeps_what_fits_and_evicts_unreferenced_pages_first() {
        let cache = cache(RUN_SHARE_MAX);
        let reader = cache.register();
        let budget_pages = RUN_SHARE_MAX;
        for id in 0..budget_pages {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.write_epoch());
        }
        assert_eq!(cached_ids(&cache), (0..budget_pages).collect::<Vec<_>>());
        // Page 0 was used since: the clock passes over it once.
        assert_eq!(cache.get(PageId(0), PAGE, &reader).unwrap()[0], 0);
        cache.insert(PageId(100), &page(&cache, 100), cache.write_epoch());
        let ids = cached_ids(&cache);
        assert_eq!(ids.len() as u64, budget_pages);
        assert!(ids.contains(&0), "the referenced page stays");
        assert!(cache.bytes.load(SeqCst) <= cache.budget);
        assert!(
            cache.get(PageId(0), 2 * PAGE, &reader).is_none(),
            "another length"
        );
        cache.unregister(reader);
    }

    #[test]
    fn forgets_written_ranges_and_refuses_copies_read_during_a_write() {
        let cache = PageCache::new(1 << 20, PAGE as u64).expect("a small cache");
        let reader = cache.register();
        for id in 10..20 {
            cache.insert(PageId(id), &page(&cache, 1), cache.write_epoch());
        }
        cache.forget_range(PageId(12), 3);
        assert_eq!(cached_ids(&cache), [10, 11, 15, 16, 17, 18, 19]);
        // A range longer than the cache has buckets takes the other path.
        cache.forget_range(PageId(0), 1 << 40);
        assert!(cached_ids(&cache).is_empty());
        assert_eq!(cache.bytes.load(SeqCst), 0);
        let epoch = cache.write_epoch();
        cache.forget_range(PageId(500), 1); // a write of another page began meanwhile
        cache.insert(PageId(7), &page(&cache, 7), epoch);
        assert!(cache.get(PageId(7), PAGE, &reader).is_none());
        cache.unregister(reader);
    }

    /// A run found stays whole while its reader lives, though forgotten, its page filed
    /// again with other bytes and many runs evicted after it; it is freed once its
    /// reader ends, and a reader that began after its retirement does not hold it back.
    #[test]
    fn retired_runs_outlive_the_readers_that_may_hold_them_and_no_more() {
        let cache = cache(8 * RUN_SHARE_MAX);
        let reclaim = || cache.reclaim(&mut cache.retired.lock());
        let first_copy_retired = || cache.retired.lock().iter().any(|r| r.buf[0] == 1);
        let old = cache.register();
        cache.insert(PageId(1), &page(&cache, 1), cache.write_epoch());
        let found = cache.get(PageId(1), PAGE, &old).expect("filed");
        cache.forget_range(PageId(1), 1);
        cache.insert(PageId(1), &page(&cache, 9), cache.write_epoch());
        let young = cache.register();
        assert_eq!(cache.get(PageId(1), PAGE, &young).unwrap()[0], 9);
        for id in 2..300 {
            cache.insert(PageId(id), &page(&cache, 2), cache.write_epoch());
        }
        assert!(first_copy_retired(), "nothing freed while `old` lives");
        assert!(retired(&cache) > 1);
        assert_eq!(found, [1; PAGE], "a retired run stays whole");
        cache.unregister(old);
        reclaim();
        assert!(!first_copy_retired(), "freed though `young` lives");
        assert!(retired(&cache) > 0, "what `young` may hold waits");
        cache.unregister(young);
        reclaim();
        assert_eq!(retired(&cache), 0);
        assert_eq!(cache.retired_bytes.load(SeqCst), 0);
    }

    /// A reader that never ends stops the filing of runs once the retired ones take
    /// their share of the budget: memory stays bounded. Lookups go on.
    #[test]
    fn a_long_reader_bounds_retired_memory_by_stopping_filing() {
        let cache = cache(4 * RUN_SHARE_MAX);
        let long = cache.register();
        for id in 0..if cfg!(miri) { 300 } else { 10_000 } {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.write_epoch());
            let held = cache.bytes.load(SeqCst) + cache.retired_bytes.load(SeqCst);
            assert!(held <= cache.budget + cache.budget / RETIRED_SHARE_MAX + PAGE as u64);
        }
        let cached = cached_ids(&cache);
        assert!(!cached.is_empty());
        let id = PageId(cached[0]);
        assert_eq!(cache.get(id, PAGE, &long).unwrap()[0], id.0 as u8);
        cache.insert(PageId(20_000), &page(&cache, 0), cache.write_epoch());
        assert!(!cached_ids(&cache).contains(&20_000), "filing has stopped");
        cache.unregister(long);
        cache.insert(PageId(20_000), &page(&cache, 0), cache.write_epoch());
        assert!(cached_ids(&cache).contains(&20_000), "and starts again");
    }

    #[test]
    fn recycles_freed_buffers_only_when_no_transaction_holds_them() {
        let cache = cache(RUN_SHARE_MAX);
        let held = page(&cache, 1);
        cache.insert(PageId(1), &held, cache.write_epoch());
        for id in 2..80 {
            cache.insert(PageId(id), &page(&cache, id as u8), cache.write_epoch());
        }
        let reader = cache.register();
        assert!(cache.get(PageId(1), PAGE, &reader).is_none(), "evicted");
        cache.unregister(reader);
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
        let aligned = |b: &[u8]| (b.as_ptr() as usize).is_multiple_of(BUF_ALIGN);
        let cache = cache(RUN_SHARE_MAX);
        for id in 0..8 * RUN_SHARE_MAX {
            let buf = page(&cache, id as u8);
            assert!(aligned(&buf));
            cache.insert(PageId(id), &buf, cache.write_epoch());
            let reader = cache.register();
            let found = cache.get(PageId(id), PAGE, &reader).expect("just filed");
            assert!(aligned(found) && found.as_ptr() == buf.as_ptr());
            cache.unregister(reader);
        }
        cache.reclaim(&mut cache.retired.lock());
        assert!(
            !cache.spare.lock().bufs.is_empty(),
            "freed buffers were kept"
        );
        for _ in 0..SPARES_MAX + 1 {
            assert!(aligned(&cache.buffer(PAGE)));
        }
        assert!(aligned(&cache.buffer(3 * PAGE)));
    }

    #[test]
    fn a_zero_budget_keeps_nothing() {
        let cache = PageCache::new(0, PAGE as u64).expect("a small cache");
        assert!(!cache.is_enabled());
        cache.insert(PageId(3), &page(&cache, 3), cache.write_epoch());
        let reader = cache.register();
        assert!(cache.get(PageId(3), PAGE, &reader).is_none());
        cache.unregister(reader);
    }

    /// Readers (each in transactions of several lookups, holding what they found until
    /// the transaction ends), fillers and a forgetter at once: every run found is whole,
    /// is the one asked for, and stays so until its reader ends; the byte counts end
    /// true. Run under Miri too, which checks the reclamation for use-after-free and
    /// data races.
    #[test]
    fn concurrent_lookups_fills_and_forgets_never_see_a_wrong_or_freed_run() {
        const LEN: usize = 64;
        let (ids, rounds) = if cfg!(miri) {
            (24u64, 40u64)
        } else {
            (400, 5_000)
        };
        let cache = PageCache::new(ids / 2 * LEN as u64, LEN as u64).expect("a small cache");
        let cache = &cache;
        std::thread::scope(|s| {
            for t in 0..3u64 {
                s.spawn(move || {
                    for txn in 0..rounds / 7 {
                        let reader = cache.register();
                        let mut found: Vec<(u64, &[u8])> = Vec::new();
                        for r in txn * 7..txn * 7 + 7 {
                            let id = PageId((r * 13 + t * 5) % ids);
                            match cache.get(id, LEN, &reader) {
                                Some(bytes) => found.push((id.0, bytes)),
                                None => {
                                    let epoch = cache.write_epoch();
                                    let mut buf = cache.buffer(LEN);
                                    buf.get_mut().unwrap().fill(id.0 as u8);
                                    cache.insert(id, &buf, epoch);
                                }
                            }
                        }
                        for (id, bytes) in found {
                            assert!(bytes.iter().all(|&b| b == id as u8));
                        }
                        cache.unregister(reader);
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
                    .filter(|&w| b.keys[w].load(SeqCst) != 0)
                    .map(|w| b.lens[w].load(SeqCst) as u64)
            })
            .sum();
        assert_eq!(cache.bytes.load(SeqCst), held);
        let retired: u64 = cache
            .retired
            .lock()
            .iter()
            .map(|r| r.buf.len() as u64)
            .sum();
        assert_eq!(cache.retired_bytes.load(SeqCst), retired);
    }
}
