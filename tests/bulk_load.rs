//! `Database::bulk_load`: the loaded tree equals the input on every write path (O_DIRECT,
//! forced buffered, a file system that may refuse O_DIRECT, a backend without a file),
//! for every input shape (empty, one entry, overflow values larger than a write chunk),
//! refusals leave the database unchanged, and a crash at any write leaves the previous
//! state (or, after the last write, the new one).

mod support;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use mapkv::testing::{MemFile, MemHooks, open_with_backend};
use mapkv::{BulkOptions, BulkStats, Database, Error, Options, Result};
use support::rng::{Rng, seed};
use support::simdisk::{CrashImages, OpKind, SimDisk};

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// SplitMix64, for reproducible keys and values.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn bytes(seed: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| mix(seed ^ (i as u64 / 8)) as u8 ^ i as u8)
        .collect()
}

/// `n` entries in strictly ascending key order: a fixed-width counter then 0–19 random
/// bytes (keys of different lengths), values of 0–300 bytes, and every `big_every`-th
/// value (if not 0) of `big_len` bytes, stored in overflow pages.
fn entries(n: u64, seed: u64, big_every: u64, big_len: usize) -> Entries {
    (0..n)
        .map(|i| {
            let r = mix(seed.wrapping_mul(31) ^ i);
            let mut key = format!("{i:09}").into_bytes();
            key.extend(bytes(r, (r % 20) as usize));
            let len = if big_every != 0 && i % big_every == big_every - 1 {
                big_len
            } else {
                (r >> 8) as usize % 301
            };
            (key, bytes(r >> 3, len))
        })
        .collect()
}

/// Compares the tree with `expected` entry by entry, both ways, and runs `check()`.
fn assert_tree(db: &Database, tree: &str, expected: &Entries) -> Result<()> {
    let rtx = db.begin_read()?;
    let t = rtx.open_tree(tree)?;
    assert_eq!(t.len()?, expected.len() as u64);
    let mut n = 0;
    for (entry, (k, v)) in t.iter()?.zip(expected) {
        let (key, value) = entry?;
        assert_eq!((key, value), (&k[..], &v[..]), "entry {n}");
        n += 1;
    }
    assert_eq!(n, expected.len());
    assert_eq!(t.iter()?.rev().count(), expected.len());
    for (k, v) in expected.iter().step_by(97) {
        assert_eq!(t.get(k)?, Some(&v[..]));
    }
    db.check()?;
    Ok(())
}

fn load(db: &Database, tree: &str, e: &Entries, options: BulkOptions) -> Result<BulkStats> {
    db.bulk_load_with(tree, e.iter().map(|(k, v)| (k, v)), options)
}

/// Whether the refusal reason says the file system (not us) declined direct I/O.
fn refused_by_file_system(stats: &BulkStats) -> bool {
    stats
        .direct_io_refused
        .as_deref()
        .is_some_and(|r| r.contains("direct") && !r.contains("not requested"))
}

#[test]
fn direct_load_equals_input_and_survives_reopen() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("db");
    let data = entries(60_000, 1, 0, 0);
    {
        let db = Database::open(&path)?;
        let stats = load(&db, "t", &data, BulkOptions::new())?;
        assert!(
            stats.direct_io || refused_by_file_system(&stats),
            "direct I/O neither used nor refused by the file system: {stats:?}"
        );
        assert_eq!(stats.direct_io, stats.direct_io_refused.is_none());
        assert_eq!(stats.entries, data.len() as u64);
        assert_eq!(stats.bytes_written, stats.pages * 4096);
        assert!(stats.bytes_written > 4 << 20, "several write chunks");
        assert_tree(&db, "t", &data)?;
        // Later commits work on top of the loaded tree.
        let w = db.begin_write()?;
        w.open_tree("t")?.insert(b"000000000~", b"after")?;
        w.commit()?;
        db.check()?;
    }
    let db = Database::open(&path)?;
    let mut expected = data.clone();
    expected.push((b"000000000~".to_vec(), b"after".to_vec()));
    expected.sort();
    assert_tree(&db, "t", &expected)?;
    Ok(())
}

#[test]
fn forced_buffered_load_equals_input() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let data = entries(30_000, 2, 0, 0);
    let stats = load(&db, "t", &data, BulkOptions::new().direct_io(false))?;
    assert!(!stats.direct_io);
    assert!(stats.direct_io_refused.unwrap().contains("not requested"));
    assert_tree(&db, "t", &data)?;
    drop(db);
    assert_tree(&Database::open(dir.path().join("db"))?, "t", &data)
}

/// tmpfs refuses O_DIRECT on older kernels (and accepts it since Linux 6.6): either way
/// the load must be correct and say which path ran.
#[test]
fn load_on_tmpfs_either_path() -> Result<()> {
    if !Path::new("/dev/shm").is_dir() {
        return Ok(());
    }
    let dir = tempfile::tempdir_in("/dev/shm")?;
    let db = Database::open(dir.path().join("db"))?;
    let data = entries(20_000, 3, 0, 0);
    let stats = load(&db, "t", &data, BulkOptions::new())?;
    assert!(
        stats.direct_io || refused_by_file_system(&stats),
        "{stats:?}"
    );
    assert_tree(&db, "t", &data)
}

#[test]
fn overflow_values_across_write_chunks() -> Result<()> {
    let dir = tempfile::tempdir()?;
    for direct in [true, false] {
        let db = Database::open(dir.path().join(format!("db-{direct}")))?;
        // Values of 70 KB every 50 entries, and a few larger than a 4 MiB write chunk.
        let mut data = entries(3_000, 4, 50, 70_000);
        for i in [10, 1500, 2999] {
            data[i].1 = bytes(i as u64, (5 << 20) + 123);
        }
        let stats = load(&db, "big", &data, BulkOptions::new().direct_io(direct))?;
        assert!(stats.bytes_written > 15 << 20);
        assert_tree(&db, "big", &data)?;
    }
    Ok(())
}

#[test]
fn empty_input_and_one_entry() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let stats = db.bulk_load("empty", std::iter::empty::<(&[u8], &[u8])>())?;
    assert_eq!((stats.entries, stats.pages, stats.bytes_written), (0, 0, 0));
    assert_eq!(db.begin_read()?.tree_names()?, ["empty"]);
    assert_tree(&db, "empty", &Vec::new())?;
    let one = vec![(b"only".to_vec(), b"one".to_vec())];
    let stats = load(&db, "one", &one, BulkOptions::new())?;
    assert_eq!((stats.entries, stats.pages), (1, 1));
    assert_tree(&db, "one", &one)?;
    // An empty key and an empty value are fine too.
    let edge = vec![(Vec::new(), Vec::new()), (vec![0], vec![1; 3])];
    load(&db, "edge", &edge, BulkOptions::new())?;
    assert_tree(&db, "edge", &edge)
}

/// Everything a reader can observe about the database, to compare before and after.
fn snapshot(db: &Database) -> Result<Vec<(String, Entries)>> {
    let rtx = db.begin_read()?;
    let mut all = Vec::new();
    for name in rtx.tree_names()? {
        let t = rtx.open_tree(&name)?;
        let entries = t
            .iter()?
            .map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_>>()?;
        all.push((name, entries));
    }
    Ok(all)
}

#[test]
fn unsorted_input_leaves_the_database_unchanged() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let previous = entries(5_000, 5, 0, 0);
    load(&db, "previous", &previous, BulkOptions::new())?;
    let data = entries(40_000, 6, 0, 0);
    let before = snapshot(&db)?;
    let page_count = db.stats()?.page_count;
    // The second entry, a page boundary, past the first write chunk, the last entry;
    // on both paths; a duplicate key counts as unsorted too.
    for (at, direct) in [(1, true), (22, false), (30_000, true), (39_999, false)] {
        let mut bad = data.clone();
        if at % 2 == 1 {
            bad[at].0 = bad[at - 1].0.clone(); // a duplicate
        } else {
            bad.swap(at - 1, at); // a descent
        }
        match load(&db, "new", &bad, BulkOptions::new().direct_io(direct)) {
            Err(Error::Unsorted { index }) => assert_eq!(index, at as u64),
            other => panic!("expected Unsorted at {at}, got {other:?}"),
        }
        assert_eq!(snapshot(&db)?, before);
        assert_eq!(db.stats()?.page_count, page_count);
        db.check()?;
    }
    // Later commits and loads work, and reuse the space the failed loads wrote to.
    let w = db.begin_write()?;
    w.open_tree("previous")?.insert(b"zzz", b"later")?;
    w.commit()?;
    load(&db, "new", &data, BulkOptions::new())?;
    assert_tree(&db, "new", &data)?;
    let mut expected = previous.clone();
    expected.push((b"zzz".to_vec(), b"later".to_vec()));
    assert_tree(&db, "previous", &expected)
}

#[test]
fn tree_not_empty_and_trees_that_exist_but_are_empty() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let data = entries(2_000, 7, 0, 0);
    load(&db, "full", &data, BulkOptions::new())?;
    let before = snapshot(&db)?;
    match load(&db, "full", &entries(10, 8, 0, 0), BulkOptions::new()) {
        Err(Error::TreeNotEmpty(name)) => assert_eq!(name, "full"),
        other => panic!("expected TreeNotEmpty, got {other:?}"),
    }
    assert_eq!(snapshot(&db)?, before);
    // A tree created empty, and one emptied by removals (which may keep a root leaf:
    // the load must free it, or check() finds a leaked page).
    let w = db.begin_write()?;
    w.open_tree("created")?;
    {
        let mut t = w.open_tree("emptied")?;
        for (k, v) in &data[..500] {
            t.insert(k, v)?;
        }
    }
    w.commit()?;
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("emptied")?;
        for (k, _) in &data[..500] {
            assert!(t.remove(k)?);
        }
    }
    w.commit()?;
    db.check()?;
    for tree in ["created", "emptied"] {
        load(&db, tree, &data, BulkOptions::new())?;
        assert_tree(&db, tree, &data)?;
    }
    assert_tree(&db, "full", &data)
}

#[test]
fn fill_factor() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let data = entries(20_000, 9, 0, 0);
    let full = load(&db, "full", &data, BulkOptions::new())?;
    let half = load(&db, "half", &data, BulkOptions::new().fill_percent(50))?;
    let ratio = half.pages as f64 / full.pages as f64;
    assert!(
        (1.8..2.2).contains(&ratio),
        "{} vs {} pages",
        half.pages,
        full.pages
    );
    assert_tree(&db, "half", &data)?;
    // Inserting between the loaded keys fills the free room before splitting.
    let w = db.begin_write()?;
    {
        let mut t = w.open_tree("half")?;
        for (k, _) in data.iter().step_by(10) {
            let mut k = k.clone();
            k.push(0xff);
            t.insert(&k, b"between")?;
        }
    }
    w.commit()?;
    db.check()?;
    for bad in [0, 49, 101, 255] {
        assert!(matches!(
            load(&db, "other", &data, BulkOptions::new().fill_percent(bad)),
            Err(Error::InvalidOptions(_))
        ));
    }
    Ok(())
}

#[test]
fn readers_keep_their_snapshot_during_a_load() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let db = Database::open(dir.path().join("db"))?;
    let old = entries(1_000, 10, 0, 0);
    load(&db, "old", &old, BulkOptions::new())?;
    let rtx = db.begin_read()?;
    let data = entries(30_000, 11, 0, 0);
    load(&db, "new", &data, BulkOptions::new())?;
    assert!(matches!(rtx.open_tree("new"), Err(Error::TreeNotFound(_))));
    assert_eq!(rtx.open_tree("old")?.iter()?.count(), old.len());
    drop(rtx);
    assert_tree(&db, "new", &data)
}

// ---- crashes -------------------------------------------------------------------------

/// An in-memory disk that applies writes in order until a chosen point and drops every
/// write after it (as a power cut would lose everything not yet on the disk), or drops
/// exactly one chosen write and keeps the others until the next sync (the disk reordered
/// the writes, so the commit's meta may reach it while a page does not; the power cut
/// comes before that sync returns, so nothing after it survives).
#[derive(Clone)]
struct Disk {
    file: MemFile,
    cut: Arc<PowerCut>,
}

/// The hooks of a [`Disk`]: which writes it loses.
#[derive(Default)]
struct PowerCut(Mutex<CutState>);

#[derive(Default)]
struct CutState {
    writes: usize,
    /// The writes (numbered as `writes` counts them) of nothing but zeros: the zeros a
    /// commit writes ahead of its end, which no page needs.
    zero_writes: Vec<usize>,
    keep_first: Option<usize>,
    drop_only: Option<usize>,
    /// Set at the first sync after the dropped write: the power is off from then on.
    off: bool,
}

impl MemHooks for PowerCut {
    fn write(&self, bufs: &[&[u8]], _offset: u64) -> bool {
        let mut s = self.state();
        let n = s.writes;
        s.writes += 1;
        if bufs.iter().all(|b| b.iter().all(|&x| x == 0)) {
            s.zero_writes.push(n);
        }
        !(s.off || s.keep_first.is_some_and(|k| n >= k) || s.drop_only == Some(n))
    }

    fn sync(&self) {
        let mut s = self.state();
        if s.drop_only.is_some_and(|k| s.writes > k) {
            s.off = true;
        }
    }
}

impl PowerCut {
    fn state(&self) -> MutexGuard<'_, CutState> {
        self.0.lock().unwrap()
    }
}

impl Disk {
    fn with_bytes(bytes: Vec<u8>) -> Disk {
        let cut = Arc::new(PowerCut::default());
        let file = MemFile::new(bytes).with_hooks(cut.clone());
        Disk { file, cut }
    }

    fn fail_after(&self, keep_first: Option<usize>, drop_only: Option<usize>) {
        let mut s = self.cut.state();
        (s.writes, s.keep_first, s.drop_only) = (0, keep_first, drop_only);
        s.zero_writes.clear();
    }

    fn writes(&self) -> usize {
        self.cut.state().writes
    }

    fn zero_writes(&self) -> Vec<usize> {
        self.cut.state().zero_writes.clone()
    }

    /// What survives the crash: the bytes as they are now.
    fn image(&self) -> Vec<u8> {
        self.file.contents()
    }

    fn open(&self) -> Result<Database> {
        open_with_backend(self.file.backend(), Options::new())
    }
}

#[test]
fn crash_during_bulk_load_leaves_the_previous_state() -> Result<()> {
    // The previous state: a tree loaded in bulk and a tree written normally.
    let base = Disk::with_bytes(Vec::new());
    let previous_tree = entries(3_000, 12, 0, 0);
    let data = entries(50_000, 13, 500, 9_000);
    let before = {
        let db = base.open()?;
        load(&db, "previous", &previous_tree, BulkOptions::new())?;
        let w = db.begin_write()?;
        w.open_tree("normal")?.insert(b"k", b"v")?;
        w.commit()?;
        snapshot(&db)?
    };
    let image = base.image();
    // A load without crash, to count its writes (chunks, the zeros its commit writes
    // ahead of the end, commit pages, meta, and the sealed copy of the meta written after
    // the commit's sync).
    let (writes, zero_writes) = {
        let disk = Disk::with_bytes(image.clone());
        let db = disk.open()?;
        disk.fail_after(None, None);
        let stats = load(&db, "new", &data, BulkOptions::new())?;
        assert!(!stats.direct_io, "the test backend has no file");
        let (writes, zero_writes) = (disk.writes(), disk.zero_writes());
        drop(db);
        let db = Disk::with_bytes(disk.image()).open()?;
        assert_tree(&db, "new", &data)?;
        (writes, zero_writes)
    };
    assert!(
        writes >= 4,
        "{writes} writes: several chunks, then the commit"
    );
    for point in 0..=writes {
        for (keep_first, drop_only) in [(Some(point), None), (None, Some(point))] {
            let disk = Disk::with_bytes(image.clone());
            let db = disk.open()?;
            disk.fail_after(keep_first, drop_only);
            // The process does not notice the lost writes; the load returns Ok.
            load(&db, "new", &data, BulkOptions::new())?;
            drop(db); // A clean close: its writes are lost too when keep_first is set.
            let survivor = disk.image();
            let db = Disk::with_bytes(survivor).open()?;
            db.check()?;
            let after = snapshot(&db)?;
            // The load is in once its commit's meta (the next-to-last write) and every
            // write before it reached the disk, the zeros past its end aside; losing the
            // sealed copy after it changes nothing but the verification at open.
            let complete = keep_first.or(drop_only).is_some_and(|k| k >= writes - 1)
                || drop_only.is_some_and(|k| zero_writes.contains(&k));
            if complete {
                assert_tree(&db, "new", &data)?;
            } else {
                assert_eq!(after, before, "crash {keep_first:?} / {drop_only:?}");
            }
            // The recovered database takes new commits.
            let w = db.begin_write()?;
            w.open_tree("normal")?.insert(b"k2", b"v2")?;
            w.commit()?;
            db.check()?;
        }
    }
    Ok(())
}

#[test]
fn the_open_after_a_load_verifies_nothing_and_no_crash_loses_the_load() -> Result<()> {
    let disk = SimDisk::new(Vec::new());
    let db = open_with_backend(disk.backend(), Options::new())?;
    let data = entries(20_000, 21, 1_000, 9_000);
    let load_starts = disk.log_len();
    let stats = load(&db, "t", &data, BulkOptions::new())?;
    let load_ends = disk.log_len();
    disk.kill(); // right after the load: no clean close
    drop(db);

    // The next open reads the metas and the free list, not the loaded tree.
    let after = SimDisk::new(disk.contents());
    let db = open_with_backend(after.backend(), Options::new())?;
    let reads = after.count(OpKind::Read);
    assert!(
        reads < 10,
        "{reads} reads at the open after a load of {} pages",
        stats.pages
    );
    assert_tree(&db, "t", &data)?;

    // Crashes during the load: once its commit's sync has returned, the load survives
    // whatever happens to the sealed copy of its meta written after it.
    let syncs: Vec<usize> = (disk.sync_points().into_iter())
        .filter(|&i| (load_starts..load_ends).contains(&i))
        .collect();
    let committed = syncs[0] + 1; // crash points past the commit's sync
    let mut images = CrashImages::new(&disk);
    let mut rng = Rng::new(seed(11));
    for at in load_starts..=load_ends {
        for _ in 0..8 {
            let image = images.image(at, &mut rng);
            let db = open_with_backend(SimDisk::new(image).backend(), Options::new())
                .unwrap_or_else(|e| panic!("crash at {at}: {e}"));
            db.check()?;
            let rtx = db.begin_read()?;
            let len = match rtx.open_tree("t") {
                Ok(t) => t.len()?,
                Err(Error::TreeNotFound(_)) => 0,
                Err(e) => return Err(e),
            };
            if at >= committed {
                assert_eq!(len, data.len() as u64, "crash at {at}, after the commit");
                drop(rtx);
                assert_tree(&db, "t", &data)?;
            } else {
                assert!(len == 0 || len == data.len() as u64, "crash at {at}");
            }
        }
    }
    Ok(())
}

/// The pages a load writes count in `Stats::pages_written`, on both write paths.
#[test]
fn a_load_counts_its_pages_written() -> Result<()> {
    for direct in [true, false] {
        let dir = tempfile::tempdir()?;
        let db = Database::open(dir.path().join("db"))?;
        let before = db.stats()?.pages_written;
        let stats = load(
            &db,
            "t",
            &entries(50_000, 8, 0, 0),
            BulkOptions::new().direct_io(direct),
        )?;
        let written = db.stats()?.pages_written - before;
        assert!(
            written >= stats.pages && written <= stats.pages + 8,
            "direct {direct}: {} pages loaded, {written} counted",
            stats.pages
        );
    }
    Ok(())
}

/// A clean close cuts the file to the end of the newest commit, after a load (which
/// seals its commit, so the close has nothing else to do) and after a load that failed
/// (whose pages lie past that end).
#[test]
fn the_close_after_a_load_cuts_the_file_to_its_end() -> Result<()> {
    for fails in [false, true] {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("db");
        let mut data = entries(100_000, 9, 0, 0);
        if fails {
            let last = data.len() - 1;
            data[last].0 = data[0].0.clone();
        }
        let end = {
            let db = Database::open(&path)?;
            let loaded = load(&db, "t", &data, BulkOptions::new());
            assert_eq!(loaded.is_err(), fails, "{loaded:?}");
            let stats = db.stats()?;
            stats.page_count * stats.page_size as u64
        };
        let len = std::fs::metadata(&path)?.len();
        assert_eq!(len, end, "the load failed: {fails}");
        let db = Database::open(&path)?;
        db.check()?;
        let trees = db.begin_read()?.tree_names()?;
        assert_eq!(trees.is_empty(), fails);
    }
    Ok(())
}
