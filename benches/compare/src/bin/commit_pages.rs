//! `commit_pages`: what a one-key durable commit writes into a large tree whose free list
//! holds many runs (issue 13's "pages written ≤ tree depth + 3" target), from mapkv's
//! `Stats` counters, and how long it takes. Run it under `strace -f -e trace=pwritev,pwrite64,fdatasync` to see
//! the system calls of each commit.
//!
//! ```text
//! cargo run --release -p compare --bin commit_pages -- --n 1000000 --free-runs 10000
//! ```

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, ensure};
use clap::Parser;
use mapkv::Database;

#[derive(Parser)]
#[command(about = "pages, syncs and commits of one-key commits into a large tree")]
struct Cli {
    /// Entries loaded (8-byte big-endian keys, 150-byte values).
    #[arg(long, default_value_t = 1_000_000)]
    n: u64,
    /// Free runs to make before measuring (every other leaf's keys removed, spread over
    /// the tree).
    #[arg(long, default_value_t = 10_000)]
    free_runs: u64,
    /// One-key commits measured.
    #[arg(long, default_value_t = 1000)]
    commits: u64,
    /// Directory for the database (a fresh file `commit_pages.mapkv` in it).
    #[arg(long, default_value = "/tmp")]
    dir: PathBuf,
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let path = cli.dir.join("commit_pages.mapkv");
    let _ = std::fs::remove_file(&path);
    let db = Database::open(&path)?;
    db.bulk_load("t", (0..cli.n).map(|i| (key(i), [7u8; 150])))?;
    // Remove whole leaves' worth of keys at a stride, so that the freed pages are runs
    // with pages in use between them.
    let per_leaf = 4000 / (150 + 8 + 4 + 8);
    let stride = (cli.n / per_leaf / cli.free_runs).max(2);
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0..cli.n).filter(|i| (i / per_leaf) % stride == 0) {
            t.remove(&key(i))?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(&key(1), b"release")?;
    w.commit()?;
    let before = db.stats()?;
    let depth = before.trees[0].depth as u64;
    let mut max = 0;
    let mut last = before.pages_written;
    let mut micros = Vec::new();
    for c in 0..cli.commits {
        let start = Instant::now();
        let w = db.begin_write()?;
        let k = (c * 7919 * per_leaf + 1) % cli.n;
        w.open_tree("t")?.insert(&key(k), &[c as u8; 150])?;
        w.commit()?;
        micros.push(start.elapsed().as_secs_f64() * 1e6);
        let now = db.stats()?.pages_written;
        max = max.max(now - last);
        last = now;
    }
    let after = db.stats()?;
    let pages = after.pages_written - before.pages_written;
    ensure!(
        after.syncs - before.syncs == cli.commits,
        "one sync per commit"
    );
    println!(
        "{} entries, depth {depth}, {} free runs ({} free pages) before, {} after",
        cli.n, before.free_runs, before.pages_free, after.free_runs
    );
    println!(
        "{} one-key commits: {:.2} pages written per commit (max {max}), target ≤ depth + 3 = {}; {} syncs; file {} MiB",
        cli.commits,
        pages as f64 / cli.commits as f64,
        depth + 3,
        after.syncs - before.syncs,
        after.file_size_bytes >> 20
    );
    let mean = micros.iter().sum::<f64>() / micros.len().max(1) as f64;
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros.get((q * micros.len() as f64) as usize).copied();
    println!(
        "µs per commit: mean {mean:.0}, median {:.0}, 99th percentile {:.0}",
        at(0.5).unwrap_or(0.0),
        at(0.99).unwrap_or(0.0)
    );
    Ok(())
}
