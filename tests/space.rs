//! Space: what a commit writes (pages, syncs), and a file that shrinks when its end is
//! free, but never under a reader that may still touch it. See FORMAT.md#allocation and
//! FORMAT.md#shrinking-the-file.

mod support;

use mapkv::{Database, Result};
use support::rng::Rng;
use support::simdisk::{Event, SimDisk};

/// Checks `db`, closes it, opens the file again and checks it once more.
fn checked_reopen(db: Database, path: &std::path::Path) -> Result<Database> {
    db.check()?;
    drop(db);
    let db = Database::open(path)?;
    db.check()?;
    Ok(db)
}

fn key(i: u64) -> [u8; 8] {
    i.to_be_bytes()
}

/// A one-key commit into a tree whose free list holds thousands of runs writes its path,
/// the catalog leaf and one free-list record: the free list costs what the commit
/// changed, not what the free list holds (folding adds a page now and then).
#[test]
fn a_one_key_commit_writes_its_path_not_the_free_list() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let n = 200_000u64;
    db.bulk_load("t", (0..n).map(|i| (key(i), [7u8; 100])))?;
    // Empty every other leaf's worth of keys (36 entries fill a leaf): thousands of
    // freed pages with pages in use between them.
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0..n).filter(|i| (i / 36) % 2 == 0) {
            t.remove(&key(i))?;
        }
    }
    w.commit()?;
    // A commit to release what the removal freed into the reusable set.
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(&key(1), b"x")?;
    w.commit()?;
    let before = db.stats()?;
    let depth = before.trees[0].depth as u64;
    let commits = 200;
    for c in 0..commits {
        let w = db.begin_write()?;
        w.open_tree("t")?
            .insert(&key(36 + c * 72), &[c as u8; 100])?;
        w.commit()?;
    }
    let after = db.stats()?;
    let free_runs_hint = before.pages_free;
    assert!(free_runs_hint > 2000, "{free_runs_hint} free pages");
    let pages = after.pages_written - before.pages_written;
    let per_commit = pages as f64 / commits as f64;
    assert!(
        per_commit <= (depth + 3) as f64,
        "{per_commit} pages per one-key commit at depth {depth}, {free_runs_hint} free pages"
    );
    assert_eq!(
        after.syncs - before.syncs,
        commits,
        "one fdatasync per commit"
    );
    assert_eq!(after.commits - before.commits, commits);
    db.check()?;
    Ok(())
}

/// Once free space is over its share of the file, one-key commits go into the holes
/// earlier commits left instead of growing the file, and still write few runs: the
/// pages each commit replaces next (upper levels, catalog, free-list record) were placed
/// together, so they leave holes a later commit can use whole. (Taking the shortest
/// holes first scattered each commit over 4.6 runs here, against 1.9 now.)
#[test]
fn one_key_commits_into_free_space_write_few_runs() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = support::recovery::open(&disk)?;
    let n = 50_000u64;
    db.bulk_load("t", (0..n).map(|i| (key(i), [7u8; 100])))?;
    let mut rng = Rng::new(13);
    let mut commit = |c: u64| -> Result<()> {
        let w = db.begin_write()?;
        w.open_tree("t")?
            .insert(&key(rng.below(n)), &[c as u8; 100])?;
        w.commit()
    };
    // Until free space passes an eighth of the file (each commit leaves a few holes).
    for c in 0..400 {
        commit(c)?;
    }
    let grown = db.stats()?.page_count;
    let from = disk.log_len();
    let commits = 300;
    for c in 0..commits {
        commit(c)?;
    }
    assert_eq!(
        db.stats()?.page_count,
        grown,
        "the file grew: no steady state"
    );
    let meta_end = 2 * 4096;
    let writes = disk.log()[from..]
        .iter()
        .filter(|e| matches!(e, Event::Write { offset, .. } if *offset >= meta_end))
        .count();
    let per_commit = writes as f64 / commits as f64;
    assert!(
        per_commit <= 2.5,
        "{per_commit:.2} page writes per one-key commit into free space"
    );
    db.check()?;
    Ok(())
}

/// Growing the file costs no commit more than a short stretch of zeros: the growth
/// itself only sets the length, and commits write zeros ahead of their end in 2 MiB
/// steps. (Zeroing a whole growth step at once stalled one commit in a thousand for
/// 30 ms on a 240 MiB file.)
#[test]
fn no_commit_writes_a_whole_growth_step_of_zeros() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = support::recovery::open(&disk)?;
    // 40 MiB: the file grows in steps of 5 MiB.
    db.bulk_load("t", (0..250_000u64).map(|i| (key(i), [7u8; 150])))?;
    let file_before = db.stats()?.file_size_bytes;
    let mut commits = Vec::new();
    for c in 0..250u64 {
        let from = disk.log_len();
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for i in 0..200 {
                t.insert(&key(1_000_000 + c * 200 + i), &[1u8; 150])?;
            }
        }
        w.commit()?;
        commits.push(from..disk.log_len());
    }
    let grown = db.stats()?.file_size_bytes - file_before;
    assert!(grown >= 5 << 20, "the file grew by {grown} bytes only");
    let log = disk.log();
    let most = commits
        .into_iter()
        .map(|events| {
            let bytes = |e: &Event| match e {
                Event::Write { data, .. } => data.len(),
                _ => 0,
            };
            log[events].iter().map(bytes).sum::<usize>()
        })
        .max();
    assert!(
        most <= Some((2 << 20) + (64 << 10)),
        "a commit of a dozen pages wrote {most:?} bytes"
    );
    // The commits appended some 10 MiB: the zeros went ahead of most of it.
    let zeros: usize = log
        .iter()
        .map(|e| match e {
            Event::Write { data, .. } if data.iter().all(|&b| b == 0) => data.len(),
            _ => 0,
        })
        .sum();
    assert!(zeros >= 4 << 20, "{zeros} bytes of zeros written ahead");
    db.check()?;
    Ok(())
}

/// Removing what lies at the end of the file gives the space back to the file system,
/// but only once no reader's snapshot reaches past the new end; the reader keeps
/// reading meanwhile (a truncated map would fault).
#[test]
fn the_file_shrinks_once_no_reader_needs_its_end() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("small")?;
        for i in 0..100 {
            t.insert(&key(i), &[1; 100])?;
        }
        let mut big = w.open_tree("big")?;
        for i in 0..100_000 {
            big.insert(&key(i), &[2; 200])?;
        }
    }
    w.commit()?;
    let full = db.stats()?.file_size_bytes;
    assert!(full > 20 << 20, "{full}");

    let reader = db.begin_read()?;
    let w = db.begin_write()?;
    assert!(w.delete_tree("big")?);
    w.commit()?;
    // Two more commits release and cut the freed pages; the reader still needs them.
    for i in 0..2 {
        let w = db.begin_write()?;
        w.open_tree("small")?.insert(&key(i), b"again")?;
        w.commit()?;
    }
    assert!(db.stats()?.file_size_bytes >= full, "shrunk under a reader");
    let big = reader.open_tree("big")?;
    let mut seen = 0;
    for entry in big.iter()? {
        let (_, v) = entry?;
        assert_eq!(v, &[2; 200][..]);
        seen += 1;
    }
    assert_eq!(seen, 100_000);
    drop(reader);

    // The next commits release the pages, move what sits at the end (the catalog and
    // the free list's records, which every commit rewrites) and cut the end.
    for i in 0..4 {
        let w = db.begin_write()?;
        w.open_tree("small")?.insert(&key(i), b"once more")?;
        w.commit()?;
    }
    let shrunk = db.stats()?.file_size_bytes;
    assert!(shrunk < 4 << 20, "{shrunk} bytes left of {full}");
    let db = checked_reopen(db, &path)?;
    let r = db.begin_read()?;
    assert_eq!(r.tree_names()?, ["small"]);
    assert_eq!(r.open_tree("small")?.get(&key(1))?, Some(&b"once more"[..]));
    Ok(())
}

/// A transaction that is aborted leaves the free pages as it found them: the next
/// commit can use them, and `check` finds every page accounted for.
#[test]
fn an_aborted_transaction_gives_its_pages_back() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..5000 {
            t.insert(&key(i), &[3; 100])?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..2500 {
            t.remove(&key(i))?;
        }
    }
    w.commit()?;
    let settled = db.stats()?;
    for round in 0..3 {
        let w = db.begin_write()?;
        {
            let mut t = w.open_tree("t")?;
            for i in 0..3000 {
                // Large values take pages at once; small ones at commit.
                let len = if i % 100 == 0 { 20_000 } else { 150 };
                t.insert(&key(10_000 + i), &vec![round as u8; len])?;
            }
        }
        w.abort();
    }
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(&key(1), b"one")?;
    w.commit()?;
    let after = db.stats()?;
    assert!(
        after.page_count <= settled.page_count + 8,
        "aborted transactions leaked pages: {} then {}",
        settled.page_count,
        after.page_count
    );
    db.check()?;
    Ok(())
}

/// `compact` moves what lies past the packed end into the free pages below it and cuts
/// the file, keeping every entry; a reader that began before keeps its snapshot, and
/// what it still reaches is cut once it ends.
#[test]
fn compact_in_place_moves_the_end_down_and_cuts_it() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..60_000u64 {
            let len = if i % 1000 == 0 { 30_000 } else { 100 };
            t.insert(
                &key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
                &vec![i as u8; len],
            )?;
        }
    }
    w.commit()?;
    // Remove four keys of five: free pages everywhere, live pages up to the end.
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0..60_000u64).filter(|i| i % 5 != 0) {
            assert!(t.remove(&key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))?);
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let reader = db.begin_read()?;
    let stats = db.compact()?;
    // Packing takes the low free pages for the packed leaves; the pages it frees wait
    // for the reader, so this first call may have nothing left to move.
    assert!(stats.leaves_merged > 0, "{stats:?}");
    // The reader still reads its snapshot (nothing it reaches was cut or overwritten).
    assert_eq!(reader.open_tree("t")?.len()?, 12_000);
    let t = reader.open_tree("t")?;
    assert_eq!(t.get(&key(0))?.map(<[u8]>::len), Some(30_000));
    drop(reader);
    let stats = db.compact()?;
    let after = db.stats()?;
    let in_use = before.pages_in_use * before.page_size as u64;
    assert!(
        after.file_size_bytes <= in_use + in_use / 10,
        "{} bytes after compact, {} in use before, {stats:?}",
        after.file_size_bytes,
        in_use
    );
    let db = checked_reopen(db, &path)?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.len()?, 12_000);
    for i in (0..60_000u64).step_by(5) {
        let len = if i % 1000 == 0 { 30_000 } else { 100 };
        assert_eq!(
            t.get(&key(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)))?,
            Some(&vec![i as u8; len][..])
        );
    }
    Ok(())
}

/// `compact` on a file it has just compacted changes nothing: no leaf is rebuilt, no
/// page moves, and the file keeps its length, however often it is called.
///
/// Catches: packing judged by the leaves' bytes alone, blind to cell boundaries. Leaves
/// whose bytes would fit one page fewer, but whose cells do not, were rebuilt into as
/// many leaves at the end of the file, every call: the file grew by a growth step, and
/// the next call cut it back.
#[test]
fn compacting_a_compacted_file_changes_nothing() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let k = |i: u32| i.wrapping_mul(2_654_435_761).to_be_bytes();
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..20_000 {
            t.insert(&k(i), &[7; 40])?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0..20_000).step_by(2) {
            assert!(t.remove(&k(i))?);
        }
    }
    w.commit()?;
    let first = db.compact()?;
    assert!(first.leaves_merged > 0, "{first:?}");
    let compacted = db.stats()?.file_size_bytes;
    for call in 1..=3 {
        let again = db.compact()?;
        assert_eq!(
            (again.leaves_merged, again.pages_moved),
            (0, 0),
            "call {call}: {again:?}"
        );
        assert_eq!(again.file_size_after, compacted, "call {call}: {again:?}");
    }
    db.check()?;
    assert_eq!(db.begin_read()?.open_tree("t")?.len()?, 10_000);
    Ok(())
}

/// A large value past the packed end that no lower free run holds stays where it is,
/// and `compact` ends in a few passes with a file no longer than before.
///
/// Catches: a value moved into "the lowest run that holds it" even when that run was
/// the end of the file or lay above it. It went up on one pass and back down on the
/// next, every pass until the limit (64 passes, 64 copies of the value), and the file
/// ended longer than it began.
#[test]
fn compact_moves_a_large_value_only_down() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let db = Database::open(&path)?;
    let small = |i: u64| vec![i as u8; 4000];
    let large = vec![9; 1000 * 4096 - 100];
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..3000u64 {
            t.insert(&key(i), &small(i))?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(&key(u64::MAX), &large)?;
    w.commit()?;
    // One-page holes below the large value: more free pages than it needs, no run.
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in (0..3000u64).step_by(2) {
            assert!(t.remove(&key(i))?);
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let stats = db.compact()?;
    let after = db.stats()?;
    assert!(stats.passes <= 8, "{stats:?}");
    assert!(stats.pages_moved < before.pages_in_use, "{stats:?}");
    assert!(
        after.page_count <= before.page_count && stats.file_size_after <= stats.file_size_before,
        "{} pages then {}, {stats:?}",
        before.page_count,
        after.page_count
    );
    let db = checked_reopen(db, &path)?;
    let r = db.begin_read()?;
    let t = r.open_tree("t")?;
    assert_eq!(t.len()?, 1501);
    assert_eq!(t.get(&key(u64::MAX))?, Some(&large[..]));
    for i in (1..3000u64).step_by(2) {
        assert_eq!(t.get(&key(i))?, Some(&small(i)[..]));
    }
    Ok(())
}

/// A large value that starts just below the point past which pages are moved, with a
/// free run below that holds it, moves down, and the file is cut after it.
///
/// Catches: only values whose blob *started* at or past that point moved, while the
/// point was chosen counting every page in use past it. A value across the point never
/// moved, and the file kept its end: 16 MB left of 18 MB with 7.8 MB in use.
#[test]
fn compact_moves_a_large_value_across_the_cut_point() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..2000u64 {
            t.insert(&key(i), &[i as u8; 4000])?;
        }
    }
    w.commit()?;
    // 1,900 pages after 2,000 that are then freed: the pages in use past any point that
    // the free pages below can take (with a tenth more) include the value's start.
    let large = vec![7; 1900 * 4096 - 100];
    let w = db.begin_write()?;
    w.open_tree("t")?.insert(&key(u64::MAX), &large)?;
    w.commit()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("t")?;
        for i in 0..2000u64 {
            assert!(t.remove(&key(i))?);
        }
    }
    w.commit()?;
    let before = db.stats()?;
    let stats = db.compact()?;
    let after = db.stats()?;
    assert!(
        after.page_count < before.pages_in_use + 16,
        "{} pages in use, {} after compact: {stats:?}",
        before.pages_in_use,
        after.page_count
    );
    db.check()?;
    let r = db.begin_read()?;
    assert_eq!(r.open_tree("t")?.get(&key(u64::MAX))?, Some(&large[..]));
    Ok(())
}
