//! `WriteTree::insert_from` (issue 17): values streamed from a `Read` read back as they
//! were given, at every `mmap_size`; a reader that ends early or fails changes nothing,
//! leaks no page and leaves the transaction usable; a crash while streaming leaves the
//! last commit; and (heavy mode) a multi-GiB value streams in bounded memory.

mod support;

use std::io::{self, Read};
use std::time::Instant;

use mapkv::{Database, Error, Options, Result};
use support::model::read_all;
use support::recovery::{open, recover};
use support::rng::{Rng, heavy};
use support::simdisk::{CrashImages, SimDisk};

const PAGE_SIZE: usize = 4096;

fn bytes(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 7 + seed * 13 + i / 251) as u8)
        .collect()
}

/// Sizes around the inline/overflow boundary (key of 8 bytes), blob page boundaries,
/// the 4 MiB chunk, and a few MiB.
fn sizes() -> Vec<usize> {
    let inline_max = (PAGE_SIZE - 24) / 2 - 8 - 4 - 8;
    let mut sizes = vec![0, 1, 100];
    sizes.extend(inline_max - 2..=inline_max + 2);
    for pages in [1, 2, 5, 1024, 1025] {
        let full = pages * PAGE_SIZE - 24;
        sizes.extend([full - 1, full, full + 1]);
    }
    sizes.extend([3 << 20, 9 << 20]);
    sizes
}

/// A reader that gives its bytes in odd-sized pieces, then ends or fails early.
struct Dribble<'a> {
    data: &'a [u8],
    at: usize,
    /// Fail with this error once the data is used up (else end).
    fail: Option<io::ErrorKind>,
}

impl Read for Dribble<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.at == self.data.len() {
            return match self.fail {
                Some(kind) => Err(io::Error::new(kind, "the source failed")),
                None => Ok(0),
            };
        }
        // Interrupted now and then, which insert_from must retry.
        if self.at % 3 == 1 {
            self.at += 1;
            buf[0] = self.data[self.at - 1];
            return Ok(1);
        }
        let n = buf.len().min(self.data.len() - self.at).min(777_777);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

fn dribble(data: &[u8]) -> Dribble<'_> {
    Dribble {
        data,
        at: 0,
        fail: None,
    }
}

fn open_db(dir: &std::path::Path, mmap_size: u64) -> Result<Database> {
    Options::new()
        .page_size(PAGE_SIZE)
        .mmap_size(mmap_size)
        .open(dir.join("db"))
}

#[test]
fn streamed_values_read_back_at_every_mmap_size() -> Result<()> {
    for mmap_size in [u64::MAX, 0] {
        let dir = tempfile::tempdir()?;
        let db = open_db(dir.path(), mmap_size)?;
        let sizes = sizes();
        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("t")?;
        for (i, &len) in sizes.iter().enumerate() {
            let value = bytes(i, len);
            t.insert_from(&(i as u64).to_be_bytes(), len as u64, &mut dribble(&value))?;
            assert!(
                t.get(&(i as u64).to_be_bytes())? == Some(&value[..]),
                "len {len}"
            );
        }
        drop(t);
        wtx.commit()?;
        db.check()?;
        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        for (i, &len) in sizes.iter().enumerate() {
            let key = (i as u64).to_be_bytes();
            let want = bytes(i, len);
            assert!(t.get(&key)? == Some(&want[..]), "get, len {len}");
            let mut all = Vec::new();
            t.value_reader(&key)?
                .expect("present")
                .read_to_end(&mut all)?;
            assert!(all == want, "value_reader, len {len}");
        }
    }
    Ok(())
}

#[test]
fn the_same_bytes_as_insert() -> Result<()> {
    // A streamed value and an inserted one of the same bytes: the same file contents
    // for the value (same blob checksum), so `check` and extents agree.
    let dir = tempfile::tempdir()?;
    let db = open_db(dir.path(), u64::MAX)?;
    let value = bytes(5, 50_000);
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    t.insert(b"a", &value)?;
    t.insert_from(b"b", value.len() as u64, &mut &value[..])?;
    drop(t);
    wtx.commit()?;
    db.check()?;
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    assert!(t.get(b"a")? == t.get(b"b")?);
    Ok(())
}

#[test]
fn a_short_or_failing_reader_changes_nothing_and_leaks_nothing() -> Result<()> {
    for mmap_size in [u64::MAX, 0] {
        let dir = tempfile::tempdir()?;
        let db = open_db(dir.path(), mmap_size)?;
        let old = bytes(1, 20_000);
        let wtx = db.begin_write()?;
        wtx.open_tree("t")?.insert(b"k", &old)?;
        wtx.commit()?;
        let before = db.stats()?;

        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("t")?;
        let data = bytes(2, 6 << 20);
        for (len, fail, inline) in [
            (7 << 20, None, false),
            (7 << 20, Some(io::ErrorKind::ConnectionReset), false),
            (100, None, true),
            (100, Some(io::ErrorKind::Other), true),
        ] {
            let given = if inline { &data[..50] } else { &data[..] };
            let mut r = Dribble {
                data: given,
                at: 0,
                fail,
            };
            for key in [&b"k"[..], b"new"] {
                r.at = 0;
                match t.insert_from(key, len, &mut r) {
                    Err(Error::Io(e)) => match fail {
                        None => {
                            assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
                            assert!(
                                e.to_string().contains(&format!("{} of {len}", given.len())),
                                "{e}"
                            );
                        }
                        Some(kind) => assert_eq!(e.kind(), kind),
                    },
                    other => panic!("short reader: {other:?}"),
                }
            }
            assert!(t.get(b"k")? == Some(&old[..]));
            assert_eq!(t.get(b"new")?, None);
        }
        // The transaction is still usable and commits other changes.
        t.insert(b"other", b"value")?;
        drop(t);
        wtx.commit()?;
        db.check()?;
        let after = db.stats()?;
        // The runs taken for the failed values were given back: the file holds the
        // old state and one small entry (a leaf copied), not 7 MiB more.
        assert!(
            after.page_count <= before.page_count + 4,
            "{} pages before, {} after",
            before.page_count,
            after.page_count
        );
        let rtx = db.begin_read()?;
        let t = rtx.open_tree("t")?;
        assert!(t.get(b"k")? == Some(&old[..]));
        assert_eq!(t.get(b"new")?, None);
        assert_eq!(t.get(b"other")?, Some(&b"value"[..]));
    }
    Ok(())
}

#[test]
fn a_panicking_reader_gives_its_pages_back() -> Result<()> {
    struct Panics(u64);
    impl Read for Panics {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.0 += buf.len() as u64;
            assert!(self.0 < 5 << 20, "the source panicked");
            buf.fill(1);
            Ok(buf.len())
        }
    }
    let dir = tempfile::tempdir()?;
    let db = open_db(dir.path(), u64::MAX)?;
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        t.insert_from(b"k", 20 << 20, &mut Panics(0))
    }));
    assert!(panicked.is_err());
    t.insert(b"a", b"b")?;
    drop(t);
    wtx.commit()?;
    db.check()?;
    assert!(db.stats()?.page_count < 100);
    Ok(())
}

#[test]
fn overwrites_free_the_old_blob_and_len_zero_works() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open_db(dir.path(), u64::MAX)?;
    // Large enough for direct writes (where the file system has them): pages read
    // through the map before, freed, and written again directly must read back new.
    let len = 9 << 20;
    for round in 0..5 {
        let value = bytes(round, len);
        let wtx = db.begin_write()?;
        let mut t = wtx.open_tree("t")?;
        // Twice in one transaction: the first blob is the transaction's own, freed at once.
        t.insert_from(b"k", len as u64, &mut &value[..])?;
        t.insert_from(b"k", len as u64, &mut &value[..])?;
        t.insert_from(b"empty", 0, &mut io::empty())?;
        assert_eq!(t.get(b"empty")?, Some(&b""[..]));
        drop(t);
        wtx.commit()?;
        db.check()?;
        let rtx = db.begin_read()?;
        assert!(
            rtx.open_tree("t")?.get(b"k")? == Some(&value[..]),
            "round {round}"
        );
    }
    // Old blobs are reused: the file holds a few values (the live one, those that the
    // durable fallback and the page-reuse delay keep), not ten.
    let pages = db.stats()?.page_count;
    assert!(pages < 5 * (len / PAGE_SIZE) as u64, "{pages} pages");
    Ok(())
}

#[test]
fn the_value_limit_is_one_tib() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open_db(dir.path(), u64::MAX)?;
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    let r = t.insert_from(b"k", (1 << 40) + 1, &mut io::empty());
    assert!(
        matches!(r, Err(Error::ValueTooLarge { size, max: 1099511627776 }) if size == (1 << 40) + 1),
        "{r:?}"
    );
    // Refused before anything is read or taken: the transaction is fine.
    t.insert(b"a", b"b")?;
    drop(t);
    wtx.commit()?;
    db.check()?;
    Ok(())
}

/// A reader that kills the simulated disk after `kill_at` bytes.
struct KillsDisk<'a> {
    disk: &'a SimDisk,
    given: u64,
    kill_at: u64,
}

impl Read for KillsDisk<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.given >= self.kill_at {
            self.disk.kill();
        }
        let n = buf.len().min(1 << 20);
        buf[..n].fill(0xAB);
        self.given += n as u64;
        Ok(n)
    }
}

#[test]
fn a_crash_while_streaming_leaves_the_last_commit() -> Result<()> {
    // The committed state, made durable, as the disk's starting image.
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk)?;
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    t.insert(b"k", &bytes(3, 30_000))?;
    t.insert(b"small", b"x")?;
    drop(t);
    wtx.commit()?;
    let committed = read_all(&db)?;
    drop(db);
    let disk = SimDisk::new(disk.contents());

    let db = open(&disk)?;
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    let mut r = KillsDisk {
        disk: &disk,
        given: 0,
        kill_at: 6 << 20,
    };
    let got = t.insert_from(b"k", 12 << 20, &mut r);
    assert!(matches!(got, Err(Error::Io(_))), "{got:?}");
    // The disk is gone: whatever the commit does, it changes nothing on it.
    let _ = t.insert(b"small", b"y");
    drop(t);
    assert!(wtx.commit().is_err(), "a commit on a killed disk");
    drop(db);

    let mut rng = Rng::new(17);
    let mut images = CrashImages::new(&disk);
    assert!(images.log_len() > 0);
    for at in 0..=images.log_len() {
        for _ in 0..2 {
            let (_, _, content) =
                recover(images.image(at, &mut rng)).map_err(|e| Error::Io(io::Error::other(e)))?;
            assert!(
                content == committed,
                "crash point {at}: not the last commit"
            );
        }
    }
    Ok(())
}

/// Bytes from a cheap generator, without holding them.
struct Generator {
    left: u64,
    state: u64,
}

impl Read for Generator {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(self.left as usize);
        for chunk in buf[..n].chunks_mut(8) {
            self.state = self.state.wrapping_mul(6364136223846793005).wrapping_add(1);
            let b = self.state.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        self.left -= n as u64;
        Ok(n)
    }
}

fn vm_hwm_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Heavy mode: a 4 GiB value (past the old limit; `MAPKV_STREAM_BYTES` sets another
/// length) streamed from a generator, with the peak memory it costs and the throughput
/// printed. It runs in a process of its own (this test binary again, this test only):
/// the peak RSS is the whole process's, and the other tests would add to it.
#[test]
fn a_multi_gib_value_streams_in_bounded_memory() -> Result<()> {
    const NAME: &str = "a_multi_gib_value_streams_in_bounded_memory";
    if !heavy() {
        return Ok(());
    }
    if std::env::var_os("MAPKV_STREAM_CHILD").is_none() {
        let out = std::process::Command::new(std::env::current_exe()?)
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env("MAPKV_STREAM_CHILD", "1")
            .output()?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.status.success(), "the child process failed");
        return Ok(());
    }
    let len: u64 = std::env::var("MAPKV_STREAM_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4 << 30);
    let dir = tempfile::tempdir()?;
    let db = Options::new().mmap_size(0).open(dir.path().join("db"))?;
    let hwm_before = vm_hwm_kib();
    let started = Instant::now();
    let wtx = db.begin_write()?;
    let mut t = wtx.open_tree("t")?;
    t.insert_from(
        b"big",
        len,
        &mut Generator {
            left: len,
            state: 1,
        },
    )?;
    drop(t);
    wtx.commit()?;
    let secs = started.elapsed().as_secs_f64();
    let hwm = vm_hwm_kib();
    let grown_kib = hwm.saturating_sub(hwm_before);
    println!(
        "insert_from of {len} bytes: {secs:.2} s, {:.0} MB/s (commit with fsync included), \
         peak RSS {hwm} KiB, grew {grown_kib} KiB",
        len as f64 / secs / 1e6
    );
    assert!(grown_kib < 32 << 10, "peak RSS grew {grown_kib} KiB");
    // Read it back in pieces and compare with the generator.
    let rtx = db.begin_read()?;
    let t = rtx.open_tree("t")?;
    let mut r = t.value_reader(b"big")?.expect("present");
    let mut want = Generator {
        left: len,
        state: 1,
    };
    let (mut a, mut b) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(a.len() as u64) as usize;
        r.read_exact(&mut a[..n])?;
        want.read_exact(&mut b[..n])?;
        assert!(a[..n] == b[..n], "bytes differ near {at}");
        at += n as u64;
    }
    Ok(())
}
