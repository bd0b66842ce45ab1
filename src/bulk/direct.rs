//! Opening the database file a second time with `O_DIRECT`, and the aligned buffers that
//! direct writes need. See FORMAT.md#bulk-load.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, StatxFlags};

/// Alignment of buffers, offsets and lengths when the file system does not say (statx
/// without `STATX_DIOALIGN`, before Linux 6.1): the largest logical block size in
/// common use, and the smallest page size, so any page offset qualifies.
const DIO_ALIGN_DEFAULT: usize = 4096;

/// Largest alignment we accept: buffers are over-allocated by this much.
const DIO_ALIGN_MAX: usize = 65536;

/// A descriptor of the database file opened with `O_DIRECT`, and the alignment its
/// buffers need (offsets and lengths are page multiples, which the open checked).
pub(crate) struct DirectFile {
    pub fd: OwnedFd,
    pub mem_align: usize,
}

/// Opens `path` for direct writes, if it names the same file as `locked` (the flock'd
/// descriptor the database uses for everything else) and the file system accepts
/// `O_DIRECT` at offsets and lengths that are multiples of `page_size`. `Err` holds
/// why not (the caller then writes through the page cache); a refusal that only shows
/// at the first write is handled by the writer.
pub(crate) fn open(path: &Path, locked: &File, page_size: usize) -> Result<DirectFile, String> {
    if path.as_os_str().is_empty() {
        return Err("the database has no path".into());
    }
    let fd = match rustix::fs::open(
        path,
        OFlags::WRONLY | OFlags::DIRECT | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) => {
            let e = io::Error::from(e);
            return Err(format!("opening {} with O_DIRECT: {e}", path.display()));
        }
    };
    // The path may have been renamed or replaced since the database was opened: write
    // only if it is still the very file we hold the lock on.
    let ours = rustix::fs::fstat(locked).map_err(|e| format!("fstat: {e}"))?;
    let theirs = rustix::fs::fstat(&fd).map_err(|e| format!("fstat: {e}"))?;
    if (ours.st_dev, ours.st_ino) != (theirs.st_dev, theirs.st_ino) {
        return Err(format!(
            "{} is no longer the open database file",
            path.display()
        ));
    }
    let (mem_align, offset_align) = dio_alignment(&fd);
    if offset_align == 0 {
        return Err("the file system does not support direct I/O (statx)".into());
    }
    if !offset_align.is_power_of_two() || !page_size.is_multiple_of(offset_align) {
        return Err(format!(
            "direct I/O needs {offset_align}-byte alignment, pages are {page_size} bytes"
        ));
    }
    if !mem_align.is_power_of_two() || mem_align > DIO_ALIGN_MAX {
        return Err(format!("direct I/O needs {mem_align}-byte aligned memory"));
    }
    Ok(DirectFile {
        fd,
        mem_align: mem_align.max(DIO_ALIGN_DEFAULT),
    })
}

/// (memory, file offset) alignment for direct I/O on `fd`: from statx where the kernel
/// reports it (0 means not supported), else the safe default.
fn dio_alignment(fd: &OwnedFd) -> (usize, usize) {
    match rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::DIOALIGN) {
        Ok(s) if StatxFlags::from_bits_retain(s.stx_mask).contains(StatxFlags::DIOALIGN) => (
            s.stx_dio_mem_align as usize,
            s.stx_dio_offset_align as usize,
        ),
        _ => (DIO_ALIGN_DEFAULT, DIO_ALIGN_DEFAULT),
    }
}

/// Whether an error from a direct write means "this file system refuses direct I/O"
/// (the writer then falls back to buffered writes) rather than a failed write.
pub(crate) fn is_refusal(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
        || e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error())
}

/// One `pwrite` loop on the direct descriptor. Offsets and lengths are page multiples
/// and the buffer is aligned (`direct::open` checked the file system's requirements).
pub(crate) fn write_all_at(d: &DirectFile, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    debug_assert_eq!(data.as_ptr() as usize % d.mem_align, 0);
    while !data.is_empty() {
        match rustix::io::pwrite(&d.fd, data, offset) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                data = &data[n..];
                offset += n as u64;
            }
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A fixed-capacity byte buffer whose start is aligned for direct I/O, made without
/// `unsafe`: a zeroed `Vec` over-allocated by the alignment, used from the first aligned
/// byte. The `Vec` never grows, so its heap block (and the alignment) stays put when the
/// buffer moves between threads.
pub(crate) struct AlignedBuf {
    bytes: Vec<u8>,
    start: usize,
    capacity: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn new(capacity: usize, align: usize) -> AlignedBuf {
        assert!(
            align.is_power_of_two() && align <= DIO_ALIGN_MAX,
            "alignment {align}"
        );
        let bytes = vec![0u8; capacity + align];
        let start = bytes.as_ptr().align_offset(align);
        assert!(start < align, "align_offset on u8 always succeeds");
        AlignedBuf {
            bytes,
            start,
            capacity,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn is_full(&self) -> bool {
        self.len == self.capacity
    }

    pub(crate) fn clear(&mut self) {
        self.len = 0;
    }

    /// The filled part.
    pub(crate) fn filled(&self) -> &[u8] {
        &self.bytes[self.start..self.start + self.len]
    }

    /// Copies as much of `src` as fits; returns how much.
    pub(crate) fn extend_from(&mut self, src: &[u8]) -> usize {
        let n = src.len().min(self.capacity - self.len);
        let at = self.start + self.len;
        self.bytes[at..at + n].copy_from_slice(&src[..n]);
        self.len += n;
        n
    }

    /// Grows the filled part by `count` bytes (which must fit) and returns them, holding
    /// whatever they held before, for the caller to overwrite.
    pub(crate) fn extend_with(&mut self, count: usize) -> &mut [u8] {
        assert!(
            count <= self.capacity - self.len,
            "{count} bytes do not fit"
        );
        let at = self.start + self.len;
        self.len += count;
        &mut self.bytes[at..at + count]
    }

    /// Appends up to `count` zero bytes (as many as fit); returns how many.
    pub(crate) fn extend_zeros(&mut self, count: usize) -> usize {
        let n = count.min(self.capacity - self.len);
        let at = self.start + self.len;
        self.bytes[at..at + n].fill(0);
        self.len += n;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aligned_buffers_are_aligned_and_bounded() {
        for align in [4096, 8192, 65536] {
            let mut b = AlignedBuf::new(3 * 4096, align);
            assert_eq!(b.filled().as_ptr() as usize % align, 0);
            assert_eq!(b.extend_from(&[7; 5000]), 5000);
            assert_eq!(b.extend_zeros(10_000), 3 * 4096 - 5000);
            assert!(b.is_full());
            assert_eq!(b.extend_from(&[1]), 0);
            assert_eq!(&b.filled()[4999..5001], &[7, 0]);
            b.clear();
            assert!(b.is_empty());
        }
    }

    /// A misaligned direct write is refused with EINVAL: the signal the writer takes
    /// for "fall back to buffered writes".
    #[test]
    fn misaligned_direct_write_reads_as_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let file = File::create(&path).unwrap();
        let Ok(direct) = open(&path, &file, 4096) else {
            return; // This file system refuses O_DIRECT outright: nothing to test here.
        };
        let mut buf = AlignedBuf::new(8192, direct.mem_align);
        buf.extend_zeros(8192);
        // Some file systems (tmpfs) accept any alignment; ext4 and XFS refuse this one.
        if let Err(e) = rustix::io::pwrite(&direct.fd, &buf.filled()[1..4097], 0) {
            assert!(is_refusal(&e.into()));
        }
        rustix::io::pwrite(&direct.fd, &buf.filled()[..4096], 4096).unwrap();
    }

    #[test]
    fn refuses_another_file_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let file_a = File::create(&a).unwrap();
        File::create(&b).unwrap();
        let reason = open(&b, &file_a, 4096).err().unwrap();
        assert!(reason.contains("no longer"), "{reason}");
        assert!(open(Path::new(""), &file_a, 4096).is_err());
    }
}
