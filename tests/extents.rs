//! Value extents, sending and value readers (issue 17): every value has a byte range in
//! the file that matches `get`, at every page size and `mmap_size`; the range keeps its
//! bytes while the reader lives, whatever writers do; sends reach pipes, sockets and
//! files, report partial sends to non-blocking sockets, and fail cleanly on closed ones.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::os::unix::net::UnixStream;

use mapkv::{Database, Error, Options, Result};

const PAGE_SIZES: [usize; 2] = [4096, 16384];
/// Whole file mapped, nothing mapped, and a window that ends inside the file.
const MMAP_SIZES: [u64; 3] = [u64::MAX, 0, 64 << 10];

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + seed * 13 + i / 251) as u8)
        .collect()
}

/// The largest inline value for a key of `key_len` bytes (FORMAT.md#node-pages: slot 8,
/// cell header 4, key and value within half of the page after the 24-byte header).
fn inline_max(page_size: usize, key_len: usize) -> usize {
    (page_size - 24) / 2 - 8 - 4 - key_len
}

/// Value sizes around the inline/overflow boundary and around blob page boundaries.
fn sizes(page_size: usize) -> Vec<usize> {
    let boundary = inline_max(page_size, 8);
    let mut sizes: Vec<usize> = vec![0, 1, 100];
    sizes.extend(boundary - 3..=boundary + 3);
    for pages in [1, 2, 5] {
        let full = pages * page_size - 24;
        sizes.extend([full - 1, full, full + 1]);
    }
    sizes.push(300_000);
    sizes
}

fn key(i: usize) -> [u8; 8] {
    (i as u64).to_be_bytes()
}

/// Everything `sender` writes into one end of a socket pair, read on another thread.
fn received(send: impl FnOnce(&UnixStream) -> Result<u64>) -> Result<(u64, Vec<u8>)> {
    let (mut a, b) = UnixStream::pair()?;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        a.read_to_end(&mut got).map(|_| got)
    });
    let sent = send(&b);
    drop(b);
    let got = reader.join().expect("reader thread")?;
    Ok((sent?, got))
}

/// The value's bytes as the extent places them, read with pread from its descriptor.
fn read_extent(extent: &mapkv::ValueExtent) -> Result<Vec<u8>> {
    let file = File::from(extent.as_fd().try_clone_to_owned()?);
    let mut buf = vec![0; extent.len() as usize];
    file.read_exact_at(&mut buf, extent.offset())?;
    Ok(buf)
}

#[test]
fn extents_match_get_at_every_size_page_size_and_mmap_size() -> Result<()> {
    for page_size in PAGE_SIZES {
        let sizes = sizes(page_size);
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        {
            let db = Options::new().page_size(page_size).open(&path)?;
            let wtx = db.begin_write()?;
            let mut t = wtx.open_tree("t")?;
            for (i, &len) in sizes.iter().enumerate() {
                t.insert(&key(i), &bytes(i, len))?;
            }
            drop(t);
            wtx.commit()?;
        }
        for mmap_size in MMAP_SIZES {
            let db = Options::new().mmap_size(mmap_size).open(&path)?;
            let rtx = db.begin_read()?;
            let t = rtx.open_tree("t")?;
            for (i, &len) in sizes.iter().enumerate() {
                let what = format!("page {page_size}, mmap {mmap_size}, value of {len}");
                let want = bytes(i, len);
                let extent = t.get_extent(&key(i))?.expect("present");
                assert_eq!(extent.len(), len as u64, "{what}");
                let page = page_size as u64;
                if len > inline_max(page_size, 8) {
                    assert_eq!(extent.offset() % page, 24, "{what}: after the blob header");
                } else if len > 0 {
                    // (An empty value may sit at its page's very end: the next page's
                    // first byte.)
                    let in_page = extent.offset() % page;
                    assert!(in_page >= 24 && in_page + len as u64 <= page, "{what}");
                }
                assert!(read_extent(&extent)? == want, "{what}: the file's bytes");
                assert!(t.get(&key(i))? == Some(&want[..]), "{what}: get");

                let (sent, got) = received(|out| extent.send_to(out, ..))?;
                assert_eq!(sent, len as u64, "{what}");
                assert!(got == want, "{what}: sent");
                let (sent, got) = received(|out| Ok(t.send_value(&key(i), out)?.unwrap()))?;
                assert!(sent == len as u64 && got == want, "{what}: send_value");

                let mut r = t.value_reader(&key(i))?.expect("present");
                let mut all = Vec::new();
                r.read_to_end(&mut all)?;
                assert!(all == want, "{what}: value_reader");
            }
            assert!(t.get_extent(b"absent")?.is_none());
            assert!(t.send_value(b"absent", &io::stdout())?.is_none());
            assert!(t.value_reader(b"absent")?.is_none());
        }
    }
    Ok(())
}

/// A reader keeps sending the bytes of its snapshot while writers overwrite the value,
/// remove it, and fill the file with new pages: none of them may reuse the pages its
/// snapshot reaches.
#[test]
fn a_reader_sends_its_snapshots_bytes_while_writers_reuse_pages() -> Result<()> {
    for mmap_size in [u64::MAX, 0] {
        let dir = tempfile::tempdir()?;
        let db = Options::new()
            .mmap_size(mmap_size)
            .open(dir.path().join("db"))?;
        let (big, small) = (bytes(1, 200_000), bytes(2, 500));
        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("t")?;
        t.insert(b"big", &big)?;
        t.insert(b"small", &small)?;
        drop(t);
        wtx.commit()?;

        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        let big_extent = t.get_extent(b"big")?.unwrap();
        let small_extent = t.get_extent(b"small")?.unwrap();
        for round in 0..30 {
            let wtx = db.begin_write()?;
            let mut w = wtx.open_tree("t")?;
            match round % 3 {
                0 => {
                    w.insert(b"big", &bytes(100 + round, 200_000))?;
                    w.insert(b"small", &bytes(100 + round, 500))?;
                }
                1 => {
                    w.remove(b"big")?;
                    w.remove(b"small")?;
                }
                _ => {
                    // Fresh pages for a later writer to take, from the pages freed above.
                    for k in 0..50u32 {
                        w.insert(&k.to_be_bytes(), &bytes(round + k as usize, 3000))?;
                    }
                }
            }
            drop(w);
            wtx.commit()?;
            let (_, got) = received(|out| big_extent.send_to(out, ..))?;
            assert!(
                got == big,
                "round {round}, mmap {mmap_size}: big value changed"
            );
            let (_, got) = received(|out| small_extent.send_to(out, ..))?;
            assert!(got == small, "round {round}: inline value changed");
            assert!(read_extent(&big_extent)? == big);
        }
        let (_, got) = received(|out| Ok(t.send_value(b"big", out)?.unwrap()))?;
        assert!(got == big);
        drop(rtx);
        db.check()?;
    }
    Ok(())
}

fn one_value(len: usize) -> Result<(tempfile::TempDir, Database, Vec<u8>)> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let value = bytes(9, len);
    let wtx = db.begin_write()?;
    wtx.open_tree("t")?.insert(b"v", &value)?;
    wtx.commit()?;
    Ok((dir, db, value))
}

#[test]
fn sends_reach_pipes_and_regular_files() -> Result<()> {
    let (dir, db, value) = one_value(1 << 20)?;
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    let extent = t.get_extent(b"v")?.unwrap();

    let (r, w) = rustix::pipe::pipe().map_err(io::Error::from)?;
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        File::from(r).read_to_end(&mut got).map(|_| got)
    });
    assert_eq!(t.send_value(b"v", &w)?, Some(value.len() as u64));
    assert_eq!(extent.send_to(&w, 10..20)?, 10);
    drop(w);
    let got = reader.join().unwrap()?;
    assert!(got[..value.len()] == value[..] && got[value.len()..] == value[10..20]);

    // A regular file, and one opened for appending (which sendfile and splice refuse).
    for append in [false, true] {
        let path = dir.path().join(format!("out-{append}"));
        let out = File::options()
            .create(true)
            .write(true)
            .append(append)
            .open(&path)?;
        assert_eq!(extent.send_to(&out, 1000..)?, value.len() as u64 - 1000);
        assert_eq!(extent.send_to(&out, ..=4)?, 5);
        let written = std::fs::read(&path)?;
        assert!(
            written == [&value[1000..], &value[..5]].concat(),
            "append {append}"
        );
    }
    Ok(())
}

#[test]
fn ranges_are_checked_against_the_value() -> Result<()> {
    let (_dir, db, value) = one_value(5000)?;
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    let e = t.get_extent(b"v")?.unwrap();
    let len = value.len() as u64;
    for (range, want) in [
        ((10..20), &value[10..20]),
        ((0..len), &value[..]),
        ((len..len), &[][..]),
        ((4990..len), &value[4990..]),
    ] {
        let (sent, got) = received(|out| e.send_to(out, range.clone()))?;
        assert!(sent == want.len() as u64 && got == want, "{range:?}");
    }
    let (_, got) = received(|out| e.send_to(out, ..))?;
    assert!(got == value);
    let (_, got) = received(|out| e.send_to(out, 4000..=4009))?;
    assert!(got == value[4000..4010]);
    let (_, got) = received(|out| e.send_to(out, ..3))?;
    assert!(got == value[..3]);
    use std::ops::Bound::{Excluded, Included};
    let (_, got) = received(|out| e.send_to(out, (Excluded(1), Included(3))))?;
    assert!(got == value[2..4]);

    let (sock, _peer) = UnixStream::pair()?;
    for bad in [
        e.send_to(&sock, 0..len + 1),
        e.send_to(&sock, len + 1..),
        #[allow(clippy::reversed_empty_ranges)]
        e.send_to(&sock, 20..10),
        e.send_to(&sock, ..=len),
        e.send_to(&sock, u64::MAX..),
        e.send_to(&sock, (Excluded(u64::MAX), Included(u64::MAX))),
    ] {
        match bad {
            Err(Error::Io(err)) => assert_eq!(err.kind(), io::ErrorKind::InvalidInput),
            other => panic!("expected InvalidInput, got {other:?}"),
        }
    }
    Ok(())
}

/// A send to a socket whose peer has gone is an I/O error, and the database stays
/// usable: reads, writes and check.
#[test]
fn a_closed_socket_is_an_error_that_does_not_poison_the_database() -> Result<()> {
    let (_dir, db, value) = one_value(1 << 20)?;
    {
        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        let (a, b) = UnixStream::pair()?;
        drop(a);
        match t.send_value(b"v", &b) {
            Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::BrokenPipe),
            other => panic!("expected a broken pipe, got {other:?}"),
        }
        let (sent, got) = received(|out| Ok(t.send_value(b"v", out)?.unwrap()))?;
        assert!(sent == value.len() as u64 && got == value);
    }
    let wtx = db.begin_write()?;
    wtx.open_tree("t")?.insert(b"after", b"still writable")?;
    wtx.commit()?;
    assert_eq!(
        db.begin_read()?.open_tree("t")?.get(b"after")?,
        Some(&b"still writable"[..])
    );
    db.check()?;
    Ok(())
}

/// A non-blocking socket whose buffer fills: `send_to` returns what it sent, and the
/// rest follows with `send_to(out, sent..)` once the peer reads.
#[test]
fn a_full_non_blocking_socket_gets_a_partial_count() -> Result<()> {
    let (_dir, db, value) = one_value(8 << 20)?;
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    let e = t.get_extent(b"v")?.unwrap();
    let (mut a, b) = UnixStream::pair()?;
    b.set_nonblocking(true)?;
    let first = t.send_value(b"v", &b)?.unwrap();
    assert!(
        first < value.len() as u64,
        "8 MiB fit in a socket buffer: {first}"
    );
    // Nothing more fits until the peer reads.
    assert_eq!(e.send_to(&b, first..)?, 0);
    let reader = std::thread::spawn(move || {
        let mut got = Vec::new();
        a.read_to_end(&mut got).map(|_| got)
    });
    let mut sent = first;
    while sent < e.len() {
        let n = e.send_to(&b, sent..)?;
        if n == 0 {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        sent += n;
    }
    drop(b);
    assert!(reader.join().unwrap()? == value);
    Ok(())
}

#[test]
fn value_readers_read_and_seek_like_a_slice() -> Result<()> {
    for mmap_size in MMAP_SIZES {
        let dir = tempfile::tempdir()?;
        let db = Options::new()
            .mmap_size(mmap_size)
            .open(dir.path().join("db"))?;
        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("t")?;
        let values = [bytes(1, 0), bytes(2, 700), bytes(3, 250_000)];
        for (i, v) in values.iter().enumerate() {
            t.insert(&key(i), v)?;
        }
        drop(t);
        wtx.commit()?;
        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        for (i, v) in values.iter().enumerate() {
            let len = v.len() as u64;
            let mut r = t.value_reader(&key(i))?.unwrap();
            // Small reads add up to the value.
            let mut got = Vec::new();
            let mut buf = [0; 4099];
            loop {
                let n = r.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            assert!(&got == v, "mmap {mmap_size}, value {i}");
            assert_eq!(r.stream_position()?, len);
            for (to, want) in [
                (SeekFrom::Start(0), 0),
                (SeekFrom::End(0), len),
                (SeekFrom::End(-(len as i64) / 2), len - len / 2),
                (SeekFrom::Current(0), len - len / 2),
                (SeekFrom::Start(len / 3), len / 3),
                (SeekFrom::Current(1), len / 3 + 1),
            ] {
                assert_eq!(r.seek(to)?, want, "{to:?}");
            }
            let mut rest = Vec::new();
            r.read_to_end(&mut rest)?;
            assert!(
                rest[..] == v[(len / 3 + 1).min(len) as usize..],
                "value {i}"
            );
            // Past the end: reads give nothing; before the start: an error.
            assert_eq!(r.seek(SeekFrom::End(10))?, len + 10);
            assert_eq!(r.read(&mut buf)?, 0);
            assert!(r.seek(SeekFrom::Current(-(len as i64) - 11)).is_err());
            assert_eq!(r.stream_position()?, len + 10);
        }
    }
    Ok(())
}

/// A backend with no file: extents cannot exist (`Unsupported`), value readers work.
#[test]
fn a_backend_without_a_file_has_no_extents_but_value_readers() -> Result<()> {
    struct NoFile(File);
    // SAFETY: `file` returns None, which is always sound: every read goes through
    // `read_exact_at`.
    unsafe impl mapkv::testing::Backend for NoFile {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.0.read_exact_at(buf, offset)
        }
        fn write_all_at(&self, bufs: &[&[u8]], mut offset: u64) -> io::Result<()> {
            for b in bufs {
                self.0.write_all_at(b, offset)?;
                offset += b.len() as u64;
            }
            Ok(())
        }
        fn sync_data(&self) -> io::Result<()> {
            self.0.sync_data()
        }
        fn file_len(&self) -> io::Result<u64> {
            Ok(self.0.metadata()?.len())
        }
        fn set_len(&self, len: u64) -> io::Result<()> {
            self.0.set_len(len)
        }
        fn file(&self) -> Option<&File> {
            None
        }
    }
    let dir = tempfile::tempdir()?;
    let file = File::options()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(dir.path().join("db"))?;
    let db = mapkv::testing::open_with_backend(Box::new(NoFile(file)), Options::new())?;
    let value = bytes(4, 50_000);
    let wtx = db.begin_write()?;
    wtx.open_tree("t")?.insert(b"v", &value)?;
    wtx.commit()?;
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    match t.get_extent(b"v") {
        Err(Error::Io(e)) => assert_eq!(e.kind(), io::ErrorKind::Unsupported),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    assert!(t.send_value(b"v", &io::stdout()).is_err());
    let mut got = Vec::new();
    t.value_reader(b"v")?.unwrap().read_to_end(&mut got)?;
    assert!(got == value);
    Ok(())
}

/// A copy of an extent's descriptor, kept after the database is gone, neither keeps the
/// file locked nor writes to it: it is a read-only descriptor of its own, not the
/// database's (whose open file description holds the lock).
#[test]
fn a_kept_copy_of_an_extents_descriptor_neither_locks_nor_writes() -> Result<()> {
    let (dir, db, value) = one_value(100_000)?;
    let (kept, at) = {
        let rtx = db.begin_read()?;
        let tree = rtx.open_tree("t")?;
        let extent = tree.get_extent(b"v")?.expect("present");
        (
            File::from(extent.as_fd().try_clone_to_owned()?),
            extent.offset(),
        )
    };
    drop(db);
    let mut head = [0; 4];
    kept.read_exact_at(&mut head, at)?;
    assert_eq!(head, value[..4]);
    assert!(kept.write_at(&head, at).is_err(), "the copy can write");
    let reopened = Database::open(dir.path().join("db"));
    assert!(
        reopened.is_ok(),
        "the copy keeps the lock: {:?}",
        reopened.err()
    );
    Ok(())
}

/// `sendfile` and `splice` do not copy: a pipe, or a socket's queues, keep references to
/// the file's cached pages until the peer reads them, after `send_to` has returned. The
/// documented rule (`ValueExtent::send_to`): the read transaction is kept until the peer
/// has read the bytes; then commits that overwrite the value meanwhile cannot change what
/// the peer receives. (Dropped before the peer reads, a later commit that reuses the
/// pages does change it: the kernel's behaviour, which the engine cannot undo.)
#[test]
fn bytes_queued_in_a_pipe_or_socket_keep_the_values_while_the_reader_lives() -> Result<()> {
    for out_kind in ["pipe", "socket"] {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path().join("db"))?;
        let len = 40_000;
        let old = bytes(1, len);
        let wtx = db.begin_write()?;
        wtx.open_tree("t")?.insert(b"v", &old)?;
        wtx.commit()?;
        let (mut peer, out): (File, std::os::fd::OwnedFd) = match out_kind {
            "pipe" => {
                let (r, w) = rustix::pipe::pipe().map_err(io::Error::from)?;
                (File::from(r), w)
            }
            _ => {
                let (a, b) = UnixStream::pair()?;
                (File::from(std::os::fd::OwnedFd::from(a)), b.into())
            }
        };
        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        assert_eq!(t.send_value(b"v", &out)?, Some(len as u64));
        let e = t.get_extent(b"v")?.unwrap();
        assert_eq!(e.send_to(&out, 10..20)?, 10);
        // Overwrites: each frees the value's run, and the next would take it again.
        for round in 0..4 {
            let wtx = db.begin_write()?;
            wtx.open_tree("t")?.insert(b"v", &bytes(2 + round, len))?;
            wtx.commit()?;
        }
        drop(out);
        let mut got = Vec::new();
        peer.read_to_end(&mut got)?;
        drop(rtx);
        assert!(
            got.len() == len + 10 && got[..len] == old[..] && got[len..] == old[10..20],
            "{out_kind}: the peer received bytes a later commit wrote"
        );
    }
    Ok(())
}

/// A blob header that disagrees with its leaf (its length, its kind, its padding) is
/// `Corrupted` for every way of serving the value, and for a write that frees it: never
/// a panic, a short read or bytes past the value.
#[test]
fn a_corrupt_blob_header_is_corrupted_for_extents_readers_and_frees() -> Result<()> {
    let len = 50_000u64;
    for (field_at, bytes_put) in [
        (16, (len + 1).to_le_bytes().to_vec()),
        (16, (len - 1).to_le_bytes().to_vec()),
        (16, u64::MAX.to_le_bytes().to_vec()),
        (16, 0u64.to_le_bytes().to_vec()),
        (0, vec![1]),   // kind: a leaf
        (1, vec![200]), // padding
        (1, vec![8]),   // padding the leaf does not record
    ] {
        for mmap_size in [u64::MAX, 0] {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("db");
            let value = bytes(5, len as usize);
            let header_at = {
                let db = Database::open(&path)?;
                let wtx = db.begin_write()?;
                wtx.open_tree("t")?.insert(b"v", &value)?;
                wtx.commit()?;
                let rtx = db.begin_read()?;
                rtx.open_tree("t")?.get_extent(b"v")?.unwrap().offset() - 24
            };
            let file = File::options().write(true).open(&path)?;
            file.write_all_at(&bytes_put, header_at + field_at)?;
            drop(file);
            let db = Options::new().mmap_size(mmap_size).open(&path)?;
            let what = format!("field {field_at} = {bytes_put:?}, mmap {mmap_size}");
            let rtx = db.begin_read()?;
            let t = rtx.open_tree("t")?;
            let (sock, _peer) = UnixStream::pair()?;
            for (how, r) in [
                ("get", t.get(b"v").map(|_| ())),
                ("get_extent", t.get_extent(b"v").map(|_| ())),
                ("value_reader", t.value_reader(b"v").map(|_| ())),
                ("send_value", t.send_value(b"v", &sock).map(|_| ())),
            ] {
                assert!(
                    matches!(r, Err(Error::Corrupted { .. })),
                    "{how}, {what}: {r:?}"
                );
            }
            drop(rtx);
            let wtx = db.begin_write()?;
            let r = wtx.open_tree("t")?.remove(b"v");
            assert!(
                matches!(r, Err(Error::Corrupted { .. })),
                "remove, {what}: {r:?}"
            );
        }
    }
    Ok(())
}
