//! Removes: one of an absent key changes nothing (no page copied, none freed, nothing to
//! commit); removes in random orders keep every page filled and accounted for (leaves and
//! branches merged, or sharing cells, in place), checked by `check()` after each commit.

mod support;

use std::collections::BTreeMap;

use mapkv::{Database, Options, Result};
use support::rng::{Rng, seed};

fn open(dir: &tempfile::TempDir, page_size: usize) -> Result<Database> {
    Options::new()
        .page_size(page_size)
        .open(dir.path().join("removes.mapkv"))
}

/// Key `i`, padded in front to `len` bytes: keys of one length differ only at the end,
/// so the separators between them in branches are long too.
fn key(i: u64, len: usize) -> Vec<u8> {
    let mut k = vec![b'~'; len.saturating_sub(10)];
    k.extend_from_slice(format!("{i:010}").as_bytes());
    k
}

#[test]
fn removing_absent_keys_copies_and_frees_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = open(&dir, 4096)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..3000 {
            t.insert(&key(i * 2, 40), b"value")?;
        }
    }
    w.commit()?;
    let before = db.stats()?;
    assert!(before.trees[0].depth >= 2, "{before:?}");
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        let absent = [
            key(1, 40),
            key(2999, 40),
            key(7000, 40),
            Vec::new(),
            vec![0xff; 90],
        ];
        for k in &absent {
            assert!(!t.remove(k)?);
        }
    }
    // Nothing dirty, nothing freed: the commit has nothing to write.
    w.commit()?;
    assert_eq!(db.stats()?, before);
    db.check()?;
    Ok(())
}

/// Loads `n` keys of random lengths in `key_lens` with values of random lengths in
/// `value_lens`, then removes them all in random order over `commits` commits, checking
/// the tree and comparing it with a model after each.
fn remove_all_in_random_order(
    seed: u64,
    page_size: usize,
    n: u64,
    key_lens: (u64, u64),
    value_lens: (u64, u64),
    commits: usize,
) -> Result<()> {
    let mut rng = Rng::new(seed);
    let dir = tempfile::tempdir()?;
    let db = open(&dir, page_size)?;
    let mut model = BTreeMap::new();
    for i in 0..n {
        let k = key(i, rng.range(key_lens.0, key_lens.1) as usize);
        let v = vec![i as u8; rng.range(value_lens.0, value_lens.1) as usize];
        model.insert(k, v);
    }
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for (k, v) in &model {
            t.insert(k, v)?;
        }
    }
    w.commit()?;
    let depth = db.stats()?.trees[0].depth;
    assert!(
        depth >= 3,
        "a tree of {depth} levels has no branch below the root"
    );
    let mut order: Vec<Vec<u8>> = model.keys().cloned().collect();
    for i in (1..order.len()).rev() {
        order.swap(i, rng.below(i as u64 + 1) as usize);
    }
    for batch in order.chunks(order.len().div_ceil(commits)) {
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for k in batch {
                assert!(t.remove(k)?);
                assert!(!t.remove(k)?);
                model.remove(k);
            }
        }
        w.commit()?;
        db.check()?;
        compare(&db, &model)?;
    }
    assert_eq!(db.stats()?.trees[0].depth, 0);
    Ok(())
}

fn compare(db: &Database, model: &BTreeMap<Vec<u8>, Vec<u8>>) -> Result<()> {
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

#[test]
fn random_removes_merge_and_share_leaves_and_branches() -> Result<()> {
    let seed = seed(13);
    // Long keys: branches of a few keys, so branches below the root merge and share.
    remove_all_in_random_order(seed, 4096, 2500, (20, 600), (0, 300), 12)?;
    // Short keys and values of every size up to half a page: mostly leaves.
    remove_all_in_random_order(seed + 1, 4096, 6000, (10, 40), (0, 1900), 7)?;
    Ok(())
}

#[test]
fn random_removes_in_one_commit_and_with_large_pages() -> Result<()> {
    let seed = seed(31);
    remove_all_in_random_order(seed, 4096, 3000, (20, 400), (0, 200), 1)?;
    remove_all_in_random_order(seed + 1, 16384, 4000, (100, 2000), (0, 500), 5)?;
    Ok(())
}
