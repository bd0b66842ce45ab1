//! The file itself: the operations the engine needs of it (`Backend`), the real file's
//! implementation, and its lock. `Storage` builds the map, the reads and growth on top.

#![allow(unsafe_code)] // the unsafe trait `Backend` and its one implementation here

use std::fs::File;
use std::io::{self, IoSlice};
use std::os::unix::fs::FileExt;

use crate::error::{Error, Result};

/// The file operations the engine needs. The real file implements it; tests can put a
/// recording, crashing or failing layer in its place.
///
/// # Safety
///
/// The engine maps the file that [`Backend::file`] returns and hands out slices of the
/// map for as long as transactions live. An implementation that returns `Some(file)`
/// must make it the very file its reads and writes operate on, and must guarantee that
/// nothing else writes to or truncates that file while the database is open (the engine
/// takes a lock only when it opens the file itself). Returning `None` is always sound:
/// every read then goes through [`Backend::read_exact_at`].
pub unsafe trait Backend: Send + Sync + 'static {
    /// Fills `buf` from `offset`; `UnexpectedEof` if the file ends first.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes the buffers back to back starting at `offset`.
    fn write_all_at(&self, bufs: &[&[u8]], offset: u64) -> io::Result<()>;
    /// Makes everything written so far durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// The file length in bytes.
    fn file_len(&self) -> io::Result<u64>;
    /// Grows or shrinks the file.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// The file to map, if this backend has one (None: every read goes through pread).
    fn file(&self) -> Option<&File>;
    /// Drops the operating system's clean cached copies of the bytes `offset..offset +
    /// len` (`len` 0: to the end of the file), so that later reads see what the disk
    /// holds; dirty copies stay (and a sync writes them). After a failed sync, Linux may
    /// keep pages that never reached the disk in its cache, marked clean: recovery calls
    /// this before it trusts what it reads. The default does nothing (a backend with no
    /// cache of its own).
    fn drop_cached(&self, offset: u64, len: u64) -> io::Result<()> {
        let _ = (offset, len);
        Ok(())
    }
}

/// The most bytes one `pwritev` writes.
///
/// Linux sizes the page-cache folios that a buffered write creates by the write's
/// length, up to 2 MiB. ext4 then walks every block buffer of a folio on each later
/// write into it (`ext4_block_write_begin`) and again at writeback. After one large
/// commit had written the file in calls of up to 4 MiB, each 4 KiB page that later
/// commits wrote into its 2 MiB folios walked 512 buffers: batches of 1,000 inserts
/// spent twice the system time (BENCHMARKS.md, "Writes of at most 64 KiB"). Calls of at
/// most 64 KiB keep folios at 16 pages or fewer and cost a large commit one system call
/// per 64 KiB.
const WRITE_CALL_BYTES: usize = 64 << 10;
/// The most buffers one `pwritev` takes on Linux.
const IOV_MAX: usize = 1024;

/// Writes all of `call` at `offset` and empties it; returns the bytes written.
fn pwritev_all(file: &File, call: &mut Vec<IoSlice>, offset: u64) -> io::Result<u64> {
    let mut written = 0;
    let mut rest = &mut call[..];
    while !rest.is_empty() {
        let n = match rustix::io::pwritev(file, rest, offset + written) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        written += n as u64;
        IoSlice::advance_slices(&mut rest, n);
    }
    call.clear();
    Ok(written)
}

pub(crate) struct FileBackend {
    pub file: File,
}

// SAFETY: `file` is the file all operations use; `Database::open_with` locks it
// exclusively (read-write) or shared (read-only) before the backend is made, and the lock
// lives as long as the file.
unsafe impl Backend for FileBackend {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
        let mut call: Vec<IoSlice> = Vec::new();
        let mut call_bytes = 0;
        for piece in bufs.iter().flat_map(|b| b.chunks(WRITE_CALL_BYTES)) {
            if call_bytes + piece.len() > WRITE_CALL_BYTES || call.len() == IOV_MAX {
                offset += pwritev_all(&self.file, &mut call, offset)?;
                call_bytes = 0;
            }
            call.push(IoSlice::new(piece));
            call_bytes += piece.len();
        }
        pwritev_all(&self.file, &mut call, offset)?;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn file_len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn file(&self) -> Option<&File> {
        Some(&self.file)
    }

    /// `posix_fadvise(POSIX_FADV_DONTNEED)`: Linux starts writeback of dirty pages, then
    /// drops the clean pages of the range that no process maps and no writeback holds.
    /// Other systems: nothing (see README, Crash safety).
    fn drop_cached(&self, offset: u64, len: u64) -> io::Result<()> {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        rustix::fs::fadvise(
            &self.file,
            offset,
            std::num::NonZeroU64::new(len),
            rustix::fs::Advice::DontNeed,
        )?;
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        let _ = (offset, len);
        Ok(())
    }
}

/// Takes the lock that keeps other handles out: exclusive for read-write, shared for
/// read-only. Fails at once with `Error::Locked`; other failures name `path`.
pub(crate) fn lock_file(file: &File, path: &std::path::Path, exclusive: bool) -> Result<()> {
    use rustix::fs::FlockOperation;
    let op = if exclusive {
        FlockOperation::NonBlockingLockExclusive
    } else {
        FlockOperation::NonBlockingLockShared
    };
    match rustix::fs::flock(file, op) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::Locked),
        Err(e) => Err(crate::path_error::at("locking", path)(e.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: usize = 4096;

    #[test]
    fn writes_split_into_calls_land_byte_for_byte() {
        // Buffers around the per-call limit and past IOV_MAX of them: one larger than
        // the limit, empty ones, a run of tiny ones, and pages, at an unaligned offset.
        let mut bufs: Vec<Vec<u8>> = vec![vec![1; WRITE_CALL_BYTES * 2 + 17], Vec::new()];
        bufs.extend((0..IOV_MAX + 300).map(|i| vec![i as u8; 1 + i % 3]));
        bufs.extend((0..40).map(|i| vec![(i * 7) as u8; PAGE]));
        bufs.push(vec![9; WRITE_CALL_BYTES - 1]);
        let file = tempfile::NamedTempFile::new().unwrap();
        let backend = FileBackend {
            file: File::options().write(true).open(file.path()).unwrap(),
        };
        let slices: Vec<&[u8]> = bufs.iter().map(|b| &b[..]).collect();
        backend.write_all_at(&slices, 5).unwrap();
        let want: Vec<u8> = std::iter::repeat_n(0, 5).chain(bufs.concat()).collect();
        assert!(std::fs::read(file.path()).unwrap() == want);
    }
}
