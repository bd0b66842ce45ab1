//! Creates a database in a temporary directory, writes and reads a million keys, and
//! prints what it did and how long each step took.
//!
//! Run it with `cargo run --release --example quickstart` (add `-- N` for another count).

use std::time::Instant;

use mapkv::{Database, Result};

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

fn main() -> Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("quickstart.mapkv");
    let db = Database::open(&path)?;
    println!("database: {}", path.display());

    let mut rng = Rng(42);
    let mut keys = vec![[0u8; 24]; n];
    for k in &mut keys {
        rng.fill(k);
    }
    let mut value = [0u8; 150];

    let started = Instant::now();
    let wtx = db.begin_write()?;
    {
        let mut tree = wtx.open_tree("quickstart")?;
        for k in &keys {
            rng.fill(&mut value);
            tree.insert(k, &value)?;
        }
    }
    wtx.commit()?;
    let elapsed = started.elapsed();
    println!(
        "wrote {n} keys (24-byte keys, 150-byte values) in one transaction: {:.2?} ({:.0} inserts/s)",
        elapsed,
        n as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let rtx = db.begin_read()?;
    let tree = rtx.open_tree("quickstart")?;
    let mut order: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        order.swap(i, (rng.next() % (i as u64 + 1)) as usize);
    }
    let mut bytes = 0usize;
    for &i in &order {
        let v = tree.get(&keys[i])?.expect("every written key is present");
        bytes += v.len();
    }
    let elapsed = started.elapsed();
    println!(
        "read {n} keys in random order: {:.2?} ({:.0} gets/s, {bytes} value bytes)",
        elapsed,
        n as f64 / elapsed.as_secs_f64()
    );

    let started = Instant::now();
    let count = tree.iter()?.count();
    println!(
        "scanned {count} entries in key order: {:.2?}",
        started.elapsed()
    );
    drop(rtx);

    let stats = db.stats()?;
    println!(
        "file: {:.1} MiB, {} pages of {} bytes in use, {} free, tree depth {}",
        stats.file_size_bytes as f64 / (1 << 20) as f64,
        stats.pages_in_use,
        stats.page_size,
        stats.pages_free,
        stats.trees[0].depth
    );
    let started = Instant::now();
    let report = db.check()?;
    println!(
        "integrity check passed in {:.2?}: {} entries, {} pages verified",
        started.elapsed(),
        report.entries,
        report.node_pages
    );
    Ok(())
}
