//! The integrity walker: `Database::check` runs it over everything a snapshot reaches,
//! `Database::compact_to` copies the entries it hands out, and recovery runs it over the
//! pages of the newest commit only. It holds one root-to-leaf path of pages (read with
//! `PageReader::fetch`, which keeps nothing in the transaction's table) and verifies
//! large values piece by piece, so its memory does not grow with the file; it reaches
//! each page at most once, so its work does not either. See FORMAT.md#invariants.

use crate::error::{Error, Result};
use crate::fences;
use crate::free_chain::{self, Link};
use crate::meta::Meta;
use crate::node::{self, LeafValue, Node, OverflowRef, ValueAlign};
use crate::page::{ChildRef, Geometry, PageId, RunVerifier, TxnId, VALUE_LEN_MAX, verify_ref};
use crate::storage::PageReader;
use crate::tree::{DEPTH_MAX, TreeRecord, parse_at_depth};

/// Bytes of a large value (or the free list) held at once while it is verified.
const PIECE_BYTES: usize = 1 << 20;

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

/// What a walk hands out, in order: each tree by name, each tree's entries by key.
/// Every method but `entry` is also called by a walk that wants no entries.
pub(crate) trait Visitor {
    /// Whether to call `entry`, with each value read whole (large ones included).
    fn wants_entries(&self) -> bool {
        false
    }

    /// Before the entries of the tree `name`.
    fn tree_start(&mut self, _name: &str, _record: &TreeRecord) -> Result<()> {
        Ok(())
    }

    fn entry(&mut self, _key: &[u8], _value: &[u8]) -> Result<()> {
        Ok(())
    }

    /// After the last entry of the tree named in `tree_start`.
    fn tree_end(&mut self) -> Result<()> {
        Ok(())
    }
}

/// A walk that only checks.
struct JustCheck;

impl Visitor for JustCheck {}

/// How far a walk goes.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    /// Every page; key order, fences, fill, counts and page accounting too.
    Full,
    /// Only pages written after this transaction, checked against their parents'
    /// checksums: what recovery needs to trust the newest commit.
    WrittenAfter(TxnId),
}

/// What the leaves of a tree hold.
#[derive(Clone, Copy, PartialEq)]
enum Leaves {
    /// The catalog: tree names and records.
    TreeRecords,
    /// A tree's entries, whose values start at multiples of `align`.
    Entries { align: ValueAlign },
}

/// Where a node lies in its tree, from its parent.
#[derive(Clone, Copy)]
struct Place<'k> {
    /// Levels from this node down to the leaves (1: a leaf).
    levels: u32,
    is_root: bool,
    /// The parent's keys around this child: every key here is `>= lower` and `< upper`.
    lower: Option<&'k [u8]>,
    upper: Option<&'k [u8]>,
}

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
    w.walk_trees(&mut JustCheck)?;
    let free_list = meta.free_list;
    if meta.version.get() == 1 {
        if w.visits(&free_list) {
            w.verify_blob_in_pieces(&free_list)?;
        }
        return Ok(());
    }
    for link in free_chain::verify_newer(pages, free_list, meta.durable_before.get())? {
        w.mark_link(&link)?;
    }
    Ok(())
}

/// The full check of one snapshot.
pub(crate) fn check_snapshot(pages: &PageReader, meta: &Meta) -> Result<CheckReport> {
    let mut w = Walker::new(pages, meta, Scope::Full);
    w.walk_trees(&mut JustCheck)?;
    let (free, chain) = free_chain::load(pages, meta)?;
    for link in &chain.links {
        w.mark_link(link)?;
    }
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

/// Walks every tree of one snapshot and hands `visitor` the trees and their entries,
/// checking on the way everything `check_snapshot` does except the page accounting
/// (the free list, leaked pages).
pub(crate) fn visit_snapshot(
    pages: &PageReader,
    meta: &Meta,
    visitor: &mut dyn Visitor,
) -> Result<CheckReport> {
    let mut w = Walker::new(pages, meta, Scope::Full);
    w.walk_trees(visitor)?;
    Ok(w.report)
}

/// What the header of the blob `r` points to says: its payload length, the padding
/// before the payload, and so its pages.
pub(crate) fn blob_len(pages: &PageReader, r: &ChildRef) -> Result<BlobSize> {
    let head = pages.fetch(r.page(), 1)?;
    let (len, pad) = node::blob_header(&head, r.page())?;
    if len > VALUE_LEN_MAX {
        return Err(Error::corrupted(
            r.page.get(),
            format!("blob of {len} bytes"),
        ));
    }
    let pages = pages.geometry().blob_pages(len + pad);
    Ok(BlobSize { len, pad, pages })
}

/// A blob's size, from its header.
pub(crate) struct BlobSize {
    pub len: u64,
    pub pad: u64,
    pub pages: u64,
}

/// `sum + n` for counts of entries read from the file: no file holds 2^64 entries, so
/// counts that add up past that are corrupt (`page` is where `n` comes from).
fn add_count(sum: u64, n: u64, page: PageId) -> Result<u64> {
    sum.checked_add(n)
        .ok_or_else(|| Error::corrupted(page.0, "entry counts add up past 2^64"))
}

/// Value `i` of `leaf` (`value`) starts at a multiple of its tree's alignment: inline in
/// the leaf, or after its blob's header and padding.
fn check_value_aligned(leaf: &Node, i: usize, value: &LeafValue, align: ValueAlign) -> Result<()> {
    let offset = match value {
        LeafValue::Inline(_) => leaf.value_offset(i)? as u64,
        LeafValue::Overflow(o) => node::BLOB_HEADER_BYTES as u64 + o.pad(),
    };
    match offset % align.bytes() as u64 {
        0 => Ok(()),
        _ => Err(Error::corrupted(
            leaf.id().0,
            format!(
                "value {i} at offset {offset}, in a tree aligned to {}",
                align.bytes()
            ),
        )),
    }
}

/// The length and padding of a large value's blob must be the ones its leaf records.
fn check_overflow_len(o: &OverflowRef, blob: &BlobSize) -> Result<()> {
    if (blob.len, blob.pad) != (o.value_len(), o.pad()) {
        return Err(Error::corrupted(
            o.blob.page.get(),
            format!(
                "blob of {} bytes after {} of padding, its leaf says {} after {}",
                blob.len,
                blob.pad,
                o.value_len(),
                o.pad()
            ),
        ));
    }
    Ok(())
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

    /// Walks the catalog and, at each of its entries, the tree it names.
    fn walk_trees(&mut self, visitor: &mut dyn Visitor) -> Result<()> {
        let catalog = self.meta.catalog;
        self.walk_tree(&catalog, Leaves::TreeRecords, visitor)
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
        leaves: Leaves,
        visitor: &mut dyn Visitor,
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
        let root = Place {
            levels: depth,
            is_root: true,
            lower: None,
            upper: None,
        };
        let mut entries = 0;
        self.walk_node(&tree.root, root, leaves, &mut entries, visitor)?;
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

    /// Walks the subtree at `r`, adding the entries of its leaves to `entries`. The
    /// page is held (in `page`) only while its subtree is walked.
    fn walk_node(
        &mut self,
        r: &ChildRef,
        place: Place,
        leaves: Leaves,
        entries: &mut u64,
        visitor: &mut dyn Visitor,
    ) -> Result<()> {
        let id = r.page();
        self.check_not_future(r)?;
        self.mark_run(id, 1)?;
        let page = self.pages.fetch(id, 1)?;
        let node = parse_at_depth(&page, id, place.levels)?;
        verify_ref(node.bytes(), r)?;
        self.report.node_pages += 1;
        if self.scope == Scope::Full {
            self.check_node_shape(&node, &place)?;
        }
        if node.is_leaf() {
            *entries = add_count(*entries, node.len() as u64, id)?;
            if let (Leaves::Entries { align }, Scope::Full) = (leaves, self.scope) {
                node.verify_aligned(align)?;
            }
            for i in 0..node.len() {
                let (key, value) = (node.key(i)?, node.value(i)?);
                match leaves {
                    Leaves::TreeRecords => self.enter_tree(id, key, value, visitor)?,
                    Leaves::Entries { align } => {
                        if self.scope == Scope::Full {
                            check_value_aligned(&node, i, &value, align)?;
                        }
                        self.leaf_entry(key, value, visitor)?
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
            let (lower, upper) = fences::child_fences(&node, i, place.lower, place.upper)?;
            let below = Place {
                levels: place.levels - 1,
                is_root: false,
                lower,
                upper,
            };
            self.walk_node(&child, below, leaves, entries, visitor)?;
        }
        Ok(())
    }

    /// A catalog entry in leaf `leaf`: walks the tree it names.
    fn enter_tree(
        &mut self,
        leaf: PageId,
        name: &[u8],
        value: LeafValue,
        visitor: &mut dyn Visitor,
    ) -> Result<()> {
        // Names are at most `key_len_max` bytes, so a record always fits inline.
        let LeafValue::Inline(value) = value else {
            return Err(Error::corrupted(leaf.0, "tree record in an overflow blob"));
        };
        let name = std::str::from_utf8(name)
            .map_err(|_| Error::corrupted(leaf.0, "tree name is not UTF-8"))?;
        let record = TreeRecord::decode(value, leaf)?;
        self.report.trees += 1;
        self.report.entries = add_count(self.report.entries, record.entries.get(), leaf)?;
        visitor.tree_start(name, &record)?;
        let align = record.value_align();
        self.walk_tree(&record, Leaves::Entries { align }, visitor)?;
        visitor.tree_end()
    }

    /// An entry of a tree's leaf: verifies its large value, if it has one, and hands
    /// the entry to `visitor` if it wants it.
    fn leaf_entry(
        &mut self,
        key: &[u8],
        value: LeafValue,
        visitor: &mut dyn Visitor,
    ) -> Result<()> {
        let o = match value {
            LeafValue::Inline(v) if visitor.wants_entries() => return visitor.entry(key, v),
            LeafValue::Inline(_) => return Ok(()),
            LeafValue::Overflow(o) => o,
        };
        if !self.visits(&o.blob) {
            // Only recovery skips pages, and it wants no entries.
            debug_assert!(!visitor.wants_entries());
            return Ok(());
        }
        if !visitor.wants_entries() {
            let blob = self.verify_blob_in_pieces(&o.blob)?;
            self.report.overflow_pages += blob.pages;
            return check_overflow_len(&o, &blob);
        }
        let blob = self.mark_blob(&o.blob)?;
        self.report.overflow_pages += blob.pages;
        let run = self.pages.fetch(o.blob.page(), blob.pages)?;
        verify_ref(&run, &o.blob)?;
        let payload = node::blob_payload(&run, o.blob.page())?;
        check_overflow_len(&o, &blob)?;
        visitor.entry(key, payload)
    }

    /// Verifies the blob `r` points to while holding at most `PIECE_BYTES` of it; marks
    /// its pages. Returns its size.
    fn verify_blob_in_pieces(&mut self, r: &ChildRef) -> Result<BlobSize> {
        let blob = self.mark_blob(r)?;
        let mut run = RunVerifier::new();
        self.pages
            .stream(r.page(), blob.pages, PIECE_BYTES, |piece| {
                run.update(piece);
                Ok(())
            })?;
        run.verify(r)?;
        Ok(blob)
    }

    /// Marks the pages of a blob of the free list's chain (read and verified already).
    fn mark_link(&mut self, link: &Link) -> Result<()> {
        self.check_not_future(&link.blob)?;
        self.mark_run(link.blob.page(), link.pages)
    }

    /// Marks the pages of the blob `r` points to, sized by the length in its header
    /// (its first page is marked before it is read); returns its size.
    fn mark_blob(&mut self, r: &ChildRef) -> Result<BlobSize> {
        self.check_not_future(r)?;
        self.mark(r.page())?;
        let blob = blob_len(self.pages, r)?;
        self.mark_run(PageId(r.page().0 + 1), blob.pages - 1)?;
        Ok(blob)
    }

    fn check_not_future(&self, r: &ChildRef) -> Result<()> {
        if r.txn() > self.meta.txn() {
            return Err(Error::corrupted(
                r.page.get(),
                "page written by a future transaction",
            ));
        }
        Ok(())
    }

    /// Key order inside the node and against the fences from its parent, slot prefixes,
    /// and fill.
    fn check_node_shape(&self, node: &Node, place: &Place) -> Result<()> {
        let (lower, upper) = (place.lower, place.upper);
        let id = node.id().0;
        // What the write path checks before it edits a page, then the parent's fences.
        node.verify(None)?;
        fences::check_within(node, lower, upper)?;
        // Leaves have no fill bound beyond one entry: a run of inserts opens a leaf with
        // one cell and fills it (FORMAT.md#insert-hints). A branch keeps one key.
        if !place.is_root && node.len() == 0 {
            return Err(Error::corrupted(
                id,
                format!("empty {:?} page below the root", node.kind()),
            ));
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
