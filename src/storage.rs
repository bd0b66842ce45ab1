//! The database file as the engine uses it: the read-only map and its window
//! (`mmap_size`), writes, fdatasync and growth, through the file operations of
//! [`crate::backend`]; reads with pread into transaction-owned buffers are in `reader`.
//! See FORMAT.md#storage.

use std::fs::File;
use std::io;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use memmap2::{MmapOptions, MmapRaw};
use parking_lot::Mutex;

use crate::backend::Backend;
use crate::cache::PageCache;
use crate::error::{Error, Result};
use crate::page::{Geometry, PageId};

mod reader;
pub(crate) use reader::PageReader;

/// Address space reserved for the map beyond the file, so that it rarely has to move.
const MAP_RESERVE_BYTES: u64 = if cfg!(target_pointer_width = "64") {
    1 << 36
} else {
    1 << 28
};

/// How far past a commit's end `write_ahead` keeps the file written (with zeros).
const ZERO_AHEAD_BYTES: u64 = 2 << 20;
/// The static block of zeros that `write_zeros` repeats.
const ZERO_BLOCK_BYTES: usize = 64 << 10;

/// How much the file grows by when a commit needs more room than it has: an eighth of
/// its length, between 1 MiB and 16 MiB. Growth is a size change, which costs the next
/// fdatasync a journal commit, so it should be rare; but the room it adds (a hole, until
/// commits reach it) counts in the file's size, which users watch. At 16 MiB, a commit
/// appending 24 KiB grows the file once in 700, and one appending 5 MiB once in 3.
fn growth_step(len: u64) -> u64 {
    (len / 8).clamp(1 << 20, 16 << 20)
}

/// Whether `e` says the file system had no room: ENOSPC, EDQUOT, EFBIG. Reported by a
/// write or size change at the time of the call, before it changed anything past what it
/// reports as done, such an error leaves no doubt about the file (unlike EIO, or any
/// error from fdatasync): where the bytes belonged to no durable commit, the commit that
/// wrote them can fail alone (FORMAT.md#disk-assumptions).
pub(crate) fn is_full_disk(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    )
}

/// `file` opened again, read-only, as a new open file description of the same inode.
fn reopen_read_only(file: &File) -> Option<File> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::MetadataExt;
    let again = File::open(format!("/proc/self/fd/{}", file.as_raw_fd())).ok()?;
    let (a, b) = (file.metadata().ok()?, again.metadata().ok()?);
    (a.dev() == b.dev() && a.ino() == b.ino()).then_some(again)
}

/// The file, with the map that covers its first `mmap_size` bytes.
pub(crate) struct Storage {
    backend: Box<dyn Backend>,
    pub geometry: Geometry,
    mmap_size: u64,
    /// Pages read with pread, kept across transactions.
    cache: PageCache,
    /// The newest map and the file length, which shrinks only below the end of every
    /// live snapshot (`shrink_to`, `trim_to`).
    state: Mutex<MapState>,
    /// Set by `Options::read_ahead(false)`: every map gets `MADV_RANDOM`.
    random_access: AtomicBool,
    /// Set by the first failed write or sync (but a write of unreferenced pages that
    /// failed for want of room, `fail_unreferenced`). The kernel may have dropped the
    /// failed pages from its cache and marked them clean, so nothing written since the
    /// last good sync can be trusted to reach the disk: refuse all further writes.
    poisoned: AtomicBool,
    /// Set when a write or growth failed for want of room (`is_full_disk`); cleared by a
    /// write that succeeds past `reached` (it took new blocks: the file system found
    /// room). Meanwhile write transactions place their pages in free pages before
    /// growing the file, and no zeros are written ahead (`write_ahead`).
    out_of_space: AtomicBool,
    /// The furthest end of any write tried, failed or not (or of the file when it was
    /// opened, or cut shorter than that).
    reached: AtomicU64,
    /// Pages written and syncs made since the storage was opened (for `Stats`).
    pages_written: AtomicU64,
    syncs: AtomicU64,
    /// `fork::generation()` when the storage was opened: another value means this is a
    /// forked child, which must neither read anew nor write (`check_process`).
    generation: u64,
    /// The file opened again read-only, for handing out (`served_file`).
    served: OnceLock<Option<File>>,
}

// The map must not deref to a slice (FORMAT.md#storage, point 5): `Mmap` does, and even
// its `len()` made a reference to the whole map. This fails to compile (the call is
// ambiguous) for a map type that implements `Deref`.
const _: fn() = || {
    trait AmbiguousIfDeref<A> {
        fn check() {}
    }
    impl<T: ?Sized> AmbiguousIfDeref<()> for T {}
    impl<T: ?Sized + std::ops::Deref> AmbiguousIfDeref<u8> for T {}
    <MmapRaw as AmbiguousIfDeref<_>>::check();
};

struct MapState {
    map: Option<Arc<MmapRaw>>,
    file_len: u64,
    /// The file's bytes below this were written (with data or zeros) since it was opened
    /// or before; past it, up to `file_len`, growth may have left a hole.
    written_len: u64,
}

impl Storage {
    pub(crate) fn new(
        backend: Box<dyn Backend>,
        geometry: Geometry,
        mmap_size: u64,
        cache_size: u64,
    ) -> Result<Storage> {
        let file_len = backend.file_len()?;
        let storage = Storage {
            backend,
            geometry,
            mmap_size,
            cache: PageCache::new(cache_size, geometry.page_bytes())?,
            state: Mutex::new(MapState {
                map: None,
                file_len,
                written_len: file_len,
            }),
            random_access: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            out_of_space: AtomicBool::new(false),
            reached: AtomicU64::new(file_len),
            pages_written: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            generation: crate::fork::generation(),
            served: OnceLock::new(),
        };
        storage.remap_if_needed(&mut storage.state.lock())?;
        Ok(storage)
    }

    /// Tells the kernel that reads will be random, so that it reads no further than the
    /// page asked for: `MADV_RANDOM` on the map (a fault otherwise reads up to 128 KiB
    /// around the page) and `POSIX_FADV_RANDOM` on the file (pread's readahead). Advice
    /// only: where the kernel refuses it, reads stay as they were.
    pub(crate) fn advise_random(&self) {
        self.random_access.store(true, Ordering::SeqCst);
        let state = self.state.lock();
        if let Some(map) = &state.map {
            let _ = map.advise(memmap2::Advice::Random);
        }
        if let Some(file) = self.backend.file() {
            let _ = rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::Random);
        }
    }

    pub(crate) fn into_backend(self) -> Box<dyn Backend> {
        self.backend
    }

    pub(crate) fn file_len(&self) -> u64 {
        self.state.lock().file_len
    }

    /// How far the file is known to be written (`MapState::written_len`).
    pub(crate) fn written_len(&self) -> u64 {
        self.state.lock().written_len
    }

    /// The file behind the backend, if it has one (the bulk loader compares it with the
    /// file it opens for direct I/O).
    pub(crate) fn file(&self) -> Option<&File> {
        self.backend.file()
    }

    /// The file to hand out to callers (`ValueExtent::as_fd`): opened again read-only
    /// through `/proc/self/fd` at the first call, so that a descriptor a caller keeps
    /// (a `dup` of it shares its open file description) neither holds the database's
    /// lock after the database closes nor can write to the file. The database's own
    /// descriptor where that open fails (no `/proc`).
    pub(crate) fn served_file(&self) -> Option<&File> {
        let file = self.backend.file()?;
        let served = self.served.get_or_init(|| reopen_read_only(file));
        Some(served.as_ref().unwrap_or(file))
    }

    /// The map readers should use now (None when `mmap_size` is 0 or nothing is mapped).
    pub(crate) fn current_map(&self) -> Option<Arc<MmapRaw>> {
        self.state.lock().map.clone()
    }

    /// Grows the file to at least `len_bytes` (in steps, to keep growth rare), and the
    /// map with it. New bytes read as zero and belong to no page until a commit. A step
    /// is room for later commits: where the file system has no room for it (a full
    /// disk, a quota, a largest file), the file grows by just what is asked. A growth
    /// that fails leaves the length this handle knows (never more than the file's:
    /// readers map up to it), and poisons unless it failed for want of room.
    pub(crate) fn ensure_len(&self, len_bytes: u64) -> Result<()> {
        let mut state = self.state.lock();
        if state.file_len >= len_bytes {
            return Ok(());
        }
        let step = growth_step(state.file_len);
        let page = self.geometry.page_bytes();
        let needed = len_bytes.div_ceil(page) * page;
        let stepped = (len_bytes.max(state.file_len + step)).div_ceil(page) * page;
        self.check_not_poisoned()?;
        let mut target = stepped;
        let mut grown = self.backend.set_len(target);
        if grown.as_ref().is_err_and(is_full_disk) && needed < stepped {
            // A failed size change changed nothing (`is_full_disk`).
            target = needed;
            grown = self.backend.set_len(target);
        }
        grown.map_err(|e| self.fail_unreferenced(e))?;
        state.file_len = target;
        self.remap_if_needed(&mut state)
    }

    /// After a commit wrote its pages, which end at `len_bytes`: zeros over the next
    /// stretch of the room past `len_bytes` (up to `ZERO_AHEAD_BYTES` past it) once the
    /// commits have nearly used what was written before. Growth itself only sets the
    /// length and leaves a hole. The commits that append into the zeros then write into
    /// blocks that the file system allocated at an earlier sync, so theirs allocates
    /// nothing (on ext4 with a journal an allocation costs the sync a journal commit; 1,000
    /// one-key commits took 0.27 s against 0.20 s). Zeroing a whole growth step at once
    /// instead (30 MiB on a 240 MiB file) costs its commit's sync tens of milliseconds.
    /// The zeros lie past the commit's end: no snapshot reaches them, and recovery
    /// ignores them.
    ///
    /// They are an optimisation, which a full disk goes without: where room runs out,
    /// the zeros stop there and the commit goes on, since its own pages are written
    /// already (zeros written first would take the last free blocks from them, and
    /// would fail commits that fit). While the disk is known to be full
    /// (`out_of_space`), none are written: they would only fill what is left. Any
    /// other failure poisons, as every failed write does.
    pub(crate) fn write_ahead(&self, len_bytes: u64) -> Result<()> {
        let (start, end) = {
            let state = self.state.lock();
            let start = state.written_len.max(len_bytes);
            let end = state.file_len.min(len_bytes + ZERO_AHEAD_BYTES);
            (start, end)
        };
        let worth_it = end.saturating_sub(start) >= ZERO_AHEAD_BYTES / 2;
        let written = match worth_it && !self.is_out_of_space() {
            true => self.write_zeros(start, end)?,
            false => len_bytes,
        };
        let mut state = self.state.lock();
        state.written_len = state.written_len.max(written);
        Ok(())
    }

    /// Writes zeros over `start..end`, from one static block named as many times as it
    /// takes (allocating and clearing a megabyte for each stretch cost a one-key commit
    /// an eighth of its instructions), one write per block, so that a full disk stops
    /// it at a known point; returns that point (`end` if it did not stop).
    fn write_zeros(&self, start: u64, end: u64) -> Result<u64> {
        static ZEROS: [u8; ZERO_BLOCK_BYTES] = [0; ZERO_BLOCK_BYTES];
        let mut at = start;
        while at < end {
            let len = (end - at).min(ZERO_BLOCK_BYTES as u64);
            match self.write_unreferenced(at, &[&ZEROS[..len as usize]]) {
                Ok(()) => at += len,
                Err(Error::Io(e)) if is_full_disk(&e) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(at)
    }

    /// Shortens the file to `len_bytes` if it is longer by more than two growth steps:
    /// growing adds one step past what is needed, so a commit that appends, and the
    /// next that needs less, never truncate and extend the file each time (each size
    /// change costs the next fdatasync a journal commit). The caller guarantees that no
    /// reader can touch a page past `len_bytes` (`WriteTxn::shrink_file`).
    pub(crate) fn shrink_to(&self, len_bytes: u64) -> Result<()> {
        if self.file_len() > len_bytes + 2 * growth_step(len_bytes) {
            self.trim_to(len_bytes)?;
        }
        Ok(())
    }

    pub(crate) fn pages_written(&self) -> u64 {
        self.pages_written.load(Ordering::Relaxed)
    }

    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }

    /// Cuts the file back to `len_bytes`, when no transaction can read past that point:
    /// at a clean close, on a file being built, or past the end of every live snapshot.
    pub(crate) fn trim_to(&self, len_bytes: u64) -> Result<()> {
        let mut state = self.state.lock();
        if state.file_len > len_bytes {
            self.check_not_poisoned()?;
            self.backend
                .set_len(len_bytes)
                .map_err(|e| self.poison(e))?;
            state.file_len = len_bytes;
            state.written_len = state.written_len.min(len_bytes);
            self.reached.fetch_min(len_bytes, Ordering::SeqCst);
        }
        Ok(())
    }

    fn remap_if_needed(&self, state: &mut MapState) -> Result<()> {
        let Some(file) = self.backend.file() else {
            return Ok(());
        };
        let want = state.file_len.min(self.mmap_size);
        if want == 0 || state.map.as_ref().is_some_and(|m| m.len() as u64 >= want) {
            return Ok(());
        }
        // Reserve address space well beyond the file so the map rarely moves; where that
        // much cannot be had (a 32-bit process, valgrind), map just what is needed; and
        // where nothing can be mapped, every read goes through pread.
        let reserve = (want * 2).max(MAP_RESERVE_BYTES).min(self.mmap_size);
        for len in [reserve, want] {
            let Ok(len) = usize::try_from(len) else {
                continue;
            };
            // A raw map, never `Mmap`: `Mmap` is read through `Deref<Target = [u8]>`,
            // so even its `len()` and `as_ptr()` make a `&[u8]` of the whole map, bytes
            // past the end of the file and free pages that `pwrite` is changing included
            // (FORMAT.md#storage, point 5). `MmapRaw` hands out only its address and
            // length; `PageReader::mapped` makes the one slice of it, and says why that
            // is sound. Mapping past the end of the file is allowed: only touching such
            // bytes would fault.
            if let Ok(map) = MmapOptions::new().len(len).map_raw_read_only(file) {
                if self.random_access.load(Ordering::SeqCst) {
                    let _ = map.advise(memmap2::Advice::Random);
                }
                state.map = Some(Arc::new(map));
                return Ok(());
            }
        }
        Ok(())
    }

    /// Writes pages that no snapshot and no durable meta references (see
    /// `write_unreferenced`).
    pub(crate) fn write_pages(&self, first: PageId, bufs: &[&[u8]]) -> Result<()> {
        let bytes: u64 = bufs.iter().map(|b| b.len() as u64).sum();
        self.count_pages_written(bytes);
        self.write_unreferenced(self.geometry.offset(first), bufs)
    }

    /// Adds the pages of `bytes` written to `Stats::pages_written` (for writes that do
    /// not go through `write_pages`).
    pub(crate) fn count_pages_written(&self, bytes: u64) {
        let pages = bytes.div_ceil(self.geometry.page_bytes());
        self.pages_written.fetch_add(pages, Ordering::Relaxed);
    }

    /// Writes bytes that recovery may read as they are: a meta slot. Any failure
    /// poisons, a full disk's too: the slot may hold part of the new meta now.
    pub(crate) fn write_meta_at(&self, offset: u64, bufs: &[&[u8]]) -> Result<()> {
        let len = bufs.iter().map(|b| b.len() as u64).sum();
        self.guard_write(offset, len, || self.backend.write_all_at(bufs, offset))?
            .map_err(|e| self.poison(e))
    }

    /// Writes bytes of pages that no snapshot and no durable meta references: free
    /// pages, or pages past the committed end (a commit's pages before its meta, a large
    /// value's blob, the zeros ahead, the bulk loader's pages). Whatever such a write
    /// leaves there (all of it, a part, or nothing) is read by no one, so a failure for
    /// want of room fails the write alone (`fail_unreferenced`).
    pub(crate) fn write_unreferenced(&self, offset: u64, bufs: &[&[u8]]) -> Result<()> {
        let len = bufs.iter().map(|b| b.len() as u64).sum();
        self.guard_write(offset, len, || self.backend.write_all_at(bufs, offset))?
            .map_err(|e| self.fail_unreferenced(e))
    }

    /// Runs `write`, which writes `len` bytes at `offset` (through this handle, or around
    /// it with direct I/O), unless the handle is poisoned. Cached copies of the pages in
    /// the range are dropped before the write, so that no transaction that begins later
    /// reads an old copy, and again after it, failed or not, so that none read during it
    /// is kept. A write that succeeds past every write tried before (`reached`) took new
    /// blocks: the disk has room again (`out_of_space`). The write's own outcome is for
    /// the caller to judge.
    pub(crate) fn guard_write(
        &self,
        offset: u64,
        len: u64,
        write: impl FnOnce() -> io::Result<()>,
    ) -> Result<io::Result<()>> {
        self.check_not_poisoned()?;
        let page = self.geometry.page_bytes();
        let end = offset.saturating_add(len);
        let first = offset / page;
        let pages = end.div_ceil(page) - first;
        let reached = self.reached.fetch_max(end, Ordering::SeqCst);
        self.cache.forget_range(PageId(first), pages);
        let written = write();
        self.cache.forget_range(PageId(first), pages);
        if written.is_ok() && end > reached && self.is_out_of_space() {
            self.out_of_space.store(false, Ordering::SeqCst);
        }
        Ok(written)
    }

    pub(crate) fn sync(&self) -> Result<()> {
        self.check_not_poisoned()?;
        self.syncs.fetch_add(1, Ordering::Relaxed);
        self.backend.sync_data().map_err(|e| self.poison(e))
    }

    /// Marks the handle failed (see `poisoned`) and returns the error to report.
    pub(crate) fn poison(&self, e: io::Error) -> Error {
        self.poisoned.store(true, Ordering::SeqCst);
        Error::Io(e)
    }

    /// The error to report for a write of unreferenced pages (`write_unreferenced`), or a
    /// growth of the file, that failed with `e`. For want of room (`is_full_disk`) the
    /// failure changed nothing that any snapshot or recovery reads, and the kernel
    /// keeps no page it failed to write (the call itself failed; no writeback did): the
    /// handle stays usable, and notes that the disk is full. Anything else poisons.
    pub(crate) fn fail_unreferenced(&self, e: io::Error) -> Error {
        if !is_full_disk(&e) {
            return self.poison(e);
        }
        self.out_of_space.store(true, Ordering::SeqCst);
        Error::Io(e)
    }

    /// Whether a write or growth failed for want of room, and no later write has shown
    /// that there is room again (see `out_of_space`).
    pub(crate) fn is_out_of_space(&self) -> bool {
        self.out_of_space.load(Ordering::Relaxed)
    }

    /// Whether writes are refused: one failed, or this process is a forked child of the
    /// one that opened the storage (the clean close then writes nothing either).
    pub(crate) fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::SeqCst) || self.in_forked_child()
    }

    fn in_forked_child(&self) -> bool {
        crate::fork::generation() != self.generation
    }

    /// `Error::Forked` in a child forked after the storage was opened: its reads would
    /// not hold back the parent's reuse of pages, and its writes would clash with the
    /// parent's (`crate::fork`).
    pub(crate) fn check_process(&self) -> Result<()> {
        match self.in_forked_child() {
            true => Err(Error::Forked),
            false => Ok(()),
        }
    }

    pub(crate) fn check_not_poisoned(&self) -> Result<()> {
        self.check_process()?;
        if self.poisoned.load(Ordering::SeqCst) {
            return Err(Error::Io(io::Error::other(
                "an earlier write, sync or change of the file's size failed; reopen the database \
                 to continue",
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The operating system's errors as the standard library kinds them: only a full
    /// disk, a spent quota and a file past its largest size spare the handle.
    #[test]
    fn a_full_disk_is_enospc_edquot_or_efbig() {
        use rustix::io::Errno;
        let errors = [
            (Errno::NOSPC, true),
            (Errno::DQUOT, true),
            (Errno::FBIG, true),
            (Errno::IO, false),
            (Errno::ROFS, false),
            (Errno::INVAL, false),
        ];
        for (errno, full) in errors {
            assert_eq!(is_full_disk(&io::Error::from(errno)), full, "{errno:?}");
        }
        assert!(!is_full_disk(&io::Error::other("no space left")));
    }

    /// An eighth of the file, within 1 and 16 MiB: a large file carries at most 16 MiB of
    /// room past its pages (twice that before it is shortened), not an eighth of itself.
    #[test]
    fn growth_steps_are_an_eighth_between_1_and_16_mib() {
        const MIB: u64 = 1 << 20;
        assert_eq!(growth_step(0), MIB);
        assert_eq!(growth_step(40 * MIB), 5 * MIB);
        assert_eq!(growth_step(128 * MIB), 16 * MIB);
        assert_eq!(growth_step(300 * MIB), 16 * MIB);
        assert_eq!(growth_step(u64::MAX), 16 * MIB);
    }
}
