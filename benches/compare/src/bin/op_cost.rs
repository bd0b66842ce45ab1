//! One kind of operation, N times, for counting instructions with callgrind, which is
//! repeatable on a shared machine where timings are not:
//!
//! ```sh
//! op_cost DIR load 200000            # bulk-loads 200,000 entries (24-byte keys, 150-byte values)
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null op_cost DIR get 100000
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null op_cost DIR get 10
//! # instructions per get: (Collected at 100000 - Collected at 10) / 100000
//! ```
//!
//! Modes: `get`, `range` (N/10 ranges of 10 entries), `get-pread` and `range-pread` (at
//! `mmap_size(0)`), `wget` (gets in a write transaction), `insert` (random new keys in
//! one write transaction, aborted). Written against the API as it was before issue 14
//! too (hence the `mut` on write transactions), so that the same program can be built
//! against an older checkout to compare.
use mapkv::Options;
use std::time::Instant;

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

fn main() -> mapkv::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 4 {
        eprintln!("usage: op_cost DIR load|get|range|get-pread|range-pread|wget|insert N");
        std::process::exit(2);
    }
    let dir = std::path::PathBuf::from(&a[1]);
    let mode = a[2].as_str();
    let n: u64 = a[3].parse().unwrap();
    let path = dir.join("db");
    let mmap = if mode.ends_with("-pread") {
        0
    } else {
        u64::MAX
    };
    if mode.starts_with("load") {
        let _ = std::fs::remove_file(&path);
        let db = Options::new().mmap_size(mmap).open(&path)?;
        let mut e: Vec<([u8; 24], [u8; 150])> = (0..n).map(|i| (key(i), [7u8; 150])).collect();
        e.sort_by_key(|x| x.0);
        db.bulk_load("t", e)?;
        return Ok(());
    }
    let db = Options::new().mmap_size(mmap).open(&path)?;
    let t0 = Instant::now();
    let mut found = 0u64;
    match mode.trim_end_matches("-pread") {
        "get" => {
            let r = db.begin_read()?;
            let t = r.open_tree("t")?;
            for i in 0..n {
                found += t.get(&key((i * 7919) % n))?.is_some() as u64;
            }
        }
        "range" => {
            let r = db.begin_read()?;
            let t = r.open_tree("t")?;
            for i in 0..n / 10 {
                let k = key((i * 7919) % n);
                for e in t.range(&k[..]..)?.take(10) {
                    found += e?.1.len() as u64;
                }
            }
        }
        "insert" => {
            #[allow(unused_mut)]
            let mut w = db.begin_write()?;
            let mut t = w.open_tree("t")?;
            for i in 0..n {
                t.insert(&key(i + 10_000_000), &[1u8; 150])?;
                found += 1;
            }
            drop(w);
        }
        "wget" => {
            #[allow(unused_mut)]
            let mut w = db.begin_write()?;
            let t = w.open_tree("t")?;
            for i in 0..n {
                found += t.get(&key((i * 7919) % n))?.is_some() as u64;
            }
        }
        m => panic!("mode {m}"),
    }
    eprintln!("{mode}: {found} in {:?}", t0.elapsed());
    Ok(())
}
