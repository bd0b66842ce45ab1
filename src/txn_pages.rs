//! The pages of the write transaction: its dirty pages (in memory until commit) over the
//! committed snapshot, the allocator of page ids, and the freeing of pages it stopped
//! using. Everything read from the snapshot is untrusted: a page is verified against its
//! parent's reference before it is copied or freed. See FORMAT.md#page-reuse.

use std::borrow::Cow;
use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;

use crate::alloc::Allocator;
use crate::dirty_page::DirtyPage;
use crate::error::{Error, Result};
use crate::free_chain::Link;
use crate::freelist::PageRuns;
use crate::node::{self, BLOB_HEADER_BYTES, Node, OverflowRef, ValueAlign};
use crate::page::{ChildRef, Geometry, PageId, PageMap, RunVerifier, TxnId, verify_ref};
use crate::page_buf::PageBox;
use crate::sealed_nodes::SealedNodes;
use crate::storage::{PageReader, Storage};
use crate::tree::Pages;
use crate::write_txn::Writer;

mod dirty_pages;
use dirty_pages::DirtyPages;

/// Pages as one write transaction sees them: its dirty pages over the committed snapshot,
/// the pages it may overwrite, and the pages it freed.
pub(crate) struct TxnPages {
    pub txn: TxnId,
    /// The snapshot this transaction started from: no committed reference may name a
    /// later writer.
    base: TxnId,
    /// Reused buffer for encoding cells.
    pub scratch: Vec<u8>,
    storage: Arc<Storage>,
    pub(crate) reader: PageReader,
    /// Pages changed in memory, by provisional id (`PROVISIONAL_IDS` on): they take their
    /// final ids when the commit seals them, so that they can be written as one run.
    dirty: DirtyPages,
    /// Dirty pages replaced by copies (`freeze`): slices of them may still be alive,
    /// so they are kept, unchanged, until the transaction ends.
    retired: Vec<DirtyPage>,
    /// Set by `freeze`: pages of blobs this transaction wrote and then freed are not
    /// written again before the commit (a slice of one may still be alive); they wait
    /// in `own_freed` until then.
    own_pinned: bool,
    own_freed: Vec<(PageId, u64)>,
    next_provisional: u64,
    /// Page buffers no longer in use (those the previous commit wrote, a split's old
    /// page, freed dirty pages), reused for copies and for pages built whole: a fresh
    /// buffer costs an allocation and its release, a zeroed one a write of every byte.
    spare: Vec<PageBox>,
    /// Sealed pages with their final ids, in the order they were sealed.
    sealed: Vec<(PageId, PageBox)>,
    /// Blobs this transaction wrote (first page → pages): values it may free at once.
    own_blobs: PageMap<u64>,
    /// The pages this transaction may write, and where the file ends.
    pub(crate) alloc: Allocator,
    /// Committed pages this transaction stopped using: free once no snapshot needs them
    /// (and, for `freed`, once the durable fallback cannot need them either).
    freed: PageRuns,
    /// Freed pages written after the newest durable commit: the fallback cannot reach them.
    freed_volatile: PageRuns,
    /// The newest durable commit when this transaction began (it cannot change before
    /// this transaction commits: there is one writer).
    durable: TxnId,
    /// The alignment of the values of the tree being changed (`change_tree`): the leaves
    /// `shadow` copies must keep it (`Node::verify_aligned`).
    leaf_align: ValueAlign,
    /// Committed pages copied by `shadow` so far (for tests: what a change cost in
    /// copies, which the pages written at commit do not show when the copies were freed
    /// again before it).
    pub(crate) copied: u64,
    /// The database file's path (empty without one), for direct writes of streamed
    /// blobs.
    path: Arc<Path>,
    /// The node pages this handle sealed (`src/sealed_nodes.rs`): a copy of one needs
    /// no check of its cells.
    pub(crate) sealed_nodes: Arc<SealedNodes>,
    /// Why a change failed or was interrupted half-way (an I/O error, a corrupt page, a
    /// panic), and the kind of I/O error it was (`Other` for the rest): the
    /// transaction's pages may be inconsistent, so it refuses every further change and
    /// `commit`, with an error of that kind (a full disk stays `StorageFull`).
    /// (Borrowed while a change runs: setting it must not allocate on every change.)
    failed: Option<(io::ErrorKind, Cow<'static, str>)>,
}

impl Pages for TxnPages {
    fn page(&self, id: PageId) -> Result<&[u8]> {
        match self.dirty.get(id) {
            Some(b) => Ok(b.bytes()),
            None => self.reader.page(id),
        }
    }

    fn run(&self, id: PageId, pages: u64) -> Result<&[u8]> {
        self.reader.run(id, pages)
    }

    fn geometry(&self) -> Geometry {
        *self.reader.geometry()
    }

    fn pages_readable(&self) -> u64 {
        self.pages_readable()
    }
}

impl Pages for PageReader {
    fn page(&self, id: PageId) -> Result<&[u8]> {
        PageReader::page(self, id)
    }

    fn run(&self, id: PageId, pages: u64) -> Result<&[u8]> {
        PageReader::run(self, id, pages)
    }

    fn geometry(&self) -> Geometry {
        *PageReader::geometry(self)
    }

    fn pages_readable(&self) -> u64 {
        PageReader::pages_readable(self)
    }
}

/// Why a change that never finished leaves the transaction unusable.
const INTERRUPTED: &str = "a change was interrupted (a panic) before it finished";

/// The most memory spare page buffers take (`TxnPages::recycle`), kept by the handle
/// between write transactions: a commit of 1,000 random inserts copies about 1,300 pages.
const SPARE_BYTES_MAX: usize = 4 << 20;

/// The piece of a committed blob that `free_blob` holds at a time while it verifies it.
const VERIFY_PIECE_BYTES: usize = 1 << 20;

/// Dirty pages are numbered from here until the commit gives them their final ids: far
/// beyond any file (2^62 pages), so no committed reference can name one by accident
/// (reading one through the snapshot fails its range check).
const PROVISIONAL_IDS: u64 = 1 << 62;

impl TxnPages {
    /// The pages of transaction `base + 1`, which takes over what the handle's `writer`
    /// keeps between transactions: the pages it may overwrite, the sealed-node table, the
    /// spare page buffers.
    pub(crate) fn new(
        storage: &Arc<Storage>,
        base: TxnId,
        page_count: PageId,
        path: Arc<Path>,
        writer: &mut Writer,
    ) -> TxnPages {
        let free = std::mem::take(&mut writer.free);
        let mut alloc = Allocator::new(free, page_count, writer.sweep_from);
        if storage.is_out_of_space() {
            alloc.avoid_growth();
        }
        TxnPages {
            txn: TxnId(base.0 + 1),
            base,
            scratch: Vec::new(),
            storage: Arc::clone(storage),
            reader: storage.reader(page_count),
            dirty: DirtyPages::default(),
            retired: Vec::new(),
            own_pinned: false,
            own_freed: Vec::new(),
            next_provisional: PROVISIONAL_IDS,
            spare: std::mem::take(&mut writer.spare_pages),
            sealed: Vec::new(),
            own_blobs: HashMap::default(),
            alloc,
            freed: PageRuns::new(),
            freed_volatile: PageRuns::new(),
            durable: writer.durable,
            leaf_align: ValueAlign::NONE,
            copied: 0,
            path,
            sealed_nodes: Arc::clone(&writer.sealed),
            failed: None,
        }
    }

    /// Runs `change`, which may leave the pages half-edited if it does not finish. The
    /// transaction is marked failed on entry and cleared only when `change` returns `Ok`
    /// or an error raised before anything changed (sizes, order), so a panic that the
    /// caller catches, or an I/O or corruption error, leaves it refusing to commit.
    pub(crate) fn change<T>(&mut self, change: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        self.usable()?;
        self.failed = Some((io::ErrorKind::Other, Cow::Borrowed(INTERRUPTED)));
        let r = change(self);
        match &r {
            Err(e @ (Error::Io(_) | Error::Corrupted { .. })) => {
                let kind = match e {
                    Error::Io(io) => io.kind(),
                    _ => io::ErrorKind::Other,
                };
                self.failed = Some((kind, Cow::Owned(e.to_string())));
            }
            _ => self.failed = None,
        }
        r
    }

    /// `change` of a tree whose values are aligned to `align`: the leaves it copies are
    /// checked to be laid out for it, since moving their cells relies on it.
    pub(crate) fn change_tree<T>(
        &mut self,
        align: ValueAlign,
        change: impl FnOnce(&mut Self) -> Result<T>,
    ) -> Result<T> {
        self.leaf_align = align;
        let r = self.change(change);
        self.leaf_align = ValueAlign::NONE;
        r
    }

    /// `Ok` unless an earlier change failed or was interrupted.
    pub(crate) fn usable(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((kind, why)) => Err(Error::Io(io::Error::new(
                *kind,
                format!("an earlier change in this transaction failed ({why}); abort it"),
            ))),
        }
    }

    /// How many pages a walk can load: every page of the file and every dirty page.
    pub(crate) fn pages_readable(&self) -> u64 {
        self.alloc.end().0 + self.dirty.len() as u64
    }

    /// Makes every slice of a dirty page or an own blob handed out so far safe from
    /// what follows: each dirty page is replaced by a copy (the original is kept,
    /// unchanged, until the transaction ends), and own blobs freed from now on are not
    /// written again before the commit. For when a tree is opened again (or deleted)
    /// while an older handle of it, which may hold such slices, is still alive. The
    /// `reserved` leaves are left alone: their bytes may be being written by a handle
    /// of another tree (`crate::reserve`), so they cannot be read, and the old handle
    /// holds no slice of them.
    pub(crate) fn freeze(&mut self, reserved: &[PageId]) {
        for (id, page) in self.dirty.iter_mut() {
            if reserved.contains(&id) {
                continue;
            }
            let copy = page.clone();
            self.retired.push(std::mem::replace(page, copy));
        }
        self.own_pinned = true;
    }

    /// Pages of own blobs freed while pinned: free for this transaction again once no
    /// tree handle can be alive (the commit).
    pub(crate) fn release_pinned(&mut self) -> Result<()> {
        for (id, pages) in std::mem::take(&mut self.own_freed) {
            self.alloc.give_back(id, pages)?;
        }
        Ok(())
    }

    /// One past the last page in use or free: where sequential writes can go.
    pub(crate) fn end(&self) -> PageId {
        self.alloc.end()
    }

    /// Claims the pages up to `end`, written directly (by the bulk loader).
    pub(crate) fn set_end(&mut self, end: PageId) {
        self.alloc.set_end(end);
        self.reader.extend_limit(end);
    }

    pub(crate) fn is_dirty(&self, id: PageId) -> bool {
        self.dirty.contains(id)
    }

    /// The snapshot this transaction started from.
    pub(crate) fn base(&self) -> TxnId {
        self.base
    }

    /// Whether `r` names a page of this transaction's, still dirty.
    pub(crate) fn is_own(&self, r: &ChildRef) -> bool {
        r.txn() == self.txn && self.is_dirty(r.page())
    }

    pub(crate) fn has_dirty_pages(&self) -> bool {
        !self.dirty.is_empty()
    }

    pub(crate) fn has_freed_pages(&self) -> bool {
        !self.freed.is_empty() || !self.freed_volatile.is_empty()
    }

    /// A reference to dirty page `id`; its checksum is filled in at commit.
    pub(crate) fn dirty_ref(&self, id: PageId) -> ChildRef {
        ChildRef::new(id, 0, self.txn)
    }

    pub(crate) fn dirty(&self, id: PageId) -> &[u8] {
        self.dirty.get(id).expect("page is dirty").bytes()
    }

    pub(crate) fn dirty_mut(&mut self, id: PageId) -> &mut [u8] {
        self.dirty.get_mut(id).expect("page is dirty").bytes_mut()
    }

    pub(crate) fn take(&mut self, id: PageId) -> PageBox {
        self.dirty.remove(id).expect("page is dirty").into_box()
    }

    /// Files `page` as dirty page `id`: one `take` took out, or one rebuilt whole (the
    /// old buffer is dropped).
    pub(crate) fn put(&mut self, id: PageId, page: PageBox) {
        self.dirty.insert(id, DirtyPage::new(page));
    }

    pub(crate) fn dirty_count(&self) -> u64 {
        self.dirty.len() as u64
    }

    /// Files a sealed page under its final id (the commit writes them in this order).
    pub(crate) fn put_sealed(&mut self, id: PageId, page: PageBox) {
        self.sealed.push((id, page));
    }

    /// The sealed pages, sorted by id.
    pub(crate) fn take_sealed(&mut self) -> Vec<(PageId, PageBox)> {
        let mut pages = std::mem::take(&mut self.sealed);
        pages.sort_unstable_by_key(|(id, _)| *id);
        pages
    }

    /// A page buffer whose bytes are unspecified, for a page about to be built whole
    /// (`node::build` writes every byte): a [`recycled`](Self::recycle) one if any.
    pub(crate) fn blank_page(&mut self) -> PageBox {
        let page_size = self.geometry().page_size;
        self.spare
            .pop()
            .unwrap_or_else(|| PageBox::zeroed(page_size))
    }

    /// Keeps a page buffer no longer in use, for [`blank_page`](Self::blank_page) and
    /// `shadow`; at most [`SPARE_BYTES_MAX`] of them (and at least 16 pages).
    pub(crate) fn recycle(&mut self, page: PageBox) {
        let page_size = self.geometry().page_size;
        let max = (SPARE_BYTES_MAX / page_size).max(16);
        if self.spare.len() < max && page.len() == page_size {
            self.spare.push(page);
        }
    }

    /// The spare buffers, for the next transaction (the commit hands them on).
    pub(crate) fn take_spare(&mut self) -> Vec<PageBox> {
        std::mem::take(&mut self.spare)
    }

    /// A new zeroed dirty page.
    pub(crate) fn alloc_page(&mut self) -> (PageId, &mut [u8]) {
        let page = PageBox::zeroed(self.geometry().page_size);
        let id = self.add_page(page);
        (id, self.dirty_mut(id))
    }

    /// Adds a dirty page under a new provisional id.
    pub(crate) fn add_page(&mut self, page: PageBox) -> PageId {
        let id = PageId(self.next_provisional);
        self.next_provisional += 1;
        self.dirty.insert(id, DirtyPage::new(page));
        id
    }

    /// Copy-on-write: returns a dirty page with the content of `r`, which is `r` itself
    /// if this transaction already made it dirty, else a copy at a new page id (the
    /// committed page is freed: snapshots keep reading it). The committed page must be
    /// what its parent's reference says and a well-formed node, or the copy would carry
    /// corruption into a freshly checksummed page (a node this handle sealed itself, with
    /// the checksum the reference names, is well-formed: `src/sealed_nodes.rs`).
    pub(crate) fn shadow(&mut self, r: &ChildRef) -> Result<PageId> {
        let id = r.page();
        if self.written_here(r, |p| p.dirty.contains(id))? {
            return Ok(id);
        }
        let page = self.reader.page(id)?;
        verify_ref(page, r)?;
        let node = Node::parse(page, id)?;
        if !self.sealed_nodes.holds(id, r.checksum.get()) {
            node.verify(Some(self.base))?;
            node.verify_aligned(self.leaf_align)?;
        }
        let mut copy = match self.spare.pop() {
            Some(mut spare) => {
                spare.copy_from_slice(page);
                spare
            }
            None => PageBox::copy_of(page),
        };
        node::set_txn(&mut copy, self.txn);
        self.free_committed(id, 1, r.txn())?;
        self.copied += 1;
        Ok(self.add_page(copy))
    }

    /// Whether `r` names a page this transaction wrote (`own` says whether it did);
    /// otherwise checks that `r` is a plausible committed reference: written by the
    /// snapshot or earlier, and not to a page this transaction took for itself (which
    /// was free, so no committed page can reference it).
    fn written_here(&self, r: &ChildRef, own: impl Fn(&Self) -> bool) -> Result<bool> {
        let id = r.page();
        if r.txn() == self.txn {
            return match own(self) {
                true => Ok(true),
                false => Err(Error::corrupted(
                    id.0,
                    "a reference names the writing transaction, which did not write the page",
                )),
            };
        }
        if r.txn() > self.base {
            return Err(Error::corrupted(
                id.0,
                format!(
                    "reference names writer {} in snapshot {}",
                    r.txn().0,
                    self.base.0
                ),
            ));
        }
        if self.dirty.contains(id) || self.own_blobs.contains_key(&id) {
            return Err(Error::corrupted(
                id.0,
                "a committed reference names a page that was free",
            ));
        }
        Ok(false)
    }

    /// Frees a node page this transaction no longer references.
    pub(crate) fn free_page(&mut self, r: &ChildRef) -> Result<()> {
        let id = r.page();
        if self.written_here(r, |p| p.dirty.contains(id))? {
            // Dirty pages have no page id yet: dropping the buffer is all there is to do.
            let page = self.take(id);
            self.recycle(page);
            return Ok(());
        }
        verify_ref(self.reader.page(id)?, r)?;
        self.free_committed(id, 1, r.txn())
    }

    /// Frees the blob holding an overflow value.
    pub(crate) fn free_blob(&mut self, o: &OverflowRef) -> Result<()> {
        let r = o.blob;
        let pages = o.pages(&self.geometry());
        if self.written_here(&r, |p| p.own_blobs.get(&r.page()) == Some(&pages))? {
            // It may be written again in this transaction: no read may serve the old copy.
            self.own_blobs.remove(&r.page());
            self.reader.forget(r.page());
            return self.free_own(r.page(), pages);
        }
        // In pieces, holding one at a time: `run` would keep the whole value in this
        // transaction's table until it ends on the pread path (a value streamed in with
        // `insert_from` may be larger than memory, and `delete_tree` frees them all).
        let mut run = RunVerifier::new();
        self.reader
            .stream(r.page(), pages, VERIFY_PIECE_BYTES, |piece| {
                run.update(piece);
                Ok(())
            })?;
        run.verify(&r)?;
        self.free_committed(r.page(), pages, r.txn())
    }

    /// Frees a blob of the free list's chain (read and verified when it was loaded).
    pub(crate) fn free_chain_link(&mut self, link: &Link) -> Result<()> {
        // Never written by this transaction: `written_here` refuses it if it says so.
        self.written_here(&link.blob, |_| false)?;
        self.free_committed(link.blob.page(), link.pages, link.blob.txn())
    }

    /// Pages written by this transaction become free for it again at once (or, once
    /// pinned, at the commit).
    fn free_own(&mut self, id: PageId, pages: u64) -> Result<()> {
        self.check_run(id, pages)?;
        if self.own_pinned {
            if self
                .own_freed
                .iter()
                .any(|&(s, n)| s.0 < id.0 + pages && id.0 < s.0 + n)
            {
                return Err(Error::corrupted(id.0, "a page was freed twice"));
            }
            self.own_freed.push((id, pages));
            return Ok(());
        }
        self.alloc.give_back(id, pages)
    }

    /// Committed pages wait until no snapshot (and, if the durable fallback can reach
    /// them, no recovery) needs them.
    fn free_committed(&mut self, id: PageId, pages: u64, writer: TxnId) -> Result<()> {
        self.check_run(id, pages)?;
        // A page past the snapshot's end, or one taken from the free list, holds what
        // this transaction wrote (a large value's middle page, say): freeing it would
        // free a page the transaction uses.
        if !self.alloc.holds_committed(id, pages) {
            return Err(Error::corrupted(
                id.0,
                "a committed reference names a page this transaction took",
            ));
        }
        let (set, other) = match writer > self.durable {
            true => (&mut self.freed_volatile, &self.freed),
            false => (&mut self.freed, &self.freed_volatile),
        };
        if other.overlaps(id, pages) || !set.insert(id, pages) {
            return Err(Error::corrupted(id.0, "a page was freed twice"));
        }
        Ok(())
    }

    fn check_run(&self, id: PageId, pages: u64) -> Result<()> {
        let out_of_range =
            id.0.checked_add(pages)
                .is_none_or(|end| end > self.alloc.end().0);
        let free = self.alloc.overlaps_free(id, pages);
        if out_of_range || id < self.geometry().first_data_page() || free {
            return Err(Error::corrupted(
                id.0,
                "freed page is outside the file or already free",
            ));
        }
        Ok(())
    }

    /// Takes the committed pages this transaction freed: (reachable by the durable
    /// fallback, written after it).
    pub(crate) fn take_freed(&mut self) -> (PageRuns, PageRuns) {
        (
            std::mem::take(&mut self.freed),
            std::mem::take(&mut self.freed_volatile),
        )
    }

    /// Writes a blob now (large values do not wait in memory for the commit) into pages
    /// no snapshot can reach, and returns its reference with its checksum.
    /// `pad` bytes lie between the blob's header and the payload (`node::blob_pad`).
    pub(crate) fn write_blob(&mut self, payload: &[u8], pad: usize) -> Result<OverflowRef> {
        let g = self.geometry();
        let pages = g.blob_pages((pad + payload.len()) as u64);
        let id = self.alloc.take_run(pages);
        let blob = self.write_blob_at(id, pages, payload, pad)?;
        self.own_blobs.insert(id, pages);
        Ok(OverflowRef::new(blob, payload.len() as u64, pad))
    }

    pub(crate) fn write_blob_at(
        &mut self,
        id: PageId,
        pages: u64,
        payload: &[u8],
        pad: usize,
    ) -> Result<ChildRef> {
        let g = self.geometry();
        let head_bytes = BLOB_HEADER_BYTES + pad;
        let padding = vec![0; (pages * g.page_bytes()) as usize - head_bytes - payload.len()];
        let (head, checksum) = blob_head(self.txn, pad, payload, &padding);
        let end = g.offset(PageId(id.0 + pages));
        self.storage.ensure_len(end)?;
        self.storage
            .write_pages(id, &[&head[..head_bytes], payload, &padding])?;
        self.reader.extend_limit(self.alloc.end());
        Ok(ChildRef::new(id, checksum, self.txn))
    }

    /// Takes a run for a blob of `len` payload bytes that the caller writes itself,
    /// outside the transaction's lock (`WriteTree::insert_from`), and grows the file to
    /// hold it. Until `adopt_blob` the run is taken but unreferenced: give it back with
    /// `give_back_run` if the blob is not finished. If the file cannot grow to hold it
    /// (a full disk), the run is given back and the growth's error is the inner one:
    /// nothing changed, so the transaction stays usable.
    pub(crate) fn take_blob_run(&mut self, len: u64, pad: usize) -> Result<Result<BlobRun>> {
        let pages = self.geometry().blob_pages(len + pad as u64);
        let id = self.alloc.take_run(pages);
        self.blob_run_at(id, pages, len, pad)
    }

    /// `take_blob_run` from a free run that starts below `limit` (compaction moves a
    /// value only down), or None, taking nothing, if no such run holds it.
    pub(crate) fn take_blob_run_below(
        &mut self,
        len: u64,
        pad: usize,
        limit: PageId,
    ) -> Result<Option<BlobRun>> {
        let pages = self.geometry().blob_pages(len + pad as u64);
        match self.alloc.take_run_below(pages, limit) {
            Some(id) => Ok(Some(self.blob_run_at(id, pages, len, pad)??)),
            None => Ok(None),
        }
    }

    /// The run of `pages` pages just taken at `id`, once the file holds it; if the file
    /// cannot grow to hold it, the run is given back and the growth's error is the inner
    /// one (nothing changed).
    fn blob_run_at(
        &mut self,
        id: PageId,
        pages: u64,
        len: u64,
        pad: usize,
    ) -> Result<Result<BlobRun>> {
        let g = self.geometry();
        if let Err(e) = self.storage.ensure_len(g.offset(PageId(id.0 + pages))) {
            self.alloc.give_back(id, pages)?;
            return Ok(Err(e));
        }
        Ok(Ok(BlobRun {
            id,
            pages,
            len,
            pad,
            txn: self.txn,
            storage: Arc::clone(&self.storage),
            path: Arc::clone(&self.path),
        }))
    }

    /// Files a blob written into a run from `take_blob_run` among this transaction's
    /// own blobs, and returns the reference to it.
    pub(crate) fn adopt_blob(&mut self, run: &BlobRun, checksum: u32) -> OverflowRef {
        self.own_blobs.insert(run.id, run.pages);
        self.reader.extend_limit(self.alloc.end());
        OverflowRef::new(ChildRef::new(run.id, checksum, self.txn), run.len, run.pad)
    }

    /// Gives back a run from `take_blob_run` that was never adopted.
    pub(crate) fn give_back_run(&mut self, run: &BlobRun) -> Result<()> {
        self.alloc.give_back(run.id, run.pages)
    }

    /// Seals a blob of `pages` pages at `id` holding `payload` (which fills them), to be
    /// written with the commit's sealed pages.
    pub(crate) fn seal_blob(&mut self, id: PageId, pages: u64, payload: &[u8]) -> ChildRef {
        let (head, checksum) = blob_head(self.txn, 0, payload, &[]);
        let head = &head[..BLOB_HEADER_BYTES];
        // The header and payload fill the buffer (asserted): a recycled page will do.
        let mut buf = match pages {
            1 => self.blank_page(),
            _ => PageBox::zeroed((pages * self.geometry().page_bytes()) as usize),
        };
        assert_eq!(
            head.len() + payload.len(),
            buf.len(),
            "payload fills the blob"
        );
        buf[..head.len()].copy_from_slice(head);
        buf[head.len()..].copy_from_slice(payload);
        self.sealed.push((id, buf));
        ChildRef::new(id, checksum, self.txn)
    }

    /// The committed pages this transaction freed: (reachable by the durable fallback,
    /// written after it).
    pub(crate) fn freed(&self) -> (&PageRuns, &PageRuns) {
        (&self.freed, &self.freed_volatile)
    }
}

/// A run taken for a blob that is written outside the transaction's lock: where, how
/// long, and what is needed to write it (`crate::stream`).
pub(crate) struct BlobRun {
    pub id: PageId,
    pub pages: u64,
    /// The payload length.
    pub len: u64,
    /// Bytes between the header and the payload (`node::blob_pad`).
    pub pad: usize,
    pub txn: TxnId,
    pub storage: Arc<Storage>,
    /// The database file's path (empty without one): where direct writes open it.
    pub path: Arc<Path>,
}

/// The header of a blob holding `pad` zeros, `payload` then `padding` (in the first
/// `BLOB_HEADER_BYTES + pad` bytes returned), with the checksum of the whole run in it;
/// and that checksum.
fn blob_head(txn: TxnId, pad: usize, payload: &[u8], padding: &[u8]) -> ([u8; 128], u32) {
    let mut head = [0u8; 128];
    node::init_blob(&mut head, txn, payload.len() as u64, pad);
    let mut h = crc32fast::Hasher::new();
    h.update(&head[..4]);
    h.update(&[0; 4]);
    h.update(&head[8..BLOB_HEADER_BYTES + pad]);
    h.update(payload);
    h.update(padding);
    let checksum = h.finalize();
    head[4..8].copy_from_slice(&checksum.to_le_bytes());
    (head, checksum)
}
