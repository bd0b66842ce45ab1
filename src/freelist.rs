//! Free pages: a set of page runs that a write transaction may overwrite, and the pages
//! freed by recent commits that must wait until no snapshot can reach them.
//! See FORMAT.md#free-list and FORMAT.md#page-reuse.

use std::collections::{BTreeMap, BTreeSet};

use crate::error::{Error, Result};
use crate::page::{PageId, TxnId};

/// A set of pages kept as disjoint, non-adjacent runs `start → length`; the set the
/// allocator takes from is also indexed by length ([`indexed`](Self::indexed)), so that
/// the best-fitting run is found without a scan.
#[derive(Clone, Default, Debug)]
pub(crate) struct PageRuns {
    runs: BTreeMap<u64, u64>,
    /// The same runs as `(length, start)`, in the allocator's free set only: every other
    /// set (pages freed, taken, waiting) is only added to, removed from and looked up,
    /// and keeping the index cost each insert about half as much again.
    by_len: Option<BTreeSet<(u64, u64)>>,
    pages: u64,
}

/// Equal sets hold the same pages, indexed or not.
impl PartialEq for PageRuns {
    fn eq(&self, other: &Self) -> bool {
        self.runs == other.runs
    }
}

impl Eq for PageRuns {}

impl PageRuns {
    pub(crate) fn new() -> PageRuns {
        PageRuns::default()
    }

    /// The same set, indexed by length for [`take`](Self::take),
    /// [`longest`](Self::longest) and [`shortest`](Self::shortest).
    pub(crate) fn indexed(mut self) -> PageRuns {
        if self.by_len.is_none() {
            self.by_len = Some(self.runs.iter().map(|(&s, &n)| (n, s)).collect());
        }
        self
    }

    /// The length index; only the allocator's free set has one.
    fn by_len(&self) -> &BTreeSet<(u64, u64)> {
        self.by_len.as_ref().expect("a best fit on an indexed set")
    }

    pub(crate) fn page_count(&self) -> u64 {
        self.pages
    }

    pub(crate) fn run_count(&self) -> usize {
        self.runs.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pages == 0
    }

    pub(crate) fn runs(&self) -> impl Iterator<Item = (PageId, u64)> + '_ {
        self.runs.iter().map(|(&s, &n)| (PageId(s), n))
    }

    pub(crate) fn contains(&self, id: PageId) -> bool {
        self.runs
            .range(..=id.0)
            .next_back()
            .is_some_and(|(&s, &n)| id.0 < s + n)
    }

    /// Whether any of the `len` pages from `start` is in the set.
    pub(crate) fn overlaps(&self, start: PageId, len: u64) -> bool {
        let end = start.0.saturating_add(len);
        len > 0 && (self.contains(start) || self.runs.range(start.0..end).next().is_some())
    }

    /// Adds `len` pages from `start`. Returns false, changing nothing, if any of them is
    /// in the set already (a page freed twice: the file references it twice).
    pub(crate) fn insert(&mut self, start: PageId, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let (mut s, mut n) = (start.0, len);
        let before = self.runs.range(..s).next_back().map(|(&a, &b)| (a, b));
        let after = self.runs.range(s..).next().map(|(&a, &b)| (a, b));
        if before.is_some_and(|(ps, pn)| ps + pn > s) || after.is_some_and(|(ns, _)| s + n > ns) {
            return false;
        }
        if let Some((ps, pn)) = before.filter(|(ps, pn)| ps + pn == s) {
            self.unlink(ps, pn);
            s = ps;
            n += pn;
        }
        if let Some((ns, nn)) = after.filter(|(ns, _)| s + n == *ns) {
            self.unlink(ns, nn);
            n += nn;
        }
        self.link(s, n);
        self.pages += len;
        true
    }

    /// Removes `len` pages from `start`, which must all be in the set; false, changing
    /// nothing, if some are not.
    pub(crate) fn remove(&mut self, start: PageId, len: u64) -> bool {
        if len == 0 {
            return true;
        }
        let Some((&s, &n)) = self.runs.range(..=start.0).next_back() else {
            return false;
        };
        let end = start.0.saturating_add(len);
        if end > s + n {
            return false;
        }
        self.unlink(s, n);
        if start.0 > s {
            self.link(s, start.0 - s);
        }
        if s + n > end {
            self.link(end, s + n - end);
        }
        self.pages -= len;
        true
    }

    fn link(&mut self, start: u64, len: u64) {
        self.runs.insert(start, len);
        if let Some(by_len) = &mut self.by_len {
            by_len.insert((len, start));
        }
    }

    fn unlink(&mut self, start: u64, len: u64) {
        self.runs.remove(&start);
        if let Some(by_len) = &mut self.by_len {
            by_len.remove(&(len, start));
        }
    }

    /// Adds every run of `other`; false if some page was already here (those runs are
    /// skipped), which only a corrupt file can cause.
    pub(crate) fn extend(&mut self, other: &PageRuns) -> bool {
        let mut disjoint = true;
        for (s, n) in other.runs() {
            disjoint &= self.insert(s, n);
        }
        disjoint
    }

    /// Takes `len` contiguous pages from the shortest run that holds them (best fit;
    /// the lowest of equals). Taking from the start of a run never adds a run.
    pub(crate) fn take(&mut self, len: u64) -> Option<PageId> {
        let &(_, s) = self.by_len().range((len, 0)..).next()?;
        assert!(self.remove(PageId(s), len), "an indexed run is in the set");
        Some(PageId(s))
    }

    /// Takes `len` contiguous pages from the lowest run that holds them (first fit).
    pub(crate) fn take_lowest(&mut self, len: u64) -> Option<PageId> {
        let (&s, _) = self.runs.iter().find(|(_, n)| **n >= len)?;
        assert!(self.remove(PageId(s), len), "a listed run is in the set");
        Some(PageId(s))
    }

    /// The lowest run, if any.
    pub(crate) fn lowest(&self) -> Option<(PageId, u64)> {
        self.runs.first_key_value().map(|(&s, &n)| (PageId(s), n))
    }

    /// The first run of at most `len_max` pages that starts at or after `from`.
    pub(crate) fn first_short_from(&self, from: PageId, len_max: u64) -> Option<(PageId, u64)> {
        let mut after = self.runs.range(from.0..).filter(|&(_, &n)| n <= len_max);
        after.next().map(|(&s, &n)| (PageId(s), n))
    }

    /// The free pages below `end`.
    pub(crate) fn pages_below(&self, end: PageId) -> u64 {
        self.runs
            .range(..end.0)
            .map(|(&s, &n)| n.min(end.0 - s))
            .sum()
    }

    /// The longest run, if any.
    pub(crate) fn longest(&self) -> Option<(PageId, u64)> {
        self.by_len().last().map(|&(n, s)| (PageId(s), n))
    }

    /// The shortest run (the lowest of equals), if any.
    pub(crate) fn shortest(&self) -> Option<(PageId, u64)> {
        self.by_len().first().map(|&(n, s)| (PageId(s), n))
    }

    /// The run that ends at `end`, if any.
    pub(crate) fn run_ending_at(&self, end: PageId) -> Option<(PageId, u64)> {
        let (&s, &n) = self.runs.range(..end.0).next_back()?;
        (s + n == end.0).then_some((PageId(s), n))
    }

    /// The union of disjoint sets, as sorted runs with touching runs merged; None if
    /// they overlap. (The free-list record needs only the runs, not the indexes a
    /// `PageRuns` keeps.)
    pub(crate) fn union_runs<'a>(
        sets: impl IntoIterator<Item = &'a PageRuns>,
    ) -> Option<Vec<(PageId, u64)>> {
        let mut all: Vec<(PageId, u64)> = sets.into_iter().flat_map(PageRuns::runs).collect();
        // Each set's runs come sorted: the stable sort finds those stretches and merges
        // them, where the unstable one sorted everything again (10k of the 174k
        // instructions of a one-key commit into a million-entry tree).
        all.sort();
        merge_sorted(&all)
    }

    /// Serialized as a little-endian u64 count, then (start, length) u64 pairs, then
    /// zeros to the end of the payload: the version-1 free list (FORMAT.md#versions),
    /// which is only read now (the fuzzers check that what decodes encodes back).
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.runs.len() as u64).to_le_bytes());
        for (s, n) in self.runs() {
            out.extend_from_slice(&s.0.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// Parses a version-1 free list and checks every run lies in `first..end`, sorted,
    /// disjoint and non-adjacent.
    pub(crate) fn decode(bytes: &[u8], first: PageId, end: PageId, blob: PageId) -> Result<Self> {
        let bad = |why: String| Error::corrupted(blob.0, format!("free list: {why}"));
        let count = bytes
            .get(..8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .ok_or_else(|| bad("shorter than its count".into()))?;
        if count > (bytes.len() as u64 - 8) / 16 {
            return Err(bad(format!(
                "{count} runs do not fit in {} bytes",
                bytes.len()
            )));
        }
        let mut runs = PageRuns::new();
        let mut prev_end = first.0;
        for pair in bytes[8..8 + 16 * count as usize].chunks_exact(16) {
            let s = u64::from_le_bytes(pair[..8].try_into().unwrap());
            let n = u64::from_le_bytes(pair[8..].try_into().unwrap());
            let in_order = s >= prev_end && (s > prev_end || runs.is_empty());
            if n == 0 || !in_order || s.checked_add(n).is_none_or(|e| e > end.0) {
                return Err(bad(format!(
                    "run {s}+{n} is empty, out of order or outside pages {}..{}",
                    first.0, end.0
                )));
            }
            runs.link(s, n);
            runs.pages += n;
            prev_end = s + n;
        }
        Ok(runs)
    }
}

/// Pages freed by commits, by the transaction that freed them. A page freed by commit
/// `T` is still reachable from snapshots older than `T`, and, if it was written at or
/// before the newest durable commit, from recovery's fallback meta.
#[derive(Clone, Default, Debug)]
pub(crate) struct Pending {
    /// Pages that the durable fallback may reach: free when readers and durability allow.
    durable: BTreeMap<TxnId, PageRuns>,
    /// Pages written after the newest durable commit (by `Durability::None` commits):
    /// recovery can never need them, so only readers hold them back.
    volatile: BTreeMap<TxnId, PageRuns>,
    /// Every page of both maps, so that a commit can tell in one lookup per run that it
    /// does not free a page again (a corrupt file that references it twice).
    pages: PageRuns,
}

impl Pending {
    /// Records the pages commit `freed_by` freed; `fallback_may_reach` for pages written
    /// at or before the newest durable commit.
    pub(crate) fn add(&mut self, freed_by: TxnId, pages: PageRuns, fallback_may_reach: bool) {
        let map = if fallback_may_reach {
            &mut self.durable
        } else {
            &mut self.volatile
        };
        if !pages.is_empty() {
            let disjoint = self.pages.extend(&pages);
            assert!(
                disjoint,
                "the commit checked that its pages wait nowhere yet"
            );
            let earlier = map.insert(freed_by, pages);
            assert!(earlier.is_none(), "one commit's freed pages are added once");
        }
    }

    /// The first page of `freed` that waits here already, if any.
    pub(crate) fn first_overlap(&self, freed: &PageRuns) -> Option<PageId> {
        let (s, _) = freed.runs().find(|&(s, n)| self.pages.overlaps(s, n))?;
        Some(s)
    }

    /// Moves into `free` every run no live snapshot can reach (freed by a transaction
    /// `<= oldest_snapshot`) that the durable fallback cannot reach either (freed by a
    /// transaction `<= durable`, or written after it). False if a released page was free
    /// already (a corrupt file referenced a free page).
    pub(crate) fn release(
        &mut self,
        oldest_snapshot: TxnId,
        durable: TxnId,
        free: &mut PageRuns,
    ) -> bool {
        let mut disjoint = true;
        for (map, horizon) in [
            (&mut self.durable, oldest_snapshot.min(durable)),
            (&mut self.volatile, oldest_snapshot),
        ] {
            let later = map.split_off(&TxnId(horizon.0 + 1));
            for runs in std::mem::replace(map, later).values() {
                disjoint &= free.extend(runs);
                for (s, n) in runs.runs() {
                    assert!(self.pages.remove(s, n), "every waiting page is listed");
                }
            }
        }
        disjoint
    }

    /// Runs that the durable fallback `durable` keeps from reuse: those freed by later
    /// commits (at most: runs of two commits may touch). Runs freed by `durable` or
    /// earlier wait only for readers, which a sync would not release.
    pub(crate) fn fallback_runs(&self, durable: TxnId) -> usize {
        self.durable
            .range(TxnId(durable.0 + 1)..)
            .map(|(_, runs)| runs.run_count())
            .sum()
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &PageRuns> {
        self.durable.values().chain(self.volatile.values())
    }
}

/// Sorted runs with touching runs merged and empty ones dropped; None if two overlap.
fn merge_sorted(sorted: &[(PageId, u64)]) -> Option<Vec<(PageId, u64)>> {
    let mut merged: Vec<(PageId, u64)> = Vec::with_capacity(sorted.len());
    for &(start, len) in sorted {
        match merged.last_mut() {
            Some((s, n)) if s.0 + *n > start.0 => return None,
            Some((s, n)) if s.0 + *n == start.0 => *n += len,
            _ if len > 0 => merged.push((start, len)),
            _ => {}
        }
    }
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlaps_sees_every_page_of_a_run() {
        let mut r = PageRuns::new();
        assert!(r.insert(PageId(10), 3));
        assert!(r.overlaps(PageId(12), 5), "starts inside");
        assert!(r.overlaps(PageId(5), 6), "ends inside");
        assert!(r.overlaps(PageId(5), 20), "covers");
        assert!(!r.overlaps(PageId(13), 4) && !r.overlaps(PageId(5), 5));
        assert!(!r.overlaps(PageId(11), 0));
    }

    #[test]
    fn fallback_runs_count_only_what_the_fallback_holds() {
        let mut p = Pending::default();
        for t in [3, 5, 8] {
            let mut r = PageRuns::new();
            assert!(r.insert(PageId(t * 10), 1) && r.insert(PageId(t * 10 + 5), 1));
            p.add(TxnId(t), r, true);
        }
        assert_eq!(p.fallback_runs(TxnId(2)), 6);
        assert_eq!(
            p.fallback_runs(TxnId(5)),
            2,
            "freed by 3 and 5: readers only"
        );
        assert_eq!(p.fallback_runs(TxnId(8)), 0);
    }

    #[test]
    fn runs_coalesce_and_split() {
        let mut r = PageRuns::new();
        assert!(r.insert(PageId(10), 2));
        assert!(r.insert(PageId(14), 1));
        assert!(r.insert(PageId(12), 2));
        assert!(!r.insert(PageId(11), 1), "double free is refused");
        assert_eq!(r.runs().collect::<Vec<_>>(), [(PageId(10), 5)]);
        // The length index, built from the runs there are, then kept up.
        let mut r = r.indexed();
        assert_eq!(r.take(2), Some(PageId(10)));
        assert_eq!(r.runs().collect::<Vec<_>>(), [(PageId(12), 3)]);
        assert_eq!(r.take(4), None);
        assert_eq!(r.page_count(), 3);
        assert!(r.contains(PageId(14)) && !r.contains(PageId(11)));
    }

    #[test]
    fn decode_rejects_overlaps_and_out_of_range() {
        let mut r = PageRuns::new();
        assert!(r.insert(PageId(3), 2) && r.insert(PageId(9), 1));
        let mut bytes = Vec::new();
        r.encode(&mut bytes);
        assert_eq!(
            PageRuns::decode(&bytes, PageId(2), PageId(10), PageId(1)).unwrap(),
            r
        );
        assert!(PageRuns::decode(&bytes, PageId(2), PageId(9), PageId(1)).is_err());
        // Layout: count, then (start, length) pairs: the second run starts at byte 24.
        let mut overlapping = bytes.clone();
        overlapping[24..32].copy_from_slice(&4u64.to_le_bytes());
        assert!(PageRuns::decode(&overlapping, PageId(2), PageId(10), PageId(1)).is_err());
        let mut padded = bytes.clone();
        padded.resize(100, 0);
        assert_eq!(
            PageRuns::decode(&padded, PageId(2), PageId(10), PageId(1)).unwrap(),
            r
        );
        let mut too_many = bytes;
        too_many[..8].copy_from_slice(&3u64.to_le_bytes());
        assert!(PageRuns::decode(&too_many, PageId(2), PageId(10), PageId(1)).is_err());
    }

    #[test]
    fn union_merges_adjacent_runs_and_refuses_overlaps() {
        let mut a = PageRuns::new();
        assert!(a.insert(PageId(3), 2) && a.insert(PageId(10), 1));
        let mut b = PageRuns::new();
        assert!(b.insert(PageId(5), 1));
        let u = PageRuns::union_runs([&a, &b]).unwrap();
        assert_eq!(u, [(PageId(3), 3), (PageId(10), 1)]);
        assert!(PageRuns::union_runs([&a, &b, &b]).is_none());
    }

    #[test]
    fn pending_releases_up_to_the_horizon() {
        let mut p = Pending::default();
        for t in 1..=3 {
            let mut r = PageRuns::new();
            assert!(r.insert(PageId(t * 10), 1));
            p.add(TxnId(t), r, true);
        }
        let mut volatile = PageRuns::new();
        assert!(volatile.insert(PageId(99), 1));
        p.add(TxnId(3), volatile, false);
        let mut free = PageRuns::new();
        assert!(p.release(TxnId(5), TxnId(2), &mut free));
        assert_eq!(
            free.page_count(),
            3,
            "durable-bound pages up to 2, volatile up to 5"
        );
        assert_eq!(p.all().map(PageRuns::page_count).sum::<u64>(), 1);
    }
}
