//! Values as byte ranges of the database file: [`ValueExtent`] (for `sendfile(2)` and
//! `splice(2)` straight from the file to a socket) and the `Read + Seek` value reader.
//! See FORMAT.md#value-extents.
//!
//! A value's range stays valid and unchanged while the read transaction that found it
//! lives: the pages its snapshot reaches are never written again before it ends
//! (FORMAT.md#page-reuse), and the file is never shortened below them
//! (FORMAT.md#shrinking-the-file).
//!
//! Not after it ends, and `sendfile` and `splice` hand the kernel references to the
//! file's cached pages, which a pipe or a socket reads when its peer takes the bytes: the
//! transaction must outlive the transfer, not only the call (`ValueExtent::send_to`).

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::ops::{Bound, RangeBounds};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;

use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::node::{self, OverflowRef};
use crate::page::VALUE_LEN_MAX;
use crate::storage::PageReader;
use crate::tree::{self, TreeRecord, ValueAt};

/// Where a value lies in the file, checked against the snapshot.
pub(crate) struct Located<'t> {
    offset: u64,
    len: u64,
    /// The value's bytes when they are already in memory: through the map, or in the
    /// leaf page the lookup read.
    bytes: Option<&'t [u8]>,
}

/// Finds `key`'s value in `tree`: an inline value in its leaf page; an overflow value in
/// its blob, after checking what `get` checks (the blob's first page is a blob header
/// that records the length the leaf records, and the run lies inside the snapshot's
/// pages), reading only the blob's first page. Its checksum is not verified: that would
/// read the whole value, which is what an extent exists to avoid (`get` does not verify
/// it either; `Database::check` does).
pub(crate) fn locate<'t>(
    reader: &'t PageReader,
    tree: &TreeRecord,
    key: &[u8],
) -> Result<Option<Located<'t>>> {
    let g = *reader.geometry();
    Ok(Some(match tree::find_value(reader, tree, key)? {
        None => return Ok(None),
        Some(ValueAt::Inline {
            page,
            offset,
            bytes,
        }) => Located {
            offset: g.offset(page) + offset as u64,
            len: bytes.len() as u64,
            bytes: Some(bytes),
        },
        Some(ValueAt::Overflow(o)) => locate_blob(reader, &o)?,
    }))
}

/// Where the large value `o` lies: what `locate` checks of it (the blob's first page is a
/// blob header that records the length and padding the leaf records, and the run lies
/// inside the snapshot's pages), reading only the blob's first page.
pub(crate) fn locate_blob<'t>(reader: &'t PageReader, o: &OverflowRef) -> Result<Located<'t>> {
    let g = *reader.geometry();
    let (id, len) = (o.blob.page(), o.value_len());
    if len > VALUE_LEN_MAX {
        return Err(Error::corrupted(
            id.0,
            format!("overflow value of {len} bytes"),
        ));
    }
    let recorded = node::blob_header(&reader.fetch(id, 1)?, id)?;
    if recorded != (len, o.pad()) {
        return Err(Error::corrupted(
            id.0,
            format!("blob of {recorded:?} bytes and padding, its leaf says {len}"),
        ));
    }
    let (start, mapped) = reader.locate_run(id, o.pages(&g))?;
    let header = node::BLOB_HEADER_BYTES + o.pad() as usize;
    Ok(Located {
        offset: start + header as u64,
        len,
        bytes: mapped.map(|run| &run[header..header + len as usize]),
    })
}

/// Where a value's bytes lie in the database file: [`offset`](Self::offset) and
/// [`len`](Self::len) in the file that [`as_fd`](AsFd::as_fd) gives. Valid, and
/// unchanged, for as long as the read transaction that found it lives (the lifetime
/// says so), whatever writers do meanwhile. From [`ReadTree::get_extent`].
///
/// [`ReadTree::get_extent`]: crate::ReadTree::get_extent
#[derive(Clone, Copy)]
pub struct ValueExtent<'t> {
    file: &'t File,
    offset: u64,
    len: u64,
    bytes: Option<&'t [u8]>,
}

impl<'t> ValueExtent<'t> {
    pub(crate) fn new(reader: &'t PageReader, at: Located<'t>) -> Result<ValueExtent<'t>> {
        let file = reader.served_file().ok_or_else(|| {
            Error::Io(io::Error::new(
                io::ErrorKind::Unsupported,
                "value extents need a database file: this database was opened on a backend \
                 without one",
            ))
        })?;
        Ok(ValueExtent {
            file,
            offset: at.offset,
            len: at.len,
            bytes: at.bytes,
        })
    }

    /// The value's first byte's offset in the database file.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The value's length in bytes.
    #[expect(
        clippy::len_without_is_empty,
        reason = "an extent is a range, not a container"
    )]
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Sends the bytes `range` of the value (relative to its start: `..` is the whole
    /// value, `10..20` its bytes 10 to 19) to `out`, a socket, pipe or file, and returns
    /// how many were sent.
    ///
    /// The bytes go from the file to `out` inside the kernel where it can: `sendfile(2)`
    /// (any `out` on Linux since 2.6.33, in a loop over partial transfers and `EINTR`),
    /// else `splice(2)`, through a pipe unless `out` is one, else a plain `write` from
    /// the map or from a bounded buffer filled with `pread` (an `out` opened with
    /// `O_APPEND`, systems other than Linux).
    ///
    /// **Non-blocking `out`**: when it cannot take more (`EAGAIN`), the bytes sent so far
    /// are returned, possibly 0, rather than waiting. Wait until `out` is writable and
    /// send the rest with `send_to(out, start + sent..end)`.
    ///
    /// **Keep the transaction until the peer has the bytes.** `sendfile` and `splice`
    /// do not copy them: a pipe, or a socket's queues, keep references to the file's
    /// cached pages, and the bytes are read from those pages when the peer reads them
    /// (a pipe, a Unix socket, TCP over loopback) or when they are transmitted (TCP, up
    /// to the peer's acknowledgement), which may be long after this returns. Once the
    /// read transaction ends, a commit may reuse the value's pages, and the peer then
    /// receives what that commit wrote instead. So keep the transaction (and the
    /// snapshot it holds) alive until the peer has read what was sent: in a
    /// request-response protocol, until the peer's next request or its close
    /// (`examples/serve.rs` does this). Where that cannot be known, send a copy instead
    /// (`write` of what [`get`](crate::ReadTree::get) returns, or of a
    /// [`value_reader`](crate::ReadTree::value_reader)'s bytes).
    ///
    /// **Errors**: a `range` that ends past the value or starts after it ends is an
    /// `Error::Io` of kind `InvalidInput`. Errors from `out` (a peer that closed the
    /// connection: `EPIPE`, `ECONNRESET`) are `Error::Io` too; they leave the database
    /// untouched and usable. Like `write(2)`, sending to a socket whose peer has closed
    /// raises `SIGPIPE`, which Rust programs ignore by default.
    pub fn send_to(&self, out: &impl AsFd, range: impl RangeBounds<u64>) -> Result<u64> {
        let (start, end) = self.bounds(&range)?;
        let source = Source {
            file: self.file,
            value_offset: self.offset,
            bytes: self.bytes,
        };
        Ok(send(&source, start, end, out.as_fd(), Method::Sendfile)?)
    }

    /// `range` as `start..end` within the value, or `InvalidInput`.
    fn bounds(&self, range: &impl RangeBounds<u64>) -> Result<(u64, u64)> {
        let start = match range.start_bound() {
            Bound::Included(&a) => Some(a),
            Bound::Excluded(&a) => a.checked_add(1),
            Bound::Unbounded => Some(0),
        };
        let end = match range.end_bound() {
            Bound::Included(&b) => b.checked_add(1),
            Bound::Excluded(&b) => Some(b),
            Bound::Unbounded => Some(self.len),
        };
        match (start, end) {
            (Some(start), Some(end)) if start <= end && end <= self.len => Ok((start, end)),
            _ => Err(Error::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {:?}..{:?} lies outside the value's {} bytes",
                    range.start_bound(),
                    range.end_bound(),
                    self.len
                ),
            ))),
        }
    }
}

impl std::fmt::Debug for ValueExtent<'_> {
    /// The range, not the bytes (a value may be gigabytes long).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ValueExtent")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .field("in_memory", &self.bytes.is_some())
            .finish()
    }
}

impl AsFd for ValueExtent<'_> {
    /// The database file, opened read-only for this purpose (not the database's own
    /// descriptor, which holds its lock): a copy of it (`try_clone_to_owned`) may be
    /// kept after the transaction and the database are gone, and sees the file as it
    /// then is. Read it with positioned reads (`pread`, `sendfile` with an offset); its
    /// file offset is shared by every extent of the database. Where `/proc` is not
    /// mounted, it is the database's own descriptor: then a kept copy keeps the file
    /// locked, and writing through it would break the guarantees above.
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.file.as_fd()
    }
}

/// What a send reads from: the file, the value's offset in it, and the value's bytes if
/// they are in memory.
struct Source<'a> {
    file: &'a File,
    value_offset: u64,
    bytes: Option<&'a [u8]>,
}

/// How bytes get from the file to `out`, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Sendfile,
    Splice,
    Write,
}

/// Why a method stopped before the end.
enum Stop {
    Done,
    /// `out` is non-blocking and full.
    WouldBlock,
    /// This method cannot serve `out` (it sent nothing): try the next.
    Refused,
}

/// The largest transfer Linux does in one `sendfile` or `write` call.
const TRANSFER_BYTES_MAX: u64 = 0x7fff_f000;
/// The buffer of the `write` fallback when the value is not in memory.
const COPY_BUFFER_BYTES: u64 = 256 << 10;
/// The pipe `splice` goes through, if the system grants it (else the default, 64 KiB).
const PIPE_BYTES: usize = 1 << 20;

/// Sends the value's bytes `start..end` to `out`, beginning with `first` and falling back
/// to the later methods where it refuses `out`. Returns the bytes sent.
fn send(source: &Source, start: u64, end: u64, out: BorrowedFd, first: Method) -> io::Result<u64> {
    let mut pos = start;
    let methods = [Method::Sendfile, Method::Splice, Method::Write];
    for method in methods.into_iter().skip_while(|&m| m != first) {
        let stop = match method {
            Method::Sendfile => by_sendfile(source, &mut pos, end, out)?,
            Method::Splice => by_splice(source, &mut pos, end, out)?,
            Method::Write => by_write(source, &mut pos, end, out)?,
        };
        match stop {
            Stop::Done | Stop::WouldBlock => return Ok(pos - start),
            Stop::Refused => debug_assert_eq!(pos, start),
        }
    }
    unreachable!("the write method never refuses")
}

/// The database file ended inside a value: only another program truncating the file
/// behind the lock can do that (FORMAT.md#storage).
fn file_ended() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "the database file ended inside a value (truncated by another program?)",
    )
}

#[cfg(target_os = "linux")]
fn by_sendfile(source: &Source, pos: &mut u64, end: u64, out: BorrowedFd) -> io::Result<Stop> {
    let start = *pos;
    while *pos < end {
        let mut offset = source.value_offset + *pos;
        let count = (end - *pos).min(TRANSFER_BYTES_MAX) as usize;
        match rustix::fs::sendfile(out, source.file, Some(&mut offset), count) {
            Ok(0) => return Err(file_ended()),
            Ok(n) => *pos += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Ok(Stop::WouldBlock),
            Err(Errno::INVAL | Errno::NOSYS) if *pos == start => return Ok(Stop::Refused),
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Stop::Done)
}

#[cfg(not(target_os = "linux"))]
fn by_sendfile(_: &Source, _: &mut u64, _: u64, _: BorrowedFd) -> io::Result<Stop> {
    Ok(Stop::Refused)
}

/// `splice` from the file straight into `out` if it is a pipe, else through a pipe of
/// our own: each round fills it from the file, then drains it into `out`. Bytes left in
/// our pipe when `out` blocks are dropped with it (they were not counted as sent).
#[cfg(target_os = "linux")]
fn by_splice(source: &Source, pos: &mut u64, end: u64, out: BorrowedFd) -> io::Result<Stop> {
    use rustix::pipe::{SpliceFlags, splice};
    let start = *pos;
    // `out` a pipe: one splice a round, no pipe of our own.
    while *pos < end {
        let mut offset = source.value_offset + *pos;
        let count = (end - *pos).min(TRANSFER_BYTES_MAX) as usize;
        match splice(
            source.file,
            Some(&mut offset),
            out,
            None,
            count,
            SpliceFlags::MORE,
        ) {
            Ok(0) => return Err(file_ended()),
            Ok(n) => *pos += n as u64,
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => return Ok(Stop::WouldBlock),
            // `out` is not a pipe.
            Err(Errno::INVAL) if *pos == start => break,
            Err(Errno::NOSYS) if *pos == start => return Ok(Stop::Refused),
            Err(e) => return Err(e.into()),
        }
    }
    if *pos == end {
        return Ok(Stop::Done);
    }
    let (pipe_read, pipe_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
    let _ = rustix::pipe::fcntl_setpipe_size(&pipe_write, PIPE_BYTES);
    let capacity = rustix::pipe::fcntl_getpipe_size(&pipe_write).unwrap_or(64 << 10) as u64;
    while *pos < end {
        let mut offset = source.value_offset + *pos;
        let count = (end - *pos).min(capacity) as usize;
        // Our pipe is empty and takes `count` bytes: this never waits for room.
        let mut filled = match splice(
            source.file,
            Some(&mut offset),
            &pipe_write,
            None,
            count,
            SpliceFlags::NONBLOCK,
        ) {
            Ok(0) => return Err(file_ended()),
            Ok(n) => n,
            Err(Errno::INTR) => continue,
            Err(Errno::INVAL | Errno::NOSYS) if *pos == start => return Ok(Stop::Refused),
            Err(e) => return Err(e.into()),
        };
        while filled > 0 {
            match splice(&pipe_read, None, out, None, filled, SpliceFlags::MORE) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    filled -= n;
                    *pos += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(Stop::WouldBlock),
                Err(Errno::INVAL | Errno::NOSYS) if *pos == start => return Ok(Stop::Refused),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Stop::Done)
}

#[cfg(not(target_os = "linux"))]
fn by_splice(_: &Source, _: &mut u64, _: u64, _: BorrowedFd) -> io::Result<Stop> {
    Ok(Stop::Refused)
}

/// `write` from the value's bytes in memory, or from a bounded buffer filled with
/// `pread`. Never refuses: errors are `out`'s.
fn by_write(source: &Source, pos: &mut u64, end: u64, out: BorrowedFd) -> io::Result<Stop> {
    let mut buf = Vec::new();
    while *pos < end {
        let count = (end - *pos).min(TRANSFER_BYTES_MAX);
        let chunk: &[u8] = match source.bytes {
            Some(bytes) => &bytes[*pos as usize..(*pos + count) as usize],
            None => {
                buf.resize(count.min(COPY_BUFFER_BYTES) as usize, 0);
                match source
                    .file
                    .read_exact_at(&mut buf, source.value_offset + *pos)
                {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(file_ended()),
                    Err(e) => return Err(e),
                }
                &buf
            }
        };
        let mut written = 0;
        while written < chunk.len() {
            match rustix::io::write(out, &chunk[written..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    *pos += n as u64;
                }
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(Stop::WouldBlock),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(Stop::Done)
}

/// A value read as a stream: `Read + Seek` over its bytes, from the map when they are
/// mapped, else with `pread` straight into the caller's buffer, so that a value larger
/// than memory can be read at `mmap_size(0)`. From [`ReadTree::value_reader`].
///
/// [`ReadTree::value_reader`]: crate::ReadTree::value_reader
pub(crate) struct ValueReader<'t> {
    reader: &'t PageReader,
    at: Located<'t>,
    /// The position in the value; may lie past its end (reads there give 0 bytes).
    pos: u64,
}

impl<'t> ValueReader<'t> {
    pub(crate) fn new(reader: &'t PageReader, at: Located<'t>) -> ValueReader<'t> {
        ValueReader { reader, at, pos: 0 }
    }
}

impl Read for ValueReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.at.len.saturating_sub(self.pos)) as usize;
        if n == 0 {
            return Ok(0);
        }
        match self.at.bytes {
            Some(bytes) => buf[..n].copy_from_slice(&bytes[self.pos as usize..][..n]),
            None => match self
                .reader
                .read_at(&mut buf[..n], self.at.offset + self.pos)
            {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(file_ended()),
                Err(e) => return Err(e),
            },
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ValueReader<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(n) => Some(n),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
            SeekFrom::End(d) => self.at.len.checked_add_signed(d),
        };
        self.pos = pos.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek to a negative or overflowing position",
            )
        })?;
        Ok(self.pos)
    }

    fn stream_position(&mut self) -> io::Result<u64> {
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    /// A file of `len` distinct-ish bytes, and a source over its bytes `at..`.
    fn file(len: usize) -> (tempfile::NamedTempFile, Vec<u8>) {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        let bytes: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        f.write_all(&bytes).unwrap();
        (f, bytes)
    }

    /// Every method, forced, to a pipe and a socket, over ranges of a value at an
    /// offset, with and without the bytes in memory: the bytes that arrive are the
    /// value's.
    #[test]
    fn every_method_sends_the_range_to_pipes_and_sockets() {
        let (f, bytes) = file(3 << 20);
        let handle = File::open(f.path()).unwrap();
        let value_offset = 12_345;
        let value = &bytes[value_offset as usize..];
        for method in [Method::Sendfile, Method::Splice, Method::Write] {
            for in_memory in [false, true] {
                let source = Source {
                    file: &handle,
                    value_offset,
                    bytes: in_memory.then_some(value),
                };
                for (start, end) in [
                    (0, 0),
                    (0, 1),
                    (10, 20),
                    (0, value.len() as u64),
                    (1 << 20, (2 << 20) + 7),
                ] {
                    let want = &value[start as usize..end as usize];
                    let (mut a, b) = UnixStream::pair().unwrap();
                    let reader = std::thread::spawn(move || {
                        let mut got = Vec::new();
                        a.read_to_end(&mut got).unwrap();
                        got
                    });
                    let sent = send(&source, start, end, b.as_fd(), method).unwrap();
                    drop(b);
                    assert_eq!(sent, end - start, "{method:?} {start}..{end}");
                    assert!(
                        reader.join().unwrap() == want,
                        "{method:?} socket {start}..{end}"
                    );

                    let (r, w) = rustix::pipe::pipe().unwrap();
                    let reader = std::thread::spawn(move || {
                        let mut got = Vec::new();
                        File::from(r).read_to_end(&mut got).unwrap();
                        got
                    });
                    let sent = send(&source, start, end, w.as_fd(), method).unwrap();
                    drop(w);
                    assert_eq!(sent, end - start);
                    assert!(
                        reader.join().unwrap() == want,
                        "{method:?} pipe {start}..{end}"
                    );
                }
            }
        }
    }

    /// A file opened for appending refuses `sendfile` and `splice` (EINVAL): the write
    /// fallback serves it.
    #[test]
    fn an_append_only_file_falls_back_to_write() {
        let (f, bytes) = file(1 << 20);
        let handle = File::open(f.path()).unwrap();
        let source = Source {
            file: &handle,
            value_offset: 0,
            bytes: None,
        };
        let out_path = f.path().with_extension("out");
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&out_path)
            .unwrap();
        let sent = send(&source, 5, 700_000, out.as_fd(), Method::Sendfile).unwrap();
        assert_eq!(sent, 700_000 - 5);
        assert!(std::fs::read(&out_path).unwrap() == bytes[5..700_000]);
        std::fs::remove_file(out_path).unwrap();
    }
}
