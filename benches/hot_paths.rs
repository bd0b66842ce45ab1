//! Micro-benchmarks of the hot paths: point get (hit and miss), a 10-entry range, a full
//! scan, gets through the pread path (`mmap_size(0)`) on one thread and on several, an
//! insert into a page that is already dirty, and the commit of a one-page transaction.
//! Run with `cargo bench --bench hot_paths`. The comparison with other engines is the
//! `compare` program in `benches/compare`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mapkv::{Database, Durability, Options};

const N: u64 = 200_000;

fn key(i: u64) -> [u8; 24] {
    // Spread keys like random ones, deterministically.
    let x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&x.to_be_bytes());
    k[8..16].copy_from_slice(&i.to_le_bytes());
    k
}

fn loaded_db(dir: &tempfile::TempDir) -> Database {
    let db = Database::open(dir.path().join("bench.mapkv")).expect("open");
    load(&db);
    db
}

fn load(db: &Database) {
    let w = db.begin_write().expect("write");
    {
        let mut t = w.open_tree("t").expect("tree");
        for i in 0..N {
            t.insert(&key(i), &[7u8; 150]).expect("insert");
        }
    }
    w.commit().expect("commit");
}

fn reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = loaded_db(&dir);
    let r = db.begin_read().expect("read");
    let t = r.open_tree("t").expect("tree");
    let mut i = 0u64;
    c.bench_function("get hit", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(t.get(&key(i)).expect("get"))
        })
    });
    c.bench_function("get miss", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            black_box(t.get(&key(i + N)).expect("get"))
        })
    });
    c.bench_function("range of 10", |b| {
        b.iter(|| {
            i = (i + 7919) % N;
            let mut n = 0;
            for e in t.range(&key(i)[..]..).expect("range").take(10) {
                n += e.expect("entry").1.len();
            }
            black_box(n)
        })
    });
    let mut scan = c.benchmark_group("full scan");
    scan.throughput(Throughput::Elements(N));
    scan.bench_function("every entry", |b| {
        b.iter(|| {
            let mut n = 0;
            for e in t.range(..).expect("range") {
                n += e.expect("entry").1.len();
            }
            black_box(n)
        })
    });
    scan.finish();
}

/// Read transactions of the pread benchmarks end after this many gets, so that pages
/// come from the shared page cache, not from the transaction's own table.
/// `HOT_PATHS_TXN_GETS` sets another length.
const GETS_PER_TXN: u64 = 100;

/// A setting of the threaded benchmark from the environment, for experiments:
/// `HOT_PATHS_TXN_GETS`, `HOT_PATHS_MMAP_SIZE` (default 0), `HOT_PATHS_CACHE_SIZE`
/// (default 256 MiB).
fn setting(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |v| v.parse().expect("a number"))
}

/// Gets through the pread path with every page in the page cache: the hit path, on one
/// thread and on several, each with its own read transactions. Throughput per thread
/// count shows whether the hit path scales (no shared lock on it).
fn pread_reads(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("bench.mapkv");
    load(&Database::open(&path).expect("open"));
    let db = Options::new()
        .mmap_size(setting("HOT_PATHS_MMAP_SIZE", 0))
        .cache_size(setting("HOT_PATHS_CACHE_SIZE", 256 << 20))
        .open(&path)
        .expect("open at mmap_size(0)");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut group = c.benchmark_group("get at mmap_size(0), cache hits");
    group.throughput(Throughput::Elements(1));
    let mut counts = vec![1, 2, 4, cores];
    counts.retain(|&t| t <= cores.max(2));
    counts.sort();
    counts.dedup();
    for threads in counts {
        group.bench_function(format!("{threads} thread(s)"), |b| {
            b.iter_custom(|iters| gets_on_threads(&db, threads, iters))
        });
    }
    group.finish();
}

/// `iters` gets split over `threads` threads; the wall clock of all of them.
fn gets_on_threads(db: &Database, threads: usize, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let txn_gets = setting("HOT_PATHS_TXN_GETS", GETS_PER_TXN).max(1);
    let start = Instant::now();
    std::thread::scope(|s| {
        for t in 0..threads as u64 {
            s.spawn(move || {
                let mut i = t * 104_729;
                let mut done = 0;
                while done < per_thread {
                    let r = db.begin_read().expect("read");
                    let tree = r.open_tree("t").expect("tree");
                    for _ in 0..txn_gets.min(per_thread - done) {
                        i = (i + 7919) % N;
                        black_box(tree.get(&key(i)).expect("get"));
                        done += 1;
                    }
                }
            });
        }
    });
    start.elapsed()
}

fn writes(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = loaded_db(&dir);
    c.bench_function("insert into a dirty page", |b| {
        let w = db.begin_write().expect("write");
        let mut t = w.open_tree("t").expect("tree");
        t.insert(&key(1), b"make the path dirty").expect("insert");
        let mut v = 0u64;
        b.iter(|| {
            v += 1;
            t.insert(&key(1), &v.to_le_bytes()).expect("insert");
        });
    });
    c.bench_function("commit of a one-page transaction (no fsync)", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v += 1;
            let mut w = db.begin_write().expect("write");
            w.set_durability(Durability::None);
            w.open_tree("t")
                .expect("tree")
                .insert(&key(v % N), &v.to_le_bytes())
                .expect("insert");
            w.commit().expect("commit");
        });
    });
    c.bench_function("commit of a one-page transaction (fdatasync)", |b| {
        let mut v = 0u64;
        b.iter(|| {
            v += 1;
            let w = db.begin_write().expect("write");
            w.open_tree("t")
                .expect("tree")
                .insert(&key(v % N), &v.to_le_bytes())
                .expect("insert");
            w.commit().expect("commit");
        });
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(3));
    targets = reads, pread_reads, writes
}
criterion_main!(benches);
