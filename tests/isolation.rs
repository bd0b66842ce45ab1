//! Snapshot isolation: readers see one committed state for their whole life, whatever the
//! writer does meanwhile, and the pages they read are not reused under them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use mapkv::{Database, Durability, Options, Result};

fn key(i: u32) -> [u8; 4] {
    i.to_be_bytes()
}

/// Every value in generation `g` is `g` repeated; a reader must never see two generations.
fn write_generation(db: &Database, generation: u32, keys: u32) -> Result<()> {
    let mut w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..keys {
            t.insert(&key(i), &generation.to_le_bytes().repeat(20))?;
        }
        // Churn the tree shape too: remove and re-add a band of keys.
        for i in (generation % 7..keys).step_by(7) {
            t.remove(&key(i))?;
        }
        for i in (generation % 7..keys).step_by(7) {
            t.insert(&key(i), &generation.to_le_bytes().repeat(20))?;
        }
    }
    if generation.is_multiple_of(3) {
        w.set_durability(Durability::None);
    }
    w.commit()
}

#[test]
fn readers_see_one_generation_while_the_writer_commits() -> Result<()> {
    readers_see_one_generation(Options::new())
}

/// The same through pread and the page cache shared by transactions: a cached copy of a
/// page the writer has since reused must never be served. 96 KiB of cache against a
/// ~400 KiB tree keeps it evicting; the default one holds every page.
#[test]
fn readers_see_one_generation_through_the_page_cache() -> Result<()> {
    readers_see_one_generation(Options::new().mmap_size(0).cache_size(96 << 10))?;
    readers_see_one_generation(Options::new().mmap_size(0))
}

fn readers_see_one_generation(options: Options) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Arc::new(options.open(dir.path().join("db"))?);
    let keys = 3000;
    write_generation(&db, 0, keys)?;
    let stop = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (db, stop, start) = (Arc::clone(&db), Arc::clone(&stop), Arc::clone(&start));
            std::thread::spawn(move || -> Result<u32> {
                start.wait();
                let mut snapshots = 0;
                while !stop.load(Ordering::Relaxed) {
                    let r = db.begin_read()?;
                    let t = r.open_tree("t")?;
                    let first = t.get(&key(0))?.expect("key 0").to_vec();
                    // Hold the snapshot across several writer commits.
                    let mut n = 0;
                    for entry in t.iter()? {
                        let (_, v) = entry?;
                        assert_eq!(v, &first[..], "a reader saw two generations");
                        n += 1;
                    }
                    assert_eq!(n, keys);
                    assert_eq!(t.get(&key(keys - 1))?, Some(&first[..]));
                    snapshots += 1;
                }
                Ok(snapshots)
            })
        })
        .collect();
    start.wait();
    for generation in 1..60 {
        write_generation(&db, generation, keys)?;
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.join().expect("reader thread")? > 0);
    }
    db.check()?;
    let stats = db.stats()?;
    assert_eq!(stats.oldest_reader_txn_age, 0);
    Ok(())
}

#[test]
fn a_long_reader_keeps_its_snapshot_and_pages_are_reused_after_it_ends() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    write_generation(&db, 1, 2000)?;
    let old = db.begin_read()?;
    let old_tree = old.open_tree("t")?;
    let old_value = old_tree.get(&key(5))?.expect("present");
    for generation in 2..30 {
        write_generation(&db, generation, 2000)?;
    }
    let grown = db.stats()?;
    assert_eq!(
        grown.oldest_reader_txn_age, 28,
        "the old reader is 28 commits behind"
    );
    // The slice borrowed before 28 commits is unchanged.
    assert_eq!(old_value, &1u32.to_le_bytes().repeat(20)[..]);
    assert_eq!(old_tree.iter()?.count(), 2000);
    drop(old);
    // With the reader gone, the pages it pinned are reused: more commits do not grow
    // the file.
    write_generation(&db, 30, 2000)?;
    write_generation(&db, 31, 2000)?;
    let before = db.stats()?.page_count;
    for generation in 32..60 {
        write_generation(&db, generation, 2000)?;
    }
    let after = db.stats()?;
    assert!(
        after.page_count <= before + 4,
        "file kept growing without readers: {before} -> {} pages",
        after.page_count
    );
    assert!(after.pages_free > 0);
    db.check()?;
    Ok(())
}

#[test]
fn a_write_transaction_sees_its_own_writes_and_readers_do_not() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        t.insert(b"k", b"uncommitted")?;
        assert_eq!(t.get(b"k")?, Some(&b"uncommitted"[..]));
        assert_eq!(t.len()?, 1);
    }
    assert!(matches!(
        db.begin_read()?.open_tree("t"),
        Err(mapkv::Error::TreeNotFound(_))
    ));
    w.abort();
    assert!(db.begin_read()?.tree_names()?.is_empty());
    Ok(())
}

/// `Durability::None` commits keep the pages the last durable commit can reach (a crash
/// falls back to it); past a bound, a commit is made durable so that they can be reused
/// and the file stops growing.
#[test]
fn none_commits_do_not_grow_the_file_without_bound() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let keys = 200_000u32;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..keys {
            t.insert(&key(i), &[0; 100])?;
        }
    }
    w.commit()?;
    let before = db.stats()?.page_count;
    // One key per commit, in leaves spread over the tree: each commit replaces a leaf
    // path that the durable commit can reach.
    let mut half_way = 0;
    for i in 0..3000u32 {
        let mut w = db.begin_write()?;
        w.set_durability(Durability::None);
        w.open_tree("t")?
            .insert(&key(i.wrapping_mul(7919) % keys), &[1; 100])?;
        w.commit()?;
        if i == 1499 {
            half_way = db.stats()?.page_count;
        }
    }
    let end = db.stats()?.page_count;
    // The allocator lets free space grow to an eighth of the file before it scatters a
    // commit over free pages (FORMAT.md#allocation); past that, the file stops growing.
    assert!(
        (end - before) * 7 < end && end - half_way < 50,
        "{before} pages, {half_way} after 1500 one-key commits, {end} after 3000: pages \
         kept for the fallback were never released"
    );
    drop(db);
    let db = Database::open(dir.path().join("db"))?;
    db.check()?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.get(&key(7919))?, Some(&[1; 100][..]));
    assert_eq!(t.get(&key(2))?, Some(&[0; 100][..]));
    Ok(())
}

/// Threads sharing one read transaction at `mmap_size(0)` (its table of pages read with
/// pread is shared, lookups without a lock) while the writer reuses pages and a small
/// page cache keeps evicting: every thread reads the snapshot's generation, and slices
/// taken by one thread stay valid while the others read.
#[test]
fn threads_sharing_one_snapshot_through_pread_agree() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let options = Options::new().mmap_size(0).cache_size(64 << 10);
    let db = options.open(dir.path().join("db"))?;
    let keys = 3000;
    write_generation(&db, 0, keys)?;
    for round in 1..12u32 {
        let r = db.begin_read()?;
        let t = r.open_tree("t")?;
        let want = (round - 1).to_le_bytes().repeat(20);
        std::thread::scope(|s| -> Result<()> {
            let readers: Vec<_> = (0..4u32)
                .map(|thread| {
                    let (t, want) = (&t, &want);
                    s.spawn(move || -> Result<()> {
                        let mut kept = Vec::new();
                        for i in (thread..keys).step_by(3) {
                            let v = t.get(&key(i))?.expect("present");
                            assert_eq!(v, &want[..], "key {i}");
                            kept.push(v);
                        }
                        assert!(kept.iter().all(|v| *v == &want[..]), "a slice changed");
                        Ok(())
                    })
                })
                .collect();
            write_generation(&db, round, keys)?;
            readers
                .into_iter()
                .try_for_each(|h| h.join().expect("reader"))
        })?;
    }
    db.check()?;
    Ok(())
}
