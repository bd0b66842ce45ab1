//! Loads about a million generated entries, already in key order, with
//! `Database::bulk_load`: the tree is built bottom-up from full pages written
//! sequentially, then committed once. Prints what the loader reports and the time, then
//! verifies a sample of keys and the whole file, and shows the loader refusing unsorted
//! input without changing the database.
//!
//! Run it with `cargo run --release --example bulk_load` (add `-- N` for another count).

use std::time::Instant;

use mapkv::{Database, Error, Result};

/// The key of entry `i`: zero-padded, so numeric order is byte order.
fn key(i: u64) -> String {
    format!("user:{i:010}")
}

/// The value of entry `i`: deterministic, so a sample can be checked.
fn value(i: u64) -> String {
    format!(
        "{{\"id\":{i},\"score\":{},\"name\":\"user number {i}\"}}",
        i * 7 % 1000
    )
}

fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("bulk.mapkv");
    let db = Database::open(&path)?;

    // The entries are generated as they are loaded: nothing is held in memory.
    let stats = db.bulk_load("users", (0..n).map(|i| (key(i), value(i))))?;
    let file_bytes = std::fs::metadata(&path)?.len();
    println!(
        "bulk loaded {} entries in {:.2?} ({:.0} entries/s)",
        stats.entries,
        stats.elapsed,
        stats.entries as f64 / stats.elapsed.as_secs_f64()
    );
    println!(
        "  {} pages, {:.1} MiB written ({}), file {:.1} MiB",
        stats.pages,
        stats.bytes_written as f64 / (1 << 20) as f64,
        if stats.direct_io {
            "O_DIRECT"
        } else {
            "buffered writes + fdatasync"
        },
        file_bytes as f64 / (1 << 20) as f64
    );

    let started = Instant::now();
    let rtx = db.begin_read()?;
    let users = rtx.open_tree("users")?;
    assert_eq!(users.len()?, n);
    let mut state = 88172645463325252u64;
    let sample = 10_000.min(n);
    for _ in 0..sample {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let i = state % n;
        let got = users.get(key(i).as_bytes())?;
        assert_eq!(got, Some(value(i).as_bytes()), "entry {i}");
    }
    let first = users.iter()?.next().transpose()?.map(|(k, _)| k.to_vec());
    let last = users
        .iter()?
        .next_back()
        .transpose()?
        .map(|(k, _)| k.to_vec());
    assert_eq!(first.as_deref(), Some(key(0).as_bytes()));
    assert_eq!(last.as_deref(), Some(key(n - 1).as_bytes()));
    println!(
        "verified {sample} random entries and both ends in {:.2?}",
        started.elapsed()
    );
    drop(rtx);

    let started = Instant::now();
    let report = db.check()?;
    println!(
        "integrity check passed in {:.2?}: {} entries, {} pages, tree depth {}",
        started.elapsed(),
        report.entries,
        report.node_pages + report.overflow_pages,
        db.stats()?.trees[0].depth
    );

    // Unsorted input is refused at the first entry out of order; nothing is written.
    let unsorted = [("b", "2"), ("c", "3"), ("a", "1")];
    match db.bulk_load("letters", unsorted) {
        Err(Error::Unsorted { index }) => {
            println!("unsorted input refused at entry {index}, as expected")
        }
        other => panic!("expected Error::Unsorted, got {other:?}"),
    }
    let rtx = db.begin_read()?;
    assert!(matches!(
        rtx.open_tree("letters"),
        Err(Error::TreeNotFound(_))
    ));
    // So is a tree that already holds entries: insert into it in a write transaction.
    match db.bulk_load("users", [("user:x", "y")]) {
        Err(Error::TreeNotEmpty(name)) => println!("bulk load into non-empty {name:?} refused"),
        other => panic!("expected Error::TreeNotEmpty, got {other:?}"),
    }
    Ok(())
}
