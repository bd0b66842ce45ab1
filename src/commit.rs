//! Commit: give the dirty pages their final ids in as few runs as possible, seal them
//! bottom-up, record the change to the free list, write each run with `pwritev` (in
//! calls of at most 64 KiB: `backend::WRITE_CALL_BYTES`), write the meta and sync once;
//! then publish the snapshot and shorten the file when its end is free. See
//! FORMAT.md#commit-protocol.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use zerocopy::IntoBytes;

use crate::error::{Error, Result};
use crate::free_chain::{self, FreeChain, Link, Record};
use crate::freelist::PageRuns;
use crate::meta::{FORMAT_VERSION, Meta};
use crate::node::BLOB_HEADER_BYTES;
use crate::page::{ChildRef, PageId, TxnId, page_checksum};
use crate::page_buf::PageBox;
use crate::storage::Storage;
use crate::tree::{self, Pages, TreeRecord};
use crate::txn::{Durability, Snapshot};
use crate::txn_pages::TxnPages;
use crate::write_txn::{TxnInner, WriteTxn, Writer};

/// See `Durability::None`.
const FALLBACK_RUNS_MAX: usize = 512;

/// Room for this many runs more than a free-list record is known to need when its pages
/// are placed: placing the commit's pages adds a few (the runs taken).
const RECORD_SLACK_RUNS: usize = 64;

/// Where a commit's pages go: the nodes, in the order they are sealed, and the free-list
/// record.
struct Placement {
    nodes: Vec<(PageId, u64)>,
    record: (PageId, u64),
}

impl WriteTxn {
    /// Makes the changes visible to new readers, and durable if the durability is
    /// `Immediate`. See FORMAT.md#commit-protocol.
    ///
    /// An error means the commit did not take effect on this handle (after a failed
    /// sync it may still be on disk: README, "After a failed sync"), and is the error
    /// met, as it was: a reserved value's write that failed is `Error::Io` of that
    /// write's kind, a corrupt page `Error::Corrupted`; a transaction in which a change
    /// failed earlier is `Error::Io` of that failure's kind. Every error raised before
    /// the meta is written means nothing was committed. Once the meta is synced, `Ok`
    /// is returned even if shortening the file then fails; that failure refuses later
    /// writes instead.
    ///
    /// A full disk (`Error::Io` whose `kind()` is `StorageFull`, `QuotaExceeded` or
    /// `FileTooLarge`: ENOSPC, EDQUOT, EFBIG) met while the commit grows the file or
    /// writes its pages fails this commit alone: nothing is committed and the handle
    /// stays usable. It reads as before, and later commits go through once there is
    /// room, or when they fit in the file's free pages (which they then fill before
    /// growing it). Any other failed write, a failed meta write or `fdatasync` (a full
    /// disk's too), and a failed shortening of the file make the handle refuse write
    /// transactions until it is reopened (README, "A full disk").
    ///
    /// ```
    /// # fn main() -> mapkv::Result<()> {
    /// # let dir = tempfile::tempdir()?;
    /// # let db = mapkv::Database::open(dir.path().join("db"))?;
    /// let wtx = db.begin_write()?;
    /// wtx.open_tree("log")?.insert(b"entry", b"...")?;
    /// match wtx.commit() {
    ///     Ok(()) => {}
    ///     Err(mapkv::Error::Io(e)) if e.kind() == std::io::ErrorKind::StorageFull => {
    ///         // Nothing was committed: free some space and try again.
    ///     }
    ///     Err(e) => return Err(e),
    /// }
    /// # Ok(()) }
    /// ```
    pub fn commit(mut self) -> Result<()> {
        // No tree handle is borrowed any more (the commit consumes the transaction they
        // borrow), so reserved values can be written now.
        let TxnInner { pages, trees } = self.pages.inner_mut();
        // An error up to the meta's write leaves nothing committed: it is returned as
        // it came (a caller may match `ValueTooLarge`, or an I/O error's kind).
        trees.finish_reservations(pages)?;
        self.pages.get_mut().usable()?;
        // Past this point a panic could leave the file and this handle's idea of it apart
        // (a meta written, the free pages not updated): refuse all writes after one.
        let _poison_on_panic = PoisonOnPanic(Arc::clone(&self.shared.storage));
        let changed = self.pages.inner_mut().trees.take_changed();
        self.pages.get_mut().release_pinned()?;
        let nothing_changed = !self.compacting
            && changed.is_empty()
            && !self.pages.get_mut().has_dirty_pages()
            && !self.pages.get_mut().has_freed_pages();
        if nothing_changed {
            if self.durability == Durability::Immediate
                && self.writer.durable < self.base.meta.txn()
            {
                return self.make_durable();
            }
            return Ok(());
        }
        // The catalog takes each changed record now, so that its pages are dirty before
        // the pages are placed; the records are written again, same size, once sealed.
        for (name, record) in &changed {
            match record {
                Some(r) => self.put_record(name, r)?,
                None => {
                    tree::remove(self.pages.get_mut(), &mut self.catalog, name.as_bytes())?;
                }
            }
        }
        let fold = self.compacting || {
            let pages = self.pages.get_mut();
            (self.writer.chain).should_fold(pages.alloc.free(), pages.end())
        };
        if fold {
            for link in &self.writer.chain.links {
                self.pages.get_mut().free_chain_link(link)?;
            }
        }
        // A page that an earlier commit freed (still waiting for readers or a sync) is
        // unreachable: a reference to it is corrupt, and recording it freed again would
        // leave a free list that no open accepts.
        let (freed, volatile) = self.pages.get_mut().freed();
        let pending = &self.writer.pending;
        if let Some(page) = pending
            .first_overlap(freed)
            .or(pending.first_overlap(volatile))
        {
            return Err(Error::corrupted(
                page.0,
                "a page freed by an earlier commit was freed again",
            ));
        }
        let placement = self.place(fold);
        let mut ids = placement
            .nodes
            .iter()
            .flat_map(|&(s, n)| (s.0..s.0 + n).map(PageId));
        self.seal(&changed, &mut ids)?;
        assert!(
            ids.next().is_none() && !self.pages.get_mut().has_dirty_pages(),
            "every dirty page was sealed into its place"
        );
        self.pages.get_mut().alloc.trim_end();
        let (free_list, link) = self.write_free_record(fold, placement.record)?;
        let meta = Meta {
            version: FORMAT_VERSION.into(),
            txn: self.pages.get_mut().txn.0.into(),
            durable_before: self.writer.durable.0.into(),
            page_count: self.pages.get_mut().end().0.into(),
            catalog: self.catalog,
            free_list,
            ..self.base.meta
        };
        self.write_sealed_pages()?;
        let (freed, freed_volatile) = self.pages.get_mut().take_freed();
        let fallback_runs =
            self.writer.pending.fallback_runs(self.writer.durable) + freed.run_count();
        let durable = self.durability == Durability::Immediate || fallback_runs > FALLBACK_RUNS_MAX;
        if durable {
            self.write_meta(&meta)?;
        }
        let txn = self.pages.get_mut().txn;
        let w = &mut *self.writer;
        w.free = self.pages.get_mut().alloc.take_free();
        w.sweep_from = self.pages.get_mut().alloc.sweep_from();
        w.spare_pages = self.pages.get_mut().take_spare();
        self.committed = true;
        w.pending.add(txn, freed, true);
        w.pending.add(txn, freed_volatile, false);
        match fold {
            true => {
                w.chain = FreeChain {
                    links: vec![link],
                    legacy: false,
                }
            }
            false => w.chain.links.push(link),
        }
        w.snapshot_ends.insert(txn, meta.page_count());
        *self.shared.current.write() = Arc::new(Snapshot { meta });
        self.shared.commits.fetch_add(1, Ordering::Relaxed);
        // The commit stands from here on. Shortening the file only gives back space: if
        // it fails, the storage is poisoned (later writes are refused, as after any I/O
        // error), but this commit must not read as failed, or its caller would retry a
        // transaction that took effect.
        let _ = self.shrink_file(durable);
        Ok(())
    }

    fn put_record(&mut self, name: &str, record: &TreeRecord) -> Result<()> {
        tree::insert(
            self.pages.get_mut(),
            &mut self.catalog,
            name.as_bytes(),
            record.as_bytes(),
        )
    }

    /// Seals every changed tree, then the catalog, giving the pages the ids `ids` yields.
    fn seal(
        &mut self,
        changed: &[(String, Option<TreeRecord>)],
        ids: &mut dyn Iterator<Item = PageId>,
    ) -> Result<()> {
        let mut sealed = Vec::new();
        for (name, record) in changed {
            if let Some(mut r) = *record {
                r.root = tree::seal_dirty(self.pages.get_mut(), r.root, ids)?;
                sealed.push((name, r));
            }
        }
        let dirty = self.pages.get_mut().dirty_count();
        for (name, r) in sealed {
            self.put_record(name, &r)?;
        }
        assert_eq!(
            self.pages.get_mut().dirty_count(),
            dirty,
            "a record rewritten in place dirties no page"
        );
        self.catalog.root = tree::seal_dirty(self.pages.get_mut(), self.catalog.root, ids)?;
        Ok(())
    }

    /// Places the dirty pages and the free-list record: one run when the allocator can
    /// (FORMAT.md#allocation), the record at its end.
    fn record_view(&mut self) -> RecordView<'_> {
        RecordView {
            pages: self.pages.get_mut(),
            writer: &self.writer,
        }
    }

    fn place(&mut self, fold: bool) -> Placement {
        let g = self.pages.get_mut().geometry();
        let nodes = self.pages.get_mut().dirty_count();
        let runs = self.record_view().record_runs_bound(fold) + RECORD_SLACK_RUNS;
        let record_pages = g.blob_pages(free_chain::encoded_len(runs));
        let (freed, volatile) = self.pages.get_mut().freed();
        let waiting = freed.page_count()
            + volatile.page_count()
            + self
                .writer
                .pending
                .all()
                .map(PageRuns::page_count)
                .sum::<u64>();
        let mut placed = self
            .pages
            .get_mut()
            .alloc
            .take_pages(nodes + record_pages, waiting);
        // The record goes at the end of the last run that can hold it.
        if let Some(i) = placed.iter().rposition(|&(_, n)| n >= record_pages) {
            let (s, n) = placed[i];
            placed[i] = (s, n - record_pages);
            placed.retain(|&(_, n)| n > 0);
            return Placement {
                nodes: placed,
                record: (PageId(s.0 + n - record_pages), record_pages),
            };
        }
        // Scattered over runs shorter than the record: the record gets a run of its own
        // and the last `record_pages` pages placed are given back.
        let record = (
            self.pages.get_mut().alloc.take_run(record_pages),
            record_pages,
        );
        let mut surplus = record_pages;
        while surplus > 0 {
            let (s, n) = placed.pop().expect("placed pages cover the surplus");
            let back = n.min(surplus);
            self.pages
                .get_mut()
                .alloc
                .give_back(PageId(s.0 + n - back), back)
                .expect("pages just taken can be given back");
            if n > back {
                placed.push((s, n - back));
            }
            surplus -= back;
        }
        Placement {
            nodes: placed,
            record,
        }
    }

    /// Encodes the free-list record into its placed pages (or a larger run, if placing
    /// added more runs than its slack) as a sealed blob. Returns its reference and link.
    fn write_free_record(&mut self, fold: bool, placed: (PageId, u64)) -> Result<(ChildRef, Link)> {
        let g = self.pages.get_mut().geometry();
        let (mut at, mut pages) = placed;
        loop {
            let capacity = (pages * g.page_bytes()) as usize - BLOB_HEADER_BYTES;
            if let Some(payload) = self.record_view().encode_record(fold, capacity)? {
                let blob = self.pages.get_mut().seal_blob(at, pages, &payload);
                return Ok((blob, Link { blob, pages }));
            }
            // Too small: take a run that holds the record as it stands, plus room for
            // what giving back the old run and taking the new one can add.
            let needed = g.blob_pages(free_chain::encoded_len(
                self.record_view().record_runs_bound(fold) + 4,
            ));
            let bigger = self.pages.get_mut().alloc.take_run(needed);
            self.pages.get_mut().alloc.give_back(at, pages)?;
            (at, pages) = (bigger, needed);
        }
    }

    /// Writes the base snapshot's meta so that it becomes durable (after `None` commits).
    fn make_durable(&mut self) -> Result<()> {
        let meta = Meta {
            durable_before: self.writer.durable.0.into(),
            ..self.base.meta
        };
        self.write_meta(&meta)
    }

    /// Writes `meta` into the slot that does not hold the durable fallback, then syncs:
    /// the commit's one fdatasync covers its pages, its meta and any file growth.
    fn write_meta(&mut self, meta: &Meta) -> Result<()> {
        let slot = 1 - self.writer.durable_slot;
        write_meta_slot(&self.shared.storage, slot, meta)?;
        self.shared.storage.sync()?;
        self.writer.durable = meta.txn();
        self.writer.durable_slot = slot;
        Ok(())
    }

    /// Writes the sealed pages, adjacent pages together, after growing the file
    /// (in steps) to hold them; then the zeros ahead (`Storage::write_ahead`).
    fn write_sealed_pages(&mut self) -> Result<()> {
        let storage = Arc::clone(&self.shared.storage);
        let g = self.pages.get_mut().geometry();
        let end = g.offset(self.pages.get_mut().end());
        storage.ensure_len(end)?;
        let pages = self.pages.get_mut().take_sealed();
        let adjacent = |a: &(PageId, PageBox), b: &(PageId, PageBox)| {
            b.0.0 == a.0.0 + a.1.len() as u64 / g.page_bytes()
        };
        for run in pages.chunk_by(adjacent) {
            let bufs: Vec<&[u8]> = run.iter().map(|(_, b)| &b[..]).collect();
            debug_assert!(run.iter().all(|(_, b)| b.len() > g.page_size
                || page_checksum(b) == crate::page::header(b).checksum.get()));
            storage.write_pages(run[0].0, &bufs)?;
        }
        for (_, page) in pages {
            self.pages.get_mut().recycle(page);
        }
        storage.write_ahead(end)
    }

    /// Forgets the ends of snapshots no reader holds, and after a durable commit (which
    /// is then the fallback) shortens the file to the furthest end a live snapshot has
    /// (its reader may touch pages up to there), when that frees enough to be worth it.
    /// Runs after the snapshot is published: a reader that registers later sees the new
    /// end. See FORMAT.md#shrinking-the-file.
    fn shrink_file(&mut self, durable: bool) -> Result<()> {
        let w = &mut *self.writer;
        let current = self.shared.current.read().meta.txn();
        let oldest = (self.shared.readers.oldest().map(TxnId)).map_or(current, |o| o.min(current));
        w.snapshot_ends = w.snapshot_ends.split_off(&oldest);
        if !durable {
            return Ok(());
        }
        let end = w
            .snapshot_ends
            .values()
            .max()
            .copied()
            .expect("the newest is listed");
        let g = self.shared.storage.geometry;
        match self.compacting {
            true => self.shared.storage.trim_to(g.offset(end)),
            false => self.shared.storage.shrink_to(g.offset(end)),
        }
    }
}

/// Poisons the storage if dropped while the thread panics (see `WriteTxn::commit`).
struct PoisonOnPanic(Arc<Storage>);

impl Drop for PoisonOnPanic {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self
                .0
                .poison(std::io::Error::other("a commit was interrupted by a panic"));
        }
    }
}

pub(crate) fn write_meta_slot(storage: &Storage, slot: u64, meta: &Meta) -> Result<()> {
    assert!(slot < 2, "meta slot {slot}");
    let bytes = meta.encode();
    storage.write_meta_at(slot * crate::page::META_SLOT_BYTES, &[&bytes])
}

/// What the free-list record is made of: the transaction's pages and the writer's state.
struct RecordView<'a> {
    pages: &'a TxnPages,
    writer: &'a Writer,
}

impl RecordView<'_> {
    /// At most how many runs the free-list record lists, before placement.
    fn record_runs_bound(&self, fold: bool) -> usize {
        let (added, removed) = self.record_sets(fold);
        let added: usize = added.iter().map(|r| r.run_count()).sum();
        added + removed.map_or(0, PageRuns::run_count) + 2
    }

    /// The sets the free-list record lists: for a full record the whole free set
    /// (reusable, freed by this commit, waiting for readers or a sync); for a change,
    /// what this commit added to the free set and what it took from it.
    fn record_sets(&self, fold: bool) -> (Vec<&PageRuns>, Option<&PageRuns>) {
        let (freed, volatile) = self.pages.freed();
        let alloc = &self.pages.alloc;
        match fold {
            true => {
                let mut added = vec![alloc.free(), freed, volatile];
                added.extend(self.writer.pending.all());
                (added, None)
            }
            false => (
                vec![freed, volatile, alloc.grown_free()],
                Some(alloc.taken()),
            ),
        }
    }

    /// The record's payload padded to `capacity`; None if it does not fit.
    fn encode_record(&self, fold: bool, capacity: usize) -> Result<Option<Vec<u8>>> {
        let (added, removed) = self.record_sets(fold);
        let empty = PageRuns::new();
        let chain = &self.writer.chain;
        let (prev, below) = match fold {
            true => (ChildRef::NULL, 0),
            false => (chain.head(), chain.links.len() as u32),
        };
        Record {
            prev,
            below,
            page_count: self.pages.end(),
            added: &added,
            removed: removed.unwrap_or(&empty),
        }
        .encode(capacity)
    }
}
