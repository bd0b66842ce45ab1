//! Typed reads of embedding vectors: N vectors of 384 `f32` (random, fixed seed), loaded
//! sorted, then every vector read back in random order as `&[f32]` and dotted with a
//! query vector; then a full scan doing the same. mapkv reads through a typed table
//! (`Table<u64, [f32]>`, values aligned to 4 bytes in the file: no copy); LMDB (heed)
//! and redb hand out bytes at whatever address the page layout gives, so the reader
//! casts them with bytemuck where they happen to be aligned and copies them where not,
//! as their users do (heed's `bytemuck` codecs read unaligned data with a copy).
//!
//! ```sh
//! embeddings [--n 1000000] [--repeat 3] [--dir /tmp] [--keys u64|str]
//! ```
//!
//! The key's length decides where LMDB and redb put a value's bytes, and so whether
//! they can be cast in place: with `u64` keys LMDB's 1,552-byte nodes happen to keep
//! every value 16-byte aligned; with 10-byte string keys every other one is not.
//!
//! Prints ns per vector read and dotted, the share of reads that had to copy, and the
//! ratios; every engine's sum of dot products must agree (the same data was read).

use std::borrow::{Borrow, Cow};
use std::hint::black_box;
use std::path::Path;
use std::time::Instant;

use anyhow::{Context, ensure};
use clap::Parser;
use heed::types::Bytes;
use redb::{ReadableDatabase, ReadableTable, TableDefinition};

const DIM: usize = 384;
const EMBEDDINGS: mapkv::Table<u64, [f32]> = mapkv::Table::new("embeddings");
const EMBEDDINGS_BY_NAME: mapkv::Table<str, [f32]> = mapkv::Table::new("embeddings");
const REDB_TABLE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("embeddings");

#[derive(Parser)]
struct Args {
    /// Vectors loaded.
    #[arg(long, default_value_t = 1_000_000)]
    n: u64,
    /// Rounds; each figure is the median.
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Where a temporary directory holds the databases.
    #[arg(long, default_value = "/tmp")]
    dir: String,
    /// The keys: the vector's number as a u64, or as a 10-byte string.
    #[arg(long, value_enum, default_value = "u64")]
    keys: Keys,
}

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

/// The dot product in eight lanes, which the compiler vectorizes (a single running sum
/// would make each vector cost ~400 dependent additions and hide the reads).
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0f32; 8];
    for (x, y) in a.chunks_exact(8).zip(b.chunks_exact(8)) {
        for i in 0..8 {
            lanes[i] += x[i] * y[i];
        }
    }
    lanes.iter().sum()
}

/// The vector in `bytes`, borrowed where the bytes are aligned for `f32`, else copied.
fn as_floats<'b>(bytes: &'b [u8], copies: &mut u64) -> Cow<'b, [f32]> {
    match bytemuck::try_cast_slice(bytes) {
        Ok(floats) => Cow::Borrowed(floats),
        Err(_) => {
            *copies += 1;
            Cow::Owned(bytemuck::pod_collect_to_vec(bytes))
        }
    }
}

/// One pass: ns per vector, the sum of the dot products, and the reads that copied.
struct Pass {
    ns_per_vector: f64,
    sum: f64,
    copies: u64,
}

fn order(n: u64) -> impl Iterator<Item = u64> {
    (0..n).map(move |i| (i.wrapping_mul(7919) + 12_345) % n)
}

fn timed(n: u64, f: impl FnOnce() -> anyhow::Result<(f64, u64)>) -> anyhow::Result<Pass> {
    let start = Instant::now();
    let (sum, copies) = f()?;
    Ok(Pass {
        ns_per_vector: start.elapsed().as_nanos() as f64 / n as f64,
        sum,
        copies,
    })
}

trait Engine {
    fn name(&self) -> &'static str;
    fn gets(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass>;
    fn scan(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass>;
}

/// The vector's number as each engine stores the key.
#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum Keys {
    /// A `u64`: big-endian bytes (mapkv's `Key` encoding of u64).
    U64,
    /// A 10-byte string, `doc0000042`.
    Str,
}

impl Keys {
    fn bytes(self, i: u64) -> Vec<u8> {
        match self {
            Keys::U64 => i.to_be_bytes().to_vec(),
            Keys::Str => name(i).into_bytes(),
        }
    }
}

fn name(i: u64) -> String {
    format!("doc{i:07}")
}

struct Mapkv(mapkv::Database, Keys);

impl Mapkv {
    fn load(path: &Path, vectors: &[Vec<f32>], keys: Keys) -> anyhow::Result<Mapkv> {
        let db = mapkv::Database::open(path)?;
        let w = db.begin_write()?;
        match keys {
            Keys::U64 => drop(w.open_table(EMBEDDINGS)?), // created aligned for f32
            Keys::Str => drop(w.open_table(EMBEDDINGS_BY_NAME)?),
        }
        w.commit()?;
        let entries = (vectors.iter().enumerate())
            .map(|(i, v)| (keys.bytes(i as u64), bytemuck::cast_slice::<f32, u8>(v)));
        db.bulk_load("embeddings", entries)?;
        Ok(Mapkv(db, keys))
    }
}

impl Engine for Mapkv {
    fn name(&self) -> &'static str {
        "mapkv"
    }

    fn gets(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.0.begin_read()?;
        match self.1 {
            Keys::U64 => typed_gets(&r.open_table(EMBEDDINGS)?, n, query, |i| i),
            Keys::Str => typed_gets(&r.open_table(EMBEDDINGS_BY_NAME)?, n, query, name),
        }
    }

    fn scan(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.0.begin_read()?;
        match self.1 {
            Keys::U64 => typed_scan(&r.open_table(EMBEDDINGS)?, n, query),
            Keys::Str => typed_scan(&r.open_table(EMBEDDINGS_BY_NAME)?, n, query),
        }
    }
}

/// Random gets through a typed table whose key for vector `i` is `key(i)`.
fn typed_gets<K: mapkv::Key + ?Sized, Q: Borrow<K>>(
    t: &mapkv::ReadTable<'_, K, [f32]>,
    n: u64,
    query: &[f32],
    key: impl Fn(u64) -> Q,
) -> anyhow::Result<Pass> {
    timed(n, || {
        let mut sum = 0.0;
        for i in order(n) {
            let v: &[f32] = t.get(key(i).borrow())?.context("absent")?;
            sum += f64::from(dot(black_box(v), query));
        }
        Ok((sum, 0))
    })
}

/// A full scan of a typed table.
fn typed_scan<K: mapkv::Key + ?Sized>(
    t: &mapkv::ReadTable<'_, K, [f32]>,
    n: u64,
    query: &[f32],
) -> anyhow::Result<Pass> {
    timed(n, || {
        let mut sum = 0.0;
        for row in t.iter()? {
            sum += f64::from(dot(black_box(row?.1), query));
        }
        Ok((sum, 0))
    })
}

struct Lmdb {
    env: heed::Env,
    db: heed::Database<Bytes, Bytes>,
    keys: Keys,
}

impl Lmdb {
    fn load(dir: &Path, vectors: &[Vec<f32>], keys: Keys) -> anyhow::Result<Lmdb> {
        std::fs::create_dir_all(dir)?;
        // SAFETY: the directory is this program's own; nothing else opens it.
        let env = unsafe { heed::EnvOpenOptions::new().map_size(1 << 36).open(dir)? };
        let mut w = env.write_txn()?;
        let db: heed::Database<Bytes, Bytes> = env.create_database(&mut w, None)?;
        for (i, v) in vectors.iter().enumerate() {
            let key = keys.bytes(i as u64);
            let value = bytemuck::cast_slice(v);
            db.put_with_flags(&mut w, heed::PutFlags::APPEND, &key, value)?;
        }
        w.commit()?;
        Ok(Lmdb { env, db, keys })
    }
}

impl Engine for Lmdb {
    fn name(&self) -> &'static str {
        "lmdb"
    }

    fn gets(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.env.read_txn()?;
        timed(n, || {
            let (mut sum, mut copies) = (0.0, 0);
            for i in order(n) {
                let bytes = self.db.get(&r, &self.keys.bytes(i))?.context("absent")?;
                let v = as_floats(bytes, &mut copies);
                sum += f64::from(dot(black_box(&v), query));
            }
            Ok((sum, copies))
        })
    }

    fn scan(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.env.read_txn()?;
        timed(n, || {
            let (mut sum, mut copies) = (0.0, 0);
            for row in self.db.iter(&r)? {
                let (_, bytes) = row?;
                let v = as_floats(bytes, &mut copies);
                sum += f64::from(dot(black_box(&v), query));
            }
            Ok((sum, copies))
        })
    }
}

struct Redb(redb::Database, Keys);

impl Redb {
    fn load(path: &Path, vectors: &[Vec<f32>], keys: Keys) -> anyhow::Result<Redb> {
        let db = redb::Database::create(path)?;
        let w = db.begin_write()?;
        {
            let mut t = w.open_table(REDB_TABLE)?;
            for (i, v) in vectors.iter().enumerate() {
                let key = keys.bytes(i as u64);
                t.insert(&key[..], bytemuck::cast_slice::<f32, u8>(v))?;
            }
        }
        w.commit()?;
        Ok(Redb(db, keys))
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn gets(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.0.begin_read()?;
        let t = r.open_table(REDB_TABLE)?;
        timed(n, || {
            let (mut sum, mut copies) = (0.0, 0);
            for i in order(n) {
                let guard = t.get(&self.1.bytes(i)[..])?.context("absent")?;
                let v = as_floats(guard.value(), &mut copies);
                sum += f64::from(dot(black_box(&v), query));
            }
            Ok((sum, copies))
        })
    }

    fn scan(&self, n: u64, query: &[f32]) -> anyhow::Result<Pass> {
        let r = self.0.begin_read()?;
        let t = r.open_table(REDB_TABLE)?;
        timed(n, || {
            let (mut sum, mut copies) = (0.0, 0);
            for row in t.iter()? {
                let (_, guard) = row?;
                let v = as_floats(guard.value(), &mut copies);
                sum += f64::from(dot(black_box(&v), query));
            }
            Ok((sum, copies))
        })
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let vectors: Vec<Vec<f32>> = (0..args.n).map(|_| rng.vector()).collect();
    let query = rng.vector();
    let dir = tempfile::Builder::new()
        .prefix("embeddings")
        .tempdir_in(&args.dir)?;
    eprintln!("loading {} vectors of {DIM} f32 into each engine", args.n);
    let engines: Vec<Box<dyn Engine>> = vec![
        Box::new(Mapkv::load(
            &dir.path().join("mapkv.db"),
            &vectors,
            args.keys,
        )?),
        Box::new(Lmdb::load(&dir.path().join("lmdb"), &vectors, args.keys)?),
        Box::new(Redb::load(
            &dir.path().join("redb.db"),
            &vectors,
            args.keys,
        )?),
    ];
    drop(vectors);
    let mut rows = Vec::new();
    for (what, scan) in [("random gets", false), ("full scan", true)] {
        let mut results = Vec::new();
        for e in &engines {
            // One untimed pass warms the page cache (and the map).
            let run = |e: &dyn Engine| match scan {
                true => e.scan(args.n, &query),
                false => e.gets(args.n, &query),
            };
            let warm = run(e.as_ref())?;
            let mut times = Vec::new();
            for _ in 0..args.repeat {
                let pass = run(e.as_ref())?;
                ensure!(
                    (pass.sum - warm.sum).abs() < 1e-6 * warm.sum.abs().max(1.0),
                    "{} read different data",
                    e.name()
                );
                times.push(pass.ns_per_vector);
            }
            results.push((e.name(), median(times), warm.copies, warm.sum));
        }
        let sums: Vec<f64> = results.iter().map(|r| r.3).collect();
        ensure!(
            sums.iter()
                .all(|s| (s - sums[0]).abs() < 1e-3 * sums[0].abs().max(1.0)),
            "the engines read different vectors: {sums:?}"
        );
        rows.push((what, results));
    }
    let keys = match args.keys {
        Keys::U64 => "u64 keys",
        Keys::Str => "10-byte string keys",
    };
    println!(
        "n = {}, {keys}, {DIM} f32 per vector, median of {}\n",
        args.n, args.repeat
    );
    println!(
        "| workload | engine | ns per vector read and dotted | reads that copied | mapkv ÷ engine (rate) |"
    );
    println!("|---|---|---:|---:|---:|");
    for (what, results) in &rows {
        let mapkv_ns = results[0].1;
        for (name, ns, copies, _) in results {
            println!(
                "| {what} | {name} | {ns:.1} | {:.0} % | {:.2}× |",
                *copies as f64 * 100.0 / args.n as f64,
                ns / mapkv_ns
            );
        }
    }
    Ok(())
}
