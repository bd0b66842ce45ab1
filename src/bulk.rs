//! Building a tree bottom-up from sorted entries: leaves filled in order, each branch
//! level built from the level below, pages written sequentially as they complete.
//! Used by `Database::bulk_load` and `Database::compact_to`. See FORMAT.md#bulk-load.

use std::sync::Arc;

use zerocopy::little_endian::{U32, U64};

use crate::error::Result;
use crate::node::{
    self, Cell, LeafValue, Node, OverflowRef, Rebuilt, encode_branch_cell, encode_leaf_cell,
    is_underfull,
};
use crate::page::{ChildRef, Geometry, PageId, PageKind, TxnId, seal};
use crate::storage::Storage;
use crate::tree::{DEPTH_MAX, TreeRecord};

/// Where built pages go: sequential page ids from `next`, written in large chunks.
pub(crate) struct SeqWriter {
    storage: Arc<Storage>,
    /// First page of `buf`.
    buf_start: PageId,
    buf: Vec<u8>,
    chunk_bytes: usize,
    pub next: PageId,
    pub bytes_written: u64,
}

impl SeqWriter {
    pub(crate) fn new(storage: Arc<Storage>, start: PageId) -> SeqWriter {
        let chunk_bytes = 4 << 20;
        SeqWriter {
            storage,
            buf_start: start,
            buf: Vec::with_capacity(chunk_bytes),
            chunk_bytes,
            next: start,
            bytes_written: 0,
        }
    }

    fn geometry(&self) -> Geometry {
        self.storage.geometry
    }

    /// Appends whole pages; returns the id of the first.
    fn append(&mut self, parts: &[&[u8]]) -> Result<PageId> {
        let id = self.next;
        let len: usize = parts.iter().map(|p| p.len()).sum();
        let page = self.geometry().page_size;
        assert!(len % page == 0, "appends are whole pages");
        for p in parts {
            self.buf.extend_from_slice(p);
        }
        self.next = PageId(id.0 + (len / page) as u64);
        if self.buf.len() >= self.chunk_bytes {
            self.flush()?;
        }
        Ok(id)
    }

    pub(crate) fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let end = self.storage.geometry.offset(self.next);
        self.storage.ensure_len(end)?;
        self.storage.write_pages(self.buf_start, &[&self.buf])?;
        self.bytes_written += self.buf.len() as u64;
        self.buf.clear();
        self.buf_start = self.next;
        Ok(())
    }

    /// Writes a sealed page, returning its reference.
    fn page(&mut self, page: &mut [u8], txn: TxnId) -> Result<ChildRef> {
        let checksum = seal(page);
        let id = self.append(&[page])?;
        Ok(ChildRef::new(id, checksum, txn))
    }

    /// Writes a blob (a large value) as a run of pages.
    fn blob(&mut self, payload: &[u8], txn: TxnId) -> Result<OverflowRef> {
        let g = self.geometry();
        let pages = g.blob_pages(payload.len() as u64);
        let mut head = vec![0u8; node::BLOB_HEADER_BYTES];
        node::init_blob(&mut head, txn, payload.len() as u64);
        let padding = vec![0; (pages * g.page_bytes()) as usize - head.len() - payload.len()];
        let mut h = crc32fast::Hasher::new();
        h.update(&head[..4]);
        h.update(&[0; 4]);
        h.update(&head[8..]);
        h.update(payload);
        h.update(&padding);
        let checksum = h.finalize();
        head[4..8].copy_from_slice(&checksum.to_le_bytes());
        let id = self.append(&[&head, payload, &padding])?;
        Ok(OverflowRef {
            blob: ChildRef::new(id, checksum, txn),
            len: U64::new(payload.len() as u64),
        })
    }
}

/// One level of the tree under construction: the page being filled and the full page
/// before it, held back so the last two pages can be evened out at the end.
struct Level {
    kind: PageKind,
    current: Box<[u8]>,
    /// The key that separates `held` from `current` (None while `current` is the first
    /// page of the level).
    separator_before_current: Option<Vec<u8>>,
    held: Option<HeldPage>,
    pages_written: u64,
}

/// A full page not yet written, with the key that separates it from the page before it
/// (None for the first page of its level).
type HeldPage = (Box<[u8]>, Option<Vec<u8>>);

/// Builds one tree from entries in strictly ascending key order.
pub(crate) struct TreeBuilder {
    geometry: Geometry,
    txn: TxnId,
    levels: Vec<Level>,
    entries: u64,
    cell: Vec<u8>,
}

impl TreeBuilder {
    pub(crate) fn new(geometry: Geometry, txn: TxnId) -> TreeBuilder {
        TreeBuilder {
            geometry,
            txn,
            levels: Vec::new(),
            entries: 0,
            cell: Vec::new(),
        }
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries
    }

    /// Adds the next entry; its key must be greater than every key added before.
    pub(crate) fn add(&mut self, out: &mut SeqWriter, key: &[u8], value: &[u8]) -> Result<()> {
        let stored =
            if node::value_fits_inline(key.len(), value.len() as u64, self.geometry.page_size) {
                LeafValue::Inline(value)
            } else {
                LeafValue::Overflow(out.blob(value, self.txn)?)
            };
        let mut cell = std::mem::take(&mut self.cell);
        encode_leaf_cell(&mut cell, key, &stored);
        let r = self.push(out, 0, Cell { key, bytes: &cell });
        self.cell = cell;
        self.entries += 1;
        r
    }

    fn new_level(&self, kind: PageKind) -> Level {
        let mut current = vec![0; self.geometry.page_size].into_boxed_slice();
        node::init(&mut current, kind, self.txn);
        Level {
            kind,
            current,
            separator_before_current: None,
            held: None,
            pages_written: 0,
        }
    }

    /// Appends a cell to level `at`, starting a new page when the current one is full.
    fn push(&mut self, out: &mut SeqWriter, at: usize, cell: Cell) -> Result<()> {
        if self.levels.len() == at {
            let kind = if at == 0 {
                PageKind::Leaf
            } else {
                PageKind::Branch
            };
            self.levels.push(self.new_level(kind));
        }
        let level = &mut self.levels[at];
        if node::push_cell(&mut level.current, level.kind, cell) {
            return Ok(());
        }
        // The page is full: it becomes the held page, and a new page starts with `cell`
        // (for branches: with `cell`'s child as leftmost, its key as the separator).
        let kind = level.kind;
        let mut fresh = vec![0; self.geometry.page_size].into_boxed_slice();
        node::init(&mut fresh, kind, self.txn);
        let separator = match kind {
            PageKind::Leaf => {
                let full = Node::parse(&level.current, PageId(0))?;
                let last = full.key(full.len() - 1)?;
                let sep = node::separator(last, cell.key).to_vec();
                assert!(
                    node::push_cell(&mut fresh, kind, cell),
                    "one cell fits an empty page"
                );
                sep
            }
            _ => {
                node::set_leftmost(&mut fresh, &cell.child());
                cell.key.to_vec()
            }
        };
        let full = std::mem::replace(&mut level.current, fresh);
        let full_separator = level.separator_before_current.replace(separator);
        if let Some((held, held_sep)) = level.held.replace((full, full_separator)) {
            self.write_up(out, at, held, held_sep)?;
        }
        Ok(())
    }

    /// Writes a finished page of level `at` and adds it to the level above.
    fn write_up(
        &mut self,
        out: &mut SeqWriter,
        at: usize,
        mut page: Box<[u8]>,
        separator: Option<Vec<u8>>,
    ) -> Result<()> {
        let r = out.page(&mut page, self.txn)?;
        self.levels[at].pages_written += 1;
        if at + 1 >= DEPTH_MAX as usize {
            return Err(crate::error::Error::corrupted(
                r.page.get(),
                "bulk tree too deep",
            ));
        }
        match separator {
            None => {
                // The first page of this level: the leftmost child of the parent level.
                if self.levels.len() == at + 1 {
                    self.levels.push(self.new_level(PageKind::Branch));
                }
                node::set_leftmost(&mut self.levels[at + 1].current, &r);
                Ok(())
            }
            Some(sep) => {
                let mut cell = Vec::new();
                encode_branch_cell(&mut cell, &sep, &r);
                self.push(
                    out,
                    at + 1,
                    Cell {
                        key: &sep,
                        bytes: &cell,
                    },
                )
            }
        }
    }

    /// Writes the remaining pages and returns the tree's record.
    pub(crate) fn finish(mut self, out: &mut SeqWriter) -> Result<TreeRecord> {
        if self.entries == 0 {
            return Ok(TreeRecord::EMPTY);
        }
        let mut at = 0;
        loop {
            self.even_out_last_two(at)?;
            let level = &mut self.levels[at];
            if level.pages_written == 0 && level.held.is_none() {
                // The only page of its level: the root.
                let mut root = std::mem::take(&mut level.current);
                let r = out.page(&mut root, self.txn)?;
                return Ok(TreeRecord {
                    root: r,
                    entries: U64::new(self.entries),
                    depth: U32::new(at as u32 + 1),
                    reserved: U32::ZERO,
                });
            }
            let current = std::mem::take(&mut level.current);
            let current_sep = level.separator_before_current.take();
            if let Some((held, held_sep)) = level.held.take() {
                self.write_up(out, at, held, held_sep)?;
            }
            self.write_up(out, at, current, current_sep)?;
            at += 1;
        }
    }

    /// If the level's last page is underfull, merges it into the held page or shares
    /// cells between the two, as a remove would.
    fn even_out_last_two(&mut self, at: usize) -> Result<()> {
        let (page_size, txn) = (self.geometry.page_size, self.txn);
        let level = &mut self.levels[at];
        let Some((held, held_sep)) = level.held.take() else {
            return Ok(());
        };
        let current = Node::parse(&level.current, PageId(0))?;
        if !is_underfull(current.used_bytes(), page_size) {
            level.held = Some((held, held_sep));
            return Ok(());
        }
        let sep = level
            .separator_before_current
            .take()
            .expect("a held page has a successor");
        let first = Node::parse(&held, PageId(0))?;
        match node::rebuild_siblings(page_size, txn, &first, &sep, &current)? {
            Rebuilt::One(merged) => {
                level.current = merged;
                level.separator_before_current = held_sep;
            }
            Rebuilt::Two(left, new_sep, right) => {
                level.held = Some((left, held_sep));
                level.current = right;
                level.separator_before_current = Some(new_sep);
            }
        }
        Ok(())
    }
}
