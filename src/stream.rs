//! Writing a blob from a `Read` in bounded memory (`WriteTree::insert_from`): the run is
//! taken first, then filled chunk by chunk outside the transaction's lock, and adopted
//! into the tree only once every byte is written. See FORMAT.md#overflow-values.
//!
//! Crash safety: the run's pages are free pages of the last commit (or past its end), and
//! nothing references them until the leaf that points to the blob is committed; a crash
//! while streaming leaves the last commit as it was (FORMAT.md#page-reuse).
//!
//! The calling thread reads from the user's reader and hashes; a writer thread writes the
//! chunks, so reading and writing overlap (three chunk buffers circulate: one being
//! filled, one queued, one being written). Large runs are written with `O_DIRECT` where
//! the file system allows, as the bulk loader does (its descriptor, alignment checks and
//! refusal handling: `bulk::direct`); otherwise, for small runs and for backends without
//! a file, with `pwrite` through the page cache. Why direct writes to a run keep the map
//! and the page cache coherent: FORMAT.md#overflow-values.

use std::io::{self, Read};
use std::sync::mpsc::sync_channel;

use crate::bulk::direct::{self, AlignedBuf, DirectFile};
use crate::error::{Error, Result};
use crate::node::{self, BLOB_HEADER_BYTES};
use crate::storage::Storage;
use crate::txn_pages::BlobRun;

/// Bytes written per `pwrite`. A multiple of every page size.
const CHUNK_BYTES: usize = 4 << 20;

/// Chunk buffers in circulation: what `insert_from` holds, whatever the value's length.
const BUFFERS: usize = 3;

/// Runs shorter than this are written through the page cache: a direct write waits for
/// the device, which costs more than the copy for a few pages (and opening the file
/// again costs system calls).
const DIRECT_MIN_BYTES: u64 = 8 << 20;

/// Alignment of the chunk buffers when no direct descriptor says otherwise.
const BUFFER_ALIGN: usize = 4096;

/// Fills `run` with a blob of `run.len` bytes read from `reader`: header, payload,
/// zero padding to the end of the last page. Returns the blob's checksum (the same as
/// `TxnPages::write_blob` computes). A reader that ends before `run.len` bytes is an
/// `UnexpectedEof` error; a reader's error is returned as it is. Bytes the reader could
/// give past `run.len` are not read.
pub(crate) fn write_blob_from(
    run: &BlobRun,
    page_size: usize,
    reader: &mut impl Read,
) -> Result<u32> {
    let page = page_size as u64;
    let total = run.pages * page;
    let direct = match (total >= DIRECT_MIN_BYTES, run.storage.file()) {
        (true, Some(file)) => direct::open(&run.path, file, page_size).ok(),
        _ => None,
    };
    let align = direct.as_ref().map_or(BUFFER_ALIGN, |d| d.mem_align);
    let chunk_bytes = total.min(CHUNK_BYTES as u64) as usize;
    let mut out = Output {
        storage: &run.storage,
        direct,
        direct_confirmed: false,
    };
    let mut first_page = AlignedBuf::new(page_size, align);
    let checksum = std::thread::scope(|s| {
        let (to_writer, work) = sync_channel::<(AlignedBuf, u64)>(BUFFERS);
        let (give_back, free) = sync_channel::<AlignedBuf>(BUFFERS);
        for _ in 0..BUFFERS.min(total.div_ceil(chunk_bytes as u64) as usize) {
            give_back
                .send(AlignedBuf::new(chunk_bytes, align))
                .expect("the receiver is here");
        }
        let out = &mut out;
        let writer = s.spawn(move || -> Result<()> {
            for (buf, offset) in work {
                out.write(buf.filled(), offset)?;
                if give_back.send(buf).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let mut hasher = crc32fast::Hasher::new();
        let mut produce = || -> Result<()> {
            let mut done = 0u64; // bytes of the run handed to the writer
            let mut payload_read = 0u64;
            while done < total {
                // None: the writer stopped (an error, which `join` returns).
                let Ok(mut buf) = free.recv() else {
                    return Ok(());
                };
                buf.clear();
                let n = (total - done).min(chunk_bytes as u64) as usize;
                if done == 0 {
                    // The header, its checksum zero: the checksum hashes those four
                    // bytes as zero, so hashing the run as written gives it.
                    let head = buf.extend_with(BLOB_HEADER_BYTES + run.pad);
                    head.fill(0);
                    node::init_blob(head, run.txn, run.len, run.pad);
                }
                let want = (run.len - payload_read).min((n - buf.len()) as u64) as usize;
                fill(reader, buf.extend_with(want), payload_read, run.len)?;
                payload_read += want as u64;
                buf.extend_zeros(n - buf.len());
                hasher.update(buf.filled());
                if done == 0 {
                    first_page.extend_from(&buf.filled()[..page_size]);
                }
                if to_writer.send((buf, run.id.0 * page + done)).is_err() {
                    return Ok(());
                }
                done += n as u64;
            }
            assert_eq!(payload_read, run.len, "the whole payload was read");
            Ok(())
        };
        let produced = produce();
        drop(to_writer);
        let written = match writer.join() {
            Ok(written) => written,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        // A write error first: it may be why the reader's side stopped.
        written.and(produced).map(|()| hasher.finalize())
    })?;
    // The first page again, now with the checksum.
    let mut head = AlignedBuf::new(page_size, align);
    let first = first_page.filled();
    head.extend_from(&first[..4]);
    head.extend_from(&checksum.to_le_bytes());
    head.extend_from(&first[8..]);
    out.write(head.filled(), run.id.0 * page)?;
    Ok(checksum)
}

/// Where the chunks go: the direct descriptor until a write is refused, else `storage`.
struct Output<'s> {
    storage: &'s Storage,
    direct: Option<DirectFile>,
    /// A direct write succeeded: from now on EINVAL is an error, not a refusal.
    direct_confirmed: bool,
}

impl Output<'_> {
    /// Writes `data` (page-aligned, whole pages) at `offset`. The first direct write that
    /// fails with EINVAL (some file systems refuse only at write time; the refused call
    /// wrote nothing) switches to buffered writes; a direct write that fails otherwise
    /// is judged as a buffered one is: for want of room it fails the value alone (the
    /// run is referenced by nothing yet), anything else poisons the handle
    /// (`Storage::fail_unreferenced`).
    fn write(&mut self, data: &[u8], offset: u64) -> Result<()> {
        let storage = self.storage;
        storage.count_pages_written(data.len() as u64);
        let Some(d) = &self.direct else {
            return storage.write_unreferenced(offset, &[data]);
        };
        let written = storage.guard_write(offset, data.len() as u64, || {
            direct::write_all_at(d, data, offset)
        })?;
        match written {
            Ok(()) => {
                self.direct_confirmed = true;
                Ok(())
            }
            Err(e) if direct::is_refusal(&e) && !self.direct_confirmed => {
                self.direct = None;
                storage.write_unreferenced(offset, &[data])
            }
            Err(e) => Err(storage.fail_unreferenced(e)),
        }
    }
}

/// Reads exactly `buf.len()` bytes, `before` of `len` having been read already.
pub(crate) fn fill(reader: &mut impl Read, buf: &mut [u8], before: u64, len: u64) -> Result<()> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "the reader ended after {} of {len} bytes",
                        before + got as u64
                    ),
                )));
            }
            Ok(k) => got += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::Io(e)),
        }
    }
    Ok(())
}
