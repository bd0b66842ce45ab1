//! `mmap_sweep`: the same database read with `mmap_size` at 0, 25 %, 50 % and 100 % of the
//! file, warm and cold page cache, for mapkv and for SQLite with the same
//! `PRAGMA mmap_size`, in one table — the way SQLite's documentation compares the pragma.
//!
//! ```text
//! cargo run --release -p compare --bin mmap_sweep -- --n 1000000
//! ```
//! Cold runs drop the file's cached pages with `posix_fadvise(POSIX_FADV_DONTNEED)`
//! and open the engine afresh before each timed run, so the engines' own page caches
//! (the pread path's, `--cache-mib` each) start empty too; warm runs open afresh and
//! scan once, untimed.

#[path = "../data.rs"]
#[allow(dead_code)]
mod data;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use clap::Parser;
use mapkv::{Database, Options};
use rusqlite::{Connection, OpenFlags, params};

use crate::data::Dataset;

#[derive(Parser)]
#[command(about = "mapkv and SQLite read with mmap_size at 0, 25, 50 and 100 % of the file")]
struct Cli {
    /// Entries loaded (24-byte random keys, 150-byte random values).
    #[arg(long, default_value_t = 1_000_000)]
    n: usize,
    /// Random gets per timed run (range scans: half as many, of 10 entries each).
    #[arg(long, default_value_t = 200_000)]
    gets: usize,
    /// Directory for the two databases [default: the system temp dir].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Seed of the keys, values and orders.
    #[arg(long, default_value_t = 3)]
    seed: u64,
    /// Page cache of each engine's pread path, in MiB: mapkv's `Options::cache_size`
    /// and SQLite's `PRAGMA cache_size` [default: mapkv's default, 64 MiB].
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
}

/// One timed run's rates, in operations per second.
#[derive(Clone, Copy, Default)]
struct Rates {
    gets: f64,
    ranges: f64,
    scan: f64,
}

/// A read engine opened with one `mmap_size`.
trait Reader {
    fn gets(&self, keys: &[&[u8]]) -> Result<usize>;
    fn ranges(&self, starts: &[&[u8]]) -> Result<usize>;
    fn scan(&self) -> Result<usize>;
}

struct MapkvReader(Database);

impl Reader for MapkvReader {
    fn gets(&self, keys: &[&[u8]]) -> Result<usize> {
        let r = self.0.begin_read()?;
        let t = r.open_tree("bench")?;
        let mut bytes = 0;
        for k in keys {
            bytes += t.get(k)?.context("missing key")?.len();
        }
        Ok(bytes)
    }

    fn ranges(&self, starts: &[&[u8]]) -> Result<usize> {
        let r = self.0.begin_read()?;
        let t = r.open_tree("bench")?;
        let mut n = 0;
        for s in starts {
            for e in t.range(*s..)?.take(10) {
                n += e?.1.len();
            }
        }
        Ok(n)
    }

    fn scan(&self) -> Result<usize> {
        let r = self.0.begin_read()?;
        let t = r.open_tree("bench")?;
        let mut n = 0;
        for e in t.iter()? {
            n += e?.1.len();
        }
        Ok(n)
    }
}

struct SqliteReader(Connection);

impl Reader for SqliteReader {
    fn gets(&self, keys: &[&[u8]]) -> Result<usize> {
        let mut stmt = self.0.prepare_cached("SELECT v FROM kv WHERE k = ?1")?;
        let mut bytes = 0;
        for k in keys {
            bytes += stmt.query_row(params![k], |row| Ok(row.get_ref(0)?.as_blob()?.len()))?;
        }
        Ok(bytes)
    }

    fn ranges(&self, starts: &[&[u8]]) -> Result<usize> {
        let mut stmt = self
            .0
            .prepare_cached("SELECT v FROM kv WHERE k >= ?1 ORDER BY k LIMIT 10")?;
        let mut n = 0;
        for s in starts {
            let mut rows = stmt.query(params![s])?;
            while let Some(row) = rows.next()? {
                n += row.get_ref(0)?.as_blob()?.len();
            }
        }
        Ok(n)
    }

    fn scan(&self) -> Result<usize> {
        let mut stmt = self.0.prepare_cached("SELECT v FROM kv ORDER BY k")?;
        let mut rows = stmt.query([])?;
        let mut n = 0;
        while let Some(row) = rows.next()? {
            n += row.get_ref(0)?.as_blob()?.len();
        }
        Ok(n)
    }
}

fn build_mapkv(path: &Path, data: &Dataset) -> Result<()> {
    let db = Database::open(path)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("bench")?;
        for i in 0..data.n {
            t.insert(data.key(i), data.value(i))?;
        }
    }
    w.commit()?;
    Ok(())
}

fn build_sqlite(path: &Path, data: &Dataset) -> Result<()> {
    let mut c = Connection::open(path)?;
    c.execute_batch(
        "PRAGMA journal_mode=WAL; CREATE TABLE kv(k BLOB PRIMARY KEY, v BLOB) WITHOUT ROWID;",
    )?;
    let tx = c.transaction()?;
    {
        let mut stmt = tx.prepare("INSERT INTO kv VALUES (?1, ?2)")?;
        for i in 0..data.n {
            stmt.execute(params![data.key(i), data.value(i)])?;
        }
    }
    tx.commit()?;
    c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    Ok(())
}

/// Drops the file's pages from the kernel's page cache.
fn drop_cache(path: &Path) -> Result<()> {
    let f = File::open(path)?;
    rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed)?;
    Ok(())
}

fn time<T>(f: impl FnOnce() -> Result<T>) -> Result<Duration> {
    let t = Instant::now();
    std::hint::black_box(f()?);
    Ok(t.elapsed())
}

/// Times gets, ranges and a scan, each on a freshly opened reader. Warm: one untimed full
/// scan first. Cold: the file's pages are dropped from the page cache first, with no
/// reader open (pages mapped by a live reader cannot be dropped).
fn measure(
    open: &dyn Fn() -> Result<Box<dyn Reader>>,
    file: &Path,
    cold: bool,
    keys: &[&[u8]],
    starts: &[&[u8]],
    n: usize,
) -> Result<Rates> {
    let fresh = || -> Result<Box<dyn Reader>> {
        if cold {
            drop_cache(file)?;
            open()
        } else {
            let reader = open()?;
            reader.scan()?;
            Ok(reader)
        }
    };
    let reader = fresh()?;
    let gets = time(|| reader.gets(keys))?;
    drop(reader);
    let reader = fresh()?;
    let ranges = time(|| reader.ranges(starts))?;
    drop(reader);
    let reader = fresh()?;
    let scan = time(|| reader.scan())?;
    Ok(Rates {
        gets: keys.len() as f64 / gets.as_secs_f64(),
        ranges: starts.len() as f64 / ranges.as_secs_f64(),
        scan: n as f64 / scan.as_secs_f64(),
    })
}

fn rate(r: f64) -> String {
    if r >= 1e6 {
        format!("{:.2}M/s", r / 1e6)
    } else {
        format!("{:.0}k/s", r / 1e3)
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let data = Dataset::generate(cli.n, 0, cli.seed);
    let dir = tempfile::Builder::new()
        .prefix("mapkv-mmap-sweep-")
        .tempdir_in(cli.dir.clone().unwrap_or_else(std::env::temp_dir))?;
    let (mapkv_path, sqlite_path) = (
        dir.path().join("data.mapkv"),
        dir.path().join("data.sqlite"),
    );
    eprintln!(
        "building both databases with {} entries in {}",
        cli.n,
        dir.path().display()
    );
    build_mapkv(&mapkv_path, &data)?;
    build_sqlite(&sqlite_path, &data)?;
    let gets: Vec<&[u8]> = data
        .read_order
        .iter()
        .take(cli.gets)
        .map(|&i| data.key(i as usize))
        .collect();
    let starts: Vec<&[u8]> = data
        .range_starts
        .iter()
        .take(cli.gets / 2)
        .map(|&i| data.key(i as usize))
        .collect();
    let sizes = [
        std::fs::metadata(&mapkv_path)?.len(),
        std::fs::metadata(&sqlite_path)?.len(),
    ];
    println!(
        "n = {}, {} random gets and {} range scans of 10 per run; mapkv file {:.1} MiB, SQLite file {:.1} MiB; page cache of the pread path {} MiB each\n",
        cli.n,
        gets.len(),
        starts.len(),
        sizes[0] as f64 / 1048576.0,
        sizes[1] as f64 / 1048576.0,
        cli.cache_mib,
    );
    println!(
        "| mmap_size | cache | mapkv gets | SQLite gets | ratio | mapkv ranges | SQLite ranges | ratio | mapkv scan | SQLite scan | ratio |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for percent in [0u64, 25, 50, 100] {
        for cold in [false, true] {
            let m_window = sizes[0] * percent / 100;
            let s_window = sizes[1] * percent / 100;
            let open_mapkv = || -> Result<Box<dyn Reader>> {
                let db = Options::new()
                    .read_only(true)
                    .mmap_size(m_window)
                    .cache_size(cli.cache_mib << 20)
                    .open(&mapkv_path)?;
                Ok(Box::new(MapkvReader(db)))
            };
            let open_sqlite = || -> Result<Box<dyn Reader>> {
                let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                let conn = Connection::open_with_flags(&sqlite_path, flags)?;
                let cache_kib = cli.cache_mib << 10;
                conn.execute_batch(&format!(
                    "PRAGMA mmap_size={s_window}; PRAGMA cache_size=-{cache_kib};"
                ))?;
                Ok(Box::new(SqliteReader(conn)))
            };
            ensure!(
                open_mapkv()?.scan()? == open_sqlite()?.scan()?,
                "the engines disagree"
            );
            let m = measure(&open_mapkv, &mapkv_path, cold, &gets, &starts, cli.n)?;
            let s = measure(&open_sqlite, &sqlite_path, cold, &gets, &starts, cli.n)?;
            println!(
                "| {percent} % | {} | {} | {} | {:.2}× | {} | {} | {:.2}× | {} | {} | {:.2}× |",
                if cold { "cold" } else { "warm" },
                rate(m.gets),
                rate(s.gets),
                m.gets / s.gets,
                rate(m.ranges),
                rate(s.ranges),
                m.ranges / s.ranges,
                rate(m.scan),
                rate(s.scan),
                m.scan / s.scan,
            );
        }
    }
    println!(
        "\nratio = mapkv ÷ SQLite (> 1: mapkv faster). Warm: one untimed full scan before each timed run; cold: posix_fadvise(DONTNEED) on the file before each."
    );
    Ok(())
}
