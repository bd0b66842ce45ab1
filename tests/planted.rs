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
    let mut w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    for (k, v) in &model {
        t.insert(k, v)?;
    }
    drop(t);
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
                        let range = t.range::<Vec<u8>, _>((lower.clone(), upper.clone()))?;
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
    let mut w = db.begin_write()?;
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
    drop(t);
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
        drop(t);
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
        let mut w = db.begin_write().expect("begin_write");
        let mut t = w.open_tree("t").expect("open_tree");
        t.insert(b"blob", value).expect("insert");
        t.insert(b"small", &value[..8]).expect("insert");
        drop(t);
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
