//! Reading pages for one transaction (`PageReader`): through the map below the window,
//! otherwise with pread into buffers the reader holds until it ends, or from the page
//! cache. See FORMAT.md#storage.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::sync::{Arc, OnceLock};

use memmap2::MmapRaw;

use super::Storage;
use crate::cache::CacheReader;
use crate::error::{Error, Result};
use crate::held_runs::HeldRuns;
use crate::page::{Geometry, PageId};
use crate::page_buf::PageBuf;

impl Storage {
    /// A reader of pages below `limit` as of now.
    pub(crate) fn reader(self: &Arc<Self>, limit: PageId) -> PageReader {
        let state = self.state.lock();
        let limit_bytes = self.geometry.offset(limit).min(state.file_len);
        let window = state
            .map
            .as_ref()
            .map_or(0, |m| m.len() as u64)
            .min(self.mmap_size);
        PageReader {
            storage: Arc::clone(self),
            map: state.map.clone(),
            window_end: window.min(limit_bytes),
            window_pages: window.min(limit_bytes) / self.geometry.page_bytes(),
            first_data: self.geometry.first_data_page().0,
            limit_bytes,
            held: HeldRuns::new(),
            cache_reader: OnceLock::new(),
            retired_maps: Vec::new(),
        }
    }
}

/// Reads pages for one transaction: through the map below `window_end`, otherwise with
/// pread into buffers the reader owns until it is dropped, so every slice it returns
/// lives as long as the reader.
pub(crate) struct PageReader {
    storage: Arc<Storage>,
    map: Option<Arc<MmapRaw>>,
    window_end: u64,
    /// Pages wholly below `window_end`, and the first data page: the single-page fast
    /// path of [`PageReader::page`] compares with these, nothing else.
    window_pages: u64,
    first_data: u64,
    limit_bytes: u64,
    /// Runs read with pread, held until the reader is dropped so the slices handed out
    /// stay valid; lookups in it take no lock, so one snapshot can be read by several
    /// threads at once (`ReadTxn: Sync`).
    held: HeldRuns,
    /// This reader's registration with the page cache, made at its first lookup there:
    /// runs found in the cache stay allocated until the reader is dropped, so they need
    /// not be held (or counted) one by one.
    cache_reader: OnceLock<CacheReader>,
    /// Maps that `extend_limit` replaced, kept for the slices of them still alive.
    retired_maps: Vec<Arc<MmapRaw>>,
}

impl PageReader {
    pub(crate) fn geometry(&self) -> &Geometry {
        &self.storage.geometry
    }

    /// Pages below this reader's limit.
    pub(crate) fn pages_readable(&self) -> u64 {
        self.limit_bytes / self.storage.geometry.page_bytes()
    }

    /// One page. Inlined: every step of a descent loads one, and through the map that
    /// is two comparisons and a slice.
    #[inline(always)]
    pub(crate) fn page(&self, id: PageId) -> Result<&[u8]> {
        if id.0 >= self.first_data && id.0 < self.window_pages {
            let page = self.storage.geometry.page_bytes();
            // No overflow: `id < window_pages`, so `(id + 1) * page <= window_end`.
            return Ok(self.mapped(id.0 * page, (id.0 + 1) * page));
        }
        self.page_beyond_window(id)
    }

    /// A page past the window (or below the data pages, which `run_bytes` refuses): the
    /// reader's held copy if it has one, else one read as `run` reads it. The bounds are
    /// checked first even for a held copy: a write transaction's limit shrinks when its
    /// commit trims free pages off the end (`extend_limit`), and a page past the new
    /// limit is free, so a reference to it is corrupt.
    #[inline(never)]
    fn page_beyond_window(&self, id: PageId) -> Result<&[u8]> {
        let (start, _) = self.run_bytes(id, 1)?;
        let page = self.storage.geometry.page_size;
        if let Some(bytes) = self.held.get(id, page) {
            return Ok(bytes);
        }
        // Past `window_pages`, so past `window_end` too: nothing to find in the map.
        self.read_and_hold(id, start, page)
    }

    /// `pages` contiguous pages starting at `id`.
    pub(crate) fn run(&self, id: PageId, pages: u64) -> Result<&[u8]> {
        let (start, end) = self.run_bytes(id, pages)?;
        if end <= self.window_end {
            return Ok(self.mapped(start, end));
        }
        self.read_owned(id, start, end)
    }

    /// The bytes `start..end` of the map, which must lie below `window_end`.
    #[inline(always)]
    fn mapped(&self, start: u64, end: u64) -> &[u8] {
        assert!(
            start <= end && end <= self.window_end,
            "{start}..{end} outside the window"
        );
        let map = self.map.as_ref().expect("a window implies a map");
        // SAFETY: `start <= end <= window_end <= map.len()` (asserted above; `reader` and
        // `extend_limit` cap `window_end` at the map's length), so the range lies in the
        // mapping, which `self.map` keeps alive (and unmoved) as long as `self` (when
        // `extend_limit` replaces it, `retired_maps` keeps it). The slice
        // covers only these bytes, never the rest of the map: they lie below
        // `limit_bytes`, which never exceeds the file length (the file is only shortened
        // past the end of every snapshot a live reader holds, `WriteTxn::shrink_file`, or
        // when none can read), and
        // callers ask only for pages (from `run_bytes`) that this reader's snapshot
        // reaches, or that its own write transaction wrote and does not write again while
        // it holds a slice of them; no writer overwrites such pages while a snapshot can
        // reach them (FORMAT.md#page-reuse). The exclusive flock keeps cooperating
        // processes from truncating or writing the file (FORMAT.md#storage states the
        // residual risk). Building the slice from the raw map's base pointer matters:
        // a reference to the whole map (what `Mmap`'s `Deref` makes, even for `len()`)
        // would cover bytes past the end of the file and free pages that `pwrite` is
        // changing at that moment.
        unsafe {
            std::slice::from_raw_parts(map.as_ptr().add(start as usize), (end - start) as usize)
        }
    }

    /// Not inlined into `run`: the mapped path, the hot one with a map, stays small.
    #[inline(never)]
    fn read_owned(&self, id: PageId, start: u64, end: u64) -> Result<&[u8]> {
        let len = run_len(start, end)?;
        match self.held.get(id, len) {
            Some(held) => Ok(held),
            None => self.read_and_hold(id, start, len),
        }
    }

    /// The run at `id` (`len` bytes at `start`, past the window) from the page cache, or
    /// read from the file and held until the reader ends.
    fn read_and_hold(&self, id: PageId, start: u64, len: usize) -> Result<&[u8]> {
        if let Some(cached) = self.cached(id, len) {
            return Ok(cached);
        }
        let buf = self.read_from_file(id, start, len)?;
        Ok(self.held.hold(id, buf))
    }

    /// The run of `len` bytes at `id` from the page cache, if it is there; valid until
    /// the reader is dropped (`cache_reader`).
    #[inline]
    fn cached(&self, id: PageId, len: usize) -> Option<&[u8]> {
        let cache = &self.storage.cache;
        if !cache.is_enabled() {
            return None;
        }
        let reader = self.cache_reader.get_or_init(|| cache.register());
        cache.get(id, len, reader)
    }

    /// Reads `len` bytes at `start` (the run at `id`) with pread and offers them to the
    /// cache.
    fn read_from_file(&self, id: PageId, start: u64, len: usize) -> Result<PageBuf> {
        let cache = &self.storage.cache;
        let epoch = cache.write_epoch();
        let mut buf = cache.buffer(len);
        let bytes = buf.get_mut().expect("a new or recycled buffer is unshared");
        self.read_into(id, bytes, start)?;
        cache.insert(id, &buf, epoch);
        Ok(buf)
    }

    /// Stops serving cached copies of the run at `id`: a write transaction calls this when
    /// it frees pages it wrote itself, since it may write them again.
    pub(crate) fn forget(&self, id: PageId) {
        self.held.forget(id);
    }

    /// Moves a write transaction's read limit to `limit`: past the committed end, to
    /// read pages it wrote there, or back when its commit trims free pages off the end.
    pub(crate) fn extend_limit(&mut self, limit: PageId) {
        let file_len = self.storage.file_len();
        self.limit_bytes = self.storage.geometry.offset(limit).min(file_len);
        let map = self.storage.current_map();
        let map_len = map.as_ref().map_or(0, |m| m.len() as u64);
        self.window_end = map_len.min(self.storage.mmap_size).min(self.limit_bytes);
        self.window_pages = self.window_end / self.storage.geometry.page_bytes();
        let same = match (&self.map, &map) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, None) => true,
            _ => false,
        };
        if !same {
            // Slices of the old map may still be alive (a write transaction's tree
            // handles read through this reader): keep it mapped as long as the reader.
            if let Some(old) = std::mem::replace(&mut self.map, map) {
                self.retired_maps.push(old);
            }
        }
    }

    // ---- where values lie: for extents and value readers (src/extent.rs) ------------

    /// Where the `pages` pages at `id` lie in the file (checked as `run` checks them),
    /// and their bytes if they lie in the map; reads nothing.
    pub(crate) fn locate_run(&self, id: PageId, pages: u64) -> Result<(u64, Option<&[u8]>)> {
        let (start, end) = self.run_bytes(id, pages)?;
        let mapped = (end <= self.window_end).then(|| self.mapped(start, end));
        Ok((start, mapped))
    }

    /// The file to hand out to callers, if the backend has one (`Storage::served_file`).
    pub(crate) fn served_file(&self) -> Option<&File> {
        self.storage.served_file()
    }

    /// Fills `buf` from byte `offset` of the file with pread, keeping nothing. The caller
    /// reads only bytes of pages its snapshot reaches (below `limit_bytes`), which no
    /// writer changes while the snapshot lives.
    pub(crate) fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        debug_assert!(offset + buf.len() as u64 <= self.limit_bytes);
        self.storage.backend.read_exact_at(buf, offset)
    }

    // ---- reads that the reader does not keep: for walks over the whole file ----------

    /// `pages` pages at `id`, like `run`, but not kept in this reader's table: a walk
    /// over the whole file would otherwise hold every page it reads until the
    /// transaction ends. Found in the table or the page cache if there; otherwise read
    /// into a buffer that is freed with the last [`Fetched`] of it. Such reads are not
    /// offered to the page cache: a walk reads each page once, and keeping them would
    /// push out the pages that lookups use.
    pub(crate) fn fetch(&self, id: PageId, pages: u64) -> Result<Fetched<'_>> {
        let (start, end) = self.run_bytes(id, pages)?;
        if end <= self.window_end {
            return Ok(Fetched::Borrowed(self.mapped(start, end)));
        }
        let len = run_len(start, end)?;
        if let Some(held) = self.held.get(id, len) {
            return Ok(Fetched::Borrowed(held));
        }
        if let Some(cached) = self.cached(id, len) {
            return Ok(Fetched::Borrowed(cached));
        }
        let mut buf = self.storage.cache.buffer(len);
        let bytes = buf.get_mut().expect("a new or recycled buffer is unshared");
        self.read_into(id, bytes, start)?;
        Ok(Fetched::Owned(buf))
    }

    /// Hands the bytes of the `pages` pages at `id` to `f` in order, in pieces of at
    /// most `piece_bytes` (rounded down to whole pages, at least one), holding one piece
    /// at a time: for verifying runs too long to hold whole.
    pub(crate) fn stream(
        &self,
        id: PageId,
        pages: u64,
        piece_bytes: usize,
        mut f: impl FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let (start, end) = self.run_bytes(id, pages)?;
        let page = self.storage.geometry.page_bytes();
        let piece = (piece_bytes as u64 / page).max(1) * page;
        let mut buf = Vec::new();
        let mut at = start;
        while at < end {
            let next = end.min(at + piece);
            if next <= self.window_end {
                f(self.mapped(at, next))?;
            } else {
                buf.resize((next - at) as usize, 0);
                self.read_into(id, &mut buf, at)?;
                f(&buf)?;
            }
            at = next;
        }
        Ok(())
    }

    /// The byte range of the `pages` pages at `id`: checked as `run` checks it (inside
    /// the data pages below the limit, no overflow).
    fn run_bytes(&self, id: PageId, pages: u64) -> Result<(u64, u64)> {
        let g = self.storage.geometry;
        let start = id.0.checked_mul(g.page_bytes());
        let end = pages
            .checked_mul(g.page_bytes())
            .and_then(|len| start?.checked_add(len));
        match (start, end) {
            (Some(start), Some(end))
                if id >= g.first_data_page() && end <= self.limit_bytes && pages > 0 =>
            {
                Ok((start, end))
            }
            (Some(_), Some(_)) => Err(Error::corrupted(
                id.0,
                format!("reference to {pages} pages at {id:?} outside the data pages"),
            )),
            _ => Err(Error::corrupted(id.0, "page reference overflows")),
        }
    }

    /// Fills `buf` from byte `offset` of the file (a part of the run at `id`).
    fn read_into(&self, id: PageId, buf: &mut [u8], offset: u64) -> Result<()> {
        self.storage
            .backend
            .read_exact_at(buf, offset)
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => {
                    Error::corrupted(id.0, "page lies past the end of the file")
                }
                _ => Error::Io(e),
            })
    }
}

impl Drop for PageReader {
    fn drop(&mut self) {
        // `&mut self`: no slice of a cached run is left.
        if let Some(reader) = self.cache_reader.take() {
            self.storage.cache.unregister(reader);
        }
    }
}

/// The bytes of a page or run from [`PageReader::fetch`]: borrowed from the map or this
/// reader's held runs or the page cache, or a buffer read just now.
pub(crate) enum Fetched<'a> {
    Borrowed(&'a [u8]),
    Owned(PageBuf),
}

impl std::ops::Deref for Fetched<'_> {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Fetched::Borrowed(bytes) => bytes,
            Fetched::Owned(buf) => buf,
        }
    }
}

/// The length of the run `start..end`, for a buffer to read it into. A run that the
/// format allows (a value of up to `VALUE_LEN_MAX` bytes, which a 64-bit process may
/// have written) can be longer than a 32-bit process can address; a cast would then
/// read the wrong bytes.
fn run_len(start: u64, end: u64) -> Result<usize> {
    let size = end - start;
    usize::try_from(size).map_err(|_| Error::ValueTooLarge {
        size,
        max: usize::MAX as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileBackend;

    const PAGE: usize = 4096;

    /// Only a 32-bit target can fail it (where `as usize` kept the low 32 bits).
    #[test]
    fn a_run_longer_than_usize_is_an_error_not_a_shorter_read() {
        let size = 1u64 << 32;
        let got = run_len(4096, 4096 + size);
        match usize::BITS {
            64 => assert_eq!(got.unwrap() as u64, size),
            _ => assert!(matches!(got, Err(Error::ValueTooLarge { size: s, .. }) if s == size)),
        }
    }

    /// A file of `pages` pages whose bytes all differ from their neighbours', read
    /// through a map of its first `mapped_pages` pages and pread beyond.
    fn reader(pages: u64, mapped_pages: u64) -> (tempfile::NamedTempFile, Vec<u8>, PageReader) {
        let file = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..pages as usize * PAGE)
            .map(|i| (i % 251) as u8 ^ (i / PAGE) as u8)
            .collect();
        std::fs::write(file.path(), &bytes).unwrap();
        let backend = FileBackend {
            file: File::open(file.path()).unwrap(),
        };
        let g = Geometry::new(PAGE).unwrap();
        let storage = Storage::new(Box::new(backend), g, mapped_pages * PAGE as u64, 0);
        let reader = Arc::new(storage.unwrap()).reader(PageId(pages));
        (file, bytes, reader)
    }

    #[test]
    fn fetch_and_stream_read_what_run_reads_on_both_sides_of_the_window() {
        let (_file, bytes, r) = reader(40, 9);
        for (first, pages) in [(2, 1), (2, 7), (5, 10), (8, 1), (9, 31), (3, 37)] {
            let want = &bytes[first * PAGE..(first + pages) * PAGE];
            let (id, n) = (PageId(first as u64), pages as u64);
            assert_eq!(&r.fetch(id, n).unwrap()[..], want, "fetch {first}+{pages}");
            for piece in [1, PAGE, 3 * PAGE, 1 << 20] {
                let mut got = Vec::new();
                r.stream(id, n, piece, |p| {
                    assert!(p.len() <= piece.max(PAGE) && p.len() % PAGE == 0);
                    got.extend_from_slice(p);
                    Ok(())
                })
                .unwrap();
                assert_eq!(got, want, "stream {first}+{pages} in pieces of {piece}");
            }
            assert_eq!(r.run(id, n).unwrap(), want, "run {first}+{pages}");
        }
        // Only the three runs that `run` read past the window stay in the reader's table.
        assert_eq!(r.held.count(), 3);
    }

    #[test]
    fn fetch_and_stream_refuse_what_run_refuses() {
        let (_file, _, r) = reader(10, 0);
        for (id, n) in [(0, 1), (1, 1), (9, 2), (10, 1), (2, 0), (u64::MAX / 2, 4)] {
            let (id, pages) = (PageId(id), n);
            let run = r.run(id, pages).map(|_| ()).unwrap_err().to_string();
            let fetch = r.fetch(id, pages).map(|_| ()).unwrap_err().to_string();
            let stream = r.stream(id, pages, PAGE, |_| Ok(())).unwrap_err();
            assert_eq!(fetch, run);
            assert_eq!(stream.to_string(), run);
        }
    }
}
