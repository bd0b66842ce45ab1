//! Micro-benchmarks of the hot paths: point get (hit and miss), a 10-entry range, an
//! insert into a page that is already dirty, and the commit of a one-page transaction.
//! Run with `cargo bench --bench hot_paths`. The comparison with other engines is the
//! `compare` program in `benches/compare`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use mapkv::{Database, Durability};

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
    let w = db.begin_write().expect("write");
    {
        let mut t = w.open_tree("t").expect("tree");
        for i in 0..N {
            t.insert(&key(i), &[7u8; 150]).expect("insert");
        }
    }
    w.commit().expect("commit");
    db
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
    targets = reads, writes
}
criterion_main!(benches);
