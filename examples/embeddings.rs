//! Embedding vectors read as `&[f32]` straight from the file, with no copy: N vectors of
//! 384 `f32` (random, fixed seed, N = 1,000,000 unless given) bulk loaded into a typed
//! table, then all read back in random order and dotted with a query vector, timed.
//!
//! ```sh
//! cargo run --release --example embeddings [N]
//! ```
//!
//! `Table<u64, [f32]>` creates its tree with `value_align(4)`, so every vector starts at
//! a file offset (and an address) that is a multiple of 4, and `get` can hand out
//! `&[f32]` pointing into the map. The comparison with LMDB and redb is
//! `benches/compare`'s `embeddings` binary (BENCHMARKS.md).

use std::time::Instant;

use mapkv::{Database, Key, Result, Table};
use zerocopy::IntoBytes;

const DIM: usize = 384;
const EMBEDDINGS: Table<u64, [f32]> = Table::new("embeddings");

/// xorshift64*: the same vectors in every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn vector(&mut self) -> Vec<f32> {
        (0..DIM)
            .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5)
            .collect()
    }
}

/// Eight lanes, which the compiler vectorizes.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum()
}

fn main() -> Result<()> {
    let n: u64 = std::env::args()
        .nth(1)
        .map_or(1_000_000, |a| a.parse().expect("N: a number of vectors"));
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("embeddings.mapkv"))?;

    // The table is created (aligned for f32) before the bulk load fills it.
    let wtx = db.begin_write()?;
    wtx.open_table(EMBEDDINGS)?;
    wtx.commit()?;
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let started = Instant::now();
    let entries = (0..n).map(|id| {
        let mut key = Vec::new();
        id.encode(&mut key); // the table's key encoding: sorts like the ids
        (key, rng.vector().as_bytes().to_vec())
    });
    let stats = db.bulk_load(EMBEDDINGS.name(), entries)?;
    println!(
        "bulk loaded {n} vectors ({:.1} MiB) in {:.2?}",
        stats.bytes_written as f64 / (1 << 20) as f64,
        started.elapsed()
    );

    let query = rng.vector();
    let rtx = db.begin_read()?;
    let table = rtx.open_table(EMBEDDINGS)?;
    let mut best = (f32::MIN, 0);
    for pass in ["cold", "warm"] {
        let started = Instant::now();
        for i in 0..n {
            let id = (i.wrapping_mul(7919) + 12_345) % n;
            let v: &[f32] = table.get(&id)?.expect("every id was loaded");
            let score = dot(v, &query);
            if score > best.0 {
                best = (score, id);
            }
        }
        let ns = started.elapsed().as_nanos() as f64 / n as f64;
        println!("{pass}: {ns:.0} ns per vector read (no copy) and dotted");
    }
    println!("best match: vector {} (score {:.3})", best.1, best.0);

    // The same through a range: every row borrows from the file too.
    let mut count = 0;
    for row in table.range(10..20)? {
        let (id, v) = row?;
        assert!((10..20).contains(&id) && v.len() == DIM);
        count += 1;
    }
    assert_eq!(count, 10.min(n.saturating_sub(10)));
    Ok(())
}
