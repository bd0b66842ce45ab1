//! Reads of mapkv and LMDB on the same data, for counting instructions and simulated
//! cache misses per operation with valgrind (cachegrind or callgrind), which behave the
//! same on any machine:
//!
//! ```sh
//! read_cost mapkv DIR load 1000000    # 1,000,000 entries: 24-byte keys, 150-byte values
//! read_cost lmdb  DIR load 1000000
//! valgrind --tool=cachegrind --cache-sim=yes --LL=33554432,16,64 \
//!     --cachegrind-out-file=/dev/null read_cost mapkv DIR get 1000000 200000
//! valgrind ... read_cost mapkv DIR get 1000000 1000
//! # per get: (count at 200,000 gets - count at 1,000 gets) / 199,000
//! ```
//!
//! Arguments: ENGINE (`mapkv` or `lmdb`), DIR (the database directory), MODE, N (entries
//! in the database) and, for reads, OPS. Modes: `load` (bulk-loads N entries, sorted:
//! mapkv's `bulk_load`, LMDB's `MDB_APPEND`), `get` (OPS random gets of present keys),
//! `range` (OPS ranges of 10 entries from random present keys: a seek and 9 steps) and
//! `scan` (the first OPS entries in key order). Both engines read the same keys in the
//! same order, in one read transaction. The keys are `op_cost`'s.
use std::hint::black_box;
use std::ops::Bound;
use std::path::Path;

use heed::types::Bytes;
use heed::{Database, EnvOpenOptions, PutFlags};

fn key(i: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    k[..8].copy_from_slice(&h.to_be_bytes());
    k[8..16].copy_from_slice(&i.to_be_bytes());
    k
}

/// The key of operation `i` of a run on `n` entries: a fixed permutation of the entries,
/// so no key repeats before all have been read.
fn op_key(i: u64, n: u64) -> [u8; 24] {
    key((i.wrapping_mul(7919) + 12_345) % n)
}

fn sorted_entries(n: u64) -> Vec<([u8; 24], [u8; 150])> {
    let mut e: Vec<([u8; 24], [u8; 150])> = (0..n)
        .map(|i| {
            let mut v = [0u8; 150];
            v[..8].copy_from_slice(&i.to_le_bytes());
            (key(i), v)
        })
        .collect();
    e.sort_by_key(|x| x.0);
    e
}

fn mapkv(dir: &Path, mode: &str, n: u64, ops: u64) -> anyhow::Result<u64> {
    let path = dir.join("mapkv.db");
    if mode == "load" {
        let _ = std::fs::remove_file(&path);
        let db = mapkv::Database::open(&path)?;
        db.bulk_load("t", sorted_entries(n))?;
        return Ok(n);
    }
    let db = mapkv::Database::open(&path)?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    let mut found = 0u64;
    match mode {
        "get" => {
            for i in 0..ops {
                let k = op_key(i, n);
                found += black_box(t.get(&k)?).map_or(0, |v| v.len() as u64);
            }
        }
        "range" => {
            for i in 0..ops {
                let k = op_key(i, n);
                for e in t.range(&k[..]..)?.take(10) {
                    found += black_box(e?).1.len() as u64;
                }
            }
        }
        "scan" => {
            for e in t.range(..)?.take(ops as usize) {
                found += black_box(e?).1.len() as u64;
            }
        }
        m => anyhow::bail!("mode {m}"),
    }
    Ok(found)
}

fn lmdb(dir: &Path, mode: &str, n: u64, ops: u64) -> anyhow::Result<u64> {
    let dir = dir.join("lmdb");
    if mode == "load" {
        let _ = std::fs::remove_dir_all(&dir);
    }
    std::fs::create_dir_all(&dir)?;
    // SAFETY (heed's contract): no other process opens this environment meanwhile.
    let env = unsafe {
        EnvOpenOptions::new()
            .map_size((n as usize * 512).max(1 << 30))
            .open(&dir)?
    };
    if mode == "load" {
        let mut w = env.write_txn()?;
        let db: Database<Bytes, Bytes> = env.create_database(&mut w, None)?;
        for (k, v) in sorted_entries(n) {
            db.put_with_flags(&mut w, PutFlags::APPEND, &k, &v)?;
        }
        w.commit()?;
        return Ok(n);
    }
    let r = env.read_txn()?;
    let db: Database<Bytes, Bytes> = env
        .open_database(&r, None)?
        .ok_or_else(|| anyhow::anyhow!("no database: load first"))?;
    let mut found = 0u64;
    match mode {
        "get" => {
            for i in 0..ops {
                let k = op_key(i, n);
                found += black_box(db.get(&r, &k)?).map_or(0, |v| v.len() as u64);
            }
        }
        "range" => {
            for i in 0..ops {
                let k = op_key(i, n);
                let bounds = (Bound::Included(&k[..]), Bound::Unbounded);
                for e in db.range(&r, &bounds)?.take(10) {
                    found += black_box(e?).1.len() as u64;
                }
            }
        }
        "scan" => {
            for e in db.iter(&r)?.take(ops as usize) {
                found += black_box(e?).1.len() as u64;
            }
        }
        m => anyhow::bail!("mode {m}"),
    }
    Ok(found)
}

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if !(a.len() == 5 || a.len() == 6) {
        eprintln!("usage: read_cost mapkv|lmdb DIR load|get|range|scan N [OPS]");
        std::process::exit(2);
    }
    let dir = Path::new(&a[2]);
    let mode = a[3].as_str();
    let n: u64 = a[4].parse()?;
    let ops: u64 = a.get(5).map_or(Ok(0), |s| s.parse())?;
    std::fs::create_dir_all(dir)?;
    let found = match a[1].as_str() {
        "mapkv" => mapkv(dir, mode, n, ops)?,
        "lmdb" => lmdb(dir, mode, n, ops)?,
        e => anyhow::bail!("engine {e}"),
    };
    eprintln!("{} {mode}: {found}", a[1]);
    Ok(())
}
