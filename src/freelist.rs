//! Free pages: a set of page runs that a write transaction may overwrite, and the pages
//! freed by recent commits that must wait until no snapshot can reach them.
//! See FORMAT.md#free-list and FORMAT.md#page-reuse.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::page::{PageId, TxnId};

/// A set of pages kept as disjoint, non-adjacent runs `start → length`.
#[derive(Clone, Default, Debug, PartialEq, Eq)]
pub(crate) struct PageRuns {
    runs: BTreeMap<u64, u64>,
    pages: u64,
}

impl PageRuns {
    pub(crate) fn new() -> PageRuns {
        PageRuns::default()
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
            self.runs.remove(&ps);
            s = ps;
            n += pn;
        }
        if let Some((ns, nn)) = after.filter(|(ns, _)| s + n == *ns) {
            self.runs.remove(&ns);
            n += nn;
        }
        self.runs.insert(s, n);
        self.pages += len;
        true
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

    /// Takes `len` contiguous pages from the lowest run long enough (first fit).
    /// Taking from the start of a run never adds a run.
    pub(crate) fn take(&mut self, len: u64) -> Option<PageId> {
        let (&s, &n) = self.runs.iter().find(|(_, n)| **n >= len)?;
        self.runs.remove(&s);
        if n > len {
            self.runs.insert(s + len, n - len);
        }
        self.pages -= len;
        Some(PageId(s))
    }

    /// Serialized as pairs of little-endian u64 (start, length). See FORMAT.md#free-list.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        for (s, n) in self.runs() {
            out.extend_from_slice(&s.0.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
    }

    /// Parses `encode`'s output and checks every run lies in `first..end`, sorted,
    /// disjoint and non-adjacent.
    pub(crate) fn decode(bytes: &[u8], first: PageId, end: PageId, blob: PageId) -> Result<Self> {
        let bad = |why: String| Error::corrupted(blob.0, format!("free list: {why}"));
        if bytes.len() % 16 != 0 {
            return Err(bad(format!(
                "length {} is not a multiple of 16",
                bytes.len()
            )));
        }
        let mut runs = PageRuns::new();
        let mut prev_end = first.0;
        for pair in bytes.chunks_exact(16) {
            let s = u64::from_le_bytes(pair[..8].try_into().unwrap());
            let n = u64::from_le_bytes(pair[8..].try_into().unwrap());
            let in_order = s >= prev_end && (s > prev_end || runs.is_empty());
            if n == 0 || !in_order || s.checked_add(n).is_none_or(|e| e > end.0) {
                return Err(bad(format!(
                    "run {s}+{n} is empty, out of order or outside pages {}..{}",
                    first.0, end.0
                )));
            }
            runs.runs.insert(s, n);
            runs.pages += n;
            prev_end = s + n;
        }
        Ok(runs)
    }
}

/// Pages freed by commits, by the transaction that freed them. A page freed by commit
/// `T` is still reachable from snapshots older than `T`.
#[derive(Clone, Default, Debug)]
pub(crate) struct Pending {
    by_txn: BTreeMap<TxnId, PageRuns>,
}

impl Pending {
    pub(crate) fn add(&mut self, freed_by: TxnId, pages: PageRuns) {
        if !pages.is_empty() {
            let merged = self.by_txn.entry(freed_by).or_default().extend(&pages);
            assert!(merged, "one commit's freed pages are added once");
        }
    }

    /// Moves into `free` every run freed by a transaction `<= horizon`: no live snapshot
    /// and no fallback meta can reach those pages any more. False if a released page was
    /// free already (a corrupt file referenced a free page).
    pub(crate) fn release(&mut self, horizon: TxnId, free: &mut PageRuns) -> bool {
        let later = self.by_txn.split_off(&TxnId(horizon.0 + 1));
        let mut disjoint = true;
        for runs in std::mem::replace(&mut self.by_txn, later).values() {
            disjoint &= free.extend(runs);
        }
        disjoint
    }

    pub(crate) fn all(&self) -> impl Iterator<Item = &PageRuns> {
        self.by_txn.values()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_coalesce_and_split() {
        let mut r = PageRuns::new();
        assert!(r.insert(PageId(10), 2));
        assert!(r.insert(PageId(14), 1));
        assert!(r.insert(PageId(12), 2));
        assert!(!r.insert(PageId(11), 1), "double free is refused");
        assert_eq!(r.runs().collect::<Vec<_>>(), [(PageId(10), 5)]);
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
        let mut overlapping = bytes.clone();
        overlapping[16..24].copy_from_slice(&4u64.to_le_bytes());
        assert!(PageRuns::decode(&overlapping, PageId(2), PageId(10), PageId(1)).is_err());
    }

    #[test]
    fn pending_releases_up_to_the_horizon() {
        let mut p = Pending::default();
        for t in 1..=3 {
            let mut r = PageRuns::new();
            assert!(r.insert(PageId(t * 10), 1));
            p.add(TxnId(t), r);
        }
        let mut free = PageRuns::new();
        assert!(p.release(TxnId(2), &mut free));
        assert_eq!(free.page_count(), 2);
        assert_eq!(p.all().map(PageRuns::page_count).sum::<u64>(), 1);
    }
}
