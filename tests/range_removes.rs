//! Range removes and `retain` against a `BTreeMap` model: every bound kind, empty and
//! inverted ranges, ranges beyond the keys and the whole tree, in shallow and deep trees,
//! with large values (their pages freed), `check()` and a comparison after every commit.
//! A big middle range is removed with few page writes (subtrees inside it are freed,
//! not copied); an aborted removal changes nothing.

mod support;

use std::collections::BTreeMap;
use std::ops::Bound;

use mapkv::{Database, Options, Result};
use support::model::model_range;
use support::rng::{Rng, seed};

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

fn open(dir: &tempfile::TempDir, page_size: usize) -> Result<Database> {
    Options::new()
        .page_size(page_size)
        .open(dir.path().join("range_removes.mapkv"))
}

/// Key `i`, padded in front to `len` bytes: long keys make long separators, so few keys
/// per branch and deep trees.
fn key(i: u64, len: usize) -> Vec<u8> {
    let mut k = vec![b'~'; len.saturating_sub(10)];
    k.extend_from_slice(format!("{i:010}").as_bytes());
    k
}

fn value(i: u64, len: usize) -> Vec<u8> {
    (0..len).map(|j| (i as usize + j * 7) as u8).collect()
}

/// A tree's shape and contents for one run.
#[derive(Clone, Copy, Debug)]
struct Shape {
    page_size: usize,
    /// Keys `0..keys` with a stride, so that bounds fall between keys too.
    keys: u64,
    key_len: usize,
    /// Value lengths are drawn from this range (large ones go to overflow blobs).
    value_lens: (u64, u64),
}

impl Shape {
    fn entry(&self, i: u64, rng: &mut Rng) -> (Vec<u8>, Vec<u8>) {
        let len = rng.range(self.value_lens.0, self.value_lens.1) as usize;
        (key(i * 3, self.key_len), value(i, len))
    }

    /// A bound: unbounded, or included or excluded, at a present key, between keys, or
    /// beyond every key.
    fn bound(&self, rng: &mut Rng) -> Bound<Vec<u8>> {
        let at = match rng.below(8) {
            0 => self.keys * 3 + rng.below(5),
            1 => 0,
            _ => rng.below(self.keys * 3),
        };
        let k = key(at, self.key_len);
        match rng.below(5) {
            0 => Bound::Unbounded,
            1 | 2 => Bound::Included(k),
            _ => Bound::Excluded(k),
        }
    }
}

fn as_slice(b: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    b.as_ref().map(Vec::as_slice)
}

fn compare(db: &Database, model: &Model) -> Result<()> {
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.len()?, model.len() as u64);
    let mut expected = model.iter();
    for entry in t.iter()? {
        let (k, v) = entry?;
        assert_eq!(Some((&k.to_vec(), &v.to_vec())), expected.next());
    }
    assert_eq!(expected.next(), None);
    Ok(())
}

/// Pages the model's large values take in their blobs at this page size (FORMAT.md:
/// a value is inline if its slot, cell header, key and value fit half a leaf's cell area;
/// a blob has a 24-byte header).
fn overflow_pages(db: &Database, model: &Model) -> u64 {
    let page_size = db.stats().unwrap().page_size;
    model
        .iter()
        .filter(|(k, v)| 8 + 4 + k.len() + v.len() > (page_size - 24) / 2)
        .map(|(_, v)| (24 + v.len()).div_ceil(page_size) as u64)
        .sum()
}

/// Fills a tree of `shape`, then runs `rounds` transactions of a few range removes each
/// (and refills, so the tree stays big), checking after each commit.
fn random_ranges(seed: u64, shape: Shape, rounds: usize, depth_min: u32) -> Result<()> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir()?;
    let db = open(&dir, shape.page_size)?;
    let mut model = Model::new();
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..shape.keys {
            let (k, v) = shape.entry(i, &mut rng);
            t.insert(&k, &v)?;
            model.insert(k, v);
        }
    }
    w.commit()?;
    let depth = db.stats()?.trees[0].depth;
    assert!(depth >= depth_min, "{shape:?}: depth {depth}");
    for round in 0..rounds {
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for _ in 0..rng.range(1, 4) {
                let (lower, upper) = match rng.below(10) {
                    0 => (Bound::Unbounded, Bound::Unbounded),
                    1 => {
                        // A narrow range: one leaf or two.
                        let at = rng.below(shape.keys * 3);
                        let lower = Bound::Included(key(at, shape.key_len));
                        (
                            lower,
                            Bound::Excluded(key(at + rng.below(60), shape.key_len)),
                        )
                    }
                    _ => (shape.bound(&mut rng), shape.bound(&mut rng)),
                };
                let (lo, up) = (as_slice(&lower), as_slice(&upper));
                let gone: Vec<Vec<u8>> = model_range(&model, lo, up)
                    .into_iter()
                    .map(|(k, _)| k.to_vec())
                    .collect();
                let removed = t.remove_range::<Vec<u8>, _>((lower.clone(), upper.clone()))?;
                assert_eq!(
                    removed,
                    gone.len() as u64,
                    "round {round}: {lower:?}..{upper:?}"
                );
                for k in gone {
                    model.remove(&k);
                }
                assert_eq!(t.len()?, model.len() as u64);
            }
            // Refill a random run, so that later rounds still meet a deep tree.
            if rng.chance(2, 3) {
                let start = rng.below(shape.keys);
                for i in start..(start + rng.below(shape.keys / 2 + 1)).min(shape.keys) {
                    let (k, v) = shape.entry(i, &mut rng);
                    t.insert(&k, &v)?;
                    model.insert(k, v);
                }
            }
        }
        w.commit()?;
        let report = db.check()?;
        assert_eq!(report.entries, model.len() as u64);
        assert_eq!(
            report.overflow_pages,
            overflow_pages(&db, &model),
            "round {round}"
        );
        compare(&db, &model)?;
    }
    Ok(())
}

#[test]
fn random_ranges_in_shallow_trees() -> Result<()> {
    let seed = seed(5);
    let shape = |keys| Shape {
        page_size: 4096,
        keys,
        key_len: 16,
        value_lens: (0, 120),
    };
    random_ranges(seed, shape(1), 20, 1)?;
    random_ranges(seed + 1, shape(40), 30, 1)?;
    random_ranges(seed + 2, shape(600), 30, 2)?;
    Ok(())
}

#[test]
fn random_ranges_in_deep_trees() -> Result<()> {
    let seed = seed(7);
    // Long keys: branches of a few dozen keys, four levels from 20,000 entries.
    let long_keys = Shape {
        page_size: 4096,
        keys: 20_000,
        key_len: 120,
        value_lens: (0, 100),
    };
    random_ranges(seed, long_keys, 40, 4)?;
    // Keys near the limit: branches of two or three keys.
    let huge_keys = Shape {
        page_size: 4096,
        keys: 1500,
        key_len: 1500,
        value_lens: (0, 40),
    };
    random_ranges(seed + 1, huge_keys, 40, 4)?;
    Ok(())
}

#[test]
fn random_ranges_over_large_values() -> Result<()> {
    let seed = seed(11);
    // A third of the values go to overflow blobs of one to three pages.
    let shape = Shape {
        page_size: 4096,
        keys: 3000,
        key_len: 24,
        value_lens: (100, 9000),
    };
    random_ranges(seed, shape, 30, 3)
}

#[test]
fn removing_a_range_frees_its_large_values() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..2000 {
            // Three pages each.
            t.insert(&key(i, 24), &value(i, 10_000))?;
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let w = db.begin_write()?;
    let removed = w
        .open_tree("t")?
        .remove_range(key(500, 24)..key(1500, 24))?;
    assert_eq!(removed, 1000);
    w.commit()?;
    // A second commit, so that the pages freed by the first are free now.
    db.begin_write()?.commit()?;
    let after = db.stats()?;
    let report = db.check()?;
    assert_eq!(report.overflow_pages, 1000 * 3);
    assert!(
        after.pages_free >= before.pages_free + 1000 * 3,
        "{before:?}\n{after:?}"
    );
    assert!(after.pages_in_use + 1000 * 3 <= before.pages_in_use);
    Ok(())
}

#[test]
fn retain_against_a_model() -> Result<()> {
    let mut rng = Rng::new(seed(17));
    let shape = Shape {
        page_size: 4096,
        keys: 6000,
        key_len: 40,
        value_lens: (0, 5000),
    };
    let dir = tempfile::tempdir()?;
    let db = open(&dir, shape.page_size)?;
    let mut model = Model::new();
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..shape.keys {
            let (k, v) = shape.entry(i, &mut rng);
            t.insert(&k, &v)?;
            model.insert(k, v);
        }
    }
    w.commit()?;
    assert!(db.stats()?.trees[0].depth >= 3);
    // Predicates on the key, on the (resolved) value, dropping nearly all, dropping
    // runs, and keeping all.
    type Keep = Box<dyn Fn(&[u8], &[u8]) -> bool>;
    let predicates: Vec<(&str, Keep)> = vec![
        ("keep all", Box::new(|_, _| true)),
        ("odd last digit", Box::new(|k, _| k[k.len() - 1] % 2 == 0)),
        ("long values", Box::new(|_, v| v.len() < 3000)),
        ("value content", Box::new(|_, v| v.first() != Some(&7))),
        ("runs", Box::new(|k, _| k[k.len() - 3] % 3 != 0)),
        ("nearly all", Box::new(|k, _| k[k.len() - 2..] == *b"00")),
    ];
    for (name, keep) in predicates {
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            let mut seen = Vec::new();
            let removed = t.retain(|k, v| {
                assert_eq!(model.get(k).map(Vec::as_slice), Some(v), "{name}");
                seen.push(k.to_vec());
                keep(k, v)
            })?;
            // Every entry offered once, in key order.
            assert!(seen.iter().eq(model.keys()), "{name}");
            let before = model.len();
            model.retain(|k, v| keep(k, v));
            assert_eq!(removed, (before - model.len()) as u64, "{name}");
            // Refill some, so that the next predicate has work.
            for _ in 0..500 {
                let i = rng.below(shape.keys);
                let (k, v) = shape.entry(i, &mut rng);
                t.insert(&k, &v)?;
                model.insert(k, v);
            }
        }
        w.commit()?;
        let report = db.check()?;
        assert_eq!(report.entries, model.len() as u64);
        assert_eq!(report.overflow_pages, overflow_pages(&db, &model), "{name}");
        compare(&db, &model)?;
    }
    Ok(())
}

#[test]
fn retain_copies_only_leaves_it_changes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..20_000 {
            t.insert(&key(i, 16), &value(i, 100))?;
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let w = db.begin_write()?;
    assert_eq!(w.open_tree("t")?.retain(|_, _| true)?, 0);
    w.commit()?;
    // Nothing copied, nothing freed: the commit had nothing to write.
    assert_eq!(db.stats()?, before);
    // One key removed: one leaf and its path copied, the rest only read.
    let w = db.begin_write()?;
    let gone = key(12_345, 16);
    assert_eq!(w.open_tree("t")?.retain(|k, _| k != gone)?, 1);
    w.commit()?;
    let written = db.stats()?.pages_written - before.pages_written;
    assert!(written <= 8, "{written} pages written");
    db.check()?;
    Ok(())
}

#[test]
fn empty_trees_and_ranges_change_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let w = db.begin_write()?;
    assert_eq!(w.open_tree("empty")?.remove_range::<&[u8], _>(..)?, 0);
    assert_eq!(w.open_tree("empty")?.retain(|_, _| false)?, 0);
    {
        let mut t = w.open_tree("t")?;
        for i in 0..5000 {
            t.insert(&key(i * 2, 20), b"value")?;
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        let (k, between) = (key(100, 20), key(101, 20));
        let none = [
            (
                Bound::Included(between.clone()),
                Bound::Included(between.clone()),
            ),
            (Bound::Excluded(k.clone()), Bound::Excluded(key(102, 20))),
            (Bound::Included(k.clone()), Bound::Excluded(k.clone())),
            (Bound::Excluded(k.clone()), Bound::Included(k.clone())),
            (Bound::Included(key(300, 20)), Bound::Included(key(200, 20))),
            (Bound::Excluded(key(9998, 20)), Bound::Unbounded),
            (Bound::Unbounded, Bound::Excluded(key(0, 20))),
            (Bound::Unbounded, Bound::Excluded(Vec::new())),
        ];
        for range in none {
            assert_eq!(t.remove_range::<Vec<u8>, _>(range.clone())?, 0, "{range:?}");
        }
        assert_eq!(t.len()?, 5000);
    }
    w.commit()?;
    assert_eq!(db.stats()?, before);
    db.check()?;
    Ok(())
}

#[test]
fn removing_everything_leaves_an_empty_tree() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    for whole in [
        (Bound::Unbounded, Bound::Unbounded),
        (Bound::Included(Vec::new()), Bound::Unbounded),
        (Bound::Unbounded, Bound::Included(vec![0xff; 40])),
    ] {
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for i in 0..30_000 {
                t.insert(&key(i, 16), &value(i, 60))?;
            }
        }
        w.commit()?;
        assert!(db.stats()?.trees[0].depth >= 3);
        let w = db.begin_write()?;
        assert_eq!(w.open_tree("t")?.remove_range::<Vec<u8>, _>(whole)?, 30_000);
        w.commit()?;
        let stats = db.stats()?;
        assert_eq!((stats.trees[0].entries, stats.trees[0].depth), (0, 0));
        db.check()?;
    }
    Ok(())
}

/// What removing the middle 80% of a 60,000-entry tree of four levels costs, with
/// `remove_range` or with one `remove` per key: committed pages copied, pages the
/// commit writes, and the leaves in the range (about).
fn removing_the_middle(one_by_one: bool) -> Result<(u64, u64, u64)> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        // In a scattered order: ascending inserts would fill the leaves (and the tree
        // would have a level less).
        for i in (0..60_000u64).map(|i| i * 7919 % 60_000) {
            t.insert(&key(i, 40), &value(i, 100))?;
        }
    }
    w.commit()?;
    let before = db.stats()?;
    assert!(before.trees[0].depth >= 4, "{before:?}");
    let leaves_in_range = db.check()?.node_pages * 8 / 10;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        if one_by_one {
            for i in 6000..54_000 {
                assert!(t.remove(&key(i, 40))?);
            }
        } else {
            assert_eq!(t.remove_range(key(6000, 40)..key(54_000, 40))?, 48_000);
        }
    }
    let copied = mapkv::testing::pages_copied(&w);
    w.commit()?;
    db.check()?;
    let written = db.stats()?.pages_written - before.pages_written;
    Ok((copied, written, leaves_in_range))
}

#[test]
fn a_big_middle_range_is_removed_with_few_page_copies() -> Result<()> {
    let (copied, written, leaves) = removing_the_middle(false)?;
    // Two boundary paths of four levels and the siblings their rebalancing copies: a
    // few dozen pages at most, whatever the range holds.
    let bound = 24;
    assert!(
        copied <= bound && written <= bound,
        "{copied} pages copied, {written} written, to remove about {leaves} leaves"
    );
    // What the bound guards against: one `remove` per key copies every leaf it reaches.
    // (The commit writes few pages either way: the copies merge into one another and
    // are freed before it.)
    let (naive, _, _) = removing_the_middle(true)?;
    assert!(naive > leaves / 2, "one by one: {naive} pages copied");
    Ok(())
}

#[test]
fn an_aborted_range_removal_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let mut model = Model::new();
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..10_000 {
            let (k, v) = (key(i, 24), value(i, if i % 10 == 0 { 6000 } else { 80 }));
            t.insert(&k, &v)?;
            model.insert(k, v);
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        assert_eq!(t.remove_range(key(1000, 24)..=key(8999, 24))?, 8000);
        assert_eq!(t.retain(|k, _| k[k.len() - 1] != b'3')?, 200);
        assert_eq!(t.len()?, 1800);
    }
    w.abort();
    assert_eq!(db.stats()?, before);
    db.check()?;
    compare(&db, &model)?;
    // The pages the aborted transaction used are free again for the next one.
    let w = db.begin_write()?;
    assert_eq!(w.open_tree("t")?.remove_range(key(1000, 24)..)?, 9000);
    w.commit()?;
    model.retain(|k, _| *k < key(1000, 24));
    db.check()?;
    compare(&db, &model)
}
