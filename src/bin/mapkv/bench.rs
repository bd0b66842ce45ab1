//! `mapkv bench`: the main workloads on a temporary database, in operations per second.
//! A quick look at a machine and file system, not a comparison with other engines (that
//! is `benches/compare`).

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mapkv::{Database, Durability};

use crate::{CliResult, Failure, stdout_error};

/// Key and value sizes of every workload.
const KEY_BYTES: usize = 16;
const VALUE_BYTES: usize = 100;
/// Commits timed by the single-insert commit workloads (at most n).
const COMMITS_DURABLE: u64 = 200;
const COMMITS_NO_SYNC: u64 = 2000;

/// A directory removed, with what it holds, when dropped.
struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory under `parent`.
    fn new(parent: &Path) -> CliResult<TempDir> {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let path = parent.join(format!("mapkv-bench-{}-{nanos}", std::process::id()));
        std::fs::create_dir(&path).map_err(|e| Failure::io(&path, e))?;
        Ok(TempDir(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Nothing to report to if cleaning up fails; the directory name says what it is.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A small deterministic generator (SplitMix64), so runs are repeatable.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let bytes = self.next().to_le_bytes();
            chunk.copy_from_slice(&bytes[..chunk.len()]);
        }
    }
}

/// Why the workloads stopped early.
enum Stop {
    /// A workload failed.
    Failed(Failure),
    /// Printing a result failed (a closed pipe, a full disk).
    Stdout(io::Error),
}

impl From<Failure> for Stop {
    fn from(failure: Failure) -> Stop {
        Stop::Failed(failure)
    }
}

/// Prints one line now, so each workload's result shows as it ends.
fn print(line: std::fmt::Arguments<'_>) -> Result<(), Stop> {
    let mut out = io::stdout().lock();
    writeln!(out, "{line}")
        .and_then(|()| out.flush())
        .map_err(Stop::Stdout)
}

/// Runs the workloads with `n` entries in a temporary directory under `dir`.
pub fn run(n: u64, dir: Option<&Path>) -> CliResult<ExitCode> {
    if n == 0 {
        return Err(Failure("--n must be at least 1".to_string()));
    }
    let parent = dir.map_or_else(std::env::temp_dir, Path::to_path_buf);
    let temp = TempDir::new(&parent)?;
    let path = temp.0.join("bench.mapkv");
    match workloads(n, &temp.0, &path) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(Stop::Failed(failure)) => Err(failure),
        Err(Stop::Stdout(e)) => stdout_error(e, &path),
    }
}

/// Times each workload on a new database at `path`, in `dir`, and prints a line for it.
fn workloads(n: u64, dir: &Path, path: &Path) -> Result<(), Stop> {
    let fail = |e| Failure::db(path, e);
    let db = Database::open(path).map_err(fail)?;
    print(format_args!(
        "mapkv bench: {n} entries, {KEY_BYTES}-byte random keys, {VALUE_BYTES}-byte values, in {}",
        dir.display()
    ))?;
    print(format_args!(
        "{:<34} {:>10} {:>10} {:>12}",
        "workload", "ops", "time", "ops/s"
    ))?;
    let report = |name: &str, ops: u64, elapsed: Duration| {
        print(format_args!(
            "{name:<34} {ops:>10} {:>10} {:>12.0}",
            format!("{:.3} s", elapsed.as_secs_f64()),
            ops as f64 / elapsed.as_secs_f64().max(1e-9)
        ))
    };

    let mut rng = Rng(7);
    let count = usize::try_from(n).map_err(|_| Failure("--n is too large".to_string()))?;
    let mut keys = vec![[0u8; KEY_BYTES]; count];
    for key in &mut keys {
        rng.fill(key);
    }
    let mut value = [0u8; VALUE_BYTES];
    rng.fill(&mut value);

    let started = Instant::now();
    let wtx = db.begin_write().map_err(fail)?;
    {
        let mut tree = wtx.open_tree("random").map_err(fail)?;
        for key in &keys {
            tree.insert(key, &value).map_err(fail)?;
        }
    }
    wtx.commit().map_err(fail)?;
    report("insert, random keys, one commit", n, started.elapsed())?;

    // Shuffle so the gets do not follow the insertion order.
    for i in (1..keys.len()).rev() {
        keys.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let rtx = db.begin_read().map_err(fail)?;
    let tree = rtx.open_tree("random").map_err(fail)?;
    let started = Instant::now();
    let mut found = 0u64;
    for key in &keys {
        found += u64::from(tree.get(key).map_err(fail)?.is_some());
    }
    report("get, random order", n, started.elapsed())?;
    if found != n {
        return Err(Failure(format!("bench: {found} of {n} keys found")).into());
    }

    let started = Instant::now();
    let mut scanned = 0u64;
    for entry in tree.iter().map_err(fail)? {
        entry.map_err(fail)?;
        scanned += 1;
    }
    report("scan, whole tree", scanned, started.elapsed())?;
    drop(rtx);

    keys.sort_unstable();
    keys.dedup();
    let stats = db
        .bulk_load("sorted", keys.iter().map(|k| (k, &value)))
        .map_err(fail)?;
    report("bulk load, sorted keys", stats.entries, stats.elapsed)?;

    for (name, durability, commits) in [
        (
            "commit 1 insert, Immediate (fsync)",
            Durability::Immediate,
            COMMITS_DURABLE,
        ),
        (
            "commit 1 insert, Durability::None",
            Durability::None,
            COMMITS_NO_SYNC,
        ),
    ] {
        let commits = commits.min(n);
        let started = Instant::now();
        for i in 0..commits {
            let mut wtx = db.begin_write().map_err(fail)?;
            wtx.set_durability(durability);
            wtx.open_tree("commits")
                .and_then(|mut t| t.insert(&i.to_be_bytes(), &value))
                .map_err(fail)?;
            wtx.commit().map_err(fail)?;
        }
        report(name, commits, started.elapsed())?;
    }
    Ok(())
}
