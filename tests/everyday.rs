//! The everyday API: several trees open in one write transaction, stale handles,
//! shareable snapshots, the thread rules, prefixes and ends, ranges without
//! annotations, `try_*` variants.

mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use mapkv::{Database, Error, Options, Range, ReadTree, ReadTxn, Result, WriteTree, WriteTxn};

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

#[test]
fn the_thread_rules_hold_at_compile_time() {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}
    send_sync::<Database>();
    send_sync::<ReadTxn>();
    send_sync::<ReadTree<'static>>();
    send::<Range<'static>>();
    send_sync::<WriteTree<'static>>();
    fn sync<T: Sync>() {}
    sync::<WriteTxn>();
}

/// Three trees changed together, as a link shortener does: no scopes, no copies.
#[test]
fn several_trees_change_together_and_commit_atomically() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut links = w.open_tree("links")?;
    let mut hits = w.open_tree("hits")?;
    let mut by_owner = w.open_tree("by_owner")?;
    for i in 0..2000u64 {
        let code = format!("c{i:05}");
        links.insert(
            code.as_bytes(),
            format!("https://example.com/{i}").as_bytes(),
        )?;
        by_owner.insert(format!("owner{}/{code}", i % 7).as_bytes(), b"")?;
        hits.update(code.as_bytes(), |_| Some(0u64.to_be_bytes().to_vec()))?;
        // Reading one tree between writes to the others.
        assert!(links.get(code.as_bytes())?.is_some());
    }
    let first = links.get(b"c00000")?.expect("present");
    by_owner.insert(b"owner9/x", b"")?;
    hits.insert(b"c00000", &1u64.to_be_bytes())?;
    assert_eq!(
        first, b"https://example.com/0",
        "other trees' changes leave it alone"
    );
    w.commit()?;
    db.check()?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("links")?.len()?, 2000);
    assert_eq!(r.open_tree("by_owner")?.len()?, 2001);
    assert_eq!(r.open_tree("by_owner")?.prefix(b"owner3/")?.count(), 286);
    Ok(())
}

/// Code written for one tree at a time keeps compiling and working: a handle still in
/// scope at the commit, a handle shadowed by a new one, a handle of a tree deleted.
#[test]
fn handles_in_scope_at_the_commit_and_reopened_trees() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    t.insert(b"a", b"1")?;
    let seen = t.get(b"a")?.expect("present");
    let mut t2 = w.open_tree("t")?;
    t2.insert(b"a", b"22222")?;
    assert_eq!(seen, b"1", "a slice from the older handle stays intact");
    assert!(matches!(t.insert(b"b", b"2"), Err(Error::StaleTree(_))));
    assert!(matches!(t.get(b"a"), Err(Error::StaleTree(_))));
    assert!(matches!(t.iter(), Err(Error::StaleTree(_))));
    let mut gone = w.open_tree("gone")?;
    gone.insert(b"x", b"y")?;
    assert!(w.delete_tree("gone")?);
    assert!(matches!(gone.get(b"x"), Err(Error::StaleTree(_))));
    w.commit()?;
    // The handles are still in scope, but they hold neither the transaction nor the
    // file: the database can be closed and opened again.
    drop(db);
    let db = Database::open(&path)?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("t")?.get(b"a")?, Some(&b"22222"[..]));
    assert!(r.try_open_tree("gone")?.is_none());
    assert_eq!(r.tree_names()?, ["t"]);
    Ok(())
}

#[test]
fn a_retain_predicate_cannot_use_the_transaction() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut keep = w.open_tree("keep")?;
    keep.insert(b"a", b"")?;
    let mut t = w.open_tree("t")?;
    t.insert(b"a", b"")?;
    t.insert(b"b", b"")?;
    let mut errors = Vec::new();
    let removed = t.retain(|k, _| match keep.get(k) {
        Ok(found) => found.is_some(),
        Err(e) => {
            errors.push(e.to_string());
            true
        }
    })?;
    assert_eq!(removed, 0);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[0].contains("retain"), "{}", errors[0]);
    // Outside the predicate everything works again.
    assert_eq!(t.retain(|k, _| k == b"a")?, 1);
    keep.insert(b"b", b"")?;
    w.commit()?;
    db.check()?;
    Ok(())
}

/// One snapshot scanned by eight threads at once (and its values read back) while a
/// writer commits, with the whole file mapped and with every page read by pread.
#[test]
fn eight_threads_scan_one_snapshot_while_a_writer_commits() -> Result<()> {
    for mmap_size in [u64::MAX, 0] {
        let dir = tempfile::tempdir()?;
        let db = Options::new()
            .mmap_size(mmap_size)
            .open(dir.path().join("db"))?;
        let n = 20_000u64;
        db.bulk_load("t", (0..n).map(|i| (key(i), i.to_le_bytes())))?;
        let rtx = db.begin_read()?;
        let tree = rtx.open_tree("t")?;
        let done = AtomicBool::new(false);
        let commits = AtomicU64::new(0);
        std::thread::scope(|s| -> Result<()> {
            let writer = s.spawn(|| -> Result<()> {
                let mut i = 0;
                while !done.load(Ordering::Relaxed) {
                    let w = db.begin_write()?;
                    let mut t = w.open_tree("t")?;
                    t.remove(&key(i % n))?;
                    t.insert(&key(n + i), b"new")?;
                    w.commit()?;
                    i += 1;
                    commits.store(i, Ordering::Relaxed);
                }
                Ok(())
            });
            let scanners: Vec<_> = (0..8u64)
                .map(|t| {
                    let (tree, commits) = (&tree, &commits);
                    s.spawn(move || -> Result<u64> {
                        // Start once the writer has committed past this snapshot.
                        while commits.load(Ordering::Relaxed) == 0 {
                            std::thread::yield_now();
                        }
                        let mut seen = 0;
                        for round in 0..3 {
                            let mut next = 0;
                            let entries: Box<dyn Iterator<Item = _>> = match (t + round) % 2 {
                                0 => Box::new(tree.iter()?),
                                _ => Box::new(tree.iter()?.rev()),
                            };
                            for e in entries {
                                let (k, v) = e?;
                                let i = u64::from_be_bytes(k.try_into().expect("8 bytes"));
                                assert_eq!(v, i.to_le_bytes());
                                next += 1;
                            }
                            assert_eq!(next, n, "the snapshot holds every entry");
                            for i in (t..n).step_by(97) {
                                assert_eq!(tree.get(&key(i))?, Some(&i.to_le_bytes()[..]));
                            }
                            seen += next;
                        }
                        Ok(seen)
                    })
                })
                .collect();
            for s in scanners {
                assert_eq!(s.join().expect("scanner")?, 3 * n);
            }
            done.store(true, Ordering::Relaxed);
            writer.join().expect("writer")
        })?;
        assert!(commits.load(Ordering::Relaxed) > 0, "the writer committed");
        drop(rtx);
        db.check()?;
    }
    Ok(())
}

/// A range sent to another thread keeps reading the same snapshot.
#[test]
fn a_range_moves_to_another_thread() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    db.bulk_load("t", (0..1000u64).map(|i| (key(i), [1u8; 10])))?;
    let rtx = db.begin_read()?;
    let tree = rtx.open_tree("t")?;
    let range = tree.range(key(10)..key(20))?;
    let count = std::thread::scope(|s| s.spawn(move || range.count()).join().expect("thread"));
    assert_eq!(count, 10);
    Ok(())
}

#[test]
fn try_begin_write_does_not_wait() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            assert!(db.try_begin_write().expect("no error").is_none());
        })
        .join()
        .expect("thread");
    });
    drop(w);
    assert!(db.try_begin_write()?.is_some());
    let ro = Options::new().read_only(true).open(dir.path().join("db"));
    // A second handle is refused while this one is open read-write.
    assert!(matches!(ro, Err(Error::Locked)));
    Ok(())
}

#[test]
fn try_begin_write_for_waits_no_longer_than_asked() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let wait = Duration::from_millis(50);
    let w = db.begin_write()?;
    std::thread::scope(|s| {
        s.spawn(|| {
            let started = Instant::now();
            assert!(db.try_begin_write_for(wait).expect("no error").is_none());
            assert!(
                started.elapsed() >= wait,
                "gave up after {:?}",
                started.elapsed()
            );
        })
        .join()
        .expect("thread");
        // A writer that ends during the wait hands the lock on.
        let waiter = s.spawn(|| {
            db.try_begin_write_for(Duration::from_secs(60))
                .expect("no error")
                .is_some()
        });
        std::thread::sleep(wait);
        drop(w);
        assert!(waiter.join().expect("thread"));
    });
    Ok(())
}

#[test]
fn try_open_tree_says_none_for_absent_trees() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    assert!(w.try_open_tree("t")?.is_none());
    assert!(w.tree_names()?.is_empty(), "try_open_tree creates nothing");
    w.open_tree("t")?.insert(b"k", b"v")?;
    assert_eq!(
        w.try_open_tree("t")?.expect("exists now").get(b"k")?,
        Some(&b"v"[..])
    );
    w.commit()?;
    let r = db.begin_read()?;
    assert!(r.try_open_tree("nope")?.is_none());
    assert_eq!(r.try_open_tree("t")?.expect("exists").len()?, 1);
    Ok(())
}

#[test]
fn prefixes_first_and_last() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let keys: [&[u8]; 9] = [
        b"",
        b"a",
        b"a\xff",
        b"a\xff\xff",
        b"a\xff\xffb",
        b"ab",
        b"b",
        b"\xff",
        b"\xff\xff",
    ];
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    assert_eq!(t.first()?, None);
    assert_eq!(t.last()?, None);
    for k in keys {
        t.insert(k, k)?;
    }
    let prefixed = |p: &[u8]| -> Result<Vec<Vec<u8>>> {
        t.prefix(p)?.keys().map(|k| k.map(<[u8]>::to_vec)).collect()
    };
    for p in [
        &b""[..],
        b"a",
        b"a\xff",
        b"a\xff\xff",
        b"\xff",
        b"\xff\xff",
        b"c",
        b"ab",
    ] {
        let mut want: Vec<Vec<u8>> = keys
            .iter()
            .filter(|k| k.starts_with(p))
            .map(|k| k.to_vec())
            .collect();
        want.sort();
        assert_eq!(prefixed(p)?, want, "prefix {p:?}");
        let rev: Vec<Vec<u8>> = t
            .prefix(p)?
            .rev()
            .map(|e| e.map(|(k, _)| k.to_vec()))
            .collect::<Result<_>>()?;
        assert_eq!(
            rev,
            want.into_iter().rev().collect::<Vec<_>>(),
            "prefix {p:?}"
        );
    }
    assert_eq!(t.first()?, Some((&b""[..], &b""[..])));
    assert_eq!(t.last()?, Some((&b"\xff\xff"[..], &b"\xff\xff"[..])));
    let values: Vec<&[u8]> = t
        .range(b"a".as_slice()..b"b")?
        .values()
        .collect::<Result<_>>()?;
    assert_eq!(values.len(), 5);
    Ok(())
}

/// Every bound type the docs promise compiles without annotations.
#[test]
fn ranges_need_no_annotations() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    let mut t = w.open_tree("t")?;
    for k in ["a", "b", "c", "d"] {
        t.insert(k.as_bytes(), b"")?;
    }
    let (a, c): (&[u8], &[u8]) = (b"a", b"c");
    assert_eq!(t.range(..)?.count(), 4);
    assert_eq!(t.range(a..c)?.count(), 2);
    assert_eq!(t.range(a..=c)?.count(), 3);
    assert_eq!(t.range(vec![b'b']..vec![b'd'])?.count(), 2);
    assert_eq!(t.range([b'b']..)?.count(), 3);
    assert_eq!(t.range(..=*b"b")?.count(), 2);
    assert_eq!(t.range("b"..)?.count(), 3);
    assert_eq!(t.range(..String::from("c"))?.count(), 2);
    assert_eq!(t.range(b"a"..b"d")?.count(), 3);
    use std::ops::Bound;
    assert_eq!(t.range((Bound::Excluded(a), Bound::Unbounded))?.count(), 3);
    w.commit()?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("t")?.range(..)?.rev().count(), 4);
    Ok(())
}

/// Stale handles, their slices, and several trees at once on a simulated disk, which
/// Miri can run (`cargo +nightly miri test --test everyday miri`): the slices a stale
/// handle returned point into frozen dirty pages and blobs while newer handles change
/// the tree, and Miri checks that nothing they point to moves or changes.
#[test]
fn miri_stale_handles_keep_their_slices() -> Result<()> {
    let disk = support::simdisk::SimDisk::new(Vec::new());
    let db = support::recovery::open(&disk)?;
    let w = db.begin_write()?;
    let mut a = w.open_tree("a")?;
    let mut b = w.open_tree("b")?;
    for i in 0..40u64 {
        a.insert(&key(i), &[i as u8; 100])?;
        b.insert(&key(i), &[i as u8; 9000])?;
    }
    let small = a.get(&key(3))?.expect("present");
    let large = b.get(&key(4))?.expect("present");
    let mut a2 = w.open_tree("a")?;
    let mut b2 = w.open_tree("b")?;
    for i in 0..40u64 {
        a2.insert(&key(i), &[0xEE; 300])?;
        b2.insert(&key(i), &[0xDD; 9000])?;
        b2.remove(&key(i + 1))?;
    }
    assert_eq!(small, [3u8; 100]);
    assert_eq!(large, [4u8; 9000]);
    assert!(matches!(a.get(&key(3)), Err(Error::StaleTree(_))));
    let scan: Vec<&[u8]> = b2.iter()?.values().collect::<Result<_>>()?;
    assert_eq!(scan.len(), 40);
    assert!(scan.iter().all(|v| *v == [0xDD; 9000]));
    assert!(w.delete_tree("a")?);
    assert!(matches!(a2.first(), Err(Error::StaleTree(_))));
    assert_eq!(small, [3u8; 100]);
    w.commit()?;
    db.check()?;
    Ok(())
}
