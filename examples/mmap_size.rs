//! The same database read with different `Options::mmap_size` settings: no map at all
//! (every page read with pread, with and without the page cache that transactions
//! share, `Options::cache_size`), a map over 25 %, 50 % or 100 % of the file, and the
//! default (the whole file, however large it grows). Times random gets in a first
//! transaction and again in a second one (which finds what the first read with pread in
//! the page cache), and a full scan, for each; prints a table. The results must be
//! identical whatever the setting, and are asserted to be.
//!
//! Run it with `cargo run --release --example mmap_size` (add `-- N` for another count).

use std::path::Path;
use std::time::{Duration, Instant};

use mapkv::{Database, Options, Result};

/// What one setting read: timings and a digest of everything seen.
struct Measured {
    gets: Duration,
    gets_again: Duration,
    scan: Duration,
    /// A digest of every value got, then of every entry scanned, in order.
    digest: u64,
    entries: u64,
}

/// FNV-1a, enough to tell two byte streams apart.
fn fnv(mut hash: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        hash = (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3);
    }
    hash
}

fn key(i: u64) -> [u8; 8] {
    // Spread keys over the tree in a scrambled order.
    i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes()
}

/// `gets` random gets in one transaction, folded into `digest`.
fn random_gets(db: &Database, n: u64, gets: u64, digest: &mut u64) -> Result<Duration> {
    let rtx = db.begin_read()?;
    let tree = rtx.open_tree("data")?;
    let started = Instant::now();
    let mut state = 1u64;
    for _ in 0..gets {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let value = tree
            .get(&key((state >> 33) % n))?
            .expect("every key is present");
        *digest = fnv(*digest, value);
    }
    Ok(started.elapsed())
}

/// Opens `path` read-only with `mmap_size` and `cache_size` and reads it.
fn measure(path: &Path, mmap_size: u64, cache_size: u64, n: u64, gets: u64) -> Result<Measured> {
    let db = Options::new()
        .read_only(true)
        .mmap_size(mmap_size)
        .cache_size(cache_size)
        .open(path)?;
    let mut digest = 0xcbf2_9ce4_8422_2325;
    let gets_time = random_gets(&db, n, gets, &mut digest)?;
    let gets_again = random_gets(&db, n, gets, &mut digest)?;

    let rtx = db.begin_read()?;
    let tree = rtx.open_tree("data")?;
    let started = Instant::now();
    let mut entries = 0;
    for entry in tree.iter()? {
        let (k, v) = entry?;
        digest = fnv(fnv(digest, k), v);
        entries += 1;
    }
    let scan = started.elapsed();
    Ok(Measured {
        gets: gets_time,
        gets_again,
        scan,
        digest,
        entries,
    })
}

fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(300_000);
    let gets = 200_000;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mmap.mapkv");
    {
        let db = Database::open(&path)?;
        let wtx = db.begin_write()?;
        {
            let mut tree = wtx.open_tree("data")?;
            let mut value = [0u8; 100];
            for i in 0..n {
                value[..8].copy_from_slice(&i.to_le_bytes());
                value[8] = (i % 251) as u8;
                tree.insert(&key(i), &value)?;
            }
            // A few values on overflow pages, read through the same paths.
            for i in 0..100 {
                tree.insert(&key(i), &vec![i as u8; 10_000])?;
            }
        }
        wtx.commit()?;
    }
    let file_bytes = std::fs::metadata(&path)?.len();
    println!(
        "{n} entries, file {:.1} MiB; {gets} random gets in each of two transactions and a full scan per setting",
        file_bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<28} {:>12} {:>12} {:>16} {:>12}",
        "mmap_size", "bytes", "gets/s", "gets/s (again)", "scan"
    );

    let default_cache = 64 << 20;
    let settings = [
        ("0 (pread), no page cache", 0, 0),
        ("0 (pread), 64 MiB cache", 0, default_cache),
        ("25 % of the file", file_bytes / 4, default_cache),
        ("50 % of the file", file_bytes / 2, default_cache),
        ("100 % of the file", file_bytes, default_cache),
        ("default (u64::MAX)", u64::MAX, default_cache),
    ];
    let mut reference: Option<(u64, u64)> = None;
    for (label, mmap_size, cache_size) in settings {
        let m = measure(&path, mmap_size, cache_size, n, gets)?;
        let bytes = if mmap_size == u64::MAX {
            "all".to_string()
        } else {
            mmap_size.to_string()
        };
        let rate = |d: Duration| gets as f64 / d.as_secs_f64();
        println!(
            "{label:<28} {bytes:>12} {:>12.0} {:>16.0} {:>12.2?}",
            rate(m.gets),
            rate(m.gets_again),
            m.scan
        );
        match reference {
            None => reference = Some((m.digest, m.entries)),
            Some(r) => assert_eq!(r, (m.digest, m.entries), "{label} read different data"),
        }
    }
    println!(
        "every setting read the same {} entries and values (digest {:016x})",
        n,
        reference.map_or(0, |r| r.0)
    );
    Ok(())
}
