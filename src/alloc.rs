//! The page allocator of a write transaction: which pages it may overwrite, where the
//! file ends, and what it changed in the free set of the snapshot it started from, so
//! that a commit records only that change. See FORMAT.md#allocation.

use crate::error::{Error, Result};
use crate::freelist::PageRuns;
use crate::page::PageId;

/// Growth policy: a commit whose pages fit in no single free run goes to the end of the
/// file while the free pages (reusable now, or waiting for readers or a sync) are under
/// this share of the file (1/8), and is scattered over the reusable runs (the end of
/// the file for what they do not cover) once they are over it. Free space thus stays
/// near an eighth of the file while commits stay one sequential write where they can.
const FREE_SHARE_BEFORE_SCATTER: u64 = 8;

/// The pages that a one-key commit replaces every time, sealed last: the free-list
/// record, the catalog leaf, the tree's root and the level below it. A scattered commit
/// keeps its last `HOT_PAGES` in one run (`Allocator::scatter`).
const HOT_PAGES: u64 = 4;

/// The fewest pages that a scattered commit places by sweeping (`Allocator::fill`).
const SWEEP_PAGES_MIN: u64 = 64;

/// The longest free run a scattered commit's sweep takes; longer runs stay for what
/// needs them whole (the last pages of later commits, free-list records, large values,
/// commits that fit one run).
const SWEEP_RUN_PAGES_MAX: u64 = HOT_PAGES - 1;

/// Pages a write transaction may take, and the record of what it took and gave back.
pub(crate) struct Allocator {
    /// Pages no snapshot and no fallback meta can reach: this transaction may write them.
    free: PageRuns,
    /// One past the last page in use or free: the logical end of the file.
    end: PageId,
    /// `end` of the snapshot the transaction started from.
    base_end: PageId,
    /// Pages of the snapshot's free set this transaction took (and has not given back).
    taken: PageRuns,
    /// Pages past `base_end` that this transaction added and gave back: free, and not in
    /// the snapshot's free set.
    grown_free: PageRuns,
    /// Take the lowest free pages first (compaction: move pages towards the start).
    lowest_first: bool,
    /// Where a scattered commit starts looking for free runs: just past the last run the
    /// previous one took (`sweep`).
    sweep_from: PageId,
    /// Scatter a commit over the free runs before growing the file, whatever their
    /// share: the disk was found full (`avoid_growth`).
    avoid_growth: bool,
}

impl Allocator {
    /// The allocator of a transaction that may overwrite the pages of `free`, in a file
    /// whose pages end at `end`; its scattered commits sweep on from `sweep_from`.
    pub(crate) fn new(free: PageRuns, end: PageId, sweep_from: PageId) -> Allocator {
        Allocator {
            free: free.indexed(),
            end,
            base_end: end,
            taken: PageRuns::new(),
            grown_free: PageRuns::new(),
            lowest_first: false,
            sweep_from,
            avoid_growth: false,
        }
    }

    /// Where the next transaction's scattered commit starts looking for free runs.
    pub(crate) fn sweep_from(&self) -> PageId {
        self.sweep_from
    }

    /// From now on, place a commit's pages in free runs, as many as it takes, before
    /// the end of the file: a write failed for want of room, and growing the file needs
    /// room that the free pages, already written, do not (`Storage::is_out_of_space`).
    pub(crate) fn avoid_growth(&mut self) {
        self.avoid_growth = true;
    }

    /// From now on, take the lowest free pages first, in as many runs as it takes
    /// (`Database::compact`).
    pub(crate) fn prefer_lowest(&mut self) {
        self.lowest_first = true;
    }

    pub(crate) fn end(&self) -> PageId {
        self.end
    }

    /// Whether the pages lie in the snapshot the transaction started from and hold none
    /// that it took: the only pages a committed reference can name.
    pub(crate) fn holds_committed(&self, id: PageId, pages: u64) -> bool {
        let inside =
            id.0.checked_add(pages)
                .is_some_and(|e| e <= self.base_end.0);
        inside && !self.taken.overlaps(id, pages)
    }

    pub(crate) fn free(&self) -> &PageRuns {
        &self.free
    }

    /// Whether any of the pages is free to this transaction.
    pub(crate) fn overlaps_free(&self, id: PageId, pages: u64) -> bool {
        self.free.overlaps(id, pages)
    }

    /// Claims the pages up to `end`, written directly (by the bulk loader).
    pub(crate) fn set_end(&mut self, end: PageId) {
        assert!(end >= self.end, "the end only grows");
        self.end = end;
    }

    /// `pages` contiguous pages: the shortest free run that holds them, else the end of
    /// the file (taking a free run that ends there first).
    pub(crate) fn take_run(&mut self, pages: u64) -> PageId {
        let found = match self.lowest_first {
            true => self.free.take_lowest(pages),
            false => self.free.take(pages),
        };
        if let Some(id) = found {
            self.note_taken(id, pages);
            return id;
        }
        let start = match self.free.run_ending_at(self.end) {
            Some((s, n)) => {
                self.take_listed(s, n);
                s
            }
            None => self.end,
        };
        self.end = PageId(start.0 + pages).max(self.end);
        start
    }

    /// `pages` contiguous pages from the lowest free run that holds them, if that run
    /// starts below `limit`; else none are taken. Compaction moves a large value only
    /// down: taking the end of the file, or a higher run, moved it up on one pass and
    /// back down on the next, for as many passes as it was allowed.
    pub(crate) fn take_run_below(&mut self, pages: u64, limit: PageId) -> Option<PageId> {
        let id = self.lowest_run_holding(pages).filter(|&id| id < limit)?;
        self.take_listed(id, pages);
        Some(id)
    }

    /// The start of the lowest free run that holds `pages` pages, if any.
    pub(crate) fn lowest_run_holding(&self, pages: u64) -> Option<PageId> {
        self.free.runs().find(|&(_, n)| n >= pages).map(|(s, _)| s)
    }

    /// `pages` pages for a commit, in as few runs as the policy allows: one run if one
    /// free run (or the end of the file) holds them all; several free runs
    /// ([`scatter`](Self::scatter)) when free space, with the `waiting` pages that are
    /// free but not yet reusable, is over its share (`FREE_SHARE_BEFORE_SCATTER`), or
    /// growth is to be avoided ([`avoid_growth`](Self::avoid_growth)). The commit seals
    /// its pages into the runs in the order given.
    pub(crate) fn take_pages(&mut self, pages: u64, waiting: u64) -> Vec<(PageId, u64)> {
        if pages == 0 {
            return Vec::new();
        }
        if self.lowest_first {
            return self.gather(pages, PageRuns::lowest);
        }
        let fits_one = self.free.longest().is_some_and(|(_, n)| n >= pages);
        let free = self.free.page_count();
        let share = (free + waiting).saturating_mul(FREE_SHARE_BEFORE_SCATTER);
        let scatter = free > 0 && (share > self.end.0 || self.avoid_growth);
        if fits_one || !scatter {
            return vec![(self.take_run(pages), pages)];
        }
        self.scatter(pages)
    }

    /// `pages` pages over free runs: the shortest run that holds the last `HOT_PAGES`
    /// (or fewer), then the shortest that holds the others, else [`fill`](Self::fill)
    /// for them. The commit seals its upper levels, its catalog and its free-list record
    /// last, and the next commits replace them: placed together, they leave a hole that
    /// a later commit's last pages fill whole. Steady one-key commits into free space are
    /// then two runs each, where taking short runs alone made them one per page.
    fn scatter(&mut self, pages: u64) -> Vec<Run> {
        let hot = pages.min(HOT_PAGES);
        let Some(id) = self.free.take(hot) else {
            return self.fill(pages);
        };
        self.note_taken(id, hot);
        let cold = pages - hot;
        let mut runs = match (cold > 0).then(|| self.free.take(cold)).flatten() {
            Some(at) => {
                self.note_taken(at, cold);
                vec![(at, cold)]
            }
            None => self.fill(cold),
        };
        runs.push((id, hot));
        runs
    }

    /// `pages` pages over free runs that no one of them holds: a large share of a commit
    /// sweeps ([`sweep`](Self::sweep)); a small one takes the shortest runs first, lowest
    /// first among equals, which fills the holes that only small commits can use and
    /// keeps the free runs few (sweeping, one-key commits split more runs than they
    /// filled, and their free-list records no longer found a run to hold them).
    fn fill(&mut self, pages: u64) -> Vec<Run> {
        match pages >= SWEEP_PAGES_MIN {
            true => self.sweep(pages),
            false => self.gather(pages, PageRuns::shortest),
        }
    }

    /// `pages` pages from the short free runs (at most `SWEEP_RUN_PAGES_MAX` pages) in the
    /// file's order from `sweep_from`, round to the start once past the last; then the
    /// longer runs shortest first and the end of the file for what those do not cover.
    /// `sweep_from` moves past the last short run taken, so successive scattered commits
    /// move through the file and each writes into one stretch of it: on the virtual disk
    /// measured, a sync of 1,300 single pages cost 34 ms spread over the whole file and
    /// 20 ms over 40 MiB (BENCHMARKS.md, "Scattered commits sweep through the file").
    /// Long runs stay for what needs them whole, such as a free-list record or a large
    /// value. Sorted by page id.
    fn sweep(&mut self, pages: u64) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut left = pages;
        while left > 0 {
            let short = |from| self.free.first_short_from(from, SWEEP_RUN_PAGES_MAX);
            let Some((s, n)) = short(self.sweep_from).or_else(|| short(PageId(0))) else {
                break;
            };
            let n = n.min(left);
            self.take_listed(s, n);
            runs.push((s, n));
            left -= n;
            self.sweep_from = PageId(s.0 + n);
        }
        if left > 0 {
            runs.extend(self.gather(left, PageRuns::shortest));
        }
        runs.sort_unstable();
        runs
    }

    /// `pages` pages from the free runs in the order `next` picks them, then the end of
    /// the file for what they do not cover (a commit larger than all free space grows
    /// the file by the difference, not by its whole size). Sorted by page id.
    fn gather(&mut self, pages: u64, next: fn(&PageRuns) -> Option<Run>) -> Vec<Run> {
        let mut runs = Vec::new();
        let mut left = pages;
        while let Some((s, n)) = next(&self.free).filter(|_| left > 0) {
            let n = n.min(left);
            self.take_listed(s, n);
            runs.push((s, n));
            left -= n;
        }
        if left > 0 {
            runs.push((self.take_run(left), left));
        }
        runs.sort_unstable();
        runs
    }

    /// Takes `pages` pages from `id`, which the free set lists.
    fn take_listed(&mut self, id: PageId, pages: u64) {
        assert!(self.free.remove(id, pages), "a listed run is free");
        self.note_taken(id, pages);
    }

    /// Gives back pages this transaction took and no longer uses: free again at once.
    pub(crate) fn give_back(&mut self, id: PageId, pages: u64) -> Result<()> {
        if !self.free.insert(id, pages) {
            return Err(Error::corrupted(id.0, "page freed twice"));
        }
        let (below, above) = split_at(id, pages, self.base_end);
        let ok = below.is_none_or(|(s, n)| self.taken.remove(s, n))
            && above.is_none_or(|(s, n)| self.grown_free.insert(s, n));
        match ok {
            true => Ok(()),
            false => Err(Error::corrupted(id.0, "given back a page it did not take")),
        }
    }

    /// Cuts a free run at the end of the file off it (the file itself is shortened
    /// later, when no reader can reach past the new end).
    pub(crate) fn trim_end(&mut self) {
        if let Some((s, n)) = self.free.run_ending_at(self.end) {
            self.take_listed(s, n);
            self.end = s;
        }
    }

    fn note_taken(&mut self, id: PageId, pages: u64) {
        let (below, above) = split_at(id, pages, self.base_end);
        if let Some((s, n)) = below {
            assert!(self.taken.insert(s, n), "a free page was taken twice");
        }
        if let Some((s, n)) = above {
            assert!(self.grown_free.remove(s, n), "pages past the end were free");
        }
    }

    /// Pages of the snapshot's free set this transaction took (and did not give back).
    pub(crate) fn taken(&self) -> &PageRuns {
        &self.taken
    }

    /// Pages past the snapshot's end that are free.
    pub(crate) fn grown_free(&self) -> &PageRuns {
        &self.grown_free
    }

    /// The free set as the transaction found it (it is aborted).
    pub(crate) fn undo(&mut self) -> PageRuns {
        let mut free = std::mem::take(&mut self.free);
        for (s, n) in self.grown_free.runs() {
            assert!(free.remove(s, n), "pages given back past the end are free");
        }
        assert!(free.extend(&self.taken), "taken pages are not free");
        free
    }

    /// The free pages left, for the next transaction.
    pub(crate) fn take_free(&mut self) -> PageRuns {
        std::mem::take(&mut self.free)
    }
}

/// A run of pages: its first page and its length.
type Run = (PageId, u64);

/// `pages` pages from `id`, split into the parts below and from `at`.
fn split_at(id: PageId, pages: u64, at: PageId) -> (Option<Run>, Option<Run>) {
    let end = id.0 + pages;
    let below = (id < at).then(|| (id, end.min(at.0) - id.0));
    let above = (end > at.0).then(|| {
        let s = id.0.max(at.0);
        (PageId(s), end - s)
    });
    (below, above)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(list: &[(u64, u64)]) -> PageRuns {
        let mut r = PageRuns::new();
        for &(s, n) in list {
            assert!(r.insert(PageId(s), n));
        }
        r
    }

    #[test]
    fn a_commit_takes_the_best_fitting_run_else_the_end() {
        let mut a = Allocator::new(runs(&[(10, 2), (20, 5), (30, 3)]), PageId(100), PageId(0));
        assert_eq!(a.take_pages(3, 0), [(PageId(30), 3)], "best fit");
        assert_eq!(
            a.take_pages(6, 0),
            [(PageId(100), 6)],
            "no run holds 6: the end"
        );
        assert_eq!(a.end(), PageId(106));
    }

    #[test]
    fn a_commit_scatters_once_free_space_passes_its_share() {
        // 4 free pages of 40, and 2 waiting: over an eighth of the file: scatter.
        let mut a = Allocator::new(runs(&[(3, 1), (6, 2), (12, 1)]), PageId(40), PageId(0));
        assert_eq!(
            a.take_pages(3, 2),
            [(PageId(3), 1), (PageId(6), 1), (PageId(12), 1)],
            "no run holds the last pages: shortest first"
        );
        assert_eq!(a.end(), PageId(40), "no growth");
    }

    #[test]
    fn large_scattered_commits_sweep_through_the_file() {
        // Runs of 3 pages at 10, 20, .. 300 and one of 60 at 400: 150 free pages of 1,000,
        // over an eighth: scatter. The last sweep stopped at page 155.
        let mut free: Vec<(u64, u64)> = (1..=30).map(|i| (10 * i, 3)).collect();
        free.push((400, 60));
        let mut a = Allocator::new(runs(&free), PageId(1000), PageId(155));
        let mut expected: Vec<Run> = (1..=8)
            .chain(16..=30)
            .map(|i| (PageId(10 * i), 3))
            .collect();
        expected.push((PageId(90), 1));
        expected.sort_unstable();
        expected.push((PageId(400), 4));
        assert_eq!(
            a.take_pages(74, 0),
            expected,
            "the last 4 pages in the best fit; the other 70, which the rest of the long run \
             does not hold, from the short runs from page 155 on, round to the start"
        );
        assert_eq!(
            a.sweep_from(),
            PageId(91),
            "the next sweep goes on from there"
        );
        assert!(a.free().contains(PageId(404)), "the long run's rest stays");
        assert_eq!(a.end(), PageId(1000), "no growth");
    }

    #[test]
    fn a_scattered_commit_keeps_its_last_pages_together() {
        // 12 free pages of 40, then 5 and 2 waiting, then 1 and 5: over an eighth each
        // time.
        let mut a = Allocator::new(
            runs(&[(3, 1), (6, 4), (12, 2), (20, 5)]),
            PageId(40),
            PageId(0),
        );
        assert_eq!(
            a.take_pages(7, 0),
            [(PageId(20), 3), (PageId(6), 4)],
            "the best fit for the last 4 pages, then for the rest; the last run last"
        );
        assert_eq!(
            a.take_pages(4, 2),
            [(PageId(3), 1), (PageId(12), 2), (PageId(23), 1)],
            "no run holds 4: the shortest first"
        );
        assert_eq!(
            a.take_pages(6, 5),
            [(PageId(24), 1), (PageId(40), 5)],
            "the end of the file for what the free runs do not cover"
        );
        assert_eq!(a.end(), PageId(45));
        assert!(a.free().is_empty());
    }

    #[test]
    fn giving_back_undoes_taking_and_the_change_is_exact() {
        let mut a = Allocator::new(runs(&[(5, 3)]), PageId(10), PageId(0));
        let grown = a.take_run(4); // 5..8 do not hold 4: the end
        assert_eq!(grown, PageId(10));
        let id = a.take_run(2);
        assert_eq!(id, PageId(5));
        a.give_back(PageId(5), 1).unwrap();
        a.give_back(PageId(12), 2).unwrap();
        a.trim_end(); // 12..14 is free at the end
        assert_eq!(a.end(), PageId(12));
        assert_eq!(a.taken(), &runs(&[(6, 1)]));
        assert!(a.grown_free().is_empty());
        assert_eq!(a.take_free(), runs(&[(5, 1), (7, 1)]));
    }

    #[test]
    fn a_run_below_a_limit_is_the_lowest_that_holds_the_pages() {
        let mut a = Allocator::new(runs(&[(10, 2), (20, 5), (30, 8)]), PageId(40), PageId(0));
        assert_eq!(a.take_run_below(6, PageId(30)), None, "only 30.. holds 6");
        assert_eq!(a.take_run_below(6, PageId(31)), Some(PageId(30)));
        assert_eq!(
            a.take_run_below(3, PageId(100)),
            Some(PageId(20)),
            "first fit"
        );
        assert_eq!(a.take_run_below(9, PageId(100)), None, "no run holds 9");
        assert_eq!(a.end(), PageId(40), "never the end of the file");
        assert_eq!(a.taken(), &runs(&[(20, 3), (30, 6)]));
    }

    /// Random takes, give-backs and cuts: the free set is always the one the transaction
    /// began with, less what it took, plus what it gave back past the old end (what a
    /// free-list record says), every page below the end is free or handed out exactly
    /// once, and `undo` gives back the free set it began with.
    #[test]
    fn the_record_of_random_changes_is_exact() {
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x % n
        };
        for round in 0..300 {
            let end = 20 + next(60);
            let mut start = PageRuns::new();
            for p in 2..end {
                if next(3) == 0 {
                    assert!(start.insert(PageId(p), 1));
                }
            }
            let mut a = Allocator::new(start.clone(), PageId(end), PageId(0));
            if round % 2 == 0 {
                a.prefer_lowest();
            }
            let mut out: Vec<(PageId, u64)> = Vec::new();
            for _ in 0..40 {
                match next(6) {
                    0 => {
                        let n = 1 + next(6);
                        out.push((a.take_run(n), n));
                    }
                    1 => {
                        let waiting = next(20);
                        out.extend(a.take_pages(1 + next(12), waiting));
                    }
                    2 if !out.is_empty() => {
                        let (s, n) = out.swap_remove(next(out.len() as u64) as usize);
                        let k = next(n);
                        a.give_back(PageId(s.0 + k), n - k).unwrap();
                        if k > 0 {
                            out.push((s, k));
                        }
                    }
                    3 => a.trim_end(),
                    4 => {
                        let n = 1 + next(4);
                        if let Some(id) = a.take_run_below(n, PageId(next(a.end().0 + 1))) {
                            out.push((id, n));
                        }
                    }
                    _ => {}
                }
                let mut expected = start.clone();
                for (s, n) in a.taken().runs() {
                    assert!(expected.remove(s, n), "round {round}: took a page not free");
                }
                assert!(expected.extend(a.grown_free()));
                assert_eq!(&expected, a.free(), "round {round}");
                let mut pages = vec![0u32; a.end().0 as usize];
                for (s, n) in a.free().runs().chain(out.iter().copied()) {
                    for p in s.0..s.0 + n {
                        pages[p as usize] += 1;
                    }
                }
                for (p, &c) in pages.iter().enumerate() {
                    // In use before the transaction: never handed out. Past the old end:
                    // free or handed out, not lost.
                    let want = match start.contains(PageId(p as u64)) || p as u64 >= end {
                        true => 1,
                        false => 0,
                    };
                    let lost = p as u64 >= end && c == 0;
                    assert!(c <= want && !lost, "round {round}: page {p}: {pages:?}");
                }
            }
            assert_eq!(a.undo(), start, "round {round}");
        }
    }

    #[test]
    fn avoiding_growth_scatters_over_the_free_runs_first() {
        // 4 free pages of 100 (under the share) in runs of 1 and 2: 4 pages go to the
        // end, unless growth is to be avoided.
        let free = runs(&[(3, 1), (6, 2), (12, 1)]);
        let mut a = Allocator::new(free.clone(), PageId(100), PageId(0));
        assert_eq!(a.take_pages(4, 0), [(PageId(100), 4)]);
        let mut a = Allocator::new(free, PageId(100), PageId(0));
        a.avoid_growth();
        assert_eq!(
            a.take_pages(5, 0),
            [
                (PageId(3), 1),
                (PageId(6), 2),
                (PageId(12), 1),
                (PageId(100), 1)
            ],
            "the free pages, then the end for what they do not cover"
        );
    }

    #[test]
    fn a_free_run_at_the_end_is_extended() {
        let mut a = Allocator::new(runs(&[(8, 2)]), PageId(10), PageId(0));
        assert_eq!(a.take_run(5), PageId(8));
        assert_eq!(a.end(), PageId(13));
        assert!(a.give_back(PageId(8), 1).is_ok());
        assert!(a.give_back(PageId(8), 1).is_err(), "twice");
    }
}
