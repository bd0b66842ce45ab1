//! Removes half of a million entries (random 24-byte keys, 150-byte values, the data of
//! BENCHMARKS.md) as one contiguous key range, once with `remove_range` and once with
//! one `remove` per key, each in one write transaction on its own copy of the tree.
//! Prints the time of the removal and of its commit, the pages the commit wrote, and
//! the committed pages the transaction copied on the way. Cold: right after the bulk
//! load, whose pages bypassed the page cache; warm: after `check` read every page.
//!
//! Run it with `cargo run --release --example range_remove` (add `-- N` for another count).

use std::time::{Duration, Instant};

use mapkv::{Database, Result};

/// splitmix64: reproducible keys without a dependency.
fn next(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn entries(n: usize) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut state = 42;
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = (0..n)
        .map(|_| {
            let key: Vec<u8> = (0..3)
                .flat_map(|_| next(&mut state).to_le_bytes())
                .collect();
            let value: Vec<u8> = (0..19)
                .flat_map(|_| next(&mut state).to_le_bytes())
                .take(150)
                .collect();
            (key, value)
        })
        .collect();
    out.sort();
    out.dedup_by(|a, b| a.0 == b.0);
    out
}

struct Run {
    remove: Duration,
    commit: Duration,
    pages_written: u64,
    pages_copied: u64,
}

fn run(data: &[(Vec<u8>, Vec<u8>)], one_by_one: bool, warm: bool) -> Result<Run> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("range_remove.mapkv"))?;
    db.bulk_load("t", data.iter().map(|(k, v)| (k, v)))?;
    if warm {
        // Reads every page: the bulk loader wrote past the page cache.
        db.check()?;
    }
    let before = db.stats()?;
    let (from, to) = (data.len() / 4, data.len() / 4 + data.len() / 2);
    let w = db.begin_write()?;
    let start = Instant::now();
    {
        let mut t = w.open_tree("t")?;
        if one_by_one {
            for (k, _) in &data[from..to] {
                assert!(t.remove(k)?);
            }
        } else {
            let removed = t.remove_range(&data[from].0[..]..&data[to].0[..])?;
            assert_eq!(removed, (to - from) as u64);
        }
    }
    let remove = start.elapsed();
    let pages_copied = mapkv::testing::pages_copied(&w);
    let start = Instant::now();
    w.commit()?;
    let commit = start.elapsed();
    let pages_written = db.stats()?.pages_written - before.pages_written;
    db.check()?;
    Ok(Run {
        remove,
        commit,
        pages_written,
        pages_copied,
    })
}

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let data = entries(n);
    println!(
        "{} entries, removing the middle {} as one range",
        data.len(),
        data.len() / 2
    );
    for (name, one_by_one, warm) in [
        ("remove_range, cold", false, false),
        ("one by one, cold", true, false),
        ("remove_range, warm", false, true),
        ("one by one, warm", true, true),
    ] {
        let r = run(&data, one_by_one, warm)?;
        println!(
            "{name:>20}: removal {:>9.2?}, commit {:>9.2?}, {} pages written, {} pages copied",
            r.remove, r.commit, r.pages_written, r.pages_copied
        );
    }
    Ok(())
}
