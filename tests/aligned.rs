//! Trees created with `TreeOptions::value_align(n)`: every value, inline or large, starts
//! at a file offset that is a multiple of n, through splits, merges, overwrites,
//! compaction in place, `compact_to`, bulk loads and reopening, at every page size; and
//! the alignment is part of the tree (another one is refused).

mod support;

use std::collections::BTreeMap;

use mapkv::{Database, Error, Options, Result, Table, TreeOptions};

const ALIGNS: [usize; 7] = [1, 2, 4, 8, 16, 32, 64];

fn key(i: u64) -> Vec<u8> {
    // Keys of 1 to 20 bytes, so that the padding before values varies.
    let len = 1 + (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 59) as usize % 20;
    let mut k = i.wrapping_mul(0x2545_F491_4F6C_DD1D).to_be_bytes().to_vec();
    k.resize(len.max(8), b'k');
    k.truncate(len.max(8));
    k
}

fn value(i: u64, page_size: usize) -> Vec<u8> {
    // Mostly small, some near the inline limit, some large (overflow blobs).
    let len = match i % 17 {
        0 => page_size / 2 - 100 + (i as usize % 90),
        1 => page_size * 2 + (i as usize % 300),
        _ => (i as usize * 7) % 200,
    };
    (0..len).map(|j| (i as usize + j) as u8).collect()
}

/// Every value of `tree` equals the model's and starts at a multiple of `align` in the
/// file (and in memory, when it comes from the map).
fn check_tree(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>, align: usize) -> Result<()> {
    let r = db.begin_read()?;
    let t = r.open_tree_with("t", TreeOptions::new().value_align(align))?;
    assert_eq!(t.len()?, model.len() as u64);
    for (k, v) in model {
        let extent = t.get_extent(k)?.expect("present");
        assert_eq!(
            extent.offset() % align as u64,
            0,
            "value of {k:?}, align {align}"
        );
        assert_eq!(extent.len(), v.len() as u64);
        assert_eq!(t.get(k)?, Some(&v[..]));
    }
    let mut n = 0;
    for entry in t.range::<&[u8], _>(..)? {
        let (k, v) = entry?;
        assert_eq!(model.get(k).map(Vec::as_slice), Some(v));
        n += 1;
    }
    assert_eq!(n, model.len());
    db.check()?;
    Ok(())
}

fn values_are_aligned_in_memory(db: &Database, align: usize) -> Result<()> {
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    for entry in t.range::<&[u8], _>(..)? {
        let (_, v) = entry?;
        assert_eq!(
            v.as_ptr() as usize % align,
            0,
            "a mapped value, align {align}"
        );
    }
    Ok(())
}

#[test]
fn values_stay_aligned_through_every_edit() -> Result<()> {
    for page_size in [4096, 16384] {
        for align in ALIGNS {
            let dir = tempfile::tempdir()?;
            let path = dir.path().join("db");
            let db = Options::new().page_size(page_size).open(&path)?;
            let options = TreeOptions::new().value_align(align);
            let mut model = BTreeMap::new();
            // Inserts in scattered order (splits), overwrites with other sizes.
            for round in 0..3u64 {
                let w = db.begin_write()?;
                {
                    let mut t = w.open_tree_with("t", options)?;
                    for i in 0..600u64 {
                        let i = (i * 7919 + round * 13) % 900;
                        let v = value(i + round, page_size);
                        t.insert(&key(i), &v)?;
                        model.insert(key(i), v);
                    }
                }
                w.commit()?;
            }
            check_tree(&db, &model, align)?;
            values_are_aligned_in_memory(&db, align)?;
            // Removes (merges), then compaction in place packs and moves the rest.
            let w = db.begin_write()?;
            {
                let mut t = w.open_tree_with("t", options)?;
                for i in (0..900u64).filter(|i| i % 4 != 0) {
                    if model.remove(&key(i)).is_some() {
                        assert!(t.remove(&key(i))?);
                    }
                }
            }
            w.commit()?;
            check_tree(&db, &model, align)?;
            db.compact()?;
            check_tree(&db, &model, align)?;
            // A compacted copy, and the file reopened at every mmap size.
            let copy = dir.path().join("copy");
            db.compact_to(&copy)?;
            drop(db);
            for mmap_size in [u64::MAX, 1 << 16, 0] {
                for file in [&path, &copy] {
                    let db = Options::new().mmap_size(mmap_size).open(file)?;
                    check_tree(&db, &model, align)?;
                    values_are_aligned_in_memory(&db, align)?;
                }
            }
            let db = Database::open(&path)?;
            values_are_aligned_in_memory(&db, align)?;
        }
    }
    Ok(())
}

#[test]
fn bulk_loads_keep_the_tree_alignment() -> Result<()> {
    for align in ALIGNS {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path().join("db"))?;
        let w = db.begin_write()?;
        w.open_tree_with("t", TreeOptions::new().value_align(align))?;
        w.commit()?;
        let model: BTreeMap<Vec<u8>, Vec<u8>> =
            (0..3000u64).map(|i| (key(i), value(i, 4096))).collect();
        db.bulk_load("t", model.iter().map(|(k, v)| (k.clone(), v.clone())))?;
        check_tree(&db, &model, align)?;
        values_are_aligned_in_memory(&db, align)?;
    }
    Ok(())
}

#[test]
fn a_tree_keeps_the_alignment_it_was_created_with() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    // Created empty: the options are recorded all the same.
    w.open_tree_with("t", TreeOptions::new().value_align(16))?;
    w.open_tree("plain")?.insert(b"k", b"v")?;
    w.commit()?;
    let w = db.begin_write()?;
    for bad in [1, 8, 32] {
        let refused = w.open_tree_with("t", TreeOptions::new().value_align(bad));
        assert!(matches!(refused, Err(Error::InvalidOptions(_))), "{bad}");
    }
    let refused = w.open_tree_with("plain", TreeOptions::new().value_align(8));
    assert!(matches!(refused, Err(Error::InvalidOptions(_))));
    for bad in [0, 3, 128] {
        let refused = w.open_tree_with("new", TreeOptions::new().value_align(bad));
        assert!(matches!(refused, Err(Error::InvalidOptions(_))), "{bad}");
    }
    // Plain opens see an aligned tree's bytes as they are.
    w.open_tree("t")?.insert(b"x", b"1234")?;
    w.commit()?;
    let r = db.begin_read()?;
    assert!(matches!(
        r.open_tree_with("t", TreeOptions::new()),
        Err(Error::InvalidOptions(_))
    ));
    let t = r.open_tree_with("t", TreeOptions::new().value_align(16))?;
    let v = t.get(b"x")?.unwrap();
    assert_eq!(v, b"1234");
    assert_eq!(t.get_extent(b"x")?.unwrap().offset() % 16, 0);
    assert!(matches!(
        r.open_tree_with("absent", TreeOptions::new()),
        Err(Error::TreeNotFound(_))
    ));
    // A plain open says what the tree was created with.
    let created = r.open_tree("t")?.options();
    assert_eq!(created, TreeOptions::new().value_align(16));
    assert_eq!((created.alignment(), created.is_typed()), (16, false));
    assert_eq!(r.open_tree("plain")?.options(), TreeOptions::new());
    Ok(())
}

#[test]
fn the_longest_key_still_fits_with_the_widest_padding() -> Result<()> {
    for page_size in [4096, 65536] {
        let dir = tempfile::tempdir()?;
        let db = Options::new()
            .page_size(page_size)
            .open(dir.path().join("db"))?;
        let w = db.begin_write()?;
        let mut t = w.open_tree_with("t", TreeOptions::new().value_align(64))?;
        let too_long = vec![b'k'; page_size / 2];
        let max = match t.insert(&too_long, b"v") {
            Err(Error::KeyTooLarge { max, .. }) => max,
            other => panic!("{other:?}"),
        };
        // Many longest keys with inline and large values: splits must find room.
        for i in 0..40u8 {
            let mut k = vec![b'k'; max];
            k[max - 1] = i;
            let v = vec![i; if i % 2 == 0 { 7 } else { page_size * 2 }];
            t.insert(&k, &v)?;
        }
        drop(t);
        w.commit()?;
        db.check()?;
    }
    Ok(())
}

/// A typed table's tree reports its options as typed, with its type's alignment.
#[test]
fn a_typed_tables_tree_says_so() -> Result<()> {
    const WORDS: Table<u64, [u64]> = Table::new("words");
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    w.open_table(WORDS)?.insert(&1, &[1u64, 2][..])?;
    w.commit()?;
    let options = db.begin_read()?.open_tree("words")?.options();
    assert_eq!((options.alignment(), options.is_typed()), (8, true));
    Ok(())
}

/// Typed reads on a simulated disk, which Miri can run
/// (`cargo +nightly miri test --test aligned miri`): `&[u64]` and `&[f32; 4]` views of
/// values in page buffers are aligned and in bounds (Miri checks every access), they
/// stay valid while the read transaction lives although a writer commits over them, and
/// a stored value of the wrong length is an error, not a misread.
#[test]
fn miri_typed_reads_are_aligned_and_checked() -> Result<()> {
    const WORDS: Table<u64, [u64]> = Table::new("words");
    const QUADS: Table<u32, [f32; 4]> = Table::new("quads");
    let disk = support::simdisk::SimDisk::new(Vec::new());
    let db = support::recovery::open(&disk)?;
    let w = db.begin_write()?;
    {
        let mut words = w.open_table(WORDS)?;
        let mut quads = w.open_table(QUADS)?;
        for i in 0..30u64 {
            let v: Vec<u64> = (0..i * 37).collect(); // up to 8.6 KB: overflow blobs too
            words.insert(&i, &v[..])?;
            quads.insert(&(i as u32), &[i as f32; 4])?;
        }
        assert_eq!(words.get(&3)?.map(<[u64]>::len), Some(111), "a dirty page");
    }
    w.commit()?;
    let r = db.begin_read()?;
    let words = r.open_table(WORDS)?;
    let quads = r.open_table(QUADS)?;
    let held: Vec<&[u64]> = (0..30)
        .map(|i| words.get(&i).map(Option::unwrap))
        .collect::<Result<_>>()?;
    // A writer replaces every value while the reader holds its views.
    let w = db.begin_write()?;
    {
        let mut words = w.open_table(WORDS)?;
        for i in 0..30u64 {
            words.insert(&i, &[0xFFFF_FFFF; 3][..])?;
        }
        // The typed table's tree opened with other options (no value layout): refused.
        let other = w.open_tree_with("quads", TreeOptions::new().value_align(4));
        assert!(matches!(other, Err(Error::InvalidOptions(_))));
    }
    w.commit()?;
    for (i, v) in held.iter().enumerate() {
        assert_eq!(v.as_ptr() as usize % 8, 0);
        assert!(
            v.iter().copied().eq(0..i as u64 * 37),
            "value {i} as read before"
        );
    }
    assert_eq!(quads.get(&7)?, Some(&[7.0; 4]));
    drop(r);
    let w = db.begin_write()?;
    w.open_tree("words")?
        .insert(&5u64.to_be_bytes(), &[1; 12])?;
    w.commit()?;
    let r = db.begin_read()?;
    let words = r.open_table(WORDS)?;
    assert!(
        matches!(words.get(&5), Err(Error::Corrupted { .. })),
        "12 bytes as [u64]"
    );
    assert_eq!(words.get(&6)?, Some(&[0xFFFF_FFFF; 3][..]));
    Ok(())
}

/// A crafted file (valid checksums) whose tree record claims a larger alignment than
/// its values were stored with: `check` reports the first value off that alignment.
#[test]
fn check_finds_values_off_the_recorded_alignment() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    {
        let db = Database::open(&path)?;
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree_with("t", TreeOptions::new().value_align(16))?;
            for i in 0..50u64 {
                t.insert(&key(i), &value(i + 2, 4096))?; // inline values
            }
        }
        w.commit()?;
        db.check()?;
    }
    let mut img = std::fs::read(&path)?;
    let (catalog, slot) = support::image::catalog_leaf(&img, 4096);
    let meta = slot * support::image::META_SLOT;
    let durable_before = support::image::u64_at(&img, meta + support::image::META_DURABLE_BEFORE);
    let (name, record) = support::image::leaf_values(&img, catalog)[0].clone();
    assert_eq!(name, b"t");
    // The record's `values` field (its last four bytes): log2 of the alignment, 4 → 6.
    assert_eq!(img[record + 32], 4);
    img[record + 32] = 6;
    support::image::reseal_catalog(&mut img, 4096, durable_before);
    std::fs::write(&path, &img)?;
    let db = Database::open(&path)?;
    match db.check() {
        Err(Error::Corrupted { reason, .. }) => {
            assert!(reason.contains("in a tree aligned to 64"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    Ok(())
}
