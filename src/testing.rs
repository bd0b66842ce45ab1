//! Hooks for crash and fault-injection tests and fuzzers (`mapkv::testing`, hidden from
//! the docs). Not part of the stable API.

use std::fs::File;
use std::io;
use std::sync::Arc;

use parking_lot::Mutex;

pub use crate::backend::Backend;
use crate::{Database, Options, Result};

mod space;
use space::Blocks;
pub use space::{BLOCK_BYTES, Space};

/// Opens a database whose file operations go through `backend` (no lock is taken,
/// nothing is mapped unless the backend offers a file).
pub fn open_with_backend(backend: Box<dyn Backend>, options: Options) -> Result<Database> {
    Database::open_backend(backend, options, None)
}

/// Parses `bytes` as a branch or leaf page and reads every slot, key, value (inline
/// bytes or overflow reference) and child reference, and checks the slot prefixes;
/// then as the first page of a blob. For fuzzers: any bytes give `Ok` or
/// `Error::Corrupted`, never a panic. Returns the node's slot count.
pub fn decode_page(bytes: &[u8]) -> Result<usize> {
    use crate::node::{LeafValue, Node, blob_payload};
    use crate::page::PageId;
    let id = PageId(2);
    let _ = blob_payload(bytes, id);
    let node = Node::parse(bytes, id)?;
    let _ = (node.kind(), node.txn(), node.used_bytes());
    for i in 0..node.len() {
        let key = node.key(i)?;
        if node.is_leaf()
            && let LeafValue::Overflow(o) = node.value(i)?
        {
            let _ = (o.blob.page(), o.value_len());
        }
        // A search for a key that is present must find it unless the page is corrupt
        // in a way only `check` reports (wrong prefixes, keys out of order).
        let _ = node.search(key)?;
    }
    if !node.is_leaf() {
        for i in 0..=node.len() {
            let _ = node.child(i)?.page();
        }
        let _ = node.child_index(b"fuzz")?;
    }
    node.verify_prefixes()?;
    Ok(node.len())
}

/// Decodes a meta slot; a meta that decodes must encode again to the same bytes
/// (`Meta::encode` panics on a meta that `decode` would reject: the paired check).
pub fn decode_meta(bytes: &[u8]) -> Result<u64> {
    let meta = crate::meta::Meta::decode(bytes, 0)?;
    let encoded = meta.encode();
    assert_eq!(
        &encoded[..],
        &bytes[..encoded.len()],
        "meta re-encodes differently"
    );
    Ok(meta.txn().0)
}

/// Decodes a free-list payload whose runs must lie in `first..end`; what decodes
/// must encode back to the same bytes (up to the zero padding). Returns the page count.
pub fn decode_free_list(bytes: &[u8], first: u64, end: u64) -> Result<u64> {
    use crate::freelist::PageRuns;
    use crate::page::PageId;
    let runs = PageRuns::decode(bytes, PageId(first), PageId(end), PageId(2))?;
    let mut encoded = Vec::new();
    runs.encode(&mut encoded);
    assert_eq!(
        &encoded[..],
        &bytes[..encoded.len()],
        "free list re-encodes differently"
    );
    Ok(runs.page_count())
}

/// Decodes a free-list record (format 2) and applies it to the empty set (4 KiB
/// pages), as the full record at the bottom of a chain is; returns the free pages.
pub fn decode_free_record(bytes: &[u8]) -> Result<u64> {
    crate::free_chain::apply_full(bytes)
}

/// Committed pages `txn` has copied (shadowed) so far: what its changes cost in page
/// copies, including copies that were freed again and never reach the file.
pub fn pages_copied(txn: &crate::WriteTxn) -> u64 {
    txn.pages_copied()
}

/// What the write side of a handle carries from one write transaction to the next: the
/// free pages, the pages waiting for readers or a sync, the durable fallback and its
/// slot, the free list's chain, the ends of the snapshots that may be live, and how far
/// the file is known to be written. Equal values mean the next write transaction starts
/// from the same place (a failed commit must leave it as it found it). Taken under the
/// writer lock: not while a write transaction is alive.
#[derive(Debug, PartialEq, Eq)]
pub struct WriterState(String);

/// See [`WriterState`].
pub fn writer_state(db: &Database) -> WriterState {
    let shared = &db.shared;
    let w = shared.writer.lock();
    let free: Vec<(u64, u64)> = w.free.runs().map(|(s, n)| (s.0, n)).collect();
    let chain: Vec<(u64, u64)> = (w.chain.links.iter())
        .map(|l| (l.blob.page().0, l.pages))
        .collect();
    let meta = shared.current.read().meta;
    WriterState(format!(
        "free {free:?}\npending {:?}\ndurable {:?} in slot {}\nchain {chain:?} legacy {}\n\
         snapshot ends {:?}\nnewest {:?}\nwritten to {}",
        w.pending,
        w.durable,
        w.durable_slot,
        w.chain.legacy,
        w.snapshot_ends,
        meta,
        shared.storage.written_len()
    ))
}

/// The pages the next write transaction may overwrite (first page, pages), once it has
/// taken the pages that no reader or fallback holds any more (`begin_write` does that).
pub fn free_runs(db: &Database) -> Vec<(u64, u64)> {
    let w = db.shared.writer.lock();
    w.free.runs().map(|(s, n)| (s.0, n)).collect()
}

/// The length the handle takes the file to have: never more than the file's real
/// length (readers would fault on a map past it).
pub fn file_len(db: &Database) -> u64 {
    db.shared.storage.file_len()
}

/// Decodes a tree record (36 bytes; anything else is an error).
pub fn decode_tree_record(bytes: &[u8]) -> Result<u64> {
    let r = crate::tree::TreeRecord::decode(bytes, crate::page::PageId(2))?;
    Ok(r.entries.get())
}

/// What a test layers over a [`MemFile`]: each hook runs before its operation, outside
/// the file's lock. The defaults change nothing.
pub trait MemHooks: Send + Sync + 'static {
    /// Before a read.
    fn read(&self) {}
    /// Before a write of `bufs` at `offset`: whether it reaches the bytes (false: it is
    /// lost, as a power cut loses what the disk had not stored yet).
    fn write(&self, bufs: &[&[u8]], offset: u64) -> bool {
        let _ = (bufs, offset);
        true
    }
    /// Before a sync.
    fn sync(&self) {}
    /// Before the length is set.
    fn set_len(&self, len: u64) {
        let _ = len;
    }
}

/// The hooks that change nothing.
struct NoHooks;

impl MemHooks for NoHooks {}

/// A file in memory behind [`Backend`]: no file system and no map, every read through
/// `read_exact_at`, every write applied at once (a sync does nothing more). Clones share
/// the bytes, the hooks and the room on the disk ([`Space`]: unlimited unless set), so a
/// database can be reopened on what another left.
#[derive(Clone)]
pub struct MemFile {
    state: Arc<Mutex<MemState>>,
    hooks: Arc<dyn MemHooks>,
}

struct MemState {
    bytes: Vec<u8>,
    blocks: Blocks,
}

impl Default for MemFile {
    fn default() -> MemFile {
        MemFile::new(Vec::new())
    }
}

impl MemFile {
    /// A file holding `bytes`.
    pub fn new(bytes: Vec<u8>) -> MemFile {
        let blocks = Blocks::full(bytes.len() as u64);
        MemFile {
            state: Arc::new(Mutex::new(MemState { bytes, blocks })),
            hooks: Arc::new(NoHooks),
        }
    }

    /// This file's bytes (shared, not copied) behind `hooks`.
    pub fn with_hooks(&self, hooks: Arc<dyn MemHooks>) -> MemFile {
        MemFile {
            state: Arc::clone(&self.state),
            hooks,
        }
    }

    /// Sets the room the file has from now on (a full disk, a quota, a largest file).
    /// The bytes it was created with count as allocated; what was written since, as
    /// written.
    pub fn set_space(&self, space: Space) {
        self.state.lock().blocks.space = space;
    }

    /// The room the file has.
    pub fn space(&self) -> Space {
        self.state.lock().blocks.space
    }

    /// Bytes of the blocks the file has allocated (`Space` says how they are counted).
    pub fn allocated(&self) -> u64 {
        self.state.lock().blocks.used_bytes()
    }

    /// Whether every block of `len` bytes at `offset` is allocated: a write there needs
    /// no room.
    pub fn is_allocated(&self, offset: u64, len: u64) -> bool {
        self.state.lock().blocks.covers(offset, len)
    }

    /// A backend on these bytes, for [`open_with_backend`].
    pub fn backend(&self) -> Box<dyn Backend> {
        Box::new(self.clone())
    }

    /// A copy of the bytes as they are now.
    pub fn contents(&self) -> Vec<u8> {
        self.state.lock().bytes.clone()
    }
}

// SAFETY: `file()` is None: nothing is mapped, every read copies out under the lock.
#[allow(unsafe_code)]
unsafe impl Backend for MemFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.hooks.read();
        let bytes = &self.state.lock().bytes;
        let src = usize::try_from(offset)
            .ok()
            .and_then(|start| bytes.get(start..start.checked_add(buf.len())?))
            .ok_or(io::ErrorKind::UnexpectedEof)?;
        buf.copy_from_slice(src);
        Ok(())
    }

    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()> {
        if !self.hooks.write(bufs, offset) {
            return Ok(());
        }
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let start = usize::try_from(offset).map_err(io::Error::other)?;
        let end = start
            .checked_add(total)
            .ok_or(io::ErrorKind::InvalidInput)?;
        let mut state = self.state.lock();
        // As far as the disk has room: the bytes before the first block it could not
        // give are written, then the error.
        let (reach, error) = state.blocks.write(start as u64, end as u64);
        let reach = reach as usize;
        let bytes = &mut state.bytes;
        if bytes.len() < reach && reach > start {
            bytes.resize(reach, 0);
        }
        let mut at = start;
        for b in bufs {
            let n = b.len().min(reach.saturating_sub(at));
            bytes[at..at + n].copy_from_slice(&b[..n]);
            at += b.len();
        }
        error.map_or(Ok(()), Err)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.hooks.sync();
        Ok(())
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.state.lock().bytes.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.hooks.set_len(len);
        let new = usize::try_from(len).map_err(io::Error::other)?;
        let mut state = self.state.lock();
        let old = state.bytes.len() as u64;
        state.blocks.set_len(old, len)?;
        state.bytes.resize(new, 0);
        Ok(())
    }

    fn file(&self) -> Option<&File> {
        None
    }
}
