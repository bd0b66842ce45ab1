//! Every buffer a value can be returned from is 64-byte aligned, as the map is: a value's
//! address and its file offset agree modulo 64 at every `mmap_size` (pages from the map,
//! from the page cache, from a transaction's held runs) and inside write transactions
//! (dirty pages). Values whose file offset is a multiple of 64 are then 64-aligned in
//! memory wherever they are read from.

use std::collections::BTreeMap;

use mapkv::{Database, Options, Result};

/// 0: pread only, through a small page cache (so pages come from the file, the cache and
/// the transaction's held runs); a window of a few pages; the whole file.
const SETTINGS: [u64; 3] = [0, 24 << 10, u64::MAX];

const KEYS: u32 = 3000;

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// Lengths that leave values at every offset modulo 64; every 40th overflows.
fn value(i: u32, round: u32) -> Vec<u8> {
    let len = match i % 40 {
        0 => 9000 + i as usize % 61,
        _ => 1 + (i as usize * 7 + round as usize) % 190,
    };
    vec![(i + round) as u8; len]
}

fn open(path: &std::path::Path, mmap_size: u64, page_size: usize) -> Result<Database> {
    Options::new()
        .page_size(page_size)
        .mmap_size(mmap_size)
        .cache_size(64 << 10)
        .open(path)
}

/// Address modulo 64 of every value `get` and `range` return in a read transaction,
/// checked against its extent's file offset.
fn check_read(db: &Database, what: &str) -> Result<usize> {
    let mut checked = 0;
    // Twice: the second transaction finds pages in the cache that the first filed.
    for pass in 0..2 {
        let r = db.begin_read()?;
        let t = r.open_tree("t")?;
        let mut check = |k: &[u8], v: &[u8]| -> Result<()> {
            let extent = t.get_extent(k)?.expect("present");
            assert_eq!(extent.len(), v.len() as u64);
            assert_eq!(
                v.as_ptr() as usize % 64,
                (extent.offset() % 64) as usize,
                "{what}, pass {pass}: value of {k:?} ({} bytes) at file offset {}",
                v.len(),
                extent.offset()
            );
            checked += 1;
            Ok(())
        };
        for i in (0..KEYS).step_by(3) {
            if let Some(v) = t.get(&key(i))? {
                check(&key(i), v)?;
            }
        }
        for e in t.range(key(100)..key(900))? {
            let (k, v) = e?;
            check(k, v)?;
        }
        for e in t.iter()?.rev().step_by(5) {
            let (k, v) = e?;
            check(k, v)?;
        }
    }
    Ok(checked)
}

/// Changes the tree (inserts that split leaves, removes that merge them, overwrites)
/// and records, for every value read back inside the transaction, its address modulo
/// 64; after the commit, each must match the file offset modulo 64 of the same value
/// (the commit writes dirty pages as they are: a value keeps its place in its page).
fn check_write(db: &Database, round: u32, what: &str) -> Result<usize> {
    let mut seen: BTreeMap<Vec<u8>, usize> = BTreeMap::new();
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (round..KEYS).step_by(4) {
            t.insert(&key(i), &value(i, round))?;
        }
        for i in (round..KEYS).step_by(13) {
            t.remove(&key(i))?;
        }
        for i in (0..KEYS).step_by(3) {
            if let Some(v) = t.get(&key(i))? {
                seen.insert(key(i).to_vec(), v.as_ptr() as usize % 64);
            }
        }
        for e in t.range(key(200)..key(1200))? {
            let (k, v) = e?;
            let at = v.as_ptr() as usize % 64;
            assert_eq!(*seen.entry(k.to_vec()).or_insert(at), at, "{what}: moved");
        }
    }
    w.commit()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    for (k, at) in &seen {
        let extent = t.get_extent(k)?.expect("present");
        assert_eq!(
            *at,
            (extent.offset() % 64) as usize,
            "{what}, write round {round}: value of {k:?} at file offset {}",
            extent.offset()
        );
    }
    Ok(seen.len())
}

#[test]
fn values_lie_at_their_file_offsets_modulo_64_in_every_buffer() -> Result<()> {
    for page_size in [4096, 16384] {
        for mmap_size in SETTINGS {
            let what = format!("page size {page_size}, mmap_size {mmap_size}");
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("db");
            let db = open(&path, mmap_size, page_size)?;
            let w = db.begin_write()?;
            {
                let mut t = w.open_tree("t")?;
                for i in 0..KEYS {
                    t.insert(&key(i), &value(i, 0))?;
                }
            }
            w.commit()?;
            let mut checked = check_read(&db, &what)?;
            for round in 1..4 {
                checked += check_write(&db, round, &what)?;
                checked += check_read(&db, &what)?;
            }
            drop(db);
            // Reopened: nothing of the writer's memory is left.
            checked += check_read(&open(&path, mmap_size, page_size)?, &what)?;
            assert!(checked > 5 * KEYS as usize, "{what}: {checked} values");
        }
    }
    Ok(())
}
