//! The free list on disk (format version 2): a chain of records, newest first, each the
//! change one commit made to the free set, ending in a full record that lists the whole
//! set. A commit writes one small record; once the chain outweighs its full record, a
//! commit writes a new full record and frees the chain. Version-1 files keep their
//! single free-list blob until their first commit. See FORMAT.md#free-list.

use std::mem::size_of;

use zerocopy::little_endian::{U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

use crate::check::blob_len;
use crate::error::{Error, Result};
use crate::freelist::PageRuns;
use crate::meta::Meta;
use crate::node;
use crate::page::{ChildRef, Geometry, PageId, verify_ref};
use crate::storage::PageReader;

/// A chain is folded into a new full record once its records hold more pages than
/// twice the full record's, and at least this many.
const FOLD_PAGES_MIN: u64 = 16;

/// The start of a record's payload. See FORMAT.md#free-list.
#[derive(FromBytes, IntoBytes, KnownLayout, Immutable, Unaligned, Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct RecordHeader {
    /// The record of the commit before, or null: this record lists the whole set.
    pub prev: ChildRef,
    /// Records below this one in the chain (0 for a full record).
    pub below: U32,
    pub reserved: U32,
    /// The file's `page_count` after the change: every free page lies below it.
    pub page_count: U64,
    /// Runs added to the free set, then runs removed from it, follow the header.
    pub added: U64,
    pub removed: U64,
}
const RECORD_HEADER_BYTES: usize = size_of::<RecordHeader>();
const _: () = assert!(RECORD_HEADER_BYTES == 52);

/// One blob of the chain (or the version-1 free list): where it is and how long.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Link {
    pub blob: ChildRef,
    pub pages: u64,
}

/// The chain of the newest commit, oldest (the full record) first.
#[derive(Clone, Debug, Default)]
pub(crate) struct FreeChain {
    pub links: Vec<Link>,
    /// The one link is a version-1 free-list blob: the next commit replaces it.
    pub legacy: bool,
}

impl FreeChain {
    /// Whether the next commit should write a full record instead of a change: when
    /// the chain outweighs its full record, and when its blobs are all that keeps a
    /// sixteenth of the file or more from being cut off its end (`free` is what the
    /// commit may reuse, `end` the file's logical end).
    pub(crate) fn should_fold(&self, free: &PageRuns, end: PageId) -> bool {
        let Some((full, changes)) = self.links.split_first() else {
            return true;
        };
        let change_pages: u64 = changes.iter().map(|l| l.pages).sum();
        self.legacy
            || change_pages > FOLD_PAGES_MIN.max(2 * full.pages)
            || self.holds_the_end(free, end)
    }

    /// Whether the end of the file, from some point on, holds only free pages and blobs
    /// of this chain (at least one), over a sixteenth of the file or more.
    fn holds_the_end(&self, free: &PageRuns, end: PageId) -> bool {
        let mut at = end;
        let mut held = false;
        loop {
            if let Some((start, _)) = free.run_ending_at(at) {
                at = start;
            } else if let Some(l) = self
                .links
                .iter()
                .find(|l| l.blob.page().0 + l.pages == at.0)
            {
                at = l.blob.page();
                held = true;
            } else {
                return held && (end.0 - at.0) * 16 >= end.0;
            }
        }
    }

    pub(crate) fn head(&self) -> ChildRef {
        self.links.last().map_or(ChildRef::NULL, |l| l.blob)
    }
}

/// A record to write: the change of one commit, or (with `prev` null) the whole set.
pub(crate) struct Record<'a> {
    pub prev: ChildRef,
    pub below: u32,
    pub page_count: PageId,
    pub added: &'a [&'a PageRuns],
    pub removed: &'a PageRuns,
}

/// The payload bytes of a record listing `runs` runs.
pub(crate) fn encoded_len(runs: usize) -> u64 {
    (RECORD_HEADER_BYTES + 16 * runs) as u64
}

impl Record<'_> {
    /// The payload, padded with zeros to `capacity` bytes (None if it does not fit).
    /// The added sets' runs are written in order, merging runs of different sets that
    /// touch; sets that overlap mean a page was freed twice (a corrupt file).
    pub(crate) fn encode(&self, capacity: usize) -> Result<Option<Vec<u8>>> {
        let added = PageRuns::union_runs(self.added.iter().copied())
            .ok_or_else(|| Error::corrupted(0, "free page sets overlap"))?;
        let header = RecordHeader {
            prev: self.prev,
            below: U32::new(self.below),
            reserved: U32::ZERO,
            page_count: U64::new(self.page_count.0),
            added: U64::new(added.len() as u64),
            removed: U64::new(self.removed.run_count() as u64),
        };
        let mut out = Vec::with_capacity(capacity);
        out.extend_from_slice(header.as_bytes());
        for (s, n) in added.into_iter().chain(self.removed.runs()) {
            out.extend_from_slice(&s.0.to_le_bytes());
            out.extend_from_slice(&n.to_le_bytes());
        }
        Ok((out.len() <= capacity).then(|| {
            out.resize(capacity, 0);
            out
        }))
    }
}

/// A record read back: its header and its runs.
struct Decoded {
    header: RecordHeader,
    added: Vec<(PageId, u64)>,
    removed: Vec<(PageId, u64)>,
}

fn decode(payload: &[u8], blob: PageId) -> Result<Decoded> {
    let bad = |why: &str| Error::corrupted(blob.0, format!("free-list record: {why}"));
    let (header, rest) =
        RecordHeader::read_from_prefix(payload).map_err(|_| bad("shorter than its header"))?;
    let (added, removed) = (header.added.get(), header.removed.get());
    let fits = added
        .checked_add(removed)
        .is_some_and(|n| n <= rest.len() as u64 / 16);
    if !fits {
        return Err(bad("more runs than fit in it"));
    }
    let mut pairs = rest.chunks_exact(16).map(|p| {
        let start = u64::from_le_bytes(p[..8].try_into().expect("8 bytes"));
        (
            PageId(start),
            u64::from_le_bytes(p[8..].try_into().expect("8 bytes")),
        )
    });
    let added = pairs.by_ref().take(added as usize).collect();
    let removed = pairs.take(removed as usize).collect();
    Ok(Decoded {
        header,
        added,
        removed,
    })
}

/// Reads the free list of `meta` (its chain, or a version-1 blob), checking every blob
/// against its reference and every change against the set it applies to. Returns the
/// free set and the chain.
pub(crate) fn load(pages: &PageReader, meta: &Meta) -> Result<(PageRuns, FreeChain)> {
    let head = meta.free_list;
    let g = *pages.geometry();
    if head.is_null() {
        return Ok((PageRuns::new(), FreeChain::default()));
    }
    if meta.version.get() == 1 {
        let (payload, link) = read_blob(pages, &head)?;
        let set = PageRuns::decode(
            &payload,
            g.first_data_page(),
            meta.page_count(),
            head.page(),
        )?;
        refuse_links_in_set(&set, &[link])?;
        let chain = FreeChain {
            links: vec![link],
            legacy: true,
        };
        return Ok((set, chain));
    }
    let records = read_chain(pages, head)?;
    let mut set = PageRuns::new();
    let mut links = Vec::with_capacity(records.len());
    for (link, record) in records.into_iter().rev() {
        apply(&mut set, &record, &g, link.blob.page())?;
        links.push(link);
    }
    if set
        .runs()
        .last()
        .is_some_and(|(s, n)| s.0 + n > meta.page_count().0)
    {
        return Err(Error::corrupted(head.page.get(), "free pages past the end"));
    }
    refuse_links_in_set(&set, &links)?;
    let chain = FreeChain {
        links,
        legacy: false,
    };
    Ok((set, chain))
}

/// The chain's own blobs are in use: a free set that holds one of their pages would let
/// a commit write over a record the chain still needs.
fn refuse_links_in_set(set: &PageRuns, links: &[Link]) -> Result<()> {
    match links.iter().find(|l| set.overlaps(l.blob.page(), l.pages)) {
        Some(l) => Err(Error::corrupted(
            l.blob.page().0,
            "the free list lists its own pages as free",
        )),
        None => Ok(()),
    }
}

/// The records from `head` down to the full record, newest first.
fn read_chain(pages: &PageReader, head: ChildRef) -> Result<Vec<(Link, Decoded)>> {
    let mut records = Vec::new();
    let mut chain_pages = PageRuns::new();
    let mut r = head;
    loop {
        let (link, record) = read_record(pages, &r)?;
        if !chain_pages.insert(r.page(), link.pages) {
            return Err(Error::corrupted(r.page.get(), "free-list chain loops"));
        }
        let (prev, below) = (record.header.prev, record.header.below.get());
        let expected_below = records
            .last()
            .map(|(_, d): &(Link, Decoded)| d.header.below.get().checked_sub(1));
        if expected_below.is_some_and(|b| b != Some(below)) || (below == 0) != prev.is_null() {
            return Err(Error::corrupted(
                r.page.get(),
                "free-list chain is out of order",
            ));
        }
        records.push((link, record));
        if prev.is_null() {
            return Ok(records);
        }
        r = prev;
    }
}

/// Applies one record to `set`: a full record to the empty set, a change to the set of
/// the commit before it.
fn apply(set: &mut PageRuns, record: &Decoded, g: &Geometry, blob: PageId) -> Result<()> {
    let bad = |why: &str| Error::corrupted(blob.0, format!("free-list record: {why}"));
    let first = g.first_data_page();
    for &(s, n) in &record.removed {
        if n == 0 || !set.remove(s, n) {
            return Err(bad("removes pages that are not free"));
        }
    }
    let end = record.header.page_count.get();
    for &(s, n) in &record.added {
        let inside = s >= first && s.0.checked_add(n).is_some_and(|e| e <= end);
        if n == 0 || !inside || !set.insert(s, n) {
            return Err(bad("adds pages that are free already or outside the file"));
        }
    }
    if set.runs().last().is_some_and(|(s, n)| s.0 + n > end) {
        return Err(bad("free pages past its end"));
    }
    Ok(())
}

/// Decodes `payload` as a full record and applies it to the empty set at 4 KiB pages
/// (the fuzzers' entry point); returns the free pages.
pub(crate) fn apply_full(payload: &[u8]) -> Result<u64> {
    let record = decode(payload, PageId(0))?;
    let mut set = PageRuns::new();
    let g = Geometry::new(4096)?;
    if !record.header.prev.is_null() {
        return Err(Error::corrupted(0, "not a full record"));
    }
    apply(&mut set, &record, &g, PageId(0))?;
    Ok(set.page_count())
}

/// The record `r` points to, verified against `r`, whose own `prev` names an earlier
/// writer (so a walk down the chain ends).
fn read_record(pages: &PageReader, r: &ChildRef) -> Result<(Link, Decoded)> {
    let (payload, link) = read_blob(pages, r)?;
    let record = decode(&payload, r.page())?;
    let prev = record.header.prev;
    if !prev.is_null() && prev.txn() >= r.txn() {
        return Err(Error::corrupted(
            r.page.get(),
            "free-list record names a later one",
        ));
    }
    Ok((link, record))
}

/// The payload of the blob `r`, verified against `r`.
fn read_blob(pages: &PageReader, r: &ChildRef) -> Result<(Vec<u8>, Link)> {
    let run_pages = blob_len(pages, r)?.pages;
    let run = pages.fetch(r.page(), run_pages)?;
    verify_ref(&run, r)?;
    let payload = node::blob_payload(&run, r.page())?.to_vec();
    Ok((
        payload,
        Link {
            blob: *r,
            pages: run_pages,
        },
    ))
}

/// The links of the chain from `head` whose blobs were written after `after`, newest
/// first, each verified against its reference (for recovery: what the newest commits
/// wrote must be intact).
pub(crate) fn verify_newer(pages: &PageReader, head: ChildRef, after: u64) -> Result<Vec<Link>> {
    let mut verified = Vec::new();
    let mut r = head;
    while !r.is_null() && r.txn.get() > after {
        let (link, record) = read_record(pages, &r)?;
        verified.push(link);
        r = record.header.prev;
    }
    Ok(verified)
}
