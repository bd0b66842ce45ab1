//! The integrity walker: `Database::check` runs it over everything a snapshot reaches;
//! recovery runs it over the pages of the newest commit only.
//! See FORMAT.md#invariants.

use crate::error::{Error, Result};
use crate::freelist::PageRuns;
use crate::meta::Meta;
use crate::node::{self, BlobHeader, LeafValue, Node, is_underfull};
use crate::page::{ChildRef, Geometry, PageId, PageKind, TxnId, verify_ref};
use crate::storage::PageReader;
use crate::tree::{DEPTH_MAX, TreeRecord, load};

/// What `Database::check` verified.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckReport {
    /// Trees in the catalog.
    pub trees: u64,
    /// Entries across all trees.
    pub entries: u64,
    /// Branch and leaf pages verified (catalog included).
    pub node_pages: u64,
    /// Pages holding large values.
    pub overflow_pages: u64,
    /// Pages on the free list (the free list's own pages count as in use).
    pub free_pages: u64,
    /// Pages the file holds, free or in use, meta pages excluded.
    pub data_pages: u64,
}

/// How far a walk goes.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// Every page; key order, fences, fill, counts and page accounting too.
    Full,
    /// Only pages written after this transaction, checked against their parents'
    /// checksums: what recovery needs to trust the newest commit.
    WrittenAfter(TxnId),
}

/// Called with each entry of the catalog walk.
type EntryFn<'f, 'a> = &'f mut dyn FnMut(&mut Walker<'a>, &[u8], &[u8]) -> Result<()>;

struct Walker<'a> {
    pages: &'a PageReader,
    geometry: Geometry,
    meta: &'a Meta,
    scope: Scope,
    /// One bit per page: reached already. A page reached twice is an error in every
    /// scope: without this, branches of a crafted file whose references all lead to one
    /// child make a walk exponential in the depth (each page still matches its parent).
    seen: Vec<u64>,
    report: CheckReport,
}

/// Verifies every page the commit `meta` wrote (those newer than its `durable_before`):
/// a torn write anywhere in them is an error.
pub(crate) fn verify_commit(pages: &PageReader, meta: &Meta) -> Result<()> {
    let mut w = Walker::new(
        pages,
        meta,
        Scope::WrittenAfter(TxnId(meta.durable_before.get())),
    );
    w.walk_all().map(|_| ())
}

/// The full check of one snapshot.
pub(crate) fn check_snapshot(pages: &PageReader, meta: &Meta) -> Result<CheckReport> {
    let mut w = Walker::new(pages, meta, Scope::Full);
    let free = w.walk_all()?;
    let g = w.geometry;
    for (start, n) in free.runs() {
        for id in start.0..start.0 + n {
            w.mark(PageId(id))?;
        }
    }
    w.report.free_pages = free.page_count();
    let first = g.first_data_page().0;
    let end = meta.page_count().0;
    w.report.data_pages = end - first;
    if let Some(leaked) = (first..end).find(|&id| !w.is_seen(PageId(id))) {
        return Err(Error::corrupted(
            leaked,
            "page is neither reachable nor free (leaked)",
        ));
    }
    Ok(w.report)
}

/// Reads and checks the free list blob of `meta`.
pub(crate) fn read_free_list(pages: &PageReader, meta: &Meta) -> Result<PageRuns> {
    let r = meta.free_list;
    if r.is_null() {
        return Ok(PageRuns::new());
    }
    let g = *pages.geometry();
    let run = blob_run(pages, &g, &r)?;
    let payload = node::blob_payload(run, r.page())?;
    PageRuns::decode(payload, g.first_data_page(), meta.page_count(), r.page())
}

/// The pages of the blob `r` points to, sized by the length in its first page.
fn blob_run<'a>(pages: &'a PageReader, g: &Geometry, r: &ChildRef) -> Result<&'a [u8]> {
    let head = pages.page(r.page())?;
    let (h, _) = <BlobHeader as zerocopy::FromBytes>::ref_from_prefix(head)
        .map_err(|_| Error::corrupted(r.page.get(), "blob header"))?;
    let len = h.len.get();
    if len > crate::page::VALUE_LEN_MAX {
        return Err(Error::corrupted(
            r.page.get(),
            format!("blob of {len} bytes"),
        ));
    }
    let run = pages.run(r.page(), g.blob_pages(len))?;
    verify_ref(run, r)?;
    Ok(run)
}

/// `sum + n` for counts of entries read from the file: no file holds 2^64 entries, so
/// counts that add up past that are corrupt (`r` is the page they come from).
fn add_count(sum: u64, n: u64, r: &ChildRef) -> Result<u64> {
    sum.checked_add(n)
        .ok_or_else(|| Error::corrupted(r.page.get(), "entry counts add up past 2^64"))
}

impl<'a> Walker<'a> {
    fn new(pages: &'a PageReader, meta: &'a Meta, scope: Scope) -> Walker<'a> {
        // A zeroed allocation: the bits of pages a walk never reaches cost no memory.
        let seen = vec![0; (meta.page_count.get() as usize).div_ceil(64)];
        Walker {
            pages,
            geometry: *pages.geometry(),
            meta,
            scope,
            seen,
            report: CheckReport::default(),
        }
    }

    /// Walks the catalog, every tree and the free list blob; returns the free list.
    fn walk_all(&mut self) -> Result<PageRuns> {
        let catalog = self.meta.catalog;
        let mut trees = Vec::new();
        let collect: EntryFn<'_, 'a> = &mut |_, key, value| {
            trees.push((key.to_vec(), TreeRecord::decode(value, PageId(0))?));
            Ok(())
        };
        self.walk_tree(&catalog, &mut Some(collect))?;
        for (name, record) in trees {
            if std::str::from_utf8(&name).is_err() {
                return Err(Error::corrupted(
                    catalog.root.page.get(),
                    "tree name is not UTF-8",
                ));
            }
            self.report.trees += 1;
            self.report.entries =
                add_count(self.report.entries, record.entries.get(), &catalog.root)?;
            self.walk_tree(&record, &mut None)?;
        }
        let free_list = self.meta.free_list;
        if self.visits(&free_list) {
            let run = blob_run(self.pages, &self.geometry, &free_list)?;
            self.mark_run(
                free_list.page(),
                run.len() as u64 / self.geometry.page_bytes(),
            )?;
        }
        match self.scope {
            Scope::Full => read_free_list(self.pages, self.meta),
            Scope::WrittenAfter(_) => Ok(PageRuns::new()),
        }
    }

    fn visits(&self, r: &ChildRef) -> bool {
        !r.is_null()
            && match self.scope {
                Scope::Full => true,
                Scope::WrittenAfter(t) => r.txn() > t,
            }
    }

    fn walk_tree(
        &mut self,
        tree: &TreeRecord,
        on_entry: &mut Option<EntryFn<'_, 'a>>,
    ) -> Result<()> {
        if !self.visits(&tree.root) {
            return Ok(());
        }
        let depth = tree.depth.get();
        if depth == 0 || depth > DEPTH_MAX {
            return Err(Error::corrupted(
                tree.root.page.get(),
                format!("tree depth {depth}"),
            ));
        }
        let mut entries = 0;
        self.walk_node(
            &tree.root,
            depth,
            true,
            (None, None),
            &mut entries,
            on_entry,
        )?;
        if self.scope == Scope::Full && entries != tree.entries.get() {
            return Err(Error::corrupted(
                tree.root.page.get(),
                format!(
                    "tree record says {} entries, leaves hold {entries}",
                    tree.entries.get()
                ),
            ));
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn walk_node(
        &mut self,
        r: &ChildRef,
        levels: u32,
        is_root: bool,
        fences: (Option<&[u8]>, Option<&[u8]>),
        entries: &mut u64,
        on_entry: &mut Option<EntryFn<'_, 'a>>,
    ) -> Result<()> {
        let id = r.page();
        if r.txn() > self.meta.txn() {
            return Err(Error::corrupted(
                id.0,
                "page written by a future transaction",
            ));
        }
        let node = load(self.pages, r, levels)?;
        verify_ref(node.bytes(), r)?;
        self.mark_run(id, 1)?;
        self.report.node_pages += 1;
        if self.scope == Scope::Full {
            self.check_node_shape(&node, is_root, fences)?;
        }
        if node.is_leaf() {
            *entries = add_count(*entries, node.len() as u64, r)?;
            for i in 0..node.len() {
                let key = node.key(i)?;
                match node.value(i)? {
                    LeafValue::Inline(v) => {
                        if let Some(f) = on_entry.as_mut() {
                            f(self, key, v)?;
                        }
                    }
                    LeafValue::Overflow(o) => {
                        if self.visits(&o.blob) {
                            let run = blob_run(self.pages, &self.geometry, &o.blob)?;
                            let pages = run.len() as u64 / self.geometry.page_bytes();
                            self.mark_run(o.blob.page(), pages)?;
                            self.report.overflow_pages += pages;
                        }
                        if let Some(f) = on_entry.as_mut() {
                            f(self, key, crate::tree::overflow_value(self.pages, &o)?)?;
                        }
                    }
                }
            }
            return Ok(());
        }
        for i in 0..=node.len() {
            let child = node.child(i)?;
            if !self.visits(&child) {
                continue;
            }
            let lower = if i == 0 {
                fences.0
            } else {
                Some(node.key(i - 1)?)
            };
            let upper = if i == node.len() {
                fences.1
            } else {
                Some(node.key(i)?)
            };
            self.walk_node(&child, levels - 1, false, (lower, upper), entries, on_entry)?;
        }
        Ok(())
    }

    /// Key order inside the node and against the fences from its parent, slot prefixes,
    /// and fill.
    fn check_node_shape(
        &self,
        node: &Node,
        is_root: bool,
        (lower, upper): (Option<&[u8]>, Option<&[u8]>),
    ) -> Result<()> {
        let id = node.id().0;
        node.verify_prefixes()?;
        let mut prev: Option<&[u8]> = None;
        for i in 0..node.len() {
            let key = node.key(i)?;
            if prev.is_some_and(|p| p >= key) {
                return Err(Error::corrupted(
                    id,
                    format!("keys out of order at slot {i}"),
                ));
            }
            if lower.is_some_and(|l| key < l) || upper.is_some_and(|u| key >= u) {
                return Err(Error::corrupted(
                    id,
                    format!("key at slot {i} outside its parent's range"),
                ));
            }
            prev = Some(key);
        }
        if !is_root {
            let underfull = match node.kind() {
                PageKind::Leaf => is_underfull(node.used_bytes(), self.geometry.page_size),
                _ => node.len() == 0,
            };
            if underfull {
                return Err(Error::corrupted(
                    id,
                    format!(
                        "{:?} page underfull: {} bytes used",
                        node.kind(),
                        node.used_bytes()
                    ),
                ));
            }
        }
        Ok(())
    }

    fn mark_run(&mut self, start: PageId, pages: u64) -> Result<()> {
        for id in start.0..start.0 + pages {
            self.mark(PageId(id))?;
        }
        Ok(())
    }

    fn mark(&mut self, id: PageId) -> Result<()> {
        let (word, bit) = ((id.0 / 64) as usize, id.0 % 64);
        let Some(w) = self.seen.get_mut(word) else {
            return Err(Error::corrupted(id.0, "page beyond the page count"));
        };
        if *w & (1 << bit) != 0 {
            return Err(Error::corrupted(
                id.0,
                "page reached twice (or both reached and free)",
            ));
        }
        *w |= 1 << bit;
        Ok(())
    }

    fn is_seen(&self, id: PageId) -> bool {
        self.seen[(id.0 / 64) as usize] & (1 << (id.0 % 64)) != 0
    }
}
