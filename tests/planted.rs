//! Direct tests for bugs once planted by hand in the engine that the broader tests
//! (model, crash, corruption) missed or caught on one seed only. Each builds the exact
//! case the bug breaks and asserts what the bug would change; the planted change each
//! one catches is named in its comment.

mod support;

use std::ops::Bound;

use mapkv::{Database, Durability, Options, Result};
use support::model::{History, Tree, Trees, Walk, check_range, digest};
use support::recovery::{open, recover};
use support::rng::Rng;
use support::simdisk::{CrashImages, Event, SECTOR, SimDisk};
use tempfile::TempDir;

/// Header of a blob's first page, before the payload (FORMAT.md#overflow-values).
const BLOB_HEADER_BYTES: usize = 24;

/// Every bound kind at both ends (inverted, equal and adjacent bounds included), on
/// present and absent keys at the tree's ends and inside, read forward, backward and
/// from both ends, against `BTreeMap::range`.
///
/// Catches: a reverse read that returns its excluded lower bound (`Bound::Excluded`
/// tested with `<` instead of `<=` where `next_back` checks the lower end).
#[test]
fn every_bound_kind_in_every_direction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    // Even keys only, with values large enough for several leaves at 4 KiB pages, so
    // that bounds fall at leaf edges as well as inside leaves.
    let model: Tree = (0..300u16)
        .map(|i| ((i * 2).to_be_bytes().to_vec(), vec![i as u8; 40]))
        .collect();
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    for (k, v) in &model {
        t.insert(k, v)?;
    }
    w.commit()?;
    let mut probes: Vec<Vec<u8>> = vec![Vec::new(), vec![0xFF; 3]];
    for k in [0u16, 1, 2, 3, 63, 64, 65, 300, 301, 595, 596, 597, 598, 599] {
        probes.push(k.to_be_bytes().to_vec());
    }
    let bounds = |k: &[u8]| {
        [
            Bound::Included(k.to_vec()),
            Bound::Excluded(k.to_vec()),
            Bound::Unbounded,
        ]
    };
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    let mut seed = 0;
    for lo in &probes {
        for hi in &probes {
            for lower in bounds(lo) {
                for upper in bounds(hi) {
                    seed += 1;
                    for walk in [Walk::Forward, Walk::Reverse, Walk::Mixed(seed)] {
                        let range = t.range((lower.clone(), upper.clone()))?;
                        let (l, u) = (lower.as_ref(), upper.as_ref());
                        let (l, u) = (l.map(Vec::as_slice), u.map(Vec::as_slice));
                        check_range(range, &model, l, u, walk)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Without the map every page is read with pread into a buffer the transaction keeps
/// by page id. A blob the write transaction wrote and then freed may be written again
/// in the same transaction: its buffer must not be served afterwards.
///
/// Catches: `TxnPages::free_blob` not calling `PageReader::forget` (the read after the
/// second overwrite returns the first value).
#[test]
fn overwritten_overflow_value_is_read_fresh_without_the_map() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Options::new().mmap_size(0).open(dir.path().join("db"))?;
    let values: Vec<Vec<u8>> = (1..=3u8).map(|i| vec![i; 10_000]).collect();
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"k", &values[0])?;
    assert!(t.get(b"k")? == Some(&values[0][..]), "first value");
    // The first overwrite's blob goes to new pages (the old blob is freed after it is
    // written); the second reuses the first blob's pages.
    t.insert(b"k", &values[1])?;
    t.insert(b"k", &values[2])?;
    let got = t.get(b"k")?.map(|v| v[0]);
    assert_eq!(
        got,
        Some(3),
        "first byte of the value after two overwrites (1: the first value's)"
    );
    w.commit()?;
    db.check()?;
    let r = db.begin_read()?;
    assert!(r.open_tree("t")?.get(b"k")? == Some(&values[2][..]));
    Ok(())
}

/// `Durability::None` commits write pages but no meta; an `Immediate` commit that
/// changes nothing must still write a meta for them and sync. Every crash image taken
/// from that sync on must hold the last `None` commit; images before it may hold any
/// commit made by then, never something else.
///
/// Catches: `WriteTxn::commit` returning early when nothing changed without calling
/// `make_durable` (images after the sync hold the last `Immediate` commit).
#[test]
fn empty_immediate_commit_makes_none_commits_durable() {
    let disk = SimDisk::new(Vec::new());
    let mut hist = History::default();
    let mut model = Trees::new();
    let db = open(&disk).expect("create");
    let created = hist.push(digest(&model), 0);
    hist.durable(disk.log_len(), created);
    let commit = |hist: &mut History,
                  model: &mut Trees,
                  durability: Durability,
                  change: &dyn Fn(u32) -> Option<Vec<u8>>| {
        let mut w = db.begin_write().expect("begin_write");
        let mut t = w.open_tree("t").expect("open_tree");
        let m = model.entry("t".into()).or_default();
        for i in 0..200u32 {
            let key = i.to_be_bytes().to_vec();
            match change(i) {
                Some(v) => {
                    t.insert(&key, &v).expect("insert");
                    m.insert(key, v);
                }
                None => {
                    t.remove(&key).expect("remove");
                    m.remove(&key);
                }
            }
        }
        w.set_durability(durability);
        let state = hist.push(digest(model), disk.log_len());
        w.commit().expect("commit");
        if durability == Durability::Immediate {
            hist.durable(disk.log_len(), state);
        }
        state
    };
    commit(&mut hist, &mut model, Durability::Immediate, &|i| {
        Some(vec![i as u8; 30])
    });
    commit(&mut hist, &mut model, Durability::None, &|i| {
        Some(vec![!i as u8; if i % 50 == 0 { 9000 } else { 60 }])
    });
    let last = commit(&mut hist, &mut model, Durability::None, &|i| {
        (i % 3 != 0).then(|| vec![i as u8 ^ 0x5A; 45])
    });
    db.begin_write()
        .expect("begin_write")
        .commit()
        .expect("empty commit");
    let synced = disk.log_len();
    hist.durable(synced, last);
    disk.kill(); // no clean close: it would make the None commits durable by itself
    drop(db);
    let mut rng = Rng::new(11);
    let mut images = CrashImages::new(&disk);
    for at in 0..=images.log_len() {
        for fate in 0..4 {
            let (_, _, content) = recover(images.image(at, &mut rng))
                .unwrap_or_else(|e| panic!("crash at {at} (fate {fate}): {e}"));
            if let Err(e) = hist.check(at, digest(&content)) {
                panic!(
                    "{e} (the empty Immediate commit returned at {synced}: from there on only state {last})"
                );
            }
        }
    }
    let (_, _, content) = recover(disk.contents()).expect("the file as the kill left it");
    assert!(content == model, "after kill -9: not the last None commit");
}

/// Recovery verifies every page the newest commit wrote against the checksums its
/// parents keep: a torn overflow blob makes `open` itself fall back to the previous
/// commit (the values read must be the previous ones before any `check`).
///
/// Catches: `check::verify_commit` (the walk at open) not verifying overflow blobs.
#[test]
fn open_falls_back_when_the_newest_commit_tore_an_overflow_value() {
    let disk = SimDisk::new(Vec::new());
    let db = open(&disk).expect("create");
    let old: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let new: Vec<u8> = (0..10_000u32).map(|i| (i % 241) as u8 ^ 0xA5).collect();
    for value in [&old, &new] {
        let w = db.begin_write().expect("begin_write");
        let mut t = w.open_tree("t").expect("open_tree");
        t.insert(b"blob", value).expect("insert");
        t.insert(b"small", &value[..8]).expect("insert");
        w.commit().expect("commit");
    }
    disk.kill(); // no clean close: the newest commit is verified at open
    drop(db);
    let blob_write = disk
        .log()
        .iter()
        .rposition(|e| {
            matches!(e, Event::Write { data, .. }
                if data.get(BLOB_HEADER_BYTES..BLOB_HEADER_BYTES + 64) == Some(&new[..64]))
        })
        .expect("the new value's blob was written");
    // Sectors holding the header and payload (the rest of the run is zero padding, as
    // the pages held before).
    let sectors = (BLOB_HEADER_BYTES + new.len()).div_ceil(SECTOR);
    let read = |db: &Database, key: &[u8]| -> Option<Vec<u8>> {
        let r = db.begin_read().expect("begin_read");
        let t = r.open_tree("t").expect("open_tree");
        t.get(key).expect("get").map(<[u8]>::to_vec)
    };
    // Intact, the newest commit opens.
    let intact = disk.image_tearing(blob_write, sectors);
    let db = open(&SimDisk::new(intact.clone())).expect("open");
    assert!(read(&db, b"blob") == Some(new.clone()), "intact image");
    // Torn after its first sector (header intact), or missing only its last sector.
    for kept in [1, sectors - 1] {
        let torn = disk.image_tearing(blob_write, kept);
        assert!(torn != intact, "the tear changes the image");
        let db = open(&SimDisk::new(torn))
            .unwrap_or_else(|e| panic!("blob torn after {kept} of {sectors} sectors: {e}"));
        assert!(
            read(&db, b"blob") == Some(old.clone())
                && read(&db, b"small") == Some(old[..8].to_vec()),
            "blob torn after {kept} of {sectors} sectors: open did not fall back to the previous commit"
        );
        db.check().expect("check");
    }
}

/// A blob of `len` payload bytes takes `ceil((24 + len) / page_size)` pages. Values
/// whose blob ends one byte before, at, and one byte after a page end (one and two
/// pages), written, overwritten (freeing blobs of every such length) and removed: the
/// page count `check` reports must be exact, and every page accounted for.
///
/// Catches: `Geometry::blob_pages` off by one at a page end (a panic writing the blob,
/// a page too many, or a run that `check` finds leaked or doubly used).
#[test]
fn overflow_page_count_at_page_boundaries() -> Result<()> {
    for page_size in [4096usize, 65536] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let totals = [-1i64, 0, 1, -1, 0, 1]
            .iter()
            .zip([1, 1, 1, 2, 2, 2])
            .map(|(d, pages)| (pages * page_size as i64 + d) as usize);
        let lens: Vec<usize> = totals.map(|t| t - BLOB_HEADER_BYTES).collect();
        let pages_of = |len: usize| (BLOB_HEADER_BYTES + len).div_ceil(page_size) as u64;
        let value = |len: usize, fill: u8| vec![fill; len];
        let db = Options::new().page_size(page_size).open(&path)?;
        // One value a commit: the overflow page count grows by exactly its pages.
        let mut model = Tree::new();
        let mut pages = 0;
        for (i, &len) in lens.iter().enumerate() {
            let (k, v) = (vec![i as u8], value(len, i as u8));
            let w = db.begin_write()?;
            w.open_tree("t")?.insert(&k, &v)?;
            w.commit()?;
            model.insert(k, v);
            pages += pages_of(len);
            let report = db.check()?;
            assert_eq!(
                report.overflow_pages,
                pages,
                "page size {page_size}: after a value of {len} bytes (blob of {} bytes)",
                len + BLOB_HEADER_BYTES
            );
        }
        // Each value overwritten with the next length (every blob freed), then read back.
        let w = db.begin_write()?;
        let mut t = w.open_tree("t")?;
        for (i, _) in lens.iter().enumerate() {
            let (k, v) = (
                vec![i as u8],
                value(lens[(i + 1) % lens.len()], 0xF0 | i as u8),
            );
            t.insert(&k, &v)?;
            model.insert(k, v);
        }
        w.commit()?;
        assert_eq!(
            db.check()?.overflow_pages,
            pages,
            "page size {page_size}: after overwrites"
        );
        assert_read(&db, &model, page_size)?;
        // Half removed: their blobs are free, and every page still accounted for.
        let w = db.begin_write()?;
        let mut t = w.open_tree("t")?;
        for i in (0..lens.len()).step_by(2) {
            assert!(t.remove(&[i as u8])?);
            model.remove(&vec![i as u8]);
            pages -= pages_of(lens[(i + 1) % lens.len()]);
        }
        w.commit()?;
        assert_eq!(
            db.check()?.overflow_pages,
            pages,
            "page size {page_size}: after removes"
        );
        drop(db);
        let db = Options::new().page_size(page_size).open(&path)?;
        db.check()?;
        assert_read(&db, &model, page_size)?;
    }
    Ok(())
}

fn assert_read(db: &Database, model: &Tree, page_size: usize) -> Result<()> {
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    for (k, v) in model {
        let got = t.get(k)?;
        assert!(
            got == Some(&v[..]),
            "page size {page_size}: key {k:?}: {:?} bytes, expected {}",
            got.map(<[u8]>::len),
            v.len()
        );
    }
    assert_eq!(t.len()?, model.len() as u64);
    Ok(())
}

/// Leaf layout (FORMAT.md#node-pages): a 24-byte header, then per entry an 8-byte slot
/// and a cell of a 4-byte value length, the key and the inline value.
const LEAF_HEADER: usize = 24;

/// The bytes an entry takes in a leaf (slot and cell).
fn footprint(key: &[u8], value_len: usize) -> usize {
    8 + 4 + key.len() + value_len
}

/// A tree of two leaves under one root, made by inserting "b", "a" and "a2" (values of
/// `b`, `a` and `a2` bytes, sized by the caller so that the most even cut of the three
/// leaves "a" and "a2" on the left).
fn two_leaves(page_size: usize, [a, a2, b]: [usize; 3], what: &str) -> Result<(TempDir, Database)> {
    let dir = tempfile::tempdir()?;
    let db = Options::new()
        .page_size(page_size)
        .open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    for (k, len) in [(&b"b"[..], b), (b"a", a), (b"a2", a2)] {
        t.insert(k, &vec![k[0]; len])?;
    }
    w.commit()?;
    assert_eq!(db.stats()?.trees[0].depth, 2, "{what}: two leaves");
    Ok((dir, db))
}

/// Removes "a2" and asserts whether the two leaves merged (the root, a branch with one
/// child left, collapses) and that "a" (`a` bytes) and "b" (`b` bytes) read back whole.
fn remove_a2(db: &Database, merged: bool, [a, b]: [usize; 2], what: &str) -> Result<()> {
    let w = db.begin_write()?;
    assert!(w.open_tree("t")?.remove(b"a2")?);
    w.commit()?;
    db.check()?;
    assert_eq!(
        db.stats()?.trees[0].depth,
        if merged { 1 } else { 2 },
        "{what}: the leaves were {}merged",
        if merged { "not " } else { "" }
    );
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert!(t.get(b"a")? == Some(&vec![b'a'; a][..]), "{what}: a");
    assert!(t.get(b"b")? == Some(&vec![b'b'; b][..]), "{what}: b");
    assert!(t.get(b"a2")?.is_none(), "{what}: a2 removed");
    Ok(())
}

/// A non-root leaf is merged with its sibling when, after a remove, it uses fewer than a
/// quarter of the page; at a quarter or more it stays (the right leaf is too full for the
/// merge of sparse leaves, below). Two leaves under one root: a remove leaves the left
/// one at a quarter page minus one byte, exactly, or plus one byte; only the first
/// merges.
///
/// Catches: `node::is_underfull` moved off the quarter page by one byte either way
/// (`<=` for `<`, or a bound one byte lower).
#[test]
fn merge_threshold_is_a_quarter_page() -> Result<()> {
    for page_size in [4096usize, 65536] {
        let quarter = page_size / 4;
        // The largest entry a leaf takes (two always fit in one page).
        let largest = (page_size - LEAF_HEADER) / 2;
        for delta in [-1i64, 0, 1] {
            let left_used = (quarter as i64 + delta) as usize;
            let a = left_used - LEAF_HEADER - footprint(b"a", 0);
            let b = largest - footprint(b"b", 0);
            let a2 = largest - footprint(b"a", a) + 8 - footprint(b"a2", 0);
            let what = format!("page size {page_size}, left leaf at a quarter page {delta:+} byte");
            let (_dir, db) = two_leaves(page_size, [a, a2, b], &what)?;
            // The right leaf past seven eighths of a page less the left one.
            let w = db.begin_write()?;
            w.open_tree("t")?
                .insert(b"b2", &vec![b'c'; quarter / 8 * 5])?;
            w.commit()?;
            assert_eq!(db.stats()?.trees[0].depth, 2, "{what}");
            remove_a2(&db, left_used < quarter, [a, b], &what)?;
        }
    }
    Ok(())
}

/// A leaf that a remove leaves under half a page (but not underfull) is merged with its
/// sibling when the two fit in seven eighths of a page, headers and slots counted
/// once; not when they need one byte more. Two leaves under one root, as above: a
/// remove leaves the left one at 40 % of the page, the right one holds seven eighths
/// of a page less that, minus one byte, exactly, or plus one byte.
///
/// Catches: `node::merges_with` off by one byte either way, or `pair_to_rebalance` not
/// reading the sibling.
#[test]
fn sparse_leaves_merge_when_they_fit_seven_eighths_of_a_page() -> Result<()> {
    for page_size in [4096usize, 65536] {
        let left_used = page_size * 40 / 100;
        for delta in [-1i64, 0, 1] {
            let right_used = (page_size / 8 * 7 + LEAF_HEADER - left_used) as i64 + delta;
            let a = left_used - LEAF_HEADER - footprint(b"a", 0);
            let b = right_used as usize - LEAF_HEADER - footprint(b"b", 0);
            // Enough to split the three; the most even cut leaves "a2" with "a".
            let a2 = page_size * 30 / 100 - footprint(b"a2", 0);
            let what = format!("page size {page_size}, leaves {delta:+} byte from 7/8 page");
            let (_dir, db) = two_leaves(page_size, [a, a2, b], &what)?;
            remove_a2(&db, delta <= 0, [a, b], &what)?;
        }
    }
    Ok(())
}
