//! Where the bulk loader's pages go: sequential page ids past the committed end of the
//! file. A sealer thread checksums them and gathers them into large aligned chunks;
//! writer threads write the chunks (with `O_DIRECT` where the file system allows it)
//! while the builder builds the next pages. See FORMAT.md#bulk-load.

use std::collections::HashMap;
use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, SyncSender, channel, sync_channel};
use std::thread::JoinHandle;

use parking_lot::Mutex;

use super::direct::{self, AlignedBuf, DirectFile};
use crate::error::{Error, Result};
use crate::node::{self, OverflowRef};
use crate::page::{ChildRef, Geometry, PageId, PageKind, TxnId, seal};
use crate::storage::Storage;

/// Bytes per write: large enough that the disk streams at full speed, small enough that
/// a few of them are a modest amount of memory. A multiple of every page size.
const CHUNK_BYTES: usize = 2 << 20;
const _: () = assert!(CHUNK_BYTES.is_multiple_of(crate::page::PAGE_SIZE_MAX));

/// Writer threads: two, so that one write is queued at the device while the thread of
/// the previous one wakes up (one thread leaves the device idle between writes).
const WRITERS: usize = 2;

/// Chunk buffers in all: one being filled, the others queued for or in the writers, so
/// building overlaps writing. Memory is `CHUNK_BYTES × BUFFERS`, whatever the input size.
const BUFFERS: usize = 4;

/// What the writer threads did.
pub(crate) struct WriteReport {
    /// True if every chunk was written with `O_DIRECT` (or would have been: no chunks).
    pub direct_io: bool,
    /// Why direct I/O was not used, if it was not.
    pub refused: Option<String>,
    pub bytes_written: u64,
}

/// A filled chunk and where it goes.
struct Chunk {
    offset: u64,
    buf: AlignedBuf,
}

/// Bytes of a blob sent to the sealer in one message (blobs are copied in pieces, so a
/// huge value never needs a second copy of itself in memory).
const BLOB_PIECE_BYTES: usize = 1 << 20;

/// Pages queued between the builder and the sealer: the batches in the channel and the
/// one being filled. With the batch the sealer is working on, at most
/// `PAGES_IN_FLIGHT + BATCH_LEN` (320) pages are in flight (FORMAT.md#bulk-load).
const PAGES_IN_FLIGHT: usize = 256;

/// Messages the builder sends the sealer at once, unless they hold `BLOB_PIECE_BYTES`
/// before that. The sealer, faster than the builder, sleeps whenever it has caught up,
/// so each message costs the builder (the bottleneck) a futex wake: sent one by one,
/// pages cost it more in wake-ups than in filling their last few entries. Batches of 64
/// still leave three queued (with the one being filled, under `PAGES_IN_FLIGHT`).
const BATCH_LEN: usize = 64;
const _: () = assert!(PAGES_IN_FLIGHT.is_multiple_of(BATCH_LEN));

/// Messages for the sealer, in page order.
type Batch = Vec<ToSealer>;

/// What the builder sends the sealer, in page order.
enum ToSealer {
    /// A finished node page, not yet sealed: its branch references carry placeholder
    /// checksums that the sealer fills in from the children it sealed before.
    Page {
        id: PageId,
        page: Box<[u8]>,
    },
    /// Bytes of a blob, final (blobs are sealed by the builder, which holds the value).
    Bytes(Vec<u8>),
    Zeros(usize),
    /// Asks for the checksum of page `id` (the root of a finished tree).
    Checksum {
        id: PageId,
        reply: Sender<Option<u32>>,
    },
}

/// Writes pages at sequential ids from `start`, the first page past everything any
/// snapshot can reach. Nothing reads these pages before the commit that makes them
/// reachable (FORMAT.md#bulk-load says why direct writes there keep the map and the page
/// cache coherent).
///
/// Three stages on their own threads, so that building the tree (the caller's thread,
/// which owns the input), sealing and gathering pages into chunks (the sealer thread)
/// and writing (the writer threads) overlap. A page's checksum is known only once the
/// sealer has sealed it, so the references the builder puts into branch pages carry a
/// placeholder checksum; the sealer, which sees every child before its parent (pages
/// are written bottom-up), replaces it before sealing the branch.
///
/// Dropping it without `finish` stops and joins every thread, so no write outlives the
/// load.
pub(crate) struct SeqWriter {
    geometry: Geometry,
    /// The page the next append gets.
    next: PageId,
    /// Messages not yet sent to the sealer (fewer than `BATCH_LEN`), and their bytes.
    batch: Batch,
    batch_bytes: usize,
    to_sealer: Option<SyncSender<Batch>>,
    /// Page buffers the sealer is done with, for the builder to reuse, as the sealer
    /// gives them back (a batch's worth at a time) and as the builder takes them.
    returned: Receiver<Vec<Box<[u8]>>>,
    spares: Vec<Box<[u8]>>,
    sealer: Option<JoinHandle<Result<WriteReport>>>,
}

impl SeqWriter {
    /// Starts the sealer and writer threads. With `direct_path` (the database file's
    /// path) pages are written with `O_DIRECT` if the file system allows; otherwise, or
    /// if it refuses, through `storage` (buffered writes; the commit's fdatasync makes
    /// them durable).
    pub(crate) fn start(
        storage: Arc<Storage>,
        start: PageId,
        direct_path: Option<&Path>,
    ) -> Result<SeqWriter> {
        let geometry = storage.geometry;
        let chunks = ChunkWriter::start(storage, start, direct_path)?;
        // Queued batches and the one being filled hold at most PAGES_IN_FLIGHT pages.
        let (to_sealer, from_builder) = sync_channel(PAGES_IN_FLIGHT / BATCH_LEN - 1);
        let (give_back, returned) = channel();
        let sealer = std::thread::Builder::new()
            .name("mapkv-bulk-sealer".into())
            // On failure the closure, and with it the chunk writer, is dropped, which
            // stops and joins the writer threads.
            .spawn(move || seal_pages(chunks, from_builder, give_back))?;
        Ok(SeqWriter {
            geometry,
            next: start,
            batch: Vec::with_capacity(BATCH_LEN),
            batch_bytes: 0,
            to_sealer: Some(to_sealer),
            returned,
            spares: Vec::new(),
            sealer: Some(sealer),
        })
    }

    /// The page the next append gets: one past the last page appended.
    pub(crate) fn next(&self) -> PageId {
        self.next
    }

    /// A page buffer to reuse, if the sealer has one to give back (its content is
    /// stale: initialise it).
    pub(crate) fn spare_page(&mut self) -> Option<Box<[u8]>> {
        if self.spares.is_empty()
            && let Ok(pages) = self.returned.try_recv()
        {
            self.spares = pages;
        }
        self.spares.pop()
    }

    /// Appends a finished node page, to be sealed and written. The reference returned
    /// has a placeholder checksum: put it only into a branch page appended later (the
    /// sealer fills it in), or ask for the real one with `resolve`.
    pub(crate) fn page(&mut self, page: Box<[u8]>, txn: TxnId) -> Result<ChildRef> {
        assert_eq!(page.len(), self.geometry.page_size, "whole pages");
        let id = self.next;
        self.send(ToSealer::Page { id, page })?;
        self.next = PageId(id.0 + 1);
        Ok(ChildRef::new(id, PLACEHOLDER_CHECKSUM, txn))
    }

    /// The reference `r` (from `page`) with its real checksum: waits until the sealer
    /// has sealed that page. For roots, whose parent is a tree record.
    pub(crate) fn resolve(&mut self, r: ChildRef) -> Result<ChildRef> {
        let (reply, answer) = channel();
        self.send(ToSealer::Checksum {
            id: r.page(),
            reply,
        })?;
        self.flush()?;
        match answer.recv() {
            Ok(Some(checksum)) => Ok(ChildRef::new(r.page(), checksum, r.txn())),
            Ok(None) => panic!("page {:?} was not sealed", r.page()),
            Err(_) => Err(self.stop()),
        }
    }

    /// Writes a blob (a large value) as a run of pages, `pad` bytes between its header
    /// and the payload. See FORMAT.md#overflow-values.
    pub(crate) fn blob(&mut self, payload: &[u8], pad: usize, txn: TxnId) -> Result<OverflowRef> {
        let g = self.geometry;
        let pages = g.blob_pages((pad + payload.len()) as u64);
        let mut head = vec![0u8; node::BLOB_HEADER_BYTES + pad];
        node::init_blob(&mut head, txn, payload.len() as u64, pad);
        let padding = (pages * g.page_bytes()) as usize - head.len() - payload.len();
        let mut h = crc32fast::Hasher::new();
        h.update(&head[..4]);
        h.update(&[0; 4]);
        h.update(&head[8..]);
        h.update(payload);
        let zeros = [0u8; 4096];
        let mut left = padding;
        while left > 0 {
            let n = left.min(zeros.len());
            h.update(&zeros[..n]);
            left -= n;
        }
        let checksum = h.finalize();
        head[4..8].copy_from_slice(&checksum.to_le_bytes());
        let id = self.next;
        self.send(ToSealer::Bytes(head))?;
        for piece in payload.chunks(BLOB_PIECE_BYTES) {
            self.send(ToSealer::Bytes(piece.to_vec()))?;
        }
        self.send(ToSealer::Zeros(padding))?;
        self.next = PageId(id.0 + pages);
        Ok(OverflowRef::new(
            ChildRef::new(id, checksum, txn),
            payload.len() as u64,
            pad,
        ))
    }

    /// Queues `message` for the sealer, sending the batch when it is full.
    fn send(&mut self, message: ToSealer) -> Result<()> {
        self.batch_bytes += match &message {
            ToSealer::Page { page, .. } => page.len(),
            ToSealer::Bytes(bytes) => bytes.len(),
            ToSealer::Zeros(_) | ToSealer::Checksum { .. } => 0,
        };
        self.batch.push(message);
        if self.batch.len() < BATCH_LEN && self.batch_bytes < BLOB_PIECE_BYTES {
            return Ok(());
        }
        self.flush()
    }

    /// Sends the messages queued so far.
    fn flush(&mut self) -> Result<()> {
        let batch = std::mem::replace(&mut self.batch, Vec::with_capacity(BATCH_LEN));
        self.batch_bytes = 0;
        let to_sealer = self.to_sealer.as_ref().expect("sealer running");
        if to_sealer.send(batch).is_err() {
            return Err(self.stop());
        }
        Ok(())
    }

    /// Waits until every page appended is written (not yet durable: the commit's
    /// fdatasync does that).
    pub(crate) fn finish(mut self) -> Result<WriteReport> {
        self.flush()?;
        self.to_sealer = None;
        let sealer = self.sealer.take().expect("sealer running");
        join_sealer(sealer)
    }

    /// The sealer stopped early: its error.
    fn stop(&mut self) -> Error {
        self.to_sealer = None;
        match self.sealer.take().map(join_sealer) {
            Some(Err(e)) => e,
            _ => Error::Io(io::Error::other("the bulk sealer thread stopped early")),
        }
    }
}

impl Drop for SeqWriter {
    fn drop(&mut self) {
        self.to_sealer = None;
        if let Some(sealer) = self.sealer.take() {
            let _ = join_sealer(sealer);
        }
    }
}

fn join_sealer(sealer: JoinHandle<Result<WriteReport>>) -> Result<WriteReport> {
    sealer
        .join()
        .unwrap_or_else(|_| Err(Error::Io(io::Error::other("the bulk sealer panicked"))))
}

/// Stands for "filled in by the sealer" in references to pages not sealed yet.
const PLACEHOLDER_CHECKSUM: u32 = 0;

/// The sealer thread: seals each page (after filling in its children's checksums, for a
/// branch) and appends it to the chunks; appends blob bytes as they come.
fn seal_pages(
    mut chunks: ChunkWriter,
    from_builder: Receiver<Batch>,
    give_back: Sender<Vec<Box<[u8]>>>,
) -> Result<WriteReport> {
    // Checksums of sealed pages whose parent has not been sealed yet: at most the
    // children of one page per level (and finished roots until asked for).
    let mut sealed: HashMap<u64, u32> = HashMap::new();
    for batch in from_builder {
        let mut done = Vec::with_capacity(batch.len());
        for message in batch {
            match message {
                ToSealer::Page { id, mut page } => {
                    let kind = PageKind::from_byte(page[0]).expect("a node page");
                    if kind == PageKind::Branch {
                        fill_in_child_checksums(&mut page, id, &mut sealed)?;
                    }
                    node::tighten(&mut page, kind);
                    node::zero_free_space(&mut page, kind);
                    let checksum = seal(&mut page);
                    sealed.insert(id.0, checksum);
                    chunks.append(&page)?;
                    done.push(page);
                }
                ToSealer::Bytes(bytes) => chunks.append(&bytes)?,
                ToSealer::Zeros(count) => chunks.append_zeros(count)?,
                ToSealer::Checksum { id, reply } => {
                    let _ = reply.send(sealed.remove(&id.0));
                }
            }
        }
        if !done.is_empty() {
            let _ = give_back.send(done);
        }
    }
    chunks.finish()
}

/// Replaces the placeholder checksums in the references of branch `page` with those of
/// the children, which were all sealed before it.
fn fill_in_child_checksums(
    page: &mut [u8],
    id: PageId,
    sealed: &mut HashMap<u64, u32>,
) -> Result<()> {
    node::replace_children(page, id, |i, child| {
        assert_eq!(
            child.checksum.get(),
            PLACEHOLDER_CHECKSUM,
            "child {i} of {id:?}"
        );
        let checksum = sealed
            .remove(&child.page.get())
            .unwrap_or_else(|| panic!("child {:?} of {id:?} sealed before it", child.page()));
        Ok(ChildRef::new(child.page(), checksum, child.txn()))
    })
}

/// Gathers the bytes of sequential pages from `start` into chunks for the writer
/// threads. Runs on the sealer thread.
struct ChunkWriter {
    storage: Arc<Storage>,
    geometry: Geometry,
    /// The chunk being filled (None only while it is handed over); its first page.
    buf: Option<AlignedBuf>,
    buf_start: PageId,
    to_writers: Option<SyncSender<Chunk>>,
    empties: Receiver<AlignedBuf>,
    shared: Arc<WriterShared>,
    threads: Vec<JoinHandle<()>>,
}

impl ChunkWriter {
    /// Starts the writer threads. With `direct_path` (the database file's path) they
    /// write with `O_DIRECT` if the file system allows; otherwise, or if it refuses,
    /// through `storage` (buffered writes; the commit's fdatasync makes them durable).
    fn start(
        storage: Arc<Storage>,
        start: PageId,
        direct_path: Option<&Path>,
    ) -> Result<ChunkWriter> {
        let geometry = storage.geometry;
        let direct = match (direct_path, storage.file()) {
            (Some(path), Some(file)) => direct::open(path, file, geometry.page_size),
            (None, _) => Err("direct I/O not requested".to_string()),
            (Some(_), None) => Err("the storage backend has no file".to_string()),
        };
        let align = direct.as_ref().map_or(4096, |d| d.mem_align);
        let (to_writers, chunks) = sync_channel(BUFFERS);
        let (give_back, empties) = channel();
        for _ in 1..BUFFERS {
            give_back
                .send(AlignedBuf::new(CHUNK_BYTES, align))
                .expect("receiver alive");
        }
        let (direct, refused) = match direct {
            Ok(d) => (Some(d), None),
            Err(why) => (None, Some(why)),
        };
        let shared = Arc::new(WriterShared {
            storage: Arc::clone(&storage),
            chunks: Mutex::new(chunks),
            direct,
            state: Mutex::new(WriterState {
                refused,
                direct_confirmed: false,
                bytes_written: 0,
                error: None,
            }),
            failed: AtomicBool::new(false),
        });
        let mut threads = Vec::new();
        for _ in 0..WRITERS {
            let (shared, give_back) = (Arc::clone(&shared), give_back.clone());
            let spawned = std::thread::Builder::new()
                .name("mapkv-bulk-writer".into())
                .spawn(move || write_chunks(&shared, give_back));
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    drop(to_writers); // The writers started so far see the end and return.
                    for t in threads {
                        let _ = t.join();
                    }
                    return Err(Error::Io(e));
                }
            }
        }
        Ok(ChunkWriter {
            storage,
            geometry,
            buf: Some(AlignedBuf::new(CHUNK_BYTES, align)),
            buf_start: start,
            to_writers: Some(to_writers),
            empties,
            shared,
            threads,
        })
    }

    fn append(&mut self, mut bytes: &[u8]) -> Result<()> {
        while !bytes.is_empty() {
            let n = self.buf.as_mut().expect("a chunk").extend_from(bytes);
            bytes = &bytes[n..];
            self.send_if_full()?;
        }
        Ok(())
    }

    fn append_zeros(&mut self, mut count: usize) -> Result<()> {
        while count > 0 {
            count -= self.buf.as_mut().expect("a chunk").extend_zeros(count);
            self.send_if_full()?;
        }
        Ok(())
    }

    fn send_if_full(&mut self) -> Result<()> {
        if self.buf.as_ref().is_some_and(AlignedBuf::is_full) {
            self.send()?;
            match self.empties.recv() {
                Ok(empty) => self.buf = Some(empty),
                Err(_) => return Err(self.stop()),
            }
        }
        Ok(())
    }

    /// Hands the current chunk to the writers, growing the file first.
    fn send(&mut self) -> Result<()> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(self.stop());
        }
        let buf = self.buf.take().expect("a chunk");
        let len = buf.len();
        let page = self.geometry.page_size;
        assert!(len.is_multiple_of(page), "chunks are whole pages: {len}");
        let offset = self.geometry.offset(self.buf_start);
        self.storage.ensure_len(offset + len as u64)?;
        self.buf_start = PageId(self.buf_start.0 + (len / page) as u64);
        let sent = self
            .to_writers
            .as_ref()
            .expect("writers running")
            .send(Chunk { offset, buf });
        if sent.is_err() {
            return Err(self.stop());
        }
        Ok(())
    }

    /// Writes what is left and waits for the writers: every page appended is then
    /// written (not yet durable: the commit's fdatasync does that).
    fn finish(mut self) -> Result<WriteReport> {
        if !self.buf.as_ref().is_some_and(AlignedBuf::is_empty) {
            self.send()?;
        }
        self.join();
        let mut state = self.shared.state.lock();
        if let Some(e) = state.error.take() {
            return Err(e);
        }
        Ok(WriteReport {
            direct_io: state.refused.is_none(),
            refused: state.refused.take(),
            bytes_written: state.bytes_written,
        })
    }

    /// Stops the writers (after a failure): the first error any of them met.
    fn stop(&mut self) -> Error {
        self.join();
        self.shared
            .state
            .lock()
            .error
            .take()
            .unwrap_or_else(|| Error::Io(io::Error::other("a bulk writer thread stopped early")))
    }

    /// Closes the queue and waits until every writer has finished its last write.
    fn join(&mut self) {
        self.to_writers = None;
        for t in self.threads.drain(..) {
            if t.join().is_err() {
                let mut state = self.shared.state.lock();
                state
                    .error
                    .get_or_insert_with(|| Error::Io(io::Error::other("a bulk writer panicked")));
            }
        }
    }
}

impl Drop for ChunkWriter {
    fn drop(&mut self) {
        self.join();
    }
}

/// What the writer threads share: the queue of filled chunks, the direct descriptor and
/// what became of it.
struct WriterShared {
    storage: Arc<Storage>,
    chunks: Mutex<Receiver<Chunk>>,
    direct: Option<DirectFile>,
    state: Mutex<WriterState>,
    /// Set when a writer fails, so the builder stops early.
    failed: AtomicBool,
}

struct WriterState {
    /// Why direct I/O is not (or no longer) used.
    refused: Option<String>,
    /// A direct write has succeeded: from now on EINVAL is an error, not a refusal.
    direct_confirmed: bool,
    bytes_written: u64,
    error: Option<Error>,
}

/// One writer thread: takes chunks in turn with the others (so that while one waits
/// for its write to complete, the next write is already queued at the device), writes
/// each at its offset and hands the buffer back.
fn write_chunks(shared: &WriterShared, give_back: Sender<AlignedBuf>) {
    loop {
        let next = shared.chunks.lock().recv();
        let Ok(mut chunk) = next else {
            return; // The builder finished (or stopped).
        };
        if let Err(e) = write_chunk(shared, chunk.buf.filled(), chunk.offset) {
            let mut state = shared.state.lock();
            state.error.get_or_insert(e);
            shared.failed.store(true, Ordering::SeqCst);
            return;
        }
        shared.state.lock().bytes_written += chunk.buf.len() as u64;
        shared.storage.count_pages_written(chunk.buf.len() as u64);
        chunk.buf.clear();
        if give_back.send(chunk.buf).is_err() {
            return; // The builder stopped (an error): nothing more will come.
        }
    }
}

/// Writes one chunk: with `O_DIRECT` unless it was refused, else through `storage`.
/// The first direct write that fails with EINVAL (some file systems refuse only at
/// write time) switches to buffered writes; the refused call wrote nothing.
fn write_chunk(shared: &WriterShared, data: &[u8], offset: u64) -> Result<()> {
    let storage = &shared.storage;
    let direct = match &shared.direct {
        Some(d) if shared.state.lock().refused.is_none() => d,
        _ => return storage.write_unreferenced(offset, &[data]),
    };
    let written = storage.guard_write(offset, data.len() as u64, || {
        direct::write_all_at(direct, data, offset)
    })?;
    match written {
        Ok(()) => {
            shared.state.lock().direct_confirmed = true;
            Ok(())
        }
        Err(e) if direct::is_refusal(&e) => {
            {
                let mut state = shared.state.lock();
                if state.direct_confirmed {
                    drop(state);
                    return Err(storage.poison(e));
                }
                state
                    .refused
                    .get_or_insert_with(|| format!("the first direct write was refused: {e}"));
            }
            storage.write_unreferenced(offset, &[data])
        }
        // Judged as a buffered write is: the pages lie past the committed end, so a full
        // disk fails the load alone; anything else poisons the handle
        // (FORMAT.md#disk-assumptions).
        Err(e) => Err(storage.fail_unreferenced(e)),
    }
}
