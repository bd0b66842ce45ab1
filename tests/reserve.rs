//! `WriteTree::insert_reserve` (issue 17, LMDB's `MDB_RESERVE`): the bytes handed out
//! are the value's final place, zeroed where the caller does not write; values inline
//! and in overflow blobs read back at every page size and `mmap_size`; the reservation
//! survives other trees being reopened (their freeze must leave the reserved leaf
//! alone); reopening or deleting the reserving tree while its handle may still write is
//! `Error::Reserved`; dropped, forgotten and aborted reservations leak no page.

mod support;

use std::collections::BTreeMap;

use mapkv::{Database, Error, Options, Result, TreeOptions};
use support::model::read_all;

fn pattern(seed: usize, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i * 31 + seed * 17 + i / 253) as u8 | 1)
        .collect()
}

/// Value lengths around the inline/overflow boundary and blob page boundaries of
/// `page_size` (keys of 8 bytes), plus a few pages' worth.
fn sizes(page_size: usize) -> Vec<usize> {
    let inline_max = (page_size - 24) / 2 - 8 - 4 - 8;
    let mut sizes = vec![0, 1, 100];
    sizes.extend(inline_max - 2..=inline_max + 2);
    for pages in [1, 2, 3] {
        let full = pages * page_size - 24;
        sizes.extend([full - 1, full, full + 1]);
    }
    sizes
}

/// Fills `value` in place with `pattern(seed, ..)` except its last byte, which the
/// reservation must have zeroed.
fn fill_but_last(value: &mut [u8], seed: usize) {
    let len = value.len();
    assert!(
        value.iter().all(|&b| b == 0),
        "a reserved value starts zeroed"
    );
    if len > 0 {
        value[..len - 1].copy_from_slice(&pattern(seed, len - 1));
    }
}

fn expected(seed: usize, len: usize) -> Vec<u8> {
    let mut v = pattern(seed, len);
    if let Some(last) = v.last_mut() {
        *last = 0;
    }
    v
}

#[test]
fn reserved_values_read_back_at_every_page_size_and_mmap_size() -> Result<()> {
    for page_size in [4096, 16384] {
        for mmap_size in [u64::MAX, 0, 48 << 10] {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("db");
            let opts = Options::new().page_size(page_size).mmap_size(mmap_size);
            let db = opts.clone().open(&path)?;
            let mut model = BTreeMap::new();
            for round in 0..2 {
                let w = db.begin_write()?;
                let mut t = w.open_tree("t")?;
                for (i, &len) in sizes(page_size).iter().enumerate() {
                    // Round 1 overwrites round 0's values: the zeroing cannot rely on
                    // fresh pages.
                    let key = (i as u64).to_be_bytes();
                    let seed = i + round * 1000;
                    fill_but_last(t.insert_reserve(&key, len)?, seed);
                    // Read back at once, through the same handle (the reservation ends).
                    assert_eq!(t.get(&key)?, Some(&expected(seed, len)[..]), "len {len}");
                    model.insert(key.to_vec(), expected(seed, len));
                }
                drop(t);
                w.commit()?;
                assert_eq!(
                    read_all(&db)?["t"],
                    model,
                    "page {page_size} map {mmap_size}"
                );
            }
            db.check()?;
            drop(db);
            let db = opts.open(&path)?;
            assert_eq!(read_all(&db)?["t"], model, "after reopening");
            db.check()?;
        }
    }
    Ok(())
}

#[test]
fn reserved_values_are_aligned_in_aligned_trees() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree_with("t", TreeOptions::new().value_align(32))?;
    for (i, len) in [1, 7, 64, 1000, 3000, 10_000].into_iter().enumerate() {
        let v = t.insert_reserve(&[i as u8; 3], len)?;
        assert_eq!(v.as_ptr() as usize % 32, 0, "reserved value of {len} bytes");
        v.fill(i as u8 + 1);
    }
    drop(t);
    w.commit()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    for (i, len) in [1, 7, 64, 1000, 3000, 10_000].into_iter().enumerate() {
        assert_eq!(t.get(&[i as u8; 3])?, Some(&vec![i as u8 + 1; len][..]));
    }
    db.check()?;
    Ok(())
}

/// Another tree opened again while its older handle lives freezes the dirty pages; the
/// reserved leaf of this tree must stay where the caller writes. Without that, the
/// bytes written after the freeze would land in a retired copy and be lost.
#[test]
fn reopening_other_trees_keeps_the_reserved_bytes_in_place() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut a = w.open_tree("a")?;
    let b_old = w.open_tree("b")?;
    for (key, len) in [(&b"inline"[..], 50), (b"blob", 20_000)] {
        let value = a.insert_reserve(key, len)?;
        value[0] = 1;
        // `b` opened again while `b_old` lives: every dirty page is frozen.
        let mut b = w.open_tree("b")?;
        b.insert(key, b"x")?;
        value[len - 1] = 2;
        drop(b);
        let mut want = vec![0; len];
        (want[0], want[len - 1]) = (1, 2);
        assert_eq!(a.get(key)?, Some(&want[..]), "{len}-byte value");
    }
    drop(b_old);
    drop(a);
    w.commit()?;
    db.check()?;
    Ok(())
}

#[test]
fn the_reserving_tree_cannot_be_reopened_or_deleted_while_its_handle_may_write() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert_reserve(b"k", 10)?.fill(3);
    assert!(matches!(w.open_tree("t"), Err(Error::Reserved(name)) if name == "t"));
    assert!(matches!(w.delete_tree("t"), Err(Error::Reserved(_))));
    // Any call on the handle ends the reservation.
    assert_eq!(t.len()?, 1);
    let mut again = w.open_tree("t")?;
    assert_eq!(again.get(b"k")?, Some(&[3; 10][..]));
    // A dropped handle ends it too (here with an overflow value).
    again.insert_reserve(b"big", 50_000)?.fill(4);
    drop(again);
    let t = w.open_tree("t")?;
    assert_eq!(t.get(b"big")?, Some(&vec![4; 50_000][..]));
    drop(t);
    w.commit()?;
    db.check()?;
    Ok(())
}

#[test]
fn dropped_deleted_forgotten_and_aborted_reservations_leak_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    // Reserved, handle dropped, tree deleted: the blob is freed with the tree.
    let w = db.begin_write()?;
    let mut t = w.open_tree("gone")?;
    t.insert_reserve(b"big", 30_000)?.fill(1);
    drop(t);
    assert!(w.delete_tree("gone")?);
    w.commit()?;
    db.check()?;
    // Reserved, handle forgotten: the commit writes the value all the same.
    let w = db.begin_write()?;
    let mut t = w.open_tree("kept")?;
    t.insert_reserve(b"small", 30)?.fill(3);
    t.insert_reserve(b"big", 30_000)?.fill(2);
    std::mem::forget(t);
    w.commit()?;
    let r = db.begin_read()?;
    let t = r.open_tree("kept")?;
    assert_eq!(t.get(b"big")?, Some(&vec![2; 30_000][..]));
    assert_eq!(t.get(b"small")?, Some(&[3; 30][..]));
    db.check()?;
    // Reserved, then aborted: nothing changed, nothing leaked.
    let before = read_all(&db)?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("kept")?;
    t.insert_reserve(b"big", 70_000)?.fill(5);
    t.insert_reserve(b"other", 70_000)?.fill(6);
    drop(t);
    w.abort();
    assert_eq!(read_all(&db)?, before);
    db.check()?;
    Ok(())
}

#[test]
fn oversized_reservations_are_refused_and_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"k", b"v")?;
    let long_key = vec![1; 5000];
    assert!(matches!(
        t.insert_reserve(&long_key, 1),
        Err(Error::KeyTooLarge { .. })
    ));
    assert_eq!(t.get(b"k")?, Some(&b"v"[..]));
    drop(t);
    w.commit()?;
    db.check()?;
    Ok(())
}

/// A reserved blob whose image cannot be allocated (a terabyte, where the kernel refuses
/// allocations far beyond memory, as Linux does by default) is `Error::Io` of kind
/// `OutOfMemory`, and the transaction stays usable: nothing was changed.
#[test]
fn a_reservation_too_large_for_memory_is_an_error_that_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"k", b"v")?;
    match t.insert_reserve(b"huge", 1 << 40) {
        Err(Error::Io(e)) => assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory),
        Err(e) => panic!("unexpected error: {e}"),
        // Allowed where the kernel overcommits without limit: end here, writing nothing
        // (the reservation is dropped with the transaction).
        Ok(_) => return Ok(()),
    }
    assert_eq!(t.get(b"huge")?, None);
    t.insert(b"after", b"ok")?;
    drop(t);
    w.commit()?;
    assert_eq!(read_all(&db)?["t"].len(), 2);
    db.check()?;
    Ok(())
}

/// Under Miri (`cargo +nightly miri test --test reserve miri`): writing the reserved
/// bytes while other trees are reopened, changed and frozen, and after the handle moved,
/// is free of undefined behaviour (Stacked Borrows checks that nothing else asserted
/// access to those bytes in between).
#[test]
fn miri_reserved_bytes_stay_exclusive_to_the_caller() -> Result<()> {
    let disk = support::simdisk::SimDisk::new(Vec::new());
    let db = support::recovery::open(&disk)?;
    let w = db.begin_write()?;
    let mut a = w.open_tree("a")?;
    let b_old = w.open_tree("b")?;
    for (i, len) in [40usize, 9000].into_iter().enumerate() {
        let value = a.insert_reserve(&[i as u8], len)?;
        value[0] = 7;
        let mut b = w.open_tree("b")?;
        for k in 0..20u8 {
            b.insert(&[k], &[k; 300])?;
        }
        drop(b);
        value[len - 1] = 9;
        let got = a.get(&[i as u8])?.expect("present");
        assert_eq!((got[0], got[len - 1], got.len()), (7, 9, len));
    }
    let mut moved = Box::new(a);
    moved.insert_reserve(b"last", 5000)?.fill(1);
    drop(b_old);
    drop(moved);
    w.commit()?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("a")?.get(b"last")?, Some(&vec![1; 5000][..]));
    Ok(())
}

/// A reserved value is filled on one thread while another reopens, changes and deletes
/// other trees of the same transaction (each reopen freezes the dirty pages, which must
/// leave the reserved leaf alone): blobs and inline values read back, `check` passes.
#[test]
fn reserved_bytes_are_filled_while_other_threads_reopen_and_delete_other_trees() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    for round in 0..20u8 {
        let w = db.begin_write()?;
        std::thread::scope(|s| -> Result<()> {
            let others = s.spawn(|| -> Result<()> {
                for i in 0..200u32 {
                    let name = format!("o{}", i % 3);
                    let old = w.open_tree(&name)?;
                    let mut t = w.open_tree(&name)?;
                    t.insert(&i.to_be_bytes(), &[round; 700])?;
                    drop((old, t));
                    if i % 50 == 49 {
                        w.delete_tree("o0")?;
                    }
                }
                Ok(())
            });
            let mut t = w.open_tree("r")?;
            for i in 0..200u32 {
                let len = if i % 4 == 0 { 9000 } else { 300 };
                let v = t.insert_reserve(&i.to_be_bytes(), len)?;
                for (j, b) in v.iter_mut().enumerate() {
                    *b = (j as u8) ^ round;
                }
            }
            others.join().expect("no panic")?;
            for i in 0..200u32 {
                let len = if i % 4 == 0 { 9000 } else { 300 };
                let got = t.get(&i.to_be_bytes())?.expect("present");
                assert_eq!(got.len(), len);
                assert!(got.iter().enumerate().all(|(j, &b)| b == (j as u8) ^ round));
            }
            Ok(())
        })?;
        w.commit()?;
        db.check()?;
    }
    Ok(())
}
