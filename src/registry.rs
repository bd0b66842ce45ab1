//! A table of live readers, each registered with a number (the snapshot it reads, or the
//! page cache's generation when it began), so that a writer can learn the oldest number
//! still in use without stopping anyone: the reader table of transactions
//! (FORMAT.md#page-reuse) and the readers of the page cache (`src/cache.rs`) are two of
//! them.
//!
//! Registering is one compare-and-swap on a slot of its own cache line, starting from a
//! slot chosen per thread, so that threads beginning transactions at once do not write to
//! the same line; when every slot is taken, readers queue in a locked map instead.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::SeqCst};

use parking_lot::Mutex;

/// Slots: readers beyond this many at once take the locked map.
const SLOTS: usize = 128;

/// A slot alone on its cache line.
#[repr(align(64))]
struct Slot(AtomicU64);

pub(crate) struct Registry {
    /// 0: free; otherwise a reader's number.
    slots: Box<[Slot]>,
    /// Readers that found no free slot: number → how many.
    overflow: Mutex<BTreeMap<u64, usize>>,
}

/// Where a reader is registered; handed back to [`Registry::release`].
#[derive(Clone, Copy, Debug)]
pub(crate) enum Registration {
    Slot(usize),
    Overflow(u64),
}

impl Registry {
    pub(crate) fn new() -> Registry {
        Registry {
            slots: (0..SLOTS).map(|_| Slot(AtomicU64::new(0))).collect(),
            overflow: Mutex::new(BTreeMap::new()),
        }
    }

    /// Registers a reader of `number` (not 0). `SeqCst`: a scan by [`Registry::oldest`]
    /// that comes after it in the single order of `SeqCst` operations sees it.
    pub(crate) fn register(&self, number: u64) -> Registration {
        debug_assert_ne!(number, 0);
        let start = thread_hint();
        for i in (start..SLOTS).chain(0..start) {
            let slot = &self.slots[i].0;
            if slot.load(SeqCst) == 0 && slot.compare_exchange(0, number, SeqCst, SeqCst).is_ok() {
                return Registration::Slot(i);
            }
        }
        *self.overflow.lock().entry(number).or_default() += 1;
        Registration::Overflow(number)
    }

    pub(crate) fn release(&self, registration: Registration) {
        match registration {
            Registration::Slot(i) => self.slots[i].0.store(0, SeqCst),
            Registration::Overflow(number) => {
                let mut map = self.overflow.lock();
                let n = map.get_mut(&number).expect("registered reader");
                *n -= 1;
                if *n == 0 {
                    map.remove(&number);
                }
            }
        }
    }

    /// The smallest number a live reader registered with.
    pub(crate) fn oldest(&self) -> Option<u64> {
        let in_slots = (self.slots.iter())
            .map(|s| s.0.load(SeqCst))
            .filter(|&n| n != 0)
            .min();
        let in_overflow = self.overflow.lock().keys().next().copied();
        in_slots.into_iter().chain(in_overflow).min()
    }
}

/// The slot this thread tries first: threads are numbered in the order they first
/// register, so that up to `SLOTS` threads each find their own slot free.
fn thread_hint() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static HINT: Cell<Option<usize>> = const { Cell::new(None) };
    }
    HINT.with(|hint| match hint.get() {
        Some(slot) => slot,
        None => {
            let slot = NEXT.fetch_add(1, SeqCst) % SLOTS;
            hint.set(Some(slot));
            slot
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_follows_registrations_in_slots_and_overflow() {
        let registry = Registry::new();
        assert_eq!(registry.oldest(), None);
        let mut held: Vec<_> = (0..SLOTS as u64 + 3)
            .map(|i| registry.register(100 - (i % 50)))
            .collect();
        assert!(matches!(held.last(), Some(Registration::Overflow(_))));
        assert_eq!(registry.oldest(), Some(51));
        for registration in held.drain(..) {
            registry.release(registration);
        }
        assert_eq!(registry.oldest(), None);
        let a = registry.register(7);
        let b = registry.register(5);
        assert_eq!(registry.oldest(), Some(5));
        registry.release(b);
        assert_eq!(registry.oldest(), Some(7));
        registry.release(a);
        assert_eq!(registry.oldest(), None);
    }
}
